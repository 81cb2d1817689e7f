//! A real OpenBao server as the Vault pod's process (`SandboxConfig::vault_server`): its
//! kubernetes auth reviews logins with the sandbox API's TokenReview, reached as
//! `https://kubernetes.default.svc` through the sandbox's proxy, with TLS checked against the
//! configured CA and the review's bearer (the login JWT) authenticated and authorised (RBAC) as
//! a real API server would. Skips loudly without a server binary (`KUBESTRAP_VAULT_SERVER`).

use std::path::PathBuf;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kubestrap_sandbox::{SandboxConfig, SandboxHandle};
use kubestrap_test_support::{
    apply, forward, start_sandbox, vault_client, vault_server_or_skip, vault_wait_active,
    wait_pod_running, within,
};
use serde_json::json;
use vaultrs::api::auth::kubernetes::requests::{
    ConfigureKubernetesAuthRequest, CreateKubernetesRoleRequest,
};
use vaultrs::client::VaultClient;
use vaultrs::error::ClientError;

/// A sandbox whose preinstalled Vault pod runs `server`, initialised and unsealed through a
/// port-forward; returns the forward's address and the root token.
async fn unsealed(server: PathBuf) -> (SandboxHandle, Client, String, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cfg = SandboxConfig::new(tmp.path().join("sandbox"));
    cfg.preinstall_vault = true;
    cfg.vault_server = Some(server);
    let (h, c) = start_sandbox(cfg).await;
    wait_pod_running(&c, "vault", "vault-0").await;
    let addr = forward(&c, "vault", "vault-0", 8200).await;
    let anon = vault_client(&addr, "");
    let init = within(
        "init",
        vaultrs::sys::start_initialization(&anon, 1, 1, None),
    )
    .await
    .expect("init");
    assert!(
        init.root_token.starts_with("s."),
        "OpenBao's legacy token prefix"
    );
    let st = within(
        "unseal",
        vaultrs::sys::unseal(&anon, Some(init.keys[0].clone()), None, None),
    )
    .await
    .expect("unseal");
    assert!(!st.sealed);
    vault_wait_active(&addr).await;
    (h, c, addr, init.root_token, tmp)
}

async fn token(c: &Client, ns: &str, sa: &str, audiences: &[&str]) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    within(
        "token request",
        sas.create_token_request(sa, &PostParams::default(), &tr),
    )
    .await
    .expect("token")
    .status
    .expect("status")
    .token
}

async fn login(admin_addr: &str, role: &str, jwt: &str) -> Result<String, u16> {
    let anon = vault_client(admin_addr, "");
    match within(
        "login",
        vaultrs::auth::kubernetes::login(&anon, "kubernetes", role, jwt),
    )
    .await
    {
        Ok(auth) => Ok(auth.client_token),
        Err(ClientError::APIError { code, .. }) => Err(code),
        Err(e) => panic!("login {role}: {e}"),
    }
}

/// `system:auth-delegator` for `apps/reader` (create TokenReviews and SubjectAccessReviews).
fn review_binding() -> serde_json::Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "reader-tokenreview"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "apps"}]})
}

async fn configure(admin: &VaultClient, host: &str, ca: &str) {
    within(
        "configure",
        vaultrs::auth::kubernetes::configure(
            admin,
            "kubernetes",
            host,
            Some(
                ConfigureKubernetesAuthRequest::builder()
                    .kubernetes_ca_cert(ca.to_string())
                    .disable_local_ca_jwt(true),
            ),
        ),
    )
    .await
    .expect("configure");
}

#[tokio::test]
async fn kubernetes_auth_reviews_logins_with_the_sandbox_api_through_the_proxy() {
    let Some(server) = vault_server_or_skip(
        "kubernetes_auth_reviews_logins_with_the_sandbox_api_through_the_proxy",
    ) else {
        return;
    };
    let (h, c, addr, root, _tmp) = unsealed(server).await;
    let admin = vault_client(&addr, &root);
    within(
        "auth",
        vaultrs::sys::auth::enable(&admin, "kubernetes", "kubernetes", None),
    )
    .await
    .expect("enable");
    configure(&admin, "https://kubernetes.default.svc", h.ca_pem()).await;
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
    )
    .await;
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": "apps"}}),
    )
    .await;
    let role = |audience: Option<&str>| {
        let mut r = CreateKubernetesRoleRequest::builder();
        r.bound_service_account_names(vec!["reader".into()])
            .bound_service_account_namespaces(vec!["apps".into()])
            .token_policies(vec!["default".into()]);
        if let Some(a) = audience {
            r.audience(a.to_string());
        }
        r
    };
    for (name, audience) in [("plain", None), ("bound", Some("vault"))] {
        within(
            "role",
            vaultrs::auth::kubernetes::role::create(
                &admin,
                "kubernetes",
                name,
                Some(&mut role(audience)),
            ),
        )
        .await
        .expect("role");
    }

    // The server has no pod token, so each review's bearer is the login JWT itself: the
    // account needs `create tokenreviews`, as kubestrap grants ESO's (system:auth-delegator).
    apply(&c, review_binding()).await;

    // TLS through the tunnel is checked against the configured CA. (First, before any login:
    // OpenBao keeps pooled connections across a CA change.)
    let api_token = token(&c, "apps", "reader", &[]).await;
    let other_dir = tempfile::tempdir().expect("tmp");
    let (other, _) = start_sandbox(SandboxConfig::new(other_dir.path())).await;
    configure(&admin, "https://kubernetes.default.svc", other.ca_pem()).await;
    assert_eq!(
        login(&addr, "plain", &api_token).await,
        Err(403),
        "unknown CA"
    );
    other.shutdown().await.expect("shutdown");
    configure(&admin, "https://kubernetes.default.svc", h.ca_pem()).await;

    // The login JWT is a valid API token: the server presents it as the TokenReview's bearer.
    let client_token = login(&addr, "plain", &api_token).await.expect("login");
    let me = within(
        "lookup-self",
        vaultrs::token::lookup_self(&vault_client(&addr, &client_token)),
    )
    .await
    .expect("lookup");
    assert_eq!(me.meta.expect("meta")["service_account_name"], "reader");

    // The review is an API request like any other: without the grant it is forbidden.
    let crbs: Api<ClusterRoleBinding> = Api::all(c.clone());
    within(
        "unbind",
        crbs.delete("reader-tokenreview", &DeleteParams::default()),
    )
    .await
    .expect("delete binding");
    assert_eq!(
        login(&addr, "plain", &api_token).await,
        Err(403),
        "no grant"
    );
    apply(&c, review_binding()).await;
    login(&addr, "plain", &api_token)
        .await
        .expect("granted again");
    assert_eq!(
        login(&addr, "bound", &api_token).await,
        Err(403),
        "the role's audience is not in the token"
    );

    // An audience-bound role works with a token for both the role and the API server.
    let both = token(
        &c,
        "apps",
        "reader",
        &["vault", "https://kubernetes.default.svc.cluster.local"],
    )
    .await;
    login(&addr, "bound", &both).await.expect("bound login");

    // A token bound only to `vault` is no bearer token for the API server (401), so a Vault
    // without a reviewer token of its own (outside the cluster) cannot review it: denied, as
    // against a real cluster.
    let vault_only = token(&c, "apps", "reader", &["vault"]).await;
    assert_eq!(login(&addr, "bound", &vault_only).await, Err(403));

    // The review is real: a deleted service account's token is refused.
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "apps");
    within("delete sa", sas.delete("reader", &DeleteParams::default()))
        .await
        .expect("delete");
    assert_eq!(login(&addr, "plain", &api_token).await, Err(403));
    apply(
        &c,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": "apps"}}),
    )
    .await;
    let fresh = token(&c, "apps", "reader", &[]).await;
    login(&addr, "plain", &fresh).await.expect("new account");

    // Names outside the cluster do not resolve.
    configure(&admin, "https://kube.example.invalid", h.ca_pem()).await;
    assert_eq!(
        login(&addr, "plain", &fresh).await,
        Err(403),
        "no such host"
    );
    configure(&admin, "https://kubernetes.default.svc:443", h.ca_pem()).await;
    login(&addr, "plain", &fresh).await.expect("explicit port");
    h.shutdown().await.expect("shutdown");
}
