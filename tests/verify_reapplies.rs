//! A done step whose postcondition was broken by hand is re-applied by `apply --resume`: its
//! verify checks what its apply made, not just that something exists (issue 11, "verifies that
//! check what apply did").

#[path = "support/root_vault.rs"]
mod root_vault;

use kubestrap_test_support::{Bootstrap, Options, finished, kubestrap_bin, runtime, text};
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
