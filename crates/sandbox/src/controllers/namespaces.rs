//! Namespaces: the four k3s namespaces exist; every namespace gets the `kube-root-ca.crt`
//! ConfigMap and a `default` ServiceAccount; a terminating namespace is emptied (objects
//! with finalizers wait for them), then removed.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::{Action, Controller};
use crate::cluster::WriteOpts;
use crate::server::Shared;
use crate::store::ObjectKey;

const NAME: &str = "namespace-controller";

/// The namespaces k3s starts with.
pub const INITIAL: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Maintains per-namespace defaults and finishes namespace deletion.
#[derive(Debug, Default)]
pub struct NamespaceController;

#[async_trait]
impl Controller for NamespaceController {
    fn name(&self) -> &'static str {
        NAME
    }

    fn watches(&self) -> Vec<String> {
        vec![
            "/namespaces".into(),
            "/configmaps".into(),
            "/serviceaccounts".into(),
        ]
    }

    fn map(&self, _shared: &Shared, event: &crate::store::StoreEvent) -> Vec<ObjectKey> {
        let ns = if event.key.resource == "/namespaces" {
            event.key.name.clone()
        } else {
            event.key.namespace.clone()
        };
        vec![ObjectKey::new("/namespaces", "", ns)]
    }

    async fn start(&self, shared: &Arc<Shared>) {
        let c = &shared.cluster;
        let Some(rt) = c.registry.lookup("", "v1", "namespaces") else {
            return;
        };
        for ns in INITIAL {
            if c.get(&rt, "", ns).is_err()
                && let Err(e) = c.create(
                    &rt,
                    "",
                    json!({"metadata": {"name": ns}}),
                    &WriteOpts::controller(NAME),
                )
            {
                tracing::error!(error = %e, namespace = ns, "cannot create a built-in namespace");
            }
        }
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        let c = &shared.cluster;
        let reg = &c.registry;
        let (Some(ns_rt), Some(cm_rt), Some(sa_rt)) = (
            reg.lookup("", "v1", "namespaces"),
            reg.lookup("", "v1", "configmaps"),
            reg.lookup("", "v1", "serviceaccounts"),
        ) else {
            return Action::Done;
        };
        let Ok(ns) = c.get(&ns_rt, "", &key.name) else {
            return Action::Done;
        };
        let opts = WriteOpts::controller(NAME);
        if ns["metadata"]["deletionTimestamp"].is_string() {
            // Delete everything inside (finalizers are honoured, so this may take several
            // passes); the namespace goes once it is empty.
            let mut seen = std::collections::HashSet::new();
            let mut remaining = 0usize;
            for rt in reg.all().iter().filter(|r| r.namespaced && !r.create_only) {
                if !seen.insert(rt.storage_key()) {
                    continue;
                }
                for o in c.store.list(&rt.storage_key(), Some(&key.name)).0 {
                    let name = o["metadata"]["name"].as_str().unwrap_or("");
                    match c.delete(rt, &key.name, name, &serde_json::Value::Null, &opts) {
                        Ok(r) if r.deleted => {}
                        Ok(_) => remaining += 1,
                        Err(e) if e.code == 404 => {}
                        Err(_) => remaining += 1,
                    }
                }
            }
            if remaining > 0 {
                return Action::RequeueAfter(std::time::Duration::from_millis(200));
            }
            c.remove(&ns_rt, "", &key.name, NAME);
            return Action::Done;
        }
        if c.get(&cm_rt, &key.name, "kube-root-ca.crt").is_err() {
            let cm = json!({"metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": shared.ca_pem}});
            let _ = c.create(&cm_rt, &key.name, cm, &opts);
        }
        if c.get(&sa_rt, &key.name, "default").is_err() {
            let _ = c.create(
                &sa_rt,
                &key.name,
                json!({"metadata": {"name": "default"}}),
                &opts,
            );
        }
        Action::Done
    }
}
