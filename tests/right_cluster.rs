//! The right cluster (issue 11): a provider that creates its cluster never reaches whatever
//! cluster `KUBECONFIG` or `~/.kube/config` currently names.

use kubestrap::playbook::K3S_LOCAL_KUBECONFIG;
use kubestrap_test_support::{self as common, kubestrap_bin};

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
