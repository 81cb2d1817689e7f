//! Garbage collection: objects whose owners (by `ownerReferences` uid) are gone are deleted
//! (background propagation).
//!
//! An owner-uid index, kept from the event stream, makes finding dependents O(1) per delete.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

use super::{Action, Controller};
use crate::cluster::WriteOpts;
use crate::server::Shared;
use crate::store::{EventType, ObjectKey, StoreEvent};

const NAME: &str = "garbage-collector";

/// Deletes dependents of deleted owners.
#[derive(Debug, Default)]
pub struct GarbageCollector {
    /// Owner uid -> dependents.
    dependents: Mutex<HashMap<String, HashSet<ObjectKey>>>,
}

fn owner_uids(o: &Value) -> Vec<String> {
    o["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl GarbageCollector {
    fn index(&self, key: &ObjectKey, old: Option<&Value>, new: Option<&Value>) {
        let mut idx = self.dependents.lock().unwrap_or_else(|p| p.into_inner());
        for uid in old.map(owner_uids).unwrap_or_default() {
            if let Some(set) = idx.get_mut(&uid) {
                set.remove(key);
                if set.is_empty() {
                    idx.remove(&uid);
                }
            }
        }
        for uid in new.map(owner_uids).unwrap_or_default() {
            idx.entry(uid).or_default().insert(key.clone());
        }
    }
}

#[async_trait]
impl Controller for GarbageCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<String> {
        Vec::new()
    }

    async fn start(&self, shared: &Arc<Shared>) {
        for rt in shared.cluster.registry.all() {
            if rt.create_only {
                continue;
            }
            for o in shared.cluster.store.list(&rt.storage_key(), None).0 {
                let key = ObjectKey::new(
                    rt.storage_key(),
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or(""),
                );
                self.index(&key, None, Some(&o));
            }
        }
    }

    fn map(&self, _shared: &Shared, event: &StoreEvent) -> Vec<ObjectKey> {
        match event.kind {
            EventType::Deleted => self.index(&event.key, Some(&event.object), None),
            _ => self.index(&event.key, event.old.as_deref(), Some(&event.object)),
        }
        if event.kind != EventType::Deleted {
            return Vec::new();
        }
        let Some(uid) = event.object["metadata"]["uid"].as_str() else {
            return Vec::new();
        };
        let idx = self.dependents.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<ObjectKey> = idx
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        out.sort();
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
