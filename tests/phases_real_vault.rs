//! End to end on a real Vault-API server: the five phases on the sandbox whose Vault pod runs
//! OpenBao (`[sandbox] vault_server`, the binary `scripts/install-openbao` installs), with the
//! restart proof (`[verify] restart_vault = true`): init, unseal, KV, policy and kubernetes auth
//! against the real server; ESO logging in through the sandbox API's TokenReview; the Vault pod
//! deleted and the real server unsealed again by the auto-unsealer. Skips loudly without a
//! server binary (`KUBESTRAP_VAULT_SERVER`).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kubestrap_test_support::{
    Bootstrap, Options, assert_vault_restarted, finished, kubestrap_bin, runtime,
};
use serde_json::Value;

#[test]
fn five_phases_on_a_real_openbao_with_the_restart_proof() {
    let Some(server) = kubestrap_test_support::vault_server_or_skip(
        "five_phases_on_a_real_openbao_with_the_restart_proof",
    ) else {
        return;
    };
    let fx = Bootstrap::new(
        kubestrap_bin!(),
        &Options {
            vault_server: Some(server),
            restart_vault: true,
            ..Options::default()
        },
    );
    assert_vault_restarted(&finished(&fx.apply_all_done()));

    let rt = runtime();
    rt.block_on(async {
        let client = fx.client().await;
        let forward = kubestrap::kube::portforward::to_service(&client, "vault", "vault", 8200)
            .await
            .unwrap();
        // The port-forward reaches the real server, unsealed again after the restart.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let status: Value = reqwest::get(format!("{}/v1/sys/seal-status", forward.http_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        kubestrap_test_support::assert_real_openbao(&status);
        assert_eq!(status["sealed"], false, "{status}");
        // Phase 2's canaries are in the real server's KV.
        let keys: Api<Secret> = Api::namespaced(client.clone(), "vault");
        let keys = keys.get("vault-init-keys").await.unwrap();
        let token = String::from_utf8(keys.data.as_ref().unwrap()["root-token"].0.clone()).unwrap();
        assert!(token.starts_with("s."), "OpenBao's root token");
        let vault = kubestrap_test_support::vault_client(&forward.http_url(), &token);
        let github: HashMap<String, String> = tokio::time::timeout(
            Duration::from_secs(30),
            vaultrs::kv2::read(&vault, "secret", "bootstrap/github"),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(github["token"], fx.github);
        // Phase 4: the demo app's secret came from the real server through ESO.
        let demo: Api<Secret> = Api::namespaced(client.clone(), "demo");
        let s = demo.get("cloudflare-api-token").await.unwrap();
        assert_eq!(s.data.unwrap()["api-token"].0, fx.cloudflare.as_bytes());
    });

    // A second run changes nothing (the real server's state reads back as kubestrap wrote it).
    let _ = fx.assert_second_apply_unchanged(false);
}
