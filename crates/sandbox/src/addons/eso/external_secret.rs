//! ExternalSecret sync: reads Vault KV v2 through the store's login and writes the target
//! Secret as ESO does.
//!
//! # Caveats
//! Simulated: `data[]` with `property`/`version`, `dataFrom[].extract`, `creationPolicy`
//! Owner/Orphan/Merge/None, `target.template` (`type`, `metadata`, `data` with `{{ .key }}`),
//! `refreshInterval`/`refreshPolicy`. Anything else (`dataFrom[].find`, generators,
//! `templateFrom`, deletionPolicy Delete) fails the sync with "not implemented in the sandbox"
//! rather than syncing something different from what ESO would.

use base64::Engine as _;
use serde_json::Map;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::super::kit::{self, Backoff, Cond, Recorder};
use super::super::vault::VaultHttp;
use super::super::vault::vault_errors;
use super::{
    CLUSTER_STORES, COMPONENT, DATA_HASH, EXTERNAL_SECRETS, MANAGED, STORES, Session, connect,
    eso_identity, eso_running, informer_denied, short_hash,
};
use crate::controllers::{Action, Controller};
use crate::rbac::UserInfo;
use crate::server::Shared;
use crate::store::{ObjectKey, StoreEvent};

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
    async fn fetch(
        &self,
        shared: &Shared,
        es: &Value,
        user: Option<&UserInfo>,
    ) -> Result<Map<String, Value>, SyncFailure> {
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
        if es["spec"]["target"]["template"]["templateFrom"].is_array()
            || es["spec"]["target"]["deletionPolicy"] == "Delete"
        {
            return Err(provider_failure(
                "not implemented in the sandbox",
                "templateFrom and deletionPolicy Delete are not simulated",
            ));
        }
        let session = connect(shared, &self.vault, &store, Some(ns), user)
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
                return Err(provider_failure(
                    "not implemented in the sandbox",
                    "dataFrom supports only extract (find, generators and rewrite are not simulated)",
                ));
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
        user: Option<&UserInfo>,
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
        kit::apply_all_as(shared, user, &[doc], COMPONENT, ns)
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
        let user = eso_identity(shared);
        if let Some(why) = informer_denied(shared, user.as_ref(), "externalsecrets") {
            tracing::warn!(error = %why, "external-secrets cannot watch externalsecrets");
            return Action::RequeueAfter(Duration::from_secs(5));
        }
        if let Some(d) = kit::delay_remaining(shared, "eso", &es) {
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
        let result = match self.fetch(shared, &es, user.as_ref()).await {
            Ok(data) => self.write_target(shared, &es, &data, user.as_ref()),
            Err(f) => Err(f),
        };
        let Some(es) = kit::get(shared, EXTERNAL_SECRETS, &key.namespace, &key.name) else {
            return Action::Done;
        };
        // ESO updates the status subresource.
        if let Err(e) = kit::allowed(
            shared,
            user.as_ref(),
            "update",
            "external-secrets.io",
            "externalsecrets",
            "status",
            &key.namespace,
            &key.name,
        ) {
            tracing::warn!(error = %e.message, "external-secrets cannot write an ExternalSecret status");
            return Action::RequeueAfter(Duration::from_secs(5));
        }
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
