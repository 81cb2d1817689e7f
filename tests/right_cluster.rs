//! The right cluster (issue 11): a provider that creates its cluster never reaches whatever
//! cluster `KUBECONFIG` or `~/.kube/config` currently names.

use std::path::Path;
use std::process::Output;

use k8s_openapi::api::core::v1::Namespace;
use kubestrap::engine::Checkpoint;
use kubestrap::playbook::K3S_LOCAL_KUBECONFIG;
use kubestrap_sandbox::{SandboxConfig, SandboxHandle};
use kubestrap_test_support::{self as common, kubestrap_bin, start_sandbox};

const ONE_STEP: &str = "[[step]]\nid = \"s1\"\nphase = \"infrastructure\"\n";

/// `kubestrap ARGS --synthetic-steps steps.toml` in `dir`.
fn synthetic(dir: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--synthetic-steps", "steps.toml"]);
    common::run(&kubestrap_bin!(), &all, dir, &[])
}

async fn kube_system_uid(client: kube::Client) -> String {
    let api: kube::Api<Namespace> = kube::Api::all(client);
    api.get("kube-system").await.unwrap().metadata.uid.unwrap()
}

#[test]
fn resume_or_fresh_on_another_cluster_is_refused_naming_both_identities() {
    let rt = common::serving_runtime();
    let tmp = tempfile::tempdir().unwrap();
    let start = |name: &str| -> (SandboxHandle, String) {
        rt.block_on(async {
            let (h, client) = start_sandbox(SandboxConfig::new(tmp.path().join(name))).await;
            let uid = kube_system_uid(client).await;
            (h, uid)
        })
    };
    let (a, uid_a) = start("a");
    let (b, uid_b) = start("b");
    assert_ne!(uid_a, uid_b, "two clusters, two identities");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("steps.toml"), ONE_STEP).unwrap();
    let text = common::MINIMAL.replace(
        "provider = \"existing\"",
        &format!(
            "provider = \"existing\"\nkubeconfig = {:?}",
            a.kubeconfig_path().display().to_string()
        ),
    );
    let _ = common::write_playbook(dir.path(), &text);
    let out = synthetic(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    let path = Checkpoint::path_in(&dir.path().join(".kubestrap/test"));
    let recorded = Checkpoint::load(&path).unwrap().unwrap();
    assert_eq!(recorded.cluster_uid.as_deref(), Some(uid_a.as_str()));
    let before = std::fs::read(&path).unwrap();

    let b_kubeconfig = b.kubeconfig_path().display().to_string();
    for mode in ["--resume", "--fresh"] {
        let out = synthetic(dir.path(), &["apply", mode, "--kubeconfig", &b_kubeconfig]);
        let all = common::text(&out);
        assert_eq!(out.status.code(), Some(2), "{mode}: {all}");
        assert!(
            all.contains(&uid_a) && all.contains(&uid_b),
            "{mode}: both identities named:\n{all}"
        );
        assert!(all.contains("switch back to that cluster"), "{all}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "checkpoint untouched"
        );
    }
    // The advice works: back on cluster A, --resume continues.
    let out = synthetic(dir.path(), &["apply", "--resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    rt.block_on(async {
        let _ = a.shutdown().await;
        let _ = b.shutdown().await;
    });
}

#[test]
fn k3s_local_never_falls_back_to_an_ambient_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::MINIMAL.replace(
        "provider = \"existing\"",
        "provider = \"k3s-local\"\nk3s_version = \"v1.33.1+k3s1\"",
    );
    let path = common::write_playbook(dir.path(), &text);
    let pb = kubestrap::playbook::Playbook::load(&path).unwrap();
    assert_eq!(
        pb.kubeconfig().as_deref(),
        Some(std::path::Path::new(K3S_LOCAL_KUBECONFIG))
    );
    // The binary reports the kubeconfig it would use, with an ambient one set.
    let ambient = dir.path().join("someone-elses-cluster.yaml");
    std::fs::write(&ambient, "apiVersion: v1\nkind: Config\n").unwrap();
    let out = common::run(
        &kubestrap_bin!(),
        &["status", "--output", "json"],
        dir.path(),
        &[("KUBECONFIG", &ambient.display().to_string())],
    );
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["kubeconfig"], K3S_LOCAL_KUBECONFIG, "{all}");
}
