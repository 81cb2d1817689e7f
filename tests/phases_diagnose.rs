//! Diagnosable failures on a finished sandbox bootstrap: an ExternalSecret the Vault policy does
//! not allow, one whose key is missing in Vault, one whose store is not ready; and a Vault whose
//! keys Secret is gone (refusal with the recovery text, never a re-init).

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kubestrap_test_support::{Bootstrap, Options, kubestrap_bin, runtime, text, text as text_of};
use serde_json::json;

fn es_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "external-secrets.io",
            "v1",
            "ExternalSecret",
        )),
    )
}

fn external_secret(name: &str, store: &str, key: &str, property: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": store},
            "target": {"name": name},
            "data": [{"secretKey": "value", "remoteRef": {"key": key, "property": property}}],
        },
    }))
    .unwrap()
}

/// Creates `es`, runs `apply --only apps.secrets-synced`, deletes `es`; returns the output.
fn diagnose(fx: &Bootstrap, es: DynamicObject) -> String {
    let rt = runtime();
    let name = es.metadata.name.clone().unwrap();
    rt.block_on(async {
        es_api(&fx.client().await, "demo")
            .create(&PostParams::default(), &es)
            .await
            .unwrap();
    });
    let out = fx.run(
        &["apply", "--resume", "--only", "apps.secrets-synced"],
        false,
    );
    rt.block_on(async {
        es_api(&fx.client().await, "demo")
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
    });
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    text(&out)
}

#[test]
fn failures_are_diagnosed_and_a_missing_keys_secret_is_refused_with_recovery() {
    let fx = Bootstrap::new(
        kubestrap_bin!(),
        &Options {
            secret_sync: "5s",
            restart_vault: false,
            ..Options::default()
        },
    );
    let out = fx.run(&["apply"], true);
    assert!(out.status.success(), "{}", text(&out));

    // Wrong policy: the path is not among the declared secrets, so the ESO role may not read it.
    let msg = diagnose(
        &fx,
        external_secret("denied", "vault-backend", "other/thing", "x"),
    );
    assert!(msg.contains("auth denied"), "{msg}");
    assert!(msg.contains("secret/data/other/thing"), "{msg}");

    // Missing key: the path is allowed but the property does not exist.
    let msg = diagnose(
        &fx,
        external_secret("missing", "vault-backend", "bootstrap/cloudflare", "nope"),
    );
    assert!(msg.contains("missing in Vault"), "{msg}");
    assert!(
        msg.contains("secret/data/bootstrap/cloudflare key nope"),
        "{msg}"
    );

    // Store not ready: a store whose Vault role does not exist.
    let rt = runtime();
    rt.block_on(async {
        let stores: Api<DynamicObject> = Api::all_with(
            fx.client().await,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "external-secrets.io",
                "v1",
                "ClusterSecretStore",
            )),
        );
        let broken: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ClusterSecretStore",
            "metadata": {"name": "broken"},
            "spec": {"provider": {"vault": {
                "server": "http://vault.vault.svc:8200", "path": "secret", "version": "v2",
                "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "no-such-role",
                    "serviceAccountRef": {"name": "external-secrets", "namespace": "external-secrets"}}}
            }}},
        }))
        .unwrap();
        stores.create(&PostParams::default(), &broken).await.unwrap();
    });
    let msg = diagnose(
        &fx,
        external_secret("unready", "broken", "bootstrap/cloudflare", "api_token"),
    );
    assert!(msg.contains("store is not ready"), "{msg}");

    // The keys Secret is gone while Vault is initialised: refusal with the recovery text.
    let saved = rt.block_on(async {
        let keys: Api<Secret> = Api::namespaced(fx.client().await, "vault");
        let saved = keys.get("vault-init-keys").await.unwrap();
        keys.delete("vault-init-keys", &DeleteParams::default())
            .await
            .unwrap();
        saved
    });
    let out = fx.run(&["apply", "--fresh"], false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("vault.init"), "{msg}");
    assert!(msg.contains("never re-initialises"), "{msg}");
    assert!(
        msg.contains("kubectl -n vault create secret generic vault-init-keys"),
        "{msg}"
    );

    // Recovery 2: an emergency copy in the state dir (what vault.init writes when the Secret
    // cannot be written) is restored on the next run, then removed.
    let data = saved.data.unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    let copy = json!({
        "keys": (0..5).map(|i| text(&format!("unseal-key-{i}"))).collect::<Vec<_>>(),
        "root_token": text("root-token"),
    });
    let emergency = fx.cluster_dir().join("vault-init-keys.emergency.json");
    std::fs::write(&emergency, copy.to_string()).unwrap();
    // The failed --fresh run replaced the checkpoint, so the secrets are needed again.
    let out = fx.run(&["apply", "--resume"], true);
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(
        !emergency.exists(),
        "the emergency copy must be removed once restored"
    );
    rt.block_on(async {
        let keys: Api<Secret> = Api::namespaced(fx.client().await, "vault");
        let restored = keys.get("vault-init-keys").await.unwrap();
        assert_eq!(restored.data.unwrap()["root-token"].0, data["root-token"].0);
    });
}
