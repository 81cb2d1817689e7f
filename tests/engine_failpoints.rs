//! Orchestrator-side crash points, only with the `failpoints` and `test-hooks` features:
//! `cargo test --features failpoints,test-hooks --test engine_failpoints`.
#![cfg(all(feature = "failpoints", feature = "test-hooks"))]

use kubestrap_test_support::{self as common, kubestrap_bin};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubestrap::engine::{Checkpoint, StepStatus};

const STEPS: &str = r#"
[[step]]
id = "s1"
phase = "infrastructure"

[[step]]
id = "s2"
phase = "infrastructure"
depends_on = ["s1"]

[[step]]
id = "s3"
phase = "secrets"
"#;

#[test]
fn killed_after_apply_but_before_recording_the_step_runs_again_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubestrap.toml"), common::MINIMAL).unwrap();
    std::fs::write(dir.path().join("steps.toml"), STEPS).unwrap();
    let cluster = dir.path().join(".kubestrap/test");
    let mut child = Command::new(kubestrap_bin!())
        .args(["apply", "--synthetic-steps", "steps.toml"])
        .current_dir(dir.path())
        .env("FAILPOINTS", "after-apply:s2=sleep(30000)")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // s2's marker is its last act before returning to the engine, which then sleeps.
    let marker = cluster.join("synthetic/done-s2");
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "s2 never finished its work"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let cp = Checkpoint::load(&Checkpoint::path_in(&cluster))
        .unwrap()
        .unwrap();
    assert_eq!(cp.steps["s1"].status, StepStatus::Done);
    assert_eq!(cp.steps["s2"].status, StepStatus::Running);

    let out = common::run(
        &kubestrap_bin!(),
        &["apply", "--synthetic-steps", "steps.toml", "--resume"],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    let log = std::fs::read_to_string(cluster.join("synthetic/log")).unwrap();
    let log: Vec<&str> = log.lines().collect();
    assert_eq!(
        log,
        ["apply s1", "apply s2", "verify s1", "apply s2", "apply s3"]
    );
}
