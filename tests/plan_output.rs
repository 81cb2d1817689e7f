//! Snapshot tests of `plan` for the sandbox playbook: text, JSON and DOT.

use kubestrap_test_support::{self as common, kubestrap_bin};

use std::path::Path;
use std::sync::Arc;

use kubestrap::engine::{self, RunEnv};
use kubestrap::output;
use kubestrap::playbook::Playbook;
use kubestrap::steps::Cluster;

fn sandbox_plan() -> engine::Plan {
    // Relative path (tests run in the package root) so the snapshot holds no machine paths.
    let pb = Playbook::load(Path::new("playbooks/sandbox.toml")).unwrap();
    let engine = kubestrap::steps::build(&pb).unwrap();
    let cluster = Arc::new(Cluster::of_playbook(&pb));
    let env = RunEnv::new(pb).with_finished_resource(cluster);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            engine::plan(&engine, &env, 4),
        )
        .await
        .unwrap()
    })
}

fn render(f: impl Fn(&engine::Plan, &mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    f(&sandbox_plan(), &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

#[test]
fn plan_text() {
    insta::assert_snapshot!(render(output::render_text));
}

#[test]
fn plan_json() {
    let text = render(output::render_json);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["version"], 1);
    let phases: Vec<&str> = doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["infrastructure", "secrets", "git-auth", "apps", "verify"]
    );
    insta::assert_snapshot!(text);
}

#[test]
fn plan_dot() {
    insta::assert_snapshot!(render(output::render_dot));
}

#[test]
fn plan_is_stable_across_runs() {
    let a = render(output::render_text);
    let b = render(output::render_text);
    assert_eq!(a, b);
}

#[test]
fn plan_output_holds_no_secret_values() {
    // plan runs without secrets; the binary must not need them nor print them.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = common::run(
        &kubestrap_bin!(),
        &["plan", "-p", "playbooks/sandbox.toml", "--output", "json"],
        dir,
        &[("GITHUB_TOKEN", "ghp_never-printed-0123456789")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("never-printed"));
    assert!(stdout.contains("\"id\": \"gitauth.switch\""));
}
