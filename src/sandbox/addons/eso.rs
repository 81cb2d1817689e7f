//! External Secrets Operator, Vault provider with kubernetes auth (reference §2): stores are
//! validated by a real login to the sandbox Vault with a TokenRequest token of
//! `serviceAccountRef` (over HTTP, as ESO talks to Vault), and ExternalSecrets read KV v2
//! through the store and write their target Secret with ESO's labels, annotation, owner
//! reference and status. Failures keep ESO's condition messages and add the distinguishing
//! cause (store not ready / auth denied / key not found) to the message and a Warning Event.
//! Nothing is reconciled until the external-secrets Deployment runs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::kit::{self, Backoff, Cond, Recorder};
use super::vault::{VaultHttp, vault_errors};
use crate::sandbox::cluster::WriteOpts;
use crate::sandbox::controllers::{Action, Controller};
use crate::sandbox::server::Shared;
use crate::sandbox::store::{ObjectKey, StoreEvent};
use crate::sandbox::tokens;

/// Storage key of ClusterSecretStores.
pub const CLUSTER_STORES: &str = "external-secrets.io/clustersecretstores";
/// Storage key of SecretStores.
pub const STORES: &str = "external-secrets.io/secretstores";
/// Storage key of ExternalSecrets.
pub const EXTERNAL_SECRETS: &str = "external-secrets.io/externalsecrets";
const COMPONENT: &str = "external-secrets";
const MANAGED: &str = "reconcile.external-secrets.io/managed";
const DATA_HASH: &str = "reconcile.external-secrets.io/data-hash";
/// ESO's `--store-requeue-interval` default.
const STORE_REVALIDATE: Duration = Duration::from_secs(300);

/// Whether an external-secrets controller Deployment runs (any namespace).
fn eso_running(shared: &Shared) -> bool {
    kit::list(shared, "apps/deployments", None).iter().any(|d| {
        d["metadata"]["labels"]["app.kubernetes.io/name"] == "external-secrets"
            && kit::workload_ready(d)
    })
}

fn short_hash(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))[..32].to_string()
}

/// A logged-in Vault client of a store.
struct Session {
    token: String,
    server: String,
    /// KV read prefix (`secret/data`).
    data_path: String,
}

/// Why a store could not produce a client: ESO's condition message plus the cause.
struct StoreFailure {
    message: &'static str,
    detail: String,
}

/// Whether `eso.store_flap` (or `eso_store_flap`) says the store is down right now:
/// alternating windows of the given period, phase-shifted by the seed.
fn flapping(shared: &Shared) -> Option<String> {
    let period = shared
        .faults
        .extra("eso.store_flap")
        .and_then(|v| crate::sandbox::faults::parse_duration(&v))
        .filter(|d| !d.is_zero())?;
    let seed = shared.faults.spec().seed;
    let ms = period.as_millis().max(1) as u64;
    let now = jiff::Timestamp::now().as_millisecond() as u64;
    let window = (now + seed % ms) / ms;
    (window % 2 == 1).then(|| format!("injected fault: store flapping every {}ms", ms))
}

/// Logs in as the store says (TokenRequest for the service account, then Vault kubernetes
/// auth, then `lookup-self`, as ESO's Vault provider does).
async fn connect(
    shared: &Shared,
    vault: &VaultHttp,
    store: &Value,
    es_ns: Option<&str>,
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
        .resolve(shared, &server)
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

/// Validates ClusterSecretStores and SecretStores.
pub struct StoreController {
    vault: VaultHttp,
    backoff: Backoff,
    events: Recorder,
}

impl StoreController {
    /// A store controller talking to `vault`.
    pub fn new(vault: VaultHttp) -> Self {
        Self {
            vault,
            backoff: Backoff::default(),
            events: Recorder::default(),
        }
    }
}

#[async_trait]
impl Controller for StoreController {
    fn name(&self) -> &'static str {
        "external-secrets-store"
    }

    fn watches(&self) -> Vec<String> {
        vec![
            CLUSTER_STORES.into(),
            STORES.into(),
            "apps/deployments".into(),
        ]
    }

    fn map(&self, shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        match e.key.resource.as_str() {
            CLUSTER_STORES | STORES => vec![e.key.clone()],
            _ if e.object["metadata"]["labels"]["app.kubernetes.io/name"] == "external-secrets" => {
                let mut v: Vec<ObjectKey> = kit::list(shared, CLUSTER_STORES, None)
                    .iter()
                    .map(|s| kit::key_of(CLUSTER_STORES, s))
                    .collect();
                v.extend(
                    kit::list(shared, STORES, None)
                        .iter()
                        .map(|s| kit::key_of(STORES, s)),
                );
                v
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        if key.resource != CLUSTER_STORES && key.resource != STORES {
            return Action::Done;
        }
        let Some(rt) = kit::rt_of(shared, &key.resource) else {
            return Action::Done;
        };
        let Some(store) = kit::get(shared, &key.resource, &key.namespace, &key.name) else {
            self.backoff.succeeded(key);
            return Action::Done;
        };
        if !eso_running(shared) {
            return Action::RequeueAfter(Duration::from_secs(1));
        }
        if let Some(d) = kit::delay_remaining(shared, "eso", kit::meta(&store, "creationTimestamp"))
        {
            return Action::RequeueAfter(d);
        }
        let result = connect(shared, &self.vault, &store, None).await;
        // Re-read: the login took time and the object may have changed meanwhile.
        let Some(store) = kit::get(shared, &key.resource, &key.namespace, &key.name) else {
            return Action::Done;
        };
        let flap = shared
            .faults
            .extra("eso.store_flap")
            .and_then(|v| crate::sandbox::faults::parse_duration(&v));
        match result {
            Ok(_) => {
                self.backoff.succeeded(key);
                kit::write_status(shared, &rt, &store, COMPONENT, |st| {
                    st["capabilities"] = json!("ReadWrite");
                    kit::set_conditions(
                        st,
                        &[Cond {
                            kind: "Ready",
                            status: "True",
                            reason: "Valid",
                            message: "store validated",
                        }],
                        None,
                    );
                });
                self.events
                    .emit(shared, COMPONENT, &store, false, "Valid", "store validated");
                Action::RequeueAfter(flap.map_or(STORE_REVALIDATE, |f| {
                    f.min(STORE_REVALIDATE).max(Duration::from_millis(100))
                }))
            }
            Err(f) => {
                kit::write_status(shared, &rt, &store, COMPONENT, |st| {
                    st["capabilities"] = json!("ReadWrite");
                    kit::set_conditions(
                        st,
                        &[Cond {
                            kind: "Ready",
                            status: "False",
                            reason: "InvalidProviderConfig",
                            message: f.message,
                        }],
                        None,
                    );
                });
                self.events.emit(
                    shared,
                    COMPONENT,
                    &store,
                    true,
                    "InvalidProviderConfig",
                    &format!("{}: {}", f.message, f.detail),
                );
                let wait = self.backoff.failed(key, Duration::from_secs(5));
                Action::RequeueAfter(
                    flap.map_or(wait, |f| wait.min(f.max(Duration::from_millis(100)))),
                )
            }
        }
    }
}

/// Syncs ExternalSecrets.
pub struct ExternalSecretController {
    vault: VaultHttp,
    backoff: Backoff,
    events: Recorder,
}

impl ExternalSecretController {
    /// A controller reading through `vault`.
    pub fn new(vault: VaultHttp) -> Self {
        Self {
            vault,
            backoff: Backoff::default(),
            events: Recorder::default(),
        }
    }
}

/// A failed sync: the class (for the message) and the cause.
struct SyncFailure {
    message: String,
    event: String,
}

fn provider_failure(class: &str, detail: &str) -> SyncFailure {
    SyncFailure {
        message: format!("could not get secret data from provider: {class}: {detail}"),
        event: format!("{class}: {detail}"),
    }
}

fn as_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads one remote key (the whole KV map).
async fn read_key(
    vault: &VaultHttp,
    s: &Session,
    key: &str,
    version: Option<&str>,
) -> Result<Map<String, Value>, SyncFailure> {
    let mut path = format!("{}/{}", s.data_path, key.trim_start_matches('/'));
    if let Some(v) = version {
        path.push_str(&format!("?version={v}"));
    }
    let (code, body) = vault
        .call("GET", &path, Some(&s.token), None)
        .await
        .map_err(|e| provider_failure("vault unreachable", &e.to_string()))?;
    match code {
        200 if body["data"]["data"].is_object() => Ok(body["data"]["data"]
            .as_object()
            .cloned()
            .unwrap_or_default()),
        200 | 404 => Err(provider_failure(
            "key not found",
            &format!("cannot read secret {key:?}: Secret does not exist"),
        )),
        403 => Err(provider_failure(
            "auth denied",
            &format!(
                "cannot read secret {key:?}: Error making API request.\n\nURL: GET {}/v1/{path}\n{}",
                s.server,
                vault_errors(code, &body)
            ),
        )),
        _ => Err(provider_failure(
            "vault error",
            &format!(
                "cannot read secret {key:?}: Error making API request.\n\nURL: GET {}/v1/{path}\n{}",
                s.server,
                vault_errors(code, &body)
            ),
        )),
    }
}

impl ExternalSecretController {
    async fn fetch(&self, shared: &Shared, es: &Value) -> Result<Map<String, Value>, SyncFailure> {
        let ns = kit::meta(es, "namespace");
        let r = &es["spec"]["secretStoreRef"];
        let kind = r["kind"].as_str().unwrap_or("SecretStore");
        let name = r["name"].as_str().unwrap_or("");
        let store = if kind == "ClusterSecretStore" {
            kit::get(shared, CLUSTER_STORES, "", name)
        } else {
            kit::get(shared, STORES, ns, name)
        };
        let Some(store) = store else {
            return Err(provider_failure(
                "store not ready",
                &format!("{kind} {name:?} not found"),
            ));
        };
        if !kit::is_ready(&store) {
            let why = kit::condition(&store, "Ready")
                .and_then(|c| c["message"].as_str())
                .unwrap_or("not validated yet");
            return Err(provider_failure(
                "store not ready",
                &format!("{kind} {name:?} is not ready: {why}"),
            ));
        }
        let session = connect(shared, &self.vault, &store, Some(ns))
            .await
            .map_err(|f| {
                if f.detail.contains("Code: 403") {
                    provider_failure("auth denied", &f.detail)
                } else {
                    provider_failure(
                        "store not ready",
                        &format!("{kind} {name:?}: {}: {}", f.message, f.detail),
                    )
                }
            })?;
        let mut out = Map::new();
        for item in es["spec"]["data"].as_array().cloned().unwrap_or_default() {
            let secret_key = item["secretKey"].as_str().unwrap_or("").to_string();
            let rr = &item["remoteRef"];
            let key = rr["key"].as_str().unwrap_or("");
            let data = read_key(&self.vault, &session, key, rr["version"].as_str()).await?;
            let value = match rr["property"].as_str().filter(|p| !p.is_empty()) {
                Some(p) => data.get(p).map(as_string).ok_or_else(|| {
                    provider_failure(
                        "key not found",
                        &format!("cannot read secret {key:?}: property {p:?} does not exist"),
                    )
                })?,
                None => Value::Object(data).to_string(),
            };
            out.insert(secret_key, json!(value));
        }
        for item in es["spec"]["dataFrom"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let rr = &item["extract"];
            let Some(key) = rr["key"].as_str() else {
                continue;
            };
            for (k, v) in read_key(&self.vault, &session, key, rr["version"].as_str()).await? {
                out.insert(k, json!(as_string(&v)));
            }
        }
        Ok(out)
    }

    /// Writes the target Secret; `Ok(None)` when the policy says not to write.
    fn write_target(
        &self,
        shared: &Shared,
        es: &Value,
        data: &Map<String, Value>,
    ) -> Result<Option<String>, SyncFailure> {
        let ns = kit::meta(es, "namespace");
        let es_name = kit::meta(es, "name");
        let target = &es["spec"]["target"];
        let name = target["name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(es_name)
            .to_string();
        let policy = target["creationPolicy"].as_str().unwrap_or("Owner");
        let existing = kit::get(shared, "/secrets", ns, &name);
        let write_err = |m: &str| SyncFailure {
            message: m.to_string(),
            event: m.to_string(),
        };
        if let Some(ex) = &existing {
            let owned_by_other = ex["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|rs| {
                    rs.iter().any(|r| {
                        r["controller"] == true
                            && r["kind"] == "ExternalSecret"
                            && r["uid"] != es["metadata"]["uid"]
                    })
                });
            if owned_by_other {
                return Err(write_err("target is owned by another ExternalSecret"));
            }
        }
        match policy {
            "None" => return Ok(None),
            "Merge" if existing.is_none() => return Ok(None),
            _ => {}
        }
        // Templates: `{{ .key }}` substitution over the fetched values.
        let tpl = &target["template"];
        let mut values: Map<String, Value> = data.clone();
        if let Some(tdata) = tpl["data"].as_object() {
            let mut rendered = Map::new();
            for (k, v) in tdata {
                let mut s = v.as_str().unwrap_or("").to_string();
                for (dk, dv) in data {
                    for pat in [format!("{{{{ .{dk} }}}}"), format!("{{{{.{dk}}}}}")] {
                        s = s.replace(&pat, dv.as_str().unwrap_or(""));
                    }
                }
                rendered.insert(k.clone(), json!(s));
            }
            values = rendered;
        }
        let encoded: Map<String, Value> = values
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!(
                        base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""))
                    ),
                )
            })
            .collect();
        let hash = short_hash(&Value::Object(encoded.clone()).to_string());
        let mut labels = tpl["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        labels.insert(MANAGED.into(), json!("true"));
        let mut annotations = tpl["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        annotations.insert(DATA_HASH.into(), json!(hash));
        let mut doc = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
            "data": encoded,
        });
        if let Some(t) = tpl["type"].as_str() {
            doc["type"] = json!(t);
        } else if existing.is_none() {
            doc["type"] = json!("Opaque");
        }
        if policy == "Owner" {
            doc["metadata"]["labels"]["reconcile.external-secrets.io/created-by"] =
                json!(short_hash(&format!("{ns}/{es_name}")));
            doc["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "name": es_name,
                "uid": es["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
            }]);
        }
        kit::apply_all(shared, &[doc], COMPONENT, ns)
            .map_err(|e| write_err(&format!("could not update secret: {e}")))?;
        Ok(Some(name))
    }

    fn synced_rv(es: &Value) -> String {
        let labels = es["metadata"]["labels"].to_string();
        let ann = es["metadata"]["annotations"].to_string();
        format!(
            "{}-{}",
            es["metadata"]["generation"].as_i64().unwrap_or(1),
            short_hash(&format!("{labels}{ann}"))
        )
    }
}

#[async_trait]
impl Controller for ExternalSecretController {
    fn name(&self) -> &'static str {
        "external-secrets"
    }

    fn watches(&self) -> Vec<String> {
        vec![
            EXTERNAL_SECRETS.into(),
            CLUSTER_STORES.into(),
            STORES.into(),
            "/secrets".into(),
            "apps/deployments".into(),
        ]
    }

    fn map(&self, shared: &Shared, e: &StoreEvent) -> Vec<ObjectKey> {
        let all = || {
            kit::list(shared, EXTERNAL_SECRETS, None)
                .iter()
                .map(|x| kit::key_of(EXTERNAL_SECRETS, x))
                .collect::<Vec<_>>()
        };
        match e.key.resource.as_str() {
            EXTERNAL_SECRETS => vec![e.key.clone()],
            CLUSTER_STORES | STORES => {
                let kind = if e.key.resource == CLUSTER_STORES {
                    "ClusterSecretStore"
                } else {
                    "SecretStore"
                };
                kit::list(shared, EXTERNAL_SECRETS, None)
                    .iter()
                    .filter(|x| {
                        let r = &x["spec"]["secretStoreRef"];
                        r["name"] == e.key.name.as_str()
                            && r["kind"].as_str().unwrap_or("SecretStore") == kind
                            && (kind == "ClusterSecretStore"
                                || kit::meta(x, "namespace") == e.key.namespace)
                    })
                    .map(|x| kit::key_of(EXTERNAL_SECRETS, x))
                    .collect()
            }
            "/secrets" => e.object["metadata"]["ownerReferences"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .filter(|r| r["kind"] == "ExternalSecret")
                        .filter_map(|r| r["name"].as_str())
                        .map(|n| ObjectKey::new(EXTERNAL_SECRETS, e.key.namespace.as_str(), n))
                        .collect()
                })
                .unwrap_or_default(),
            _ if e.object["metadata"]["labels"]["app.kubernetes.io/name"] == "external-secrets" => {
                all()
            }
            _ => Vec::new(),
        }
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        if key.resource != EXTERNAL_SECRETS {
            return Action::Done;
        }
        let Some(rt) = kit::rt_of(shared, EXTERNAL_SECRETS) else {
            return Action::Done;
        };
        let Some(es) = kit::get(shared, EXTERNAL_SECRETS, &key.namespace, &key.name) else {
            self.backoff.succeeded(key);
            return Action::Done;
        };
        if es["metadata"]["deletionTimestamp"].is_string() {
            return Action::Done;
        }
        if !eso_running(shared) {
            return Action::RequeueAfter(Duration::from_secs(1));
        }
        if let Some(d) = kit::delay_remaining(shared, "eso", kit::meta(&es, "creationTimestamp")) {
            return Action::RequeueAfter(d);
        }
        let refresh = es["spec"]["refreshInterval"]
            .as_str()
            .and_then(kit::go_duration)
            .unwrap_or(Duration::from_secs(3600));
        let policy = es["spec"]["refreshPolicy"].as_str().unwrap_or("Periodic");
        let srv = Self::synced_rv(&es);
        let target_name = es["spec"]["target"]["name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(&key.name)
            .to_string();
        // ESO's shouldRefresh: same spec, target present, interval not elapsed.
        let target_ok = kit::get(shared, "/secrets", &key.namespace, &target_name)
            .is_some_and(|s| s["metadata"]["annotations"][DATA_HASH].is_string());
        if kit::is_ready(&es) && es["status"]["syncedResourceVersion"] == srv.as_str() && target_ok
        {
            if refresh.is_zero() || policy != "Periodic" {
                return Action::Done;
            }
            let last = es["status"]["refreshTime"]
                .as_str()
                .and_then(kit::parse_ts)
                .unwrap_or(0);
            let due = last + refresh.as_secs() as i64 - jiff::Timestamp::now().as_second();
            if due > 0 {
                return Action::RequeueAfter(Duration::from_secs(due as u64));
            }
        }
        let result = match self.fetch(shared, &es).await {
            Ok(data) => self.write_target(shared, &es, &data),
            Err(f) => Err(f),
        };
        let Some(es) = kit::get(shared, EXTERNAL_SECRETS, &key.namespace, &key.name) else {
            return Action::Done;
        };
        match result {
            Ok(written) => {
                self.backoff.succeeded(key);
                let merge_missing =
                    written.is_none() && es["spec"]["target"]["creationPolicy"] == "Merge";
                kit::write_status(shared, &rt, &es, COMPONENT, |st| {
                    st["refreshTime"] = json!(kit::now());
                    st["syncedResourceVersion"] = json!(srv);
                    st["binding"] =
                        json!({"name": if written.is_some() { target_name.as_str() } else { "" }});
                    let (reason, msg) = if merge_missing {
                        (
                            "SecretMissing",
                            "secret will not be created due to CreationPolicy=Merge",
                        )
                    } else {
                        ("SecretSynced", "secret synced")
                    };
                    kit::set_conditions(
                        st,
                        &[Cond {
                            kind: "Ready",
                            status: "True",
                            reason,
                            message: msg,
                        }],
                        None,
                    );
                });
                self.events
                    .emit(shared, COMPONENT, &es, false, "Updated", "secret synced");
                if refresh.is_zero() || policy != "Periodic" {
                    Action::Done
                } else {
                    Action::RequeueAfter(refresh)
                }
            }
            Err(f) => {
                kit::write_status(shared, &rt, &es, COMPONENT, |st| {
                    kit::set_conditions(
                        st,
                        &[Cond {
                            kind: "Ready",
                            status: "False",
                            reason: "SecretSyncedError",
                            message: &f.message,
                        }],
                        None,
                    );
                });
                self.events
                    .emit(shared, COMPONENT, &es, true, "UpdateFailed", &f.event);
                Action::RequeueAfter(self.backoff.failed(key, Duration::from_secs(10)))
            }
        }
    }
}
