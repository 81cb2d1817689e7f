//! Every failure explains itself (issue 12): with a sandbox fault holding a component back, the
//! failed step's error, its `step_finished` event (a structured `diagnosis` list) and the
//! checkpoint name the pod (or release) and the reason, deepest object first; a terminal state
//! (a stalled HelmRelease) fails in seconds, not at the end of its timeout.

use std::time::{Duration, Instant};

use kubestrap_test_support::{
    Bootstrap, Options, copy_tree, finished, kubestrap_bin, text, workspace_root,
};
use serde_json::Value;

/// A bootstrap with `faults`, `[timeouts] key = value` overridden.
fn fixture(faults: &str, timeouts: &[(&str, &str)]) -> Bootstrap {
    let fx = Bootstrap::new(
        kubestrap_bin!(),
        &Options {
            faults: Some(faults.to_owned()),
            ..Options::default()
        },
    );
    let mut playbook = std::fs::read_to_string(fx.playbook()).unwrap();
    for (key, value) in timeouts {
        let line = playbook
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in the fixture playbook"))
            .to_owned();
        playbook = playbook.replace(&line, &format!("{key} = \"{value}\""));
    }
    std::fs::write(fx.playbook(), playbook).unwrap();
    fx
}

/// Runs `apply --output json`, which must fail at `step`; returns that step's event, the
/// whole output and how long the run took.
fn failing_step(fx: &Bootstrap, step: &str) -> (Value, String, Duration) {
    let start = Instant::now();
    let out = fx.run(&["apply", "--output", "json"], true);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = finished(&out)
        .into_iter()
        .find(|s| s["step"] == step)
        .unwrap_or_else(|| panic!("no step_finished for {step}: {}", text(&out)));
    assert_eq!(failed["status"], "failed", "{}", text(&out));
    (failed, text(&out), took)
}

/// The error, the diagnosis leaf and the checkpoint all say `needles`.
fn assert_explained(fx: &Bootstrap, event: &Value, leaf: &str, needles: &[&str], all: &str) {
    let error = event["error"].as_str().unwrap_or_default();
    let diagnosis = event["diagnosis"]["levels"]
        .as_array()
        .unwrap_or_else(|| panic!("no structured diagnosis: {all}"));
    let first = &diagnosis[0];
    assert!(
        first["object"]
            .as_str()
            .is_some_and(|o| o.starts_with(leaf)),
        "the deepest level must be {leaf}: {all}"
    );
    let checkpoint = fx.checkpoint_text();
    for n in needles {
        assert!(error.contains(n), "the error must name {n:?}: {all}");
        assert!(
            first.to_string().contains(n),
            "the diagnosis leaf must name {n:?}: {all}"
        );
        assert!(
            checkpoint.contains(n),
            "the checkpoint must keep {n:?}: {checkpoint}"
        );
    }
}

#[test]
fn image_pull_backoff_names_vault_0_and_the_reason() {
    let fx = fixture("stuck.vault=ImagePullBackOff", &[("vault_ready", "20s")]);
    let (event, all, _) = failing_step(&fx, "vault.ready");
    assert_explained(
        &fx,
        &event,
        "Pod vault/vault-0",
        &["vault-0", "ImagePullBackOff", "Back-off pulling image"],
        &all,
    );
    let levels: Vec<&str> = event["diagnosis"]["levels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["object"].as_str())
        .collect();
    assert_eq!(
        levels,
        [
            "Pod vault/vault-0",
            "StatefulSet vault/vault",
            "HelmRelease vault/vault"
        ],
        "{all}"
    );
    assert!(
        event["diagnosis"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("image")),
        "{all}"
    );

    // `status` shows the same chain, walked again live from the cluster.
    let out = fx.run(&["status", "--output", "json"], false);
    assert!(out.status.success(), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "vault.ready")
        .unwrap();
    assert_eq!(step["diagnosis_live"], true, "{}", text(&out));
    assert_eq!(
        step["diagnosis"]["levels"][0]["object"],
        "Pod vault/vault-0",
        "{}",
        text(&out)
    );
    assert!(
        step["diagnosis"]["levels"][0]["state"]
            .as_str()
            .is_some_and(|s| s.contains("ImagePullBackOff")),
        "{}",
        text(&out)
    );
    let out = fx.run(&["status"], false);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("read live from the cluster now")
            && shown.contains("Pod vault/vault-0: Waiting: ImagePullBackOff"),
        "{}",
        text(&out)
    );
}

#[test]
fn crash_loop_backoff_names_the_eso_pod_and_the_reason() {
    let fx = fixture(
        "stuck.external-secrets=CrashLoopBackOff",
        &[("eso_ready", "20s")],
    );
    let (event, all, _) = failing_step(&fx, "eso.ready");
    assert_explained(
        &fx,
        &event,
        "Pod external-secrets/external-secrets-",
        &["Pod external-secrets/external-secrets-", "CrashLoopBackOff"],
        &all,
    );
}

#[test]
fn unschedulable_names_vault_0_and_the_schedulers_reason() {
    let fx = fixture("stuck.vault=Unschedulable", &[("vault_ready", "20s")]);
    let (event, all, _) = failing_step(&fx, "vault.ready");
    assert_explained(
        &fx,
        &event,
        "Pod vault/vault-0",
        &["vault-0", "Unschedulable", "0/1 nodes are available"],
        &all,
    );
}

#[test]
fn a_stalled_helm_release_fails_in_seconds_with_its_message() {
    let fx = fixture(
        "helm.fail.vault=chart hook vault-preflight failed",
        &[("vault_ready", "2m")],
    );
    let (event, all, took) = failing_step(&fx, "vault.ready");
    assert!(
        took < Duration::from_secs(20),
        "a terminal state must not wait out its 2m timeout: took {took:?}: {all}"
    );
    assert_explained(
        &fx,
        &event,
        "HelmRelease vault/vault",
        &[
            "HelmRelease vault/vault",
            "chart hook vault-preflight failed",
            "RetriesExceeded",
        ],
        &all,
    );
}

#[test]
fn a_kustomization_whose_build_fails_fails_in_seconds() {
    let fx = fixture("", &[("reconcile", "2m")]);
    // The fleet with a manifest kustomize cannot parse in the apps path.
    let fleet = fx.path().join("fleet");
    copy_tree(
        &workspace_root().join("playbooks/sandbox/git/fleet"),
        &fleet,
    );
    std::fs::write(
        fleet.join("apps/sandbox/deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: [unclosed\n",
    )
    .unwrap();
    let playbook = std::fs::read_to_string(fx.playbook()).unwrap();
    let original = workspace_root()
        .join("playbooks/sandbox/git/fleet")
        .display()
        .to_string();
    assert!(playbook.contains(&original));
    std::fs::write(
        fx.playbook(),
        playbook.replace(&original, &fleet.display().to_string()),
    )
    .unwrap();
    let (event, all, took) = failing_step(&fx, "apps.reconcile");
    let error = event["error"].as_str().unwrap_or_default();
    assert!(error.contains("Kustomization flux-system/apps"), "{all}");
    assert!(error.contains("BuildFailed"), "{all}");
    // The whole bootstrap before it takes a few seconds; the 2m wait must not be waited out.
    let waited = Duration::from_millis(event["duration_ms"].as_u64().unwrap_or(u64::MAX));
    assert!(
        waited < Duration::from_secs(20),
        "a failed build must not wait out its 2m timeout: waited {waited:?} (run {took:?}): {all}"
    );
    assert!(
        event["diagnosis"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("kustomize build failed")),
        "{all}"
    );
}
