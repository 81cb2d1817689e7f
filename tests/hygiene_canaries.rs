//! Secret-hygiene gaps (issue 11), each proven with a canary planted where the gap was.

use kubestrap_test_support::{self as common, kubestrap_bin};

const CANARY: &str = "panic-canary-7f3a91c2";

#[test]
fn a_panicking_steps_message_is_redacted_in_checkpoint_output_and_panic_report() {
    let dir = tempfile::tempdir().unwrap();
    let _ = common::write_playbook(dir.path(), common::MINIMAL);
    std::fs::write(
        dir.path().join("steps.toml"),
        "[[step]]\nid = \"s1\"\nphase = \"infrastructure\"\nsecrets = [\"KS_TEST_TOKEN\"]\npanic_with_secret = \"KS_TEST_TOKEN\"\n",
    )
    .unwrap();
    let out = common::run(
        &kubestrap_bin!(),
        &["apply", "--synthetic-steps", "steps.toml"],
        dir.path(),
        &[("KS_TEST_TOKEN", CANARY)],
    );
    let all = common::text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("panicked") && all.contains("[redacted KS_TEST_TOKEN]"),
        "the panic is reported, masked:\n{all}"
    );
    assert!(
        !all.contains(CANARY),
        "the canary reached the output:\n{all}"
    );
    let mut checkpoint = String::new();
    for entry in std::fs::read_dir(dir.path().join(".kubestrap/test")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            checkpoint.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    assert!(checkpoint.contains("ended abnormally"), "{checkpoint}");
    assert!(
        !checkpoint.contains(CANARY),
        "the canary reached the checkpoint:\n{checkpoint}"
    );
}

/// `plan` reads Vault's root token and unseal keys from the keys Secret (vault.configure plans
/// against Vault with the token) but captures no secret: its redactor has to learn them as it
/// reads them, before any error, log line or plan text could carry one. Canaries planted in the
/// keys Secret after a bootstrap never reach stdout or stderr, in text and JSON plans, with
/// every tracing line on.
#[test]
fn plan_never_shows_the_root_token_or_unseal_keys_it_reads() {
    use base64::Engine as _;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, Patch, PatchParams};

    const ROOT: &str = "hvs.rootcanary5e1d07aa93";
    const SHARE: &str = "c0ffee5eedcanary7b2c4d";
    let fx = common::Bootstrap::new(kubestrap_bin!(), &common::Options::default());
    let _ = fx.apply_all_done();
    let rt = common::runtime();
    rt.block_on(async {
        let secrets = Api::<Secret>::namespaced(fx.client().await, "vault");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        secrets
            .patch(
                "vault-init-keys",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {
                    "root-token": b64(ROOT),
                    "unseal-key-0": b64(SHARE),
                }})),
            )
            .await
            .unwrap();
    });
    let forms = |s: &str| {
        [
            s.to_owned(),
            base64::engine::general_purpose::STANDARD.encode(s),
        ]
    };
    for format in ["text", "json"] {
        let out = fx.run_with_env(
            &["plan", "--output", format],
            true,
            &[("KUBESTRAP_LOG", "trace")],
        );
        let all = common::text(&out);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("vault.configure"),
            "the plan was made ({format}):\n{all}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("/secrets/vault-init-keys"),
            "the plan read the keys Secret ({format}):\n{all}"
        );
        for canary in forms(ROOT).iter().chain(&forms(SHARE)) {
            assert!(
                !all.contains(canary.as_str()),
                "{canary:?} reached the {format} plan's output:\n{all}"
            );
        }
    }
}
