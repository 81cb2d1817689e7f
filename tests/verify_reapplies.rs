//! A done step whose postcondition was broken by hand is re-applied by `apply --resume`: its
//! verify checks what its apply made, not just that something exists (issue 11, "verifies that
//! check what apply did").

#[path = "support/root_vault.rs"]
mod root_vault;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kubestrap_test_support::{
    Bootstrap, Options, finished, kubestrap_bin, runtime, text, wait_for,
};
use serde_json::Value;
use vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest;

/// The ESO role's bound service account names, as Vault holds them.
async fn role_bindings(fx: &Bootstrap) -> Vec<String> {
    let client = fx.client().await;
    let (vault, _forward) =
        root_vault::root_vault(&client, "vault", "vault", "vault-init-keys").await;
    vaultrs::auth::kubernetes::role::read(&vault, "kubernetes", "external-secrets")
        .await
        .unwrap()
        .bound_service_account_names
}

#[test]
fn a_vault_role_rebound_by_hand_is_reapplied_on_resume() {
    let fx = Bootstrap::new(kubestrap_bin!(), &Options::default());
    let _ = fx.apply_all_done();
    let rt = runtime();
    assert_eq!(rt.block_on(role_bindings(&fx)), ["external-secrets"]);

    // Someone rebinds ESO's role to another account: ESO can no longer log in.
    rt.block_on(async {
        let client = fx.client().await;
        let (vault, _forward) =
            root_vault::root_vault(&client, "vault", "vault", "vault-init-keys").await;
        let mut rebound = CreateKubernetesRoleRequest::builder();
        rebound
            .bound_service_account_names(vec!["intruder".to_owned()])
            .bound_service_account_namespaces(vec!["default".to_owned()])
            .token_policies(vec!["external-secrets".to_owned()]);
        vaultrs::auth::kubernetes::role::create(
            &vault,
            "kubernetes",
            "external-secrets",
            Some(&mut rebound),
        )
        .await
        .unwrap();
    });

    let out = fx.run(&["apply", "--resume", "--output", "json"], false);
    assert!(out.status.success(), "{}", text(&out));
    let steps = finished(&out);
    let configure = steps
        .iter()
        .find(|s| s["step"] == "vault.configure")
        .expect("vault.configure reported");
    assert_eq!(configure["status"], "done", "{configure}");
    assert_eq!(configure["changed"], true, "{configure}");
    assert_eq!(rt.block_on(role_bindings(&fx)), ["external-secrets"]);
}

/// Whether a Deployment reports `Available=True`.
fn available(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        })
}

/// The `step_finished` event of `step` among `events`.
fn finished_step<'a>(events: &'a [Value], step: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "step_finished" && e["step"] == step)
        .unwrap_or_else(|| panic!("{step} did not finish: {events:#?}"))
}

/// The auto-unsealer's Deployment matched its manifest while its pod could not run (an image
/// gone from the registry), so the old verify, which only compared the manifest, skipped the
/// step: `--resume` said done while nothing would unseal Vault after its next restart.
#[test]
fn an_unsealer_that_is_not_available_is_applied_again_on_resume() {
    let fx = Bootstrap::new(kubestrap_bin!(), &Options::default());
    let _ = fx.apply_all_done();
    let rt = runtime();

    // Its image cannot be pulled any more, and its pod is replaced (a node drain, an eviction).
    rt.block_on(async {
        fx.set_faults("stuck.vault-unsealer=ImagePullBackOff").await;
        let client = fx.client().await;
        Api::<Pod>::namespaced(client.clone(), "vault")
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels("app.kubernetes.io/name=vault-unsealer"),
            )
            .await
            .unwrap();
        let deployments = Api::<Deployment>::namespaced(client, "vault");
        wait_for(
            &deployments,
            "vault-unsealer",
            "the unsealer Deployment unavailable",
            |d| !available(d),
        )
        .await;
    });

    // Resume sees it, applies the step again and waits; meanwhile the image is back.
    let (events, status) = fx.apply_then(
        &["--resume"],
        |e| e["event"] == "step_verify_failed" && e["step"] == "vault.auto-unseal",
        || rt.block_on(fx.set_faults("")),
    );
    let reason = events
        .iter()
        .find(|e| e["event"] == "step_verify_failed" && e["step"] == "vault.auto-unseal")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    assert!(
        reason.contains("Deployment vault/vault-unsealer"),
        "the reason names the Deployment: {reason}"
    );
    assert!(status.success(), "{events:#?}");
    let step = finished_step(&events, "vault.auto-unseal");
    assert_eq!(step["status"], "done", "{step}");
    rt.block_on(async {
        let deployments = Api::<Deployment>::namespaced(fx.client().await, "vault");
        assert!(available(&deployments.get("vault-unsealer").await.unwrap()));
    });
}

/// Flux's GitRepository CRD.
const GIT_REPOSITORIES: &str = "gitrepositories.source.toolkit.fluxcd.io";

/// A Flux CRD whose deletion was asked for while something held it (a finalizer) is still
/// Established and still as install.yaml says, so flux.install's verify holds; the old
/// flux.ready verify, which only looked at the controllers, skipped the step while every Flux
/// object was about to go. Now resume stops there and says what to do; once the deletion is
/// let through, resume installs the CRD again.
#[test]
fn a_flux_crd_being_deleted_stops_resume_at_flux_ready() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};

    let fx = Bootstrap::new(kubestrap_bin!(), &Options::default());
    let _ = fx.apply_all_done();
    let rt = runtime();
    let crds = rt.block_on(async { Api::<CustomResourceDefinition>::all(fx.client().await) });
    let hold = |finalizers: Value| {
        rt.block_on(async {
            crds.patch(
                GIT_REPOSITORIES,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"finalizers": finalizers}})),
            )
            .await
            .unwrap();
        });
    };
    hold(serde_json::json!(["example.com/hold"]));
    rt.block_on(async {
        crds.delete(GIT_REPOSITORIES, &DeleteParams::default())
            .await
            .unwrap();
    });

    let out = fx.run(&["apply", "--resume", "--output", "json"], false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let steps = finished(&out);
    let ready = steps
        .iter()
        .find(|s| s["step"] == "flux.ready")
        .expect("flux.ready reported");
    assert_eq!(ready["status"], "failed", "{ready}");
    let error = ready["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "CustomResourceDefinition {GIT_REPOSITORIES} is being deleted"
        )) && error.contains("kubestrap apply --resume"),
        "{error}"
    );

    // The deletion is let through; resume puts Flux back.
    hold(serde_json::json!(null));
    let out = fx.run(&["apply", "--resume", "--output", "json"], false);
    assert!(out.status.success(), "{}", text(&out));
    let steps = finished(&out);
    let install = steps
        .iter()
        .find(|s| s["step"] == "flux.install")
        .expect("flux.install reported");
    assert_eq!(install["changed"], true, "{install}");
    rt.block_on(async {
        assert!(crds.get(GIT_REPOSITORIES).await.is_ok());
    });
}

/// A share deleted from the keys Secret by hand: the unsealer Deployment still matches its
/// manifest and runs, but mounts one share too few (its volume is `optional`), so it could no
/// longer unseal Vault after a restart. The old verify skipped the step; now resume stops at
/// it naming the missing entry, and passes once the share is back.
#[test]
fn a_share_missing_from_the_keys_secret_stops_resume_at_the_unsealer() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};

    let fx = Bootstrap::new(kubestrap_bin!(), &Options::default());
    let _ = fx.apply_all_done();
    let rt = runtime();
    let secrets = rt.block_on(async { Api::<Secret>::namespaced(fx.client().await, "vault") });
    let set_share = |value: Value| {
        rt.block_on(async {
            secrets
                .patch(
                    "vault-init-keys",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"data": {"unseal-key-2": value}})),
                )
                .await
                .unwrap();
        });
    };
    let saved = rt.block_on(async { secrets.get("vault-init-keys").await.unwrap() });
    let share = serde_json::to_value(&saved.data.unwrap()["unseal-key-2"]).unwrap();
    set_share(Value::Null);

    let out = fx.run(&["apply", "--resume", "--output", "json"], false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let steps = finished(&out);
    let step = steps
        .iter()
        .find(|s| s["step"] == "vault.auto-unseal")
        .expect("vault.auto-unseal reported");
    assert_eq!(step["status"], "failed", "{step}");
    let error = step["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Secret vault/vault-init-keys lacks unseal-key-2")
            && error.contains("kubestrap apply --resume"),
        "{error}"
    );

    set_share(share);
    let out = fx.run(&["apply", "--resume", "--output", "json"], false);
    assert!(out.status.success(), "{}", text(&out));
}
