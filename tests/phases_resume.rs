//! Crash and resume: SIGKILL the real apply at several points (right after the sandbox started,
//! right after `vault.init`, while Terraform runs) and check that `apply --resume` always ends
//! verified. The background sandbox must survive the kills.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kubestrap_test_support::{Bootstrap, Options, finished, kubestrap_bin, runtime, text};
use serde_json::Value;

fn finished_step(e: &Value, step: &str) -> bool {
    e["event"] == "step_finished" && e["step"] == step && e["status"] == "done"
}

#[test]
fn sigkill_at_several_points_then_resume_ends_verified() {
    let fx = Bootstrap::new(kubestrap_bin!(), &Options::default());

    // 1. Right after the sandbox started: kubestrap dies, the detached sandbox lives on.
    fx.apply_and_kill(&[], |e| finished_step(e, "k3s.install"));
    let rt = runtime();
    rt.block_on(async {
        let client = fx.client().await;
        let version = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            client.apiserver_version(),
        )
        .await
        .unwrap();
        assert!(version.is_ok(), "the sandbox died with kubestrap");
    });

    // 2. Right after vault.init: the keys Secret was written before the step finished.
    let seen = fx.apply_and_kill(&["--resume"], |e| finished_step(e, "vault.init"));
    assert!(
        seen.iter()
            .any(|e| e["event"] == "step_verifying" && e["step"] == "k3s.install")
    );
    rt.block_on(async {
        let keys: Api<Secret> = Api::namespaced(fx.client().await, "vault");
        let keys = keys.get("vault-init-keys").await.unwrap();
        assert!(keys.data.unwrap().contains_key("root-token"));
    });

    // 3. While Terraform runs.
    fx.apply_and_kill(&["--resume"], |e| {
        e["event"] == "step_started" && e["step"] == "secrets.terraform"
    });

    // Resume to the end: every step done (verified or applied), nothing failed.
    let out = fx.run(&["apply", "--resume", "--output", "json"], true);
    assert!(out.status.success(), "{}", text(&out));
    let steps = finished(&out);
    assert_eq!(steps.len(), 26, "{}", text(&out));
    assert!(
        steps
            .iter()
            .all(|s| s["status"] == "done" || s["status"] == "skipped"),
        "{}",
        text(&out)
    );
    // vault.init was verified from the checkpoint, never run again (no second init).
    let init = steps.iter().find(|s| s["step"] == "vault.init").unwrap();
    assert_eq!(init["status"], "skipped", "{}", text(&out));
    rt.block_on(async {
        let secrets: Api<Secret> = Api::namespaced(fx.client().await, "flux-system");
        // The bootstrap Secret was handed over to ESO in place (no second Secret).
        let git = secrets.get("flux-system").await.unwrap();
        assert_eq!(
            git.metadata.owner_references.unwrap()[0].name,
            "flux-git-auth"
        );
        assert!(secrets.get_opt("flux-git-auth").await.unwrap().is_none());
    });
}
