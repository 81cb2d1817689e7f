//! External Secrets Operator, Vault provider with kubernetes auth (reference §2): stores are
//! validated by a real login to the sandbox Vault with a TokenRequest token of
//! `serviceAccountRef` (over HTTP, as ESO talks to Vault), and ExternalSecrets read KV v2
//! through the store and write their target Secret with ESO's labels, annotation, owner
//! reference and status. Failures keep ESO's condition messages and add the distinguishing
//! cause (store not ready / auth denied / key not found) to the message and a Warning Event.
//! Nothing is reconciled until the external-secrets Deployment runs.

mod cert_controller;
mod external_secret;
mod store;

pub use cert_controller::CertController;
pub use external_secret::ExternalSecretController;
pub use store::StoreController;

use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;

use super::kit;
use super::vault::{VaultHttp, vault_errors};
use crate::cluster::WriteOpts;
use crate::rbac::UserInfo;
use crate::server::Shared;
use crate::tokens;

/// Storage key of ClusterSecretStores.
pub const CLUSTER_STORES: &str = "external-secrets.io/clustersecretstores";
/// Storage key of SecretStores.
pub const STORES: &str = "external-secrets.io/secretstores";
/// Storage key of ExternalSecrets.
pub const EXTERNAL_SECRETS: &str = "external-secrets.io/externalsecrets";
pub(super) const COMPONENT: &str = "external-secrets";
pub(super) const MANAGED: &str = "reconcile.external-secrets.io/managed";
pub(super) const DATA_HASH: &str = "reconcile.external-secrets.io/data-hash";
/// ESO's `--store-requeue-interval` default.
pub(super) const STORE_REVALIDATE: Duration = Duration::from_secs(300);

/// Whether an external-secrets controller Deployment runs (any namespace).
pub(super) fn eso_running(shared: &Shared) -> bool {
    eso_deployment(shared).is_some()
}

/// The running external-secrets controller Deployment.
fn eso_deployment(shared: &Shared) -> Option<std::sync::Arc<Value>> {
    kit::list(shared, "apps/deployments", None)
        .into_iter()
        .find(|d| {
            d["metadata"]["labels"]["app.kubernetes.io/name"] == "external-secrets"
                && kit::workload_ready(d)
        })
}

/// The namespace the external-secrets controller runs in (where its DNS lookups start).
fn eso_namespace(shared: &Shared) -> Option<String> {
    eso_deployment(shared).map(|d| kit::meta(&d, "namespace").to_string())
}

/// Who the controller acts as: the service account of its pods (the chart's
/// `serviceAccount.name`), whose ClusterRole decides what it may read and write.
pub(super) fn eso_identity(shared: &Shared) -> Option<UserInfo> {
    eso_deployment(shared).and_then(|d| kit::workload_identity(shared, &d))
}

/// Why the controller's informer for `resource` cannot run (it lists and watches every
/// namespace), or `None` when it may. Without it the controller never sees those objects.
pub(super) fn informer_denied(
    shared: &Shared,
    user: Option<&UserInfo>,
    resource: &str,
) -> Option<String> {
    ["list", "watch"].iter().find_map(|verb| {
        kit::allowed(
            shared,
            user,
            verb,
            "external-secrets.io",
            resource,
            "",
            "",
            "",
        )
        .err()
        .map(|e| e.message)
    })
}

pub(super) fn short_hash(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))[..32].to_string()
}

/// A logged-in Vault client of a store.
pub(super) struct Session {
    pub(super) token: String,
    pub(super) server: String,
    /// KV read prefix (`secret/data`).
    pub(super) data_path: String,
}

/// Why a store could not produce a client: ESO's condition message plus the cause.
pub(super) struct StoreFailure {
    pub(super) message: &'static str,
    pub(super) detail: String,
}

/// Whether `eso.store_flap` (or `eso_store_flap`) says the store is down right now:
/// alternating windows of the given period, phase-shifted by the seed.
pub(super) fn flapping(shared: &Shared) -> Option<String> {
    let period = shared
        .faults
        .extra("eso.store_flap")
        .and_then(|v| crate::faults::parse_duration(&v))
        .filter(|d| !d.is_zero())?;
    let seed = shared.faults.spec().seed;
    let ms = period.as_millis().max(1) as u64;
    let now = jiff::Timestamp::now().as_millisecond() as u64;
    let window = (now + seed % ms) / ms;
    (window % 2 == 1).then(|| format!("injected fault: store flapping every {}ms", ms))
}

/// Logs in as the store says (TokenRequest for the service account, then Vault kubernetes
/// auth, then `lookup-self`, as ESO's Vault provider does).
pub(super) async fn connect(
    shared: &Shared,
    vault: &VaultHttp,
    store: &Value,
    es_ns: Option<&str>,
    user: Option<&UserInfo>,
) -> Result<Session, StoreFailure> {
    let client_err = |detail: String| StoreFailure {
        message: "unable to create client",
        detail,
    };
    if let Some(why) = flapping(shared) {
        return Err(client_err(why));
    }
    let p = &store["spec"]["provider"]["vault"];
    if !p.is_object() {
        return Err(StoreFailure {
            message: "unable to validate store",
            detail: "the sandbox only simulates the vault provider".into(),
        });
    }
    let server = p["server"]
        .as_str()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string();
    vault
        .resolve(
            shared,
            &server,
            &eso_namespace(shared).unwrap_or_else(|| "default".into()),
        )
        .map_err(|e| client_err(e.to_string()))?;
    let k = &p["auth"]["kubernetes"];
    if !k.is_object() {
        return Err(client_err(
            "the sandbox only simulates kubernetes auth".into(),
        ));
    }
    let mount = k["mountPath"]
        .as_str()
        .unwrap_or("kubernetes")
        .trim_matches('/')
        .to_string();
    let role = k["role"].as_str().unwrap_or("");
    let sa = &k["serviceAccountRef"];
    let Some(sa_name) = sa["name"].as_str() else {
        return Err(client_err(
            "serviceAccountRef is required in the sandbox (no pod token file)".into(),
        ));
    };
    let store_ns = store["metadata"]["namespace"].as_str();
    let Some(sa_ns) = sa["namespace"].as_str().or(store_ns).or(es_ns) else {
        return Err(client_err(
            "serviceAccountRef.namespace is required for a ClusterSecretStore".into(),
        ));
    };
    kit::allowed(
        shared,
        user,
        "create",
        "",
        "serviceaccounts",
        "token",
        sa_ns,
        sa_name,
    )
    .map_err(|e| {
        client_err(format!(
            "cannot request Kubernetes service account token for service account {sa_name:?}: {}",
            e.message
        ))
    })?;
    let mut req = json!({"spec": {"expirationSeconds": 600}});
    if let Some(a) = sa["audiences"].as_array() {
        req["spec"]["audiences"] = json!(a);
    }
    let tr = tokens::token_request(
        shared,
        sa_ns,
        sa_name,
        req,
        &WriteOpts::controller(COMPONENT),
    )
    .map_err(|e| {
        client_err(format!(
            "cannot request a token for service account {sa_ns}/{sa_name}: {}",
            e.message
        ))
    })?;
    let jwt = tr["status"]["token"].as_str().unwrap_or("").to_string();
    let login_path = format!("auth/{mount}/login");
    let (code, body) = vault
        .call(
            "POST",
            &login_path,
            None,
            Some(&json!({"role": role, "jwt": jwt})),
        )
        .await
        .map_err(|e| client_err(e.to_string()))?;
    let token = body["auth"]["client_token"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if code != 200 || token.is_empty() {
        return Err(client_err(format!(
            "unable to log in to auth method: unable to log in with Kubernetes auth: Error making API request.\n\nURL: PUT {server}/v1/{login_path}\n{}",
            vault_errors(code, &body)
        )));
    }
    let (code, body) = vault
        .call("GET", "auth/token/lookup-self", Some(&token), None)
        .await
        .map_err(|e| StoreFailure {
            message: "unable to validate store",
            detail: e.to_string(),
        })?;
    if code != 200 {
        return Err(StoreFailure {
            message: "unable to validate store",
            detail: vault_errors(code, &body),
        });
    }
    let mount_path = p["path"]
        .as_str()
        .unwrap_or("secret")
        .trim_matches('/')
        .to_string();
    let data_path = if p["version"] == "v1" || mount_path.ends_with("/data") {
        mount_path
    } else {
        format!("{mount_path}/data")
    };
    Ok(Session {
        token,
        server,
        data_path,
    })
}
