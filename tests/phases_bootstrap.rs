//! End to end: the five phases on the sandbox, with canary secret values, then a second run
//! that must change nothing and write nothing.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use kubestrap_test_support::{Bootstrap, Options, kubestrap_bin, runtime, text};
use serde_json::Value;

#[path = "support/root_vault.rs"]
mod root_vault;
use root_vault::root_vault;

fn secret_value(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// Reads a KV v2 secret through a port-forward with the root token from the keys Secret.
async fn vault_kv(client: &kube::Client, path: &str) -> HashMap<String, String> {
    let (vault, _forward) = root_vault(client, "vault", "vault", "vault-init-keys").await;
    tokio::time::timeout(
        Duration::from_secs(30),
        vaultrs::kv2::read::<HashMap<String, String>>(&vault, "secret", path),
    )
    .await
    .unwrap()
    .unwrap()
}

#[test]
fn five_phases_then_a_second_run_changes_and_writes_nothing() {
    let fx = Bootstrap::new(kubestrap_bin!(), &Options::default());
    let out = fx.apply_all_done();

    // No secret value in the output or the checkpoint.
    let all = format!("{}{}", text(&out), fx.checkpoint_text());
    assert!(!all.contains(&fx.github) && !all.contains(&fx.cloudflare));

    // The report and Terraform's working files are the owner's alone.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode =
            |p: std::path::PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(fx.cluster_dir().join("report.json")), 0o600);
        assert_eq!(mode(fx.cluster_dir().join("terraform")), 0o700);
    }

    let rt = runtime();
    rt.block_on(async {
        let client = fx.client().await;
        // Phase 2: the canaries are in Vault.
        assert_eq!(
            vault_kv(&client, "bootstrap/github").await["token"],
            fx.github
        );
        assert_eq!(
            vault_kv(&client, "bootstrap/cloudflare").await["api_token"],
            fx.cloudflare
        );
        // Phase 3: Flux reads Git through the Secret it always named, now ESO's (handed over
        // in place); no second Secret exists.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "flux-system");
        let git = secrets.get("flux-system").await.unwrap();
        assert_eq!(secret_value(&git, "password"), fx.github);
        assert_eq!(secret_value(&git, "username"), "git");
        let owner = &git.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ExternalSecret", "flux-git-auth")
        );
        assert!(secrets.get_opt("flux-git-auth").await.unwrap().is_none());
        let repos: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            "flux-system",
            &ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                "source.toolkit.fluxcd.io",
                "v1",
                "GitRepository",
            )),
        );
        let repo = repos.get("flux-system").await.unwrap();
        assert_eq!(repo.data["spec"]["secretRef"]["name"], "flux-system");
        // Phase 4: the demo app's secret came from Vault through ESO.
        let demo: Api<Secret> = Api::namespaced(client.clone(), "demo");
        assert_eq!(
            secret_value(
                &demo.get("cloudflare-api-token").await.unwrap(),
                "api-token"
            ),
            fx.cloudflare
        );
        // The keys Secret holds the shares and the root token.
        let keys: Api<Secret> = Api::namespaced(client.clone(), "vault");
        let keys = keys.get("vault-init-keys").await.unwrap();
        let data = keys.data.unwrap();
        assert!((0..5).all(|i| data.contains_key(&format!("unseal-key-{i}"))));
        assert!(data.contains_key("root-token"));
    });

    // Second run: a fresh walk over the finished cluster, without the environment variables
    // (Vault already holds every value), reports every step unchanged and writes nothing but
    // the run's own Lease lock.
    fx.assert_fresh_apply_changes_nothing(&rt, 26);

    // plan against the finished cluster: server-side dry-run says nothing would change.
    let plan = fx.run(&["plan", "--output", "json"], false);
    assert!(plan.status.success(), "{}", text(&plan));
    let doc: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let mut actions = Vec::new();
    collect_actions(&doc, &mut actions);
    assert!(actions.len() > 26, "{}", text(&plan));
    let ops: Vec<String> = actions
        .iter()
        .filter(|a| a["op"] == "create" || a["op"] == "update")
        .map(|a| a["target"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(ops.is_empty(), "plan wants to change objects: {ops:#?}");
}

/// Every `{op, target}` object anywhere in the plan document.
fn collect_actions(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            if m.contains_key("op") && m.contains_key("target") {
                out.push(v.clone());
            }
            m.values().for_each(|x| collect_actions(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_actions(x, out)),
        _ => {}
    }
}

#[test]
fn status_reports_the_kubeconfig_path() {
    let fx = Bootstrap::new(kubestrap_bin!(), &Options::default());
    let out = fx.run(&["status", "--output", "json"], false);
    assert!(out.status.success(), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["kubeconfig"].as_str().unwrap(),
        fx.kubeconfig().display().to_string()
    );
}
