//! The sandbox Vault driven by vaultrs (and reqwest where vaultrs has no call) over a real TCP
//! listener: seal lifecycle, KV v2, policies and ACLs, kubernetes auth, persistence.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use kubestrap_sandbox::vault::{
    ReviewError, ReviewRequest, ReviewedAccount, TokenReviewer, VaultServer, VaultStatus,
};
use kubestrap_test_support::vault_client;
use serde_json::{Value, json};
use vaultrs::client::{Client as _, VaultClient};
use vaultrs::error::ClientError;

const WAIT: Duration = Duration::from_secs(10);

/// Every await on the server goes through this, so a hang fails the test instead of blocking.
async fn t<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("the sandbox vault did not answer in time")
}

/// Accepts the JWTs it was given, remembering which host and audiences each review named.
#[derive(Default)]
struct FakeReviewer {
    accounts: Mutex<HashMap<String, ReviewedAccount>>,
    calls: Mutex<Vec<(String, Vec<String>)>>,
}

#[async_trait]
impl TokenReviewer for FakeReviewer {
    async fn review(&self, request: &ReviewRequest<'_>) -> Result<ReviewedAccount, ReviewError> {
        self.calls.lock().unwrap().push((
            request.kubernetes_host.to_string(),
            request.audiences.to_vec(),
        ));
        self.accounts
            .lock()
            .unwrap()
            .get(request.jwt)
            .cloned()
            .ok_or_else(|| ReviewError::Rejected("token not authenticated".into()))
    }
}

struct Sandbox {
    server: Arc<VaultServer>,
    task: tokio::task::JoinHandle<()>,
    addr: String,
    storage: PathBuf,
    reviewer: Arc<FakeReviewer>,
    _dir: tempfile::TempDir,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start() -> Sandbox {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("vault.json");
    let reviewer = Arc::new(FakeReviewer::default());
    let server = VaultServer::open(storage.clone(), reviewer.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let task = server.serve_tcp(listener);
    Sandbox {
        server,
        task,
        addr,
        storage,
        reviewer,
        _dir: dir,
    }
}

impl Sandbox {
    fn client(&self, token: &str) -> VaultClient {
        vault_client(&self.addr, token)
    }

    /// Init with one share and unseal; returns the root token and the share.
    async fn ready(&self) -> (String, String) {
        let client = self.client("");
        let init = t(vaultrs::sys::start_initialization(&client, 1, 1, None))
            .await
            .unwrap();
        let share = init.keys[0].clone();
        let status = t(vaultrs::sys::unseal(
            &client,
            Some(share.clone()),
            None,
            None,
        ))
        .await
        .unwrap();
        assert!(!status.sealed);
        (init.root_token, share)
    }

    async fn raw(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let http = reqwest::Client::new();
        let mut req = http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.addr),
        );
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token);
        }
        let resp = t(req.send()).await.unwrap();
        let status = resp.status().as_u16();
        (status, t(resp.text()).await.unwrap())
    }
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, Vec<String>) {
    match result {
        Err(ClientError::APIError { code, errors }) => (code, errors),
        other => panic!("expected a Vault API error, got {other:?}"),
    }
}

fn jwt(namespace: &str, name: &str, uid: &str) -> String {
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = json!({
        "iss": "https://kubernetes.default.svc",
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": ["vault"],
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
    });
    format!(
        "{}.{}.c2lnbmF0dXJl",
        enc.encode(br#"{"alg":"RS256","kid":"k"}"#),
        enc.encode(claims.to_string())
    )
}

#[tokio::test]
async fn init_unseal_progress_wrong_key_and_reset() {
    let vault = start().await;
    let client = vault.client("");
    let mut status_rx = vault.server.subscribe();
    assert!(matches!(
        t(vaultrs::sys::status(&client)).await.unwrap(),
        vaultrs::sys::ServerStatus::UNINITIALIZED
    ));
    let (code, body) = vault.raw("GET", "/v1/sys/seal-status", None).await;
    assert_eq!(code, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["initialized"], false);
    assert_eq!(body["sealed"], true);

    let init = t(vaultrs::sys::start_initialization(&client, 3, 2, None))
        .await
        .unwrap();
    assert_eq!(init.keys.len(), 3);
    assert_eq!(init.keys_base64.len(), 3);
    assert!(init.root_token.starts_with("hvs."));
    let again = t(vaultrs::sys::start_initialization(&client, 3, 2, None)).await;
    assert_eq!(
        api_error(again),
        (400, vec!["Vault is already initialized".to_string()])
    );
    assert!(matches!(
        t(vaultrs::sys::status(&client)).await.unwrap(),
        vaultrs::sys::ServerStatus::SEALED
    ));

    // One share: progress 1, still sealed, a nonce appears.
    let first = t(vaultrs::sys::unseal(
        &client,
        Some(init.keys[0].clone()),
        None,
        None,
    ))
    .await
    .unwrap();
    assert!(first.sealed);
    assert_eq!((first.threshold, first.n_shares, first.progress), (2, 3, 1));
    let (_, body) = vault.raw("GET", "/v1/sys/seal-status", None).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(body["nonce"], "");

    // Reset forgets it.
    let reset = t(vaultrs::sys::unseal(&client, None, Some(true), None))
        .await
        .unwrap();
    assert_eq!(reset.progress, 0);

    // A tampered share is only detected at the threshold, and progress starts over.
    let mut forged = hex::decode(&init.keys[1]).unwrap();
    forged[5] ^= 0xff;
    t(vaultrs::sys::unseal(
        &client,
        Some(init.keys[0].clone()),
        None,
        None,
    ))
    .await
    .unwrap();
    let wrong = t(vaultrs::sys::unseal(
        &client,
        Some(hex::encode(forged)),
        None,
        None,
    ))
    .await;
    let (code, _) = api_error(wrong);
    assert_eq!(code, 400);
    let (_, body) = vault.raw("GET", "/v1/sys/seal-status", None).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["progress"].as_u64(), body["sealed"].as_bool()),
        (Some(0), Some(true))
    );

    // Undecodable key.
    let (code, errors) = api_error(
        t(vaultrs::sys::unseal(
            &client,
            Some("zz!".into()),
            None,
            None,
        ))
        .await,
    );
    assert_eq!(code, 400);
    assert_eq!(errors, ["'key' must be a valid hex or base64 string"]);

    // Hex and base64 forms of two real shares unseal it.
    t(vaultrs::sys::unseal(
        &client,
        Some(init.keys[2].clone()),
        None,
        None,
    ))
    .await
    .unwrap();
    let done = t(vaultrs::sys::unseal(
        &client,
        Some(init.keys_base64[0].clone()),
        None,
        None,
    ))
    .await
    .unwrap();
    assert!(!done.sealed);
    assert_eq!(done.progress, 0);
    assert!(done.cluster_id.is_some());
    assert!(matches!(
        t(vaultrs::sys::status(&client)).await.unwrap(),
        vaultrs::sys::ServerStatus::OK
    ));
    let health = t(vaultrs::sys::health(&client)).await.unwrap();
    assert!(health.initialized && !health.sealed);
    t(status_rx.wait_for(|s| !s.sealed)).await.unwrap();

    // sys/seal needs a token, then seals.
    let (code, _) = vault.raw("PUT", "/v1/sys/seal", None).await;
    assert_eq!(code, 403);
    t(vaultrs::sys::seal(&vault.client(&init.root_token)))
        .await
        .unwrap();
    assert_eq!(
        vault.server.status(),
        VaultStatus {
            initialized: true,
            sealed: true
        }
    );
}

#[tokio::test]
async fn sealed_vault_answers_503_and_health_codes() {
    let vault = start().await;
    let (code, body) = vault.raw("GET", "/v1/sys/health", None).await;
    assert_eq!(code, 501);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body.get("errors").is_none());
    assert_eq!(body["initialized"], false);
    let (code, body) = vault.raw("HEAD", "/v1/sys/health", None).await;
    assert_eq!((code, body.as_str()), (501, ""));
    let (code, body) = vault.raw("GET", "/v1/secret/data/x", Some("hvs.x")).await;
    assert_eq!(code, 503);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"errors": ["Vault is sealed"]})
    );

    let client = vault.client("");
    let init = t(vaultrs::sys::start_initialization(&client, 1, 1, None))
        .await
        .unwrap();
    let (code, _) = vault.raw("GET", "/v1/sys/health", None).await;
    assert_eq!(code, 503);
    let (code, _) = vault
        .raw("GET", "/v1/sys/health?sealedcode=200", None)
        .await;
    assert_eq!(code, 200);
    let (code, _) = vault
        .raw("GET", "/v1/sys/health?sealedcode=oops", None)
        .await;
    assert_eq!(code, 400);
    let root = vault.client(&init.root_token);
    let (code, errors) = api_error(t(vaultrs::sys::mount::list(&root)).await);
    assert_eq!((code, errors), (503, vec!["Vault is sealed".to_string()]));
    let (code, _) = vault.raw("GET", "/v1/sys/init", None).await;
    assert_eq!(code, 200);
    let wrapped = t(reqwest::Client::new()
        .get(format!("{}/v1/sys/seal-status", vault.addr))
        .header("X-Vault-Wrap-TTL", "60s")
        .send())
    .await
    .unwrap();
    assert_eq!(wrapped.status().as_u16(), 501);
}

#[tokio::test]
async fn kv_v2_versions_cas_list_metadata_and_deletes() {
    let vault = start().await;
    let (root, _) = vault.ready().await;
    let client = vault.client(&root);
    t(vaultrs::sys::mount::enable(
        &client, "secret", "kv-v2", None,
    ))
    .await
    .unwrap();
    let (code, errors) = api_error(
        t(vaultrs::sys::mount::enable(
            &client, "secret", "kv-v2", None,
        ))
        .await,
    );
    assert_eq!(
        (code, errors),
        (400, vec!["path is already in use at secret/".to_string()])
    );
    let mounts = t(vaultrs::sys::mount::list(&client)).await.unwrap();
    let secret = &mounts["secret/"];
    assert_eq!(secret.mount_type, "kv");
    assert_eq!(secret.options.as_ref().unwrap()["version"], "2");
    assert!(mounts.contains_key("sys/"));

    let missing = t(vaultrs::kv2::read::<Value>(&client, "secret", "app/db")).await;
    assert_eq!(api_error(missing), (404, vec![]));

    let v1 = t(vaultrs::kv2::set(
        &client,
        "secret",
        "app/db",
        &json!({"password": "one"}),
    ))
    .await
    .unwrap();
    assert_eq!(v1.version, 1);
    let v2 = t(vaultrs::kv2::set_with_options(
        &client,
        "secret",
        "app/db",
        &json!({"password": "two"}),
        vaultrs::api::kv2::requests::SetSecretRequestOptions { cas: 1 },
    ))
    .await
    .unwrap();
    assert_eq!(v2.version, 2);
    let stale = t(vaultrs::kv2::set_with_options(
        &client,
        "secret",
        "app/db",
        &json!({"password": "three"}),
        vaultrs::api::kv2::requests::SetSecretRequestOptions { cas: 1 },
    ))
    .await;
    assert_eq!(
        api_error(stale),
        (
            400,
            vec!["check-and-set parameter did not match the current version".to_string()]
        )
    );
    let latest: Value = t(vaultrs::kv2::read(&client, "secret", "app/db"))
        .await
        .unwrap();
    assert_eq!(latest["password"], "two");
    let first: Value = t(vaultrs::kv2::read_version(&client, "secret", "app/db", 1))
        .await
        .unwrap();
    assert_eq!(first["password"], "one");

    t(vaultrs::kv2::set(
        &client,
        "secret",
        "app/api/token",
        &json!({"t": "x"}),
    ))
    .await
    .unwrap();
    let keys = t(vaultrs::kv2::list(&client, "secret", "app"))
        .await
        .unwrap();
    assert_eq!(keys, ["api/", "db"]);
    let meta = t(vaultrs::kv2::read_metadata(&client, "secret", "app/db"))
        .await
        .unwrap();
    assert_eq!(meta.current_version, 2);
    assert_eq!(meta.versions.len(), 2);

    // Soft delete: 404 with the metadata body, undelete brings it back.
    t(vaultrs::kv2::delete_latest(&client, "secret", "app/db"))
        .await
        .unwrap();
    let (code, body) = vault
        .raw("GET", "/v1/secret/data/app/db", Some(&root))
        .await;
    assert_eq!(code, 404);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["data"]["data"].is_null());
    assert_eq!(body["data"]["metadata"]["version"], 2);
    t(vaultrs::kv2::undelete_versions(
        &client,
        "secret",
        "app/db",
        vec![2],
    ))
    .await
    .unwrap();
    let back: Value = t(vaultrs::kv2::read(&client, "secret", "app/db"))
        .await
        .unwrap();
    assert_eq!(back["password"], "two");
    t(vaultrs::kv2::destroy_versions(
        &client,
        "secret",
        "app/db",
        vec![1],
    ))
    .await
    .unwrap();
    let destroyed = t(vaultrs::kv2::read_version::<Value>(
        &client, "secret", "app/db", 1,
    ))
    .await;
    assert!(destroyed.is_err());
    t(vaultrs::kv2::delete_metadata(&client, "secret", "app/db"))
        .await
        .unwrap();
    let gone = t(vaultrs::kv2::read_metadata(&client, "secret", "app/db")).await;
    assert_eq!(api_error(gone), (404, vec![]));
}

#[tokio::test]
async fn policies_deny_then_allow_a_non_root_token() {
    let vault = start().await;
    let (root, _) = vault.ready().await;
    let admin = vault.client(&root);
    t(vaultrs::sys::mount::enable(&admin, "secret", "kv-v2", None))
        .await
        .unwrap();
    t(vaultrs::kv2::set(
        &admin,
        "secret",
        "app/db",
        &json!({"password": "p"}),
    ))
    .await
    .unwrap();
    t(vaultrs::kv2::set(
        &admin,
        "secret",
        "other/x",
        &json!({"k": "v"}),
    ))
    .await
    .unwrap();

    let bad = t(vaultrs::sys::policy::set(
        &admin,
        "broken",
        "path \"x\" { capabilities = [\"fly\"] }",
    ))
    .await;
    assert_eq!(api_error(bad).0, 400);

    let token = t(vaultrs::token::new(
        &admin,
        Some(
            vaultrs::api::token::requests::CreateTokenRequest::builder()
                .policies(vec!["app-read".to_string()]),
        ),
    ))
    .await;
    // The policy does not exist yet, but a root parent may attach any policy.
    let token = token.unwrap();
    assert_eq!(token.policies, ["app-read", "default"]);
    let reader = vault.client(&token.client_token);
    let denied = t(vaultrs::kv2::read::<Value>(&reader, "secret", "app/db")).await;
    assert_eq!(
        api_error(denied),
        (403, vec!["permission denied".to_string()])
    );

    let hcl = r#"
        path "secret/data/+/db" { capabilities = ["read"] }
        path "secret/metadata/app/*" { capabilities = ["list"] }
    "#;
    t(vaultrs::sys::policy::set(&admin, "app-read", hcl))
        .await
        .unwrap();
    let read_back = t(vaultrs::sys::policy::read(&admin, "app-read"))
        .await
        .unwrap();
    assert_eq!(read_back.rules, hcl);
    let names = t(vaultrs::sys::policy::list(&admin)).await.unwrap();
    assert_eq!(names.policies, ["app-read", "default", "root"]);

    let allowed: Value = t(vaultrs::kv2::read(&reader, "secret", "app/db"))
        .await
        .unwrap();
    assert_eq!(allowed["password"], "p");
    let other = t(vaultrs::kv2::read::<Value>(&reader, "secret", "other/x")).await;
    assert_eq!(api_error(other).0, 403);
    let write = t(vaultrs::kv2::set(
        &reader,
        "secret",
        "app/db",
        &json!({"password": "q"}),
    ))
    .await;
    assert_eq!(api_error(write).0, 403);
    let listed = t(vaultrs::kv2::list(&reader, "secret", "app"))
        .await
        .unwrap();
    assert_eq!(listed, ["db"]);
    let mounts = t(vaultrs::sys::mount::list(&reader)).await;
    assert_eq!(api_error(mounts).0, 403);

    let (code, body) = {
        let resp = t(reqwest::Client::new()
            .post(format!("{}/v1/sys/capabilities-self", vault.addr))
            .header("Authorization", format!("Bearer {}", token.client_token))
            .json(&json!({"paths": ["secret/data/app/db", "secret/data/other/x"]}))
            .send())
        .await
        .unwrap();
        (
            resp.status().as_u16(),
            t(resp.json::<Value>()).await.unwrap(),
        )
    };
    assert_eq!(code, 200, "Authorization: Bearer is accepted");
    assert_eq!(body["data"]["secret/data/app/db"], json!(["read"]));
    assert_eq!(body["data"]["secret/data/other/x"], json!(["deny"]));

    let me = t(vaultrs::token::lookup_self(&reader)).await.unwrap();
    assert_eq!(me.policies, ["app-read", "default"]);
    assert!(me.ttl > 0 && me.expire_time.is_some());
    let root_me = t(vaultrs::token::lookup_self(&admin)).await.unwrap();
    assert_eq!(
        (root_me.ttl, root_me.policies),
        (0, vec!["root".to_string()])
    );
    assert_eq!(root_me.path, "auth/token/root");

    let unknown = t(vaultrs::token::lookup_self(&vault.client("hvs.nope"))).await;
    assert_eq!(api_error(unknown).0, 403);

    t(vaultrs::sys::policy::delete(&admin, "app-read"))
        .await
        .unwrap();
    let after = t(vaultrs::kv2::read::<Value>(&reader, "secret", "app/db")).await;
    assert_eq!(api_error(after).0, 403);
}

#[tokio::test]
async fn kubernetes_auth_config_role_and_login() {
    let vault = start().await;
    let (root, _) = vault.ready().await;
    let admin = vault.client(&root);
    t(vaultrs::sys::mount::enable(&admin, "secret", "kv-v2", None))
        .await
        .unwrap();
    t(vaultrs::kv2::set(
        &admin,
        "secret",
        "eso/db",
        &json!({"password": "p"}),
    ))
    .await
    .unwrap();
    t(vaultrs::sys::policy::set(
        &admin,
        "eso-read",
        r#"path "secret/data/eso/*" { capabilities = ["read"] }"#,
    ))
    .await
    .unwrap();
    t(vaultrs::sys::auth::enable(
        &admin,
        "kubernetes",
        "kubernetes",
        None,
    ))
    .await
    .unwrap();
    let auths = t(vaultrs::sys::auth::list(&admin)).await.unwrap();
    assert_eq!(auths["kubernetes/"].mount_type, "kubernetes");
    assert_eq!(auths["token/"].config.token_type, "default-service");

    let missing_host = t(vaultrs::auth::kubernetes::configure(
        &admin,
        "kubernetes",
        "",
        None,
    ))
    .await;
    assert_eq!(
        api_error(missing_host),
        (400, vec!["no host provided".to_string()])
    );
    t(vaultrs::auth::kubernetes::configure(
        &admin,
        "kubernetes",
        "https://kubernetes.default.svc",
        None,
    ))
    .await
    .unwrap();
    let config = t(vaultrs::auth::kubernetes::read_config(&admin, "kubernetes"))
        .await
        .unwrap();
    assert_eq!(config.kubernetes_host, "https://kubernetes.default.svc");

    t(vaultrs::auth::kubernetes::role::create(
        &admin,
        "kubernetes",
        "eso",
        Some(
            vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest::builder()
                .bound_service_account_names(vec!["external-secrets".to_string()])
                .bound_service_account_namespaces(vec!["external-secrets".to_string()])
                .token_policies(vec!["eso-read".to_string()])
                .token_ttl("1h")
                .audience("vault"),
        ),
    ))
    .await
    .unwrap();
    let role = t(vaultrs::auth::kubernetes::role::read(
        &admin,
        "kubernetes",
        "eso",
    ))
    .await
    .unwrap();
    assert_eq!(role.token_ttl, 3600);
    assert_eq!(role.token_policies, ["eso-read"]);
    // A role named `login` is a role, not the login endpoint.
    t(vaultrs::auth::kubernetes::role::create(
        &admin,
        "kubernetes",
        "login",
        Some(
            vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest::builder()
                .bound_service_account_names(vec!["*".to_string()])
                .bound_service_account_namespaces(vec!["apps".to_string()]),
        ),
    ))
    .await
    .unwrap();
    let login_role = t(vaultrs::auth::kubernetes::role::read(
        &admin,
        "kubernetes",
        "login",
    ))
    .await
    .unwrap();
    assert_eq!(login_role.bound_service_account_names, ["*"]);
    let roles = t(vaultrs::auth::kubernetes::role::list(&admin, "kubernetes"))
        .await
        .unwrap();
    assert_eq!(roles.keys, ["eso", "login"]);

    let good = jwt("external-secrets", "external-secrets", "uid-1");
    vault.reviewer.accounts.lock().unwrap().insert(
        good.clone(),
        ReviewedAccount {
            namespace: "external-secrets".into(),
            name: "external-secrets".into(),
            uid: "uid-1".into(),
        },
    );
    let login = vault.client("");
    let auth = t(vaultrs::auth::kubernetes::login(
        &login,
        "kubernetes",
        "eso",
        &good,
    ))
    .await
    .unwrap();
    assert_eq!(auth.policies, ["default", "eso-read"]);
    assert_eq!(auth.token_type, "service");
    assert_eq!(auth.lease_duration, 3600);
    assert!(auth.renewable && auth.orphan);
    assert_eq!(
        auth.metadata.as_ref().unwrap()["service_account_namespace"],
        "external-secrets"
    );
    assert_eq!(
        vault.reviewer.calls.lock().unwrap().last().unwrap(),
        &(
            "https://kubernetes.default.svc".to_string(),
            vec!["vault".to_string()]
        )
    );

    let mut eso = vault.client("");
    eso.set_token(&auth.client_token);
    let secret: Value = t(vaultrs::kv2::read(&eso, "secret", "eso/db"))
        .await
        .unwrap();
    assert_eq!(secret["password"], "p");
    let me = t(vaultrs::token::lookup_self(&eso)).await.unwrap();
    assert_eq!(me.path, "auth/kubernetes/login");
    assert!(me.ttl > 0 && me.ttl <= 3600);
    let (_, raw) = vault
        .raw(
            "GET",
            "/v1/auth/token/lookup-self",
            Some(&auth.client_token),
        )
        .await;
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["data"]["type"], "service");
    assert!(raw["data"]["expire_time"].is_string());

    let wrong_ns = jwt("default", "external-secrets", "uid-2");
    let denied = t(vaultrs::auth::kubernetes::login(
        &login,
        "kubernetes",
        "eso",
        &wrong_ns,
    ))
    .await;
    assert_eq!(
        api_error(denied),
        (403, vec!["namespace not authorized".to_string()])
    );
    let wrong_name = jwt("external-secrets", "default", "uid-3");
    let denied = t(vaultrs::auth::kubernetes::login(
        &login,
        "kubernetes",
        "eso",
        &wrong_name,
    ))
    .await;
    assert_eq!(
        api_error(denied),
        (403, vec!["service account name not authorized".to_string()])
    );
    // Claims that fit the role but a token the cluster does not vouch for.
    let forged = jwt("external-secrets", "external-secrets", "uid-9");
    let denied = t(vaultrs::auth::kubernetes::login(
        &login,
        "kubernetes",
        "eso",
        &forged,
    ))
    .await;
    assert_eq!(
        api_error(denied),
        (403, vec!["permission denied".to_string()])
    );
    let unknown_role = t(vaultrs::auth::kubernetes::login(
        &login,
        "kubernetes",
        "nope",
        &good,
    ))
    .await;
    assert_eq!(
        api_error(unknown_role),
        (400, vec!["invalid role name \"nope\"".to_string()])
    );
}

#[tokio::test]
async fn restart_seals_and_data_survives_only_with_the_shares() {
    let vault = start().await;
    let (root, share) = vault.ready().await;
    let admin = vault.client(&root);
    t(vaultrs::sys::mount::enable(&admin, "secret", "kv-v2", None))
        .await
        .unwrap();
    t(vaultrs::kv2::set(
        &admin,
        "secret",
        "app/db",
        &json!({"password": "survives-restart"}),
    ))
    .await
    .unwrap();
    let on_disk = std::fs::read_to_string(&vault.storage).unwrap();
    assert!(!on_disk.contains("survives-restart"));
    assert!(!on_disk.contains(&root));

    let mut status = vault.server.subscribe();
    vault.server.restart();
    t(status.wait_for(|s| s.sealed)).await.unwrap();
    let sealed = t(vaultrs::kv2::read::<Value>(&admin, "secret", "app/db")).await;
    assert_eq!(
        api_error(sealed),
        (503, vec!["Vault is sealed".to_string()])
    );
    let client = vault.client("");
    t(vaultrs::sys::unseal(
        &client,
        Some(share.clone()),
        None,
        None,
    ))
    .await
    .unwrap();
    let back: Value = t(vaultrs::kv2::read(&admin, "secret", "app/db"))
        .await
        .unwrap();
    assert_eq!(back["password"], "survives-restart");

    // A new process on the same storage file starts sealed and needs the same share.
    let reopened = VaultServer::open(vault.storage.clone(), vault.reviewer.clone()).unwrap();
    assert_eq!(
        reopened.status(),
        VaultStatus {
            initialized: true,
            sealed: true
        }
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let task = reopened.serve_tcp(listener);
    let second = vault_client(&addr, &root);
    t(vaultrs::sys::unseal(&second, Some(share), None, None))
        .await
        .unwrap();
    let again: Value = t(vaultrs::kv2::read(&second, "secret", "app/db"))
        .await
        .unwrap();
    assert_eq!(again["password"], "survives-restart");
    task.abort();
}

#[tokio::test]
async fn kv_v1_mount_reads_lists_and_deletes() {
    let vault = start().await;
    let (root, _) = vault.ready().await;
    let client = vault.client(&root);
    t(vaultrs::sys::mount::enable(&client, "kv", "kv", None))
        .await
        .unwrap();
    let mounts = t(vaultrs::sys::mount::list(&client)).await.unwrap();
    assert_eq!(mounts["kv/"].options.as_ref().unwrap()["version"], "1");
    let data = HashMap::from([("user", "admin")]);
    t(vaultrs::kv1::set(&client, "kv", "team/app", &data))
        .await
        .unwrap();
    let read: HashMap<String, String> = t(vaultrs::kv1::get(&client, "kv", "team/app"))
        .await
        .unwrap();
    assert_eq!(read["user"], "admin");
    let listed = t(vaultrs::kv1::list(&client, "kv", "team")).await.unwrap();
    assert_eq!(listed.data.keys, ["app"]);
    t(vaultrs::kv1::delete(&client, "kv", "team/app"))
        .await
        .unwrap();
    let gone = t(vaultrs::kv1::get::<Value>(&client, "kv", "team/app")).await;
    assert_eq!(api_error(gone), (404, vec![]));
}

#[tokio::test]
async fn serve_io_speaks_http_on_any_stream() {
    let vault = start().await;
    // A duplex pipe stands in for a port-forward tunnel.
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let server = vault.server.clone();
    let serving = tokio::spawn(async move { server.serve_io(server_end).await });
    let (mut sender, connection) = t(hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Full<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(client_end)))
    .await
    .unwrap();
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get("/v1/sys/seal-status")
        .header("host", "vault")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = t(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = t(http_body_util::BodyExt::collect(response.into_body()))
        .await
        .unwrap()
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], "shamir");
    assert_eq!(body["initialized"], false);
    drop(sender);
    t(driver).await.unwrap().unwrap();
    t(serving).await.unwrap();
}

#[tokio::test]
async fn create_capability_allows_only_new_secrets_and_sudo_guards_auth_methods() {
    let vault = start().await;
    let (root, _) = vault.ready().await;
    let admin = vault.client(&root);
    t(vaultrs::sys::mount::enable(&admin, "secret", "kv-v2", None))
        .await
        .unwrap();
    t(vaultrs::sys::policy::set(
        &admin,
        "writer",
        r#"
        path "secret/data/drop/*" { capabilities = ["create"] }
        path "sys/auth/*" { capabilities = ["create", "update"] }
        "#,
    ))
    .await
    .unwrap();
    let token = t(vaultrs::token::new(
        &admin,
        Some(
            vaultrs::api::token::requests::CreateTokenRequest::builder()
                .policies(vec!["writer".to_string()]),
        ),
    ))
    .await
    .unwrap();
    let writer = vault.client(&token.client_token);
    t(vaultrs::kv2::set(
        &writer,
        "secret",
        "drop/a",
        &json!({"v": "1"}),
    ))
    .await
    .unwrap();
    let overwrite = t(vaultrs::kv2::set(
        &writer,
        "secret",
        "drop/a",
        &json!({"v": "2"}),
    ))
    .await;
    assert_eq!(api_error(overwrite).0, 403);
    let read = t(vaultrs::kv2::read::<Value>(&writer, "secret", "drop/a")).await;
    assert_eq!(api_error(read).0, 403);
    // Enabling an auth method is root-protected: without sudo it is denied.
    let enable = t(vaultrs::sys::auth::enable(
        &writer,
        "kubernetes",
        "kubernetes",
        None,
    ))
    .await;
    assert_eq!(api_error(enable).0, 403);
    // A child token cannot carry policies its parent lacks.
    let escalate = t(vaultrs::token::new(
        &writer,
        Some(
            vaultrs::api::token::requests::CreateTokenRequest::builder()
                .policies(vec!["root".to_string()]),
        ),
    ))
    .await;
    assert_eq!(
        api_error(escalate).0,
        403,
        "writer has no auth/token/create rights"
    );
}

#[tokio::test]
async fn wire_shapes_match_vault() {
    let vault = start().await;
    let (root, _) = vault.ready().await;
    let http = reqwest::Client::new();
    let send = |method: &str, path: &str, body: Option<Value>| {
        let mut req = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", vault.addr),
            )
            .header("X-Vault-Token", &root);
        if let Some(body) = body {
            req = req.json(&body);
        }
        async move {
            let resp = t(req.send()).await.unwrap();
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            (status, content_type, t(resp.text()).await.unwrap())
        }
    };
    let (status, content_type, body) = send(
        "POST",
        "/v1/sys/mounts/secret",
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    assert_eq!((status, content_type, body.as_str()), (204, None, ""));

    let (status, content_type, body) = send("GET", "/v1/sys/mounts", None).await;
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["secret/"]["options"]["version"], "2",
        "data injected at the top"
    );
    assert_eq!(body["data"]["secret/"]["type"], "kv");
    assert_eq!(body["mount_type"], "system");

    let (_, _, body) = send("GET", "/v1/sys/policy", None).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["policies"], json!(["default", "root"]));

    let (status, _, body) = send("LIST", "/v1/secret/metadata/", None).await;
    assert_eq!((status, body.trim()), (404, r#"{"errors":[]}"#));
    let (status, _, body) = send("GET", "/v1/secret/metadata?list=true", None).await;
    assert_eq!((status, body.trim()), (404, r#"{"errors":[]}"#));

    let (status, _, body) = send("GET", "/v1/nothing/here", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["errors"][0],
        "no handler for route \"nothing/here\". route entry not found."
    );
    let (status, _, _) = send("OPTIONS", "/v1/secret/data/x", None).await;
    assert_eq!(status, 405);
    let (status, _, _) = send("PATCH", "/v1/secret/data/x", Some(json!({"data": {}}))).await;
    assert_eq!(status, 501, "not implemented is never a fake success");
    let (status, _, body) = send("PUT", "/v1/secret/data/x", None).await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"errors": ["no data provided"]})
    );
    let (status, _, _) = send("PUT", "/v1/secret/data/x", Some(json!("text"))).await;
    assert_eq!(status, 400);
}

/// Issue 9: reading a KV v2 mount with a v1-style path (`secret/foo`) answered 400; Vault's
/// `pathInvalid` answers 404 with a warning naming the `vault kv` subcommand and no `errors`.
#[tokio::test]
async fn kv2_v1_style_path_is_404_with_a_warning_not_400() {
    let vault = start().await;
    let (root, _) = vault.ready().await;
    let client = vault.client(&root);
    t(vaultrs::sys::mount::enable(
        &client, "secret", "kv-v2", None,
    ))
    .await
    .unwrap();
    t(vaultrs::kv2::set(
        &client,
        "secret",
        "foo",
        &json!({"k": "v"}),
    ))
    .await
    .unwrap();
    for (method, sub) in [("GET", "get"), ("PUT", "put"), ("DELETE", "delete")] {
        let (code, body) = vault.raw(method, "/v1/secret/foo", Some(&root)).await;
        assert_eq!(code, 404, "{method}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body.get("errors").is_none(), "{body}");
        assert!(body["data"].is_null());
        assert_eq!(
            body["warnings"],
            json!([format!(
                "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the Vault CLI, use 'vault kv {sub}' for this operation."
            )])
        );
    }
}

/// Issue 9: `PUT sys/seal` on a sealed Vault answered 503; Vault's `SealWithRequest` returns
/// early on a sealed core, so it answers 204, with or without a token.
#[tokio::test]
async fn sealing_a_sealed_vault_is_204_not_503() {
    let vault = start().await;
    let (root, _) = vault.ready().await;
    t(vaultrs::sys::seal(&vault.client(&root))).await.unwrap();
    assert!(vault.server.status().sealed);
    let (code, body) = vault.raw("PUT", "/v1/sys/seal", Some(&root)).await;
    assert_eq!((code, body.as_str()), (204, ""));
    let (code, body) = vault.raw("PUT", "/v1/sys/seal", None).await;
    assert_eq!((code, body.as_str()), (204, ""));
    t(vaultrs::sys::seal(&vault.client(&root)))
        .await
        .expect("vaultrs sys::seal on a sealed Vault is Ok, as against a real one");
    // Not a seal: still 405 for other methods.
    let (code, _) = vault.raw("GET", "/v1/sys/seal", None).await;
    assert_ne!(code, 204);
}

/// `PUT`s `body` to `/v1/<path>`; the status code and the JSON answer.
async fn put_json(addr: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = t(reqwest::Client::new()
        .put(format!("{addr}/v1/{path}"))
        .json(&body)
        .send())
    .await
    .unwrap();
    let code = resp.status().as_u16();
    (code, t(resp.json()).await.unwrap_or(Value::Null))
}

async fn get_json(addr: &str, path: &str) -> Value {
    t(t(reqwest::get(format!("{addr}/v1/{path}")))
        .await
        .unwrap()
        .json())
    .await
    .unwrap()
}

/// OpenBao's static seal as OpenBao 2.7.2 answered it (measured by hand against `bao server`
/// with `seal "static"`): seal-status says `type: static` with a Shamir recovery seal;
/// `secret_shares` is refused with 400; init with recovery shares answers 200 with empty `keys`
/// and the recovery keys, and leaves the server unsealed; `{}` hands out no recovery keys; a
/// restart comes back unsealed by itself, and a server given another key stays sealed.
#[tokio::test]
async fn static_seal_init_hands_out_recovery_keys_and_a_restart_unseals_itself() {
    let sb = start().await;
    let key = zeroize::Zeroizing::new([9u8; 32]);
    sb.server.start_with_seal(Some(key.clone()));
    let status = get_json(&sb.addr, "sys/seal-status").await;
    assert_eq!(status["type"], "static", "{status}");
    assert_eq!(status["recovery_seal"], true, "{status}");
    assert_eq!(status["recovery_seal_type"], "shamir", "{status}");
    assert_eq!(
        (status["t"].clone(), status["n"].clone()),
        (0.into(), 0.into())
    );

    let (code, body) = put_json(
        &sb.addr,
        "sys/init",
        json!({"secret_shares": 3, "secret_threshold": 2}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["errors"][0],
        "parameters secret_shares,secret_threshold not applicable to seal type static"
    );
    let (code, body) = put_json(
        &sb.addr,
        "sys/init",
        json!({"recovery_shares": 3, "recovery_threshold": 2}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["keys"], json!([]));
    assert_eq!(body["keys_base64"], json!([]));
    let recovery = body["recovery_keys"].as_array().unwrap();
    assert_eq!(recovery.len(), 3);
    assert_eq!(
        recovery[0].as_str().unwrap().len(),
        66,
        "hex of 33 bytes, as OpenBao's"
    );
    assert_eq!(body["recovery_keys_base64"].as_array().unwrap().len(), 3);
    let root = body["root_token"].as_str().unwrap().to_owned();
    let status = get_json(&sb.addr, "sys/seal-status").await;
    assert_eq!(status["sealed"], false, "unsealed by init: {status}");
    assert_eq!(
        (status["t"].clone(), status["n"].clone()),
        (2.into(), 3.into())
    );

    // A restart: unsealed again with the stored key, data (the root token) kept.
    sb.server.restart();
    assert_eq!(
        sb.server.status(),
        VaultStatus {
            initialized: true,
            sealed: false
        }
    );
    let (code, _) = sb.raw("GET", "/v1/sys/mounts", Some(&root)).await;
    assert_eq!(code, 200);
    // The same storage under another key cannot be opened.
    sb.server
        .start_with_seal(Some(zeroize::Zeroizing::new([1u8; 32])));
    assert!(sb.server.status().sealed);
    sb.server.start_with_seal(Some(key));
    assert!(!sb.server.status().sealed);

    // `{}`: no recovery keys at all.
    let fresh = start().await;
    fresh
        .server
        .start_with_seal(Some(zeroize::Zeroizing::new([2u8; 32])));
    let (code, body) = put_json(&fresh.addr, "sys/init", json!({})).await;
    assert_eq!(code, 200, "{body}");
    let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["keys", "keys_base64", "root_token"]);
}
