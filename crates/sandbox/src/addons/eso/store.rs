//! ClusterSecretStore / SecretStore validation: a real login, re-validated periodically,
//! with the store-flapping fault applied between logins.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::super::kit::{self, Backoff, Cond, Recorder};
use super::super::vault::VaultHttp;
use super::{
    CLUSTER_STORES, COMPONENT, STORE_REVALIDATE, STORES, connect, eso_identity, eso_running,
    flapping, informer_denied,
};
use crate::controllers::{Action, Controller};
use crate::server::Shared;
use crate::store::{ObjectKey, StoreEvent};

/// Validates ClusterSecretStores and SecretStores.
pub struct StoreController {
    vault: VaultHttp,
    backoff: Backoff,
    events: Recorder,
    /// Last successful validation per store and the resourceVersion it validated; the
    /// login is repeated every [`STORE_REVALIDATE`], while fault changes are checked often.
    validated: Mutex<HashMap<ObjectKey, (Instant, String)>>,
}

impl StoreController {
    /// A store controller talking to `vault`.
    pub fn new(vault: VaultHttp) -> Self {
        Self {
            vault,
            backoff: Backoff::default(),
            events: Recorder::default(),
            validated: Mutex::default(),
        }
    }

    fn recently_validated(&self, key: &ObjectKey, store: &Value) -> bool {
        let m = self.validated.lock().unwrap_or_else(|p| p.into_inner());
        m.get(key).is_some_and(|(at, rv)| {
            at.elapsed() < STORE_REVALIDATE
                && rv == kit::meta(store, "resourceVersion")
                && kit::is_ready(store)
        })
    }
}

/// How often a validated store checks the fault spec (flapping) between full validations.
const FAULT_POLL: Duration = Duration::from_secs(1);

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
        let user = eso_identity(shared);
        if let Some(why) = informer_denied(shared, user.as_ref(), &rt.plural) {
            tracing::warn!(error = %why, "external-secrets cannot watch {}", rt.plural);
            return Action::RequeueAfter(Duration::from_secs(5));
        }
        if let Some(d) = kit::delay_remaining(shared, "eso", &store) {
            return Action::RequeueAfter(d);
        }
        let flap = shared
            .faults
            .extra("eso.store_flap")
            .and_then(|v| crate::faults::parse_duration(&v));
        let poll = flap.map_or(FAULT_POLL, |f| {
            f.clamp(Duration::from_millis(100), FAULT_POLL)
        });
        if flapping(shared).is_none() && self.recently_validated(key, &store) {
            return Action::RequeueAfter(poll);
        }
        let result = connect(shared, &self.vault, &store, None, user.as_ref()).await;
        // Re-read: the login took time and the object may have changed meanwhile.
        let Some(store) = kit::get(shared, &key.resource, &key.namespace, &key.name) else {
            return Action::Done;
        };
        // ESO merge-patches the status subresource.
        if let Err(e) = kit::allowed(
            shared,
            user.as_ref(),
            "patch",
            &rt.group,
            &rt.plural,
            "status",
            &key.namespace,
            &key.name,
        ) {
            tracing::warn!(error = %e.message, "external-secrets cannot write a store status");
            return Action::RequeueAfter(Duration::from_secs(5));
        }
        match result {
            Ok(_) => {
                self.backoff.succeeded(key);
                write_ready(shared, &rt, &store, "True", "Valid", "store validated");
                // Remember the version our own status write produced, so that write does
                // not count as a change needing a new login.
                if let Some(now) = kit::get(shared, &key.resource, &key.namespace, &key.name) {
                    self.validated
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(
                            key.clone(),
                            (
                                Instant::now(),
                                kit::meta(&now, "resourceVersion").to_string(),
                            ),
                        );
                }
                self.events
                    .emit(shared, COMPONENT, &store, false, "Valid", "store validated");
                Action::RequeueAfter(poll)
            }
            Err(f) => {
                self.validated
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(key);
                write_ready(
                    shared,
                    &rt,
                    &store,
                    "False",
                    "InvalidProviderConfig",
                    f.message,
                );
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

/// Writes the store's `Ready` condition as ESO's store controller does: the one condition a
/// store has, with `capabilities` alongside.
fn write_ready(
    shared: &Shared,
    rt: &crate::resources::ResourceType,
    store: &Value,
    status: &str,
    reason: &str,
    message: &str,
) {
    kit::write_status(shared, rt, store, COMPONENT, |st| {
        st["capabilities"] = json!("ReadWrite");
        kit::set_conditions(
            st,
            &[Cond {
                kind: "Ready",
                status,
                reason,
                message,
            }],
            None,
        );
    });
}
