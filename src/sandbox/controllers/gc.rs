//! Garbage collection: objects whose owners (by `ownerReferences` uid) are gone are deleted
//! (background propagation), and pod backends learn that their pod died.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{Action, Controller};
use crate::sandbox::cluster::WriteOpts;
use crate::sandbox::server::Shared;
use crate::sandbox::store::{EventType, ObjectKey, StoreEvent};

const NAME: &str = "garbage-collector";

/// Deletes dependents of deleted owners.
#[derive(Debug, Default)]
pub struct GarbageCollector;

fn owner_uids(o: &Value) -> Vec<&str> {
    o["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["uid"].as_str()).collect())
        .unwrap_or_default()
}

#[async_trait]
impl Controller for GarbageCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<String> {
        Vec::new()
    }

    fn map(&self, shared: &Shared, event: &StoreEvent) -> Vec<ObjectKey> {
        if event.kind != EventType::Deleted {
            return Vec::new();
        }
        if event.key.resource == "/pods"
            && let Some(b) = shared.backends.find(&event.key.namespace, &event.key.name)
        {
            b.pod_deleted(&event.key.namespace, &event.key.name);
        }
        let Some(uid) = event.object["metadata"]["uid"].as_str() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for rt in shared.cluster.registry.all() {
            if rt.create_only {
                continue;
            }
            let key = rt.storage_key();
            let scope = if rt.namespaced && !event.key.namespace.is_empty() {
                Some(event.key.namespace.as_str())
            } else {
                None
            };
            for o in shared.cluster.store.list(&key, scope).0 {
                if owner_uids(&o).contains(&uid) {
                    out.push(ObjectKey::new(
                        key.as_str(),
                        o["metadata"]["namespace"].as_str().unwrap_or(""),
                        o["metadata"]["name"].as_str().unwrap_or(""),
                    ));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        let c = &shared.cluster;
        let Some(rt) = c.registry.by_storage_key(&key.resource) else {
            return Action::Done;
        };
        let Some(obj) = c.store.get(key) else {
            return Action::Done;
        };
        let refs = obj["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if refs.is_empty() {
            return Action::Done;
        }
        let alive = refs.iter().any(|r| {
            let (Some(av), Some(kind), Some(name), Some(uid)) = (
                r["apiVersion"].as_str(),
                r["kind"].as_str(),
                r["name"].as_str(),
                r["uid"].as_str(),
            ) else {
                return false;
            };
            let Some(owner_rt) = c.registry.by_kind(av, kind) else {
                return false;
            };
            let ns = if owner_rt.namespaced {
                key.namespace.as_str()
            } else {
                ""
            };
            c.store
                .get(&ObjectKey::new(owner_rt.storage_key(), ns, name))
                .is_some_and(|o| o["metadata"]["uid"].as_str() == Some(uid))
        });
        if !alive {
            let _ = c.delete(
                &rt,
                &key.namespace,
                &key.name,
                &Value::Null,
                &WriteOpts::controller(NAME),
            );
        }
        Action::Done
    }
}
