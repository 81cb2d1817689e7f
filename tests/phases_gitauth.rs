//! Phase 3 on a fleet made by `flux bootstrap`: the repository holds
//! `clusters/sandbox/flux-system/gotk-sync.yaml`, so Flux's own Kustomization manages the
//! GitRepository (`secretRef: flux-system`) and re-applies it on every reconcile. The git-auth
//! handover must end with Flux reading Git through ESO-managed credentials, with no bootstrap
//! copy of the token left, and stay that way through a later Flux reconcile.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kubestrap_test_support::{Bootstrap, Options, kubestrap_bin, runtime, wait_for};
use serde_json::json;

const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

fn flux_api(client: &kube::Client, group: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind));
    Api::namespaced_with(client.clone(), "flux-system", &ar)
}

/// `flux reconcile`: sets the requestedAt annotation and waits until the controller handled
/// that request and reports Ready=True.
async fn reconcile(api: &Api<DynamicObject>, name: &str, token: &str) {
    let patch = json!({"metadata": {"annotations": {REQUESTED_AT: token}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        api,
        name,
        "reconcile handled and Ready",
        |o: &DynamicObject| {
            o.data["status"]["lastHandledReconcileAt"] == token
                && o.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
        },
    )
    .await;
}

fn eso_owned(s: &Secret) -> bool {
    s.metadata.owner_references.iter().flatten().any(|o| {
        o.kind == "ExternalSecret" && o.name == "flux-git-auth" && o.controller == Some(true)
    })
}

#[test]
fn gotk_sync_in_git_keeps_flux_on_the_eso_secret_after_a_reconcile() {
    let fx = Bootstrap::new(kubestrap_bin!(), &Options::default());
    let _ = fx.apply_all_done();
    let rt = runtime();
    rt.block_on(async {
        let client = fx.client().await;
        let repos = flux_api(&client, "source.toolkit.fluxcd.io", "GitRepository");
        let kustomizations = flux_api(&client, "kustomize.toolkit.fluxcd.io", "Kustomization");
        // The GitRepository is managed from Git: Flux's root Kustomization applied it.
        let repo = repos.get("flux-system").await.unwrap();
        assert_eq!(
            repo.metadata
                .labels
                .as_ref()
                .map(|l| l["kustomize.toolkit.fluxcd.io/name"].as_str()),
            Some("flux-system"),
            "the fleet's gotk-sync.yaml must manage the GitRepository"
        );
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "flux-system");
        assert!(eso_owned(&secrets.get("flux-system").await.unwrap()));

        // A later Flux reconcile re-applies gotk-sync.yaml from Git, then the source fetches
        // Git again with whatever Secret the GitRepository names.
        for round in ["after-bootstrap-1", "after-bootstrap-2"] {
            reconcile(&kustomizations, "flux-system", round).await;
            reconcile(&repos, "flux-system", round).await;
        }
        let repo = repos.get("flux-system").await.unwrap();
        assert_eq!(repo.data["spec"]["secretRef"]["name"], "flux-system");
        assert!(
            repo.data["status"]["artifact"]["revision"].is_string(),
            "{:?}",
            repo.data["status"]
        );
        // Flux reads ESO's Secret, holding the token from Vault; no other copy exists.
        let git = secrets.get("flux-system").await.unwrap();
        assert!(eso_owned(&git), "{:?}", git.metadata);
        assert_eq!(
            git.data.as_ref().unwrap()["password"].0,
            fx.github.as_bytes()
        );
        let copies: Vec<String> = secrets
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|s| {
                s.data
                    .iter()
                    .flatten()
                    .any(|(_, v)| v.0 == fx.github.as_bytes())
            })
            .map(|s| s.metadata.name.unwrap_or_default())
            .collect();
        assert_eq!(copies, ["flux-system"]);
    });

    // kubestrap agrees: a fresh run over the reconciled cluster changes nothing.
    let again = fx.run(&["apply", "--fresh", "--output", "json"], false);
    assert!(
        again.status.success(),
        "{}",
        kubestrap_test_support::text(&again)
    );
    let changed: Vec<serde_json::Value> = kubestrap_test_support::finished(&again)
        .into_iter()
        .filter(|s| s["changed"] == true)
        .collect();
    assert!(changed.is_empty(), "{changed:#?}");
}
