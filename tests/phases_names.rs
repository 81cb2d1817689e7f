//! End to end with a non-default value for every name the playbook offers: the templates and the
//! steps must honour each one, and the chart stand-ins name their objects by the upstream Helm
//! fullname rule (release `bank` of the vault chart runs pod `bank-vault-0`, release `eso` of
//! the external-secrets chart runs Deployment `eso-external-secrets`). A second `apply --fresh`
//! then changes and writes nothing.

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::Api;
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kubestrap_test_support::{
    Bootstrap, Options, STEPS, copy_tree, kubestrap_bin, runtime, text, workspace_root,
};

const VAULT_NS: &str = "secrets-mgmt";
const VAULT_FULLNAME: &str = "bank-vault";
const KEYS: &str = "bank-keys";
const ESO_NS: &str = "ops";
const STORE: &str = "bank-store";
const GIT_ES: &str = "git-creds";
const BOOTSTRAP: &str = "git-bootstrap";

fn api(
    client: &kube::Client,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn ready(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The sandbox fleet with the demo app's ExternalSecret pointed at the playbook's store, and
/// the gotk-sync.yaml `flux bootstrap --secret-name git-bootstrap --interval 2m` would write.
fn fleet(dir: &Path) {
    copy_tree(&workspace_root().join("playbooks/sandbox/git/fleet"), dir);
    let sync = dir.join("clusters/sandbox/flux-system/gotk-sync.yaml");
    let text = std::fs::read_to_string(&sync).unwrap();
    assert!(text.contains("    name: flux-system\n  url:") && text.contains("interval: 1m0s"));
    let text = text
        .replace(
            "    name: flux-system\n  url:",
            &format!("    name: {BOOTSTRAP}\n  url:"),
        )
        .replace("interval: 1m0s", "interval: 2m0s");
    std::fs::write(&sync, text).unwrap();
    let es = dir.join("apps/sandbox/external-secret.yaml");
    let text = std::fs::read_to_string(&es).unwrap();
    assert!(text.contains("name: vault-backend"));
    std::fs::write(
        &es,
        text.replace("name: vault-backend", &format!("name: {STORE}")),
    )
    .unwrap();
}

fn options(fleet: &Path) -> Options {
    Options {
        fleet: Some(fleet.to_path_buf()),
        flux_extra: "bootstrap_secret = \"git-bootstrap\"\ninterval = \"2m\"\n",
        vault_extra: "namespace = \"secrets-mgmt\"\nrelease = \"bank\"\nkeys_secret = \"bank-keys\"\nkv_mount = \"kv\"\nauth_mount = \"k8s\"\neso_role = \"eso-reader\"\neso_policy = \"eso-read\"\n",
        eso_extra: "namespace = \"ops\"\nrelease = \"eso\"\nservice_account = \"eso-sa\"\n",
        store: STORE,
        external_secret: GIT_ES,
        ..Options::default()
    }
}

#[path = "support/root_vault.rs"]
mod root_vault;

/// Vault through a port-forward to the chart's Service, with the root token of the keys Secret.
async fn vault(
    client: &kube::Client,
) -> (
    vaultrs::client::VaultClient,
    kubestrap::kube::portforward::PortForward,
) {
    root_vault::root_vault(client, VAULT_NS, VAULT_FULLNAME, KEYS).await
}

#[test]
fn non_default_names_everywhere_then_a_fresh_run_changes_nothing() {
    let fleet_dir = tempfile::tempdir().unwrap();
    fleet(fleet_dir.path());
    let fx = Bootstrap::new(kubestrap_bin!(), &options(fleet_dir.path()));
    let out = fx.apply_all_done();
    let all = format!("{}{}", text(&out), fx.checkpoint_text());
    assert!(!all.contains(&fx.github) && !all.contains(&fx.cloudflare));

    let rt = runtime();
    rt.block_on(async {
        let client = fx.client().await;
        // Vault: the HelmRelease and the chart's objects, named by the fullname rule.
        let hr = api(
            &client,
            VAULT_NS,
            "helm.toolkit.fluxcd.io",
            "v2",
            "HelmRelease",
        );
        assert!(ready(&hr.get("bank").await.unwrap()));
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), VAULT_NS);
        assert!(sts.get_opt(VAULT_FULLNAME).await.unwrap().is_some());
        let pods: Api<Pod> = Api::namespaced(client.clone(), VAULT_NS);
        let pod = pods.get("bank-vault-0").await.unwrap();
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Running"));
        let keys: Api<Secret> = Api::namespaced(client.clone(), VAULT_NS);
        assert!(keys.get_opt(KEYS).await.unwrap().is_some());
        let unsealer: Api<Deployment> = Api::namespaced(client.clone(), VAULT_NS);
        assert!(unsealer.get_opt("vault-unsealer").await.unwrap().is_some());
        for ns in ["vault", "external-secrets"] {
            let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
            assert!(
                nss.get_opt(ns).await.unwrap().is_none(),
                "namespace {ns} was created"
            );
        }
        // Vault's configuration under the playbook's mounts, role and policy.
        let (vault, _forward) = vault(&client).await;
        let github: HashMap<String, String> = vaultrs::kv2::read(&vault, "kv", "bootstrap/github")
            .await
            .unwrap();
        assert_eq!(github["token"], fx.github);
        let role = vaultrs::auth::kubernetes::role::read(&vault, "k8s", "eso-reader")
            .await
            .unwrap();
        assert_eq!(role.bound_service_account_names, ["eso-sa"]);
        assert_eq!(role.bound_service_account_namespaces, [ESO_NS]);
        assert_eq!(role.token_policies, ["eso-read"]);
        assert!(vaultrs::sys::policy::read(&vault, "eso-read").await.is_ok());

        // ESO: the chart's controller Deployment and the playbook's service account.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ESO_NS);
        assert!(
            deployments
                .get_opt("eso-external-secrets")
                .await
                .unwrap()
                .is_some()
        );
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ESO_NS);
        assert!(accounts.get_opt("eso-sa").await.unwrap().is_some());
        let store: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "external-secrets.io",
                "v1",
                "ClusterSecretStore",
            )),
        );
        let store = store.get(STORE).await.unwrap();
        assert!(ready(&store));
        assert_eq!(store.data["spec"]["provider"]["vault"]["path"], "kv");
        assert_eq!(
            store.data["spec"]["provider"]["vault"]["server"],
            "http://bank-vault.secrets-mgmt.svc:8200"
        );

        // Flux: the sync objects are named after Flux's namespace, never after the Secret.
        let repos = api(
            &client,
            "flux-system",
            "source.toolkit.fluxcd.io",
            "v1",
            "GitRepository",
        );
        let repo = repos.get("flux-system").await.unwrap();
        assert_eq!(repo.data["spec"]["interval"], "2m0s");
        assert!(repos.get_opt(BOOTSTRAP).await.unwrap().is_none());
        let ks = api(
            &client,
            "flux-system",
            "kustomize.toolkit.fluxcd.io",
            "v1",
            "Kustomization",
        );
        assert!(ks.get_opt(BOOTSTRAP).await.unwrap().is_none());
        assert!(ready(&ks.get("flux-system").await.unwrap()));

        // Git auth: the ExternalSecret of the playbook's name took over the bootstrap Secret
        // the GitRepository names.
        let ess = api(
            &client,
            "flux-system",
            "external-secrets.io",
            "v1",
            "ExternalSecret",
        );
        assert!(ready(&ess.get(GIT_ES).await.unwrap()));
        assert_eq!(repo.data["spec"]["secretRef"]["name"], BOOTSTRAP);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "flux-system");
        let git = secrets.get(BOOTSTRAP).await.unwrap();
        assert_eq!(
            git.metadata.owner_references.unwrap()[0].name,
            GIT_ES,
            "Flux reads a Secret the ExternalSecret owns"
        );
        assert_eq!(git.data.unwrap()["password"].0, fx.github.as_bytes());
        assert!(secrets.get_opt(GIT_ES).await.unwrap().is_none());
        // The demo app's secret came through the playbook's store.
        let demo: Api<Secret> = Api::namespaced(client.clone(), "demo");
        let demo = demo.get("cloudflare-api-token").await.unwrap();
        assert_eq!(demo.data.unwrap()["api-token"].0, fx.cloudflare.as_bytes());
    });

    // A fresh walk over the finished cluster changes nothing and writes nothing.
    fx.assert_fresh_apply_changes_nothing(&rt, STEPS);
}
