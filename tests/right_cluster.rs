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

#[path = "support/root_vault.rs"]
mod root_vault;

/// Vault's `cluster_id`, as `sys/health` says while unsealed.
async fn vault_cluster_id(fx: &common::Bootstrap) -> String {
    let client = fx.client().await;
    let (_vault, forward) =
        root_vault::root_vault(&client, "vault", "vault", "vault-init-keys").await;
    let url = format!("{}/v1/sys/health", forward.http_url().trim_end_matches('/'));
    let health: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    health["cluster_id"].as_str().unwrap().to_owned()
}

fn checkpoint_of(fx: &common::Bootstrap) -> Checkpoint {
    Checkpoint::load(&Checkpoint::path_in(&fx.cluster_dir()))
        .unwrap()
        .unwrap()
}

/// A cluster the run itself starts did not answer before the run, so its identity used to be
/// recorded only by the next run; and Vault's was never recorded. Both are in the first
/// run's checkpoint now.
#[test]
fn the_first_run_records_the_cluster_it_created_and_its_vault() {
    let fx = common::Bootstrap::new(kubestrap_bin!(), &common::Options::default());
    let _ = fx.apply_all_done();
    let rt = common::runtime();
    let uid = rt.block_on(async { kube_system_uid(fx.client().await).await });
    let vault = rt.block_on(vault_cluster_id(&fx));
    let cp = checkpoint_of(&fx);
    assert_eq!(cp.cluster_uid.as_deref(), Some(uid.as_str()));
    assert_eq!(cp.vault_cluster_id.as_deref(), Some(vault.as_str()));
}

/// The checkpoint describes one Vault; the run reaches another (initialised again, or another
/// cluster's behind the same names): resume stops with exit 2 naming both cluster ids, and
/// the way out it names (`--fresh`) works.
#[test]
fn resume_against_another_vault_is_refused_naming_both_cluster_ids() {
    const OTHER: &str = "5b3c0d6e-0000-4000-8000-0123456789ab";
    let fx = common::Bootstrap::new(kubestrap_bin!(), &common::Options::default());
    let _ = fx.apply_all_done();
    let rt = common::runtime();
    let vault = rt.block_on(vault_cluster_id(&fx));
    let path = Checkpoint::path_in(&fx.cluster_dir());
    let mut cp = checkpoint_of(&fx);
    cp.vault_cluster_id = Some(OTHER.to_owned());
    cp.save(&path).unwrap();

    let out = fx.run(&["apply", "--resume", "--output", "json"], true);
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(OTHER) && all.contains(&vault),
        "both cluster ids named:\n{all}"
    );
    assert!(all.contains("kubestrap apply --fresh"), "{all}");
    let steps = common::finished(&out);
    assert!(
        steps.iter().all(|s| s["status"] != "done"),
        "nothing was applied:\n{all}"
    );
    assert!(
        !common::events(&out, "step_started")
            .iter()
            .any(|s| s["step"] == "vault.unseal"),
        "the step that found the other Vault stopped at its verify:\n{all}"
    );
    assert_eq!(
        checkpoint_of(&fx).vault_cluster_id.as_deref(),
        Some(OTHER),
        "the recorded id is kept"
    );

    // The way out works: the records start over, with this Vault.
    let out = fx.run(&["apply", "--fresh", "--output", "json"], true);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    assert_eq!(
        checkpoint_of(&fx).vault_cluster_id.as_deref(),
        Some(vault.as_str())
    );
}
