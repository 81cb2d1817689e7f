//! The default RBAC policy (created at start when missing, as the apiserver's
//! `rbac/bootstrap-roles` post-start hook does) and the ClusterRole aggregation controller,
//! which fills `admin`, `edit`, `view` and every other role with an `aggregationRule` from the
//! ClusterRoles its selectors match.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::authorizer::CLUSTER_ROLES;
use super::rules::PolicyRule;
use crate::cluster::{Cluster, WriteOpts};
use crate::controllers::{Action, Controller};
use crate::server::Shared;
use crate::store::{ObjectKey, StoreEvent};

/// The default ClusterRoles and ClusterRoleBindings.
const DEFAULTS: &str = include_str!("../assets/rbac-defaults.yaml");
/// Who writes them.
const BOOTSTRAP: &str = "rbac-bootstrap";
const AGGREGATOR: &str = "clusterrole-aggregation-controller";

/// Creates every default role and binding that is missing (existing ones are left as the
/// cluster's users changed them), then aggregates once, so the first request after start
/// already sees `admin`/`edit`/`view` filled.
pub fn ensure_defaults(cluster: &Cluster) {
    use serde::Deserialize;
    for doc in serde_yaml_ng::Deserializer::from_str(DEFAULTS) {
        let Ok(v) = Value::deserialize(doc) else {
            continue;
        };
        let (Some(av), Some(kind)) = (v["apiVersion"].as_str(), v["kind"].as_str()) else {
            continue;
        };
        let Some(rt) = cluster.registry.by_kind(av, kind) else {
            continue;
        };
        let name = v["metadata"]["name"].as_str().unwrap_or("");
        if cluster.get(&rt, "", name).is_ok() {
            continue;
        }
        if let Err(e) = cluster.create(&rt, "", v.clone(), &WriteOpts::controller(BOOTSTRAP)) {
            tracing::warn!(error = %e, name, "cannot create a default RBAC object");
        }
    }
    // Aggregated roles can feed each other (view -> edit -> admin): a few passes converge.
    for _ in 0..3 {
        for role in cluster.store.list(CLUSTER_ROLES, None).0 {
            if role["aggregationRule"].is_object() {
                aggregate(cluster, role["metadata"]["name"].as_str().unwrap_or(""));
            }
        }
    }
}

/// Whether `labels` match one `clusterRoleSelectors[]` entry (matchLabels and
/// matchExpressions In/NotIn/Exists/DoesNotExist).
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels[k].as_str();
    let by_labels = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let by_exprs = selector["matchExpressions"].as_array().is_none_or(|es| {
        es.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap_or("") {
                "In" => label(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                _ => false,
            }
        })
    });
    by_labels && by_exprs
}

/// Recomputes one aggregated ClusterRole: the rules of every other ClusterRole a selector
/// matches, in name order, without duplicates (`clusterroleaggregation_controller.go`).
fn aggregate(cluster: &Cluster, name: &str) {
    let Some(rt) = cluster
        .registry
        .lookup("rbac.authorization.k8s.io", "v1", "clusterroles")
    else {
        return;
    };
    let Some(target) = cluster.store.get(&ObjectKey::new(CLUSTER_ROLES, "", name)) else {
        return;
    };
    let Some(selectors) = target["aggregationRule"]["clusterRoleSelectors"].as_array() else {
        return;
    };
    let mut sources: Vec<Arc<Value>> = cluster
        .store
        .list(CLUSTER_ROLES, None)
        .0
        .into_iter()
        .filter(|r| {
            r["metadata"]["name"] != name
                && selectors
                    .iter()
                    .any(|s| selector_matches(s, &r["metadata"]["labels"]))
        })
        .collect();
    sources.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    let mut rules: Vec<Value> = Vec::new();
    for s in &sources {
        for r in s["rules"].as_array().into_iter().flatten() {
            let normal = PolicyRule::from_json(r).to_json();
            if !rules.contains(&normal) {
                rules.push(normal);
            }
        }
    }
    if target["rules"].as_array().cloned().unwrap_or_default() == rules {
        return;
    }
    if let Err(e) = cluster.modify(&rt, "", name, false, AGGREGATOR, |o| {
        o["rules"] = json!(rules);
    }) {
        tracing::debug!(error = %e, name, "cannot aggregate a cluster role");
    }
}

/// Keeps aggregated ClusterRoles up to date as ClusterRoles come, change and go.
#[derive(Debug, Default)]
pub struct AggregationController;

#[async_trait]
impl Controller for AggregationController {
    fn name(&self) -> &'static str {
        AGGREGATOR
    }

    fn watches(&self) -> Vec<String> {
        vec![CLUSTER_ROLES.into()]
    }

    fn map(&self, shared: &Shared, _e: &StoreEvent) -> Vec<ObjectKey> {
        shared
            .cluster
            .store
            .list(CLUSTER_ROLES, None)
            .0
            .iter()
            .filter(|r| r["aggregationRule"].is_object())
            .map(|r| {
                ObjectKey::new(
                    CLUSTER_ROLES,
                    "",
                    r["metadata"]["name"].as_str().unwrap_or(""),
                )
            })
            .collect()
    }

    async fn reconcile(&self, shared: &Arc<Shared>, key: &ObjectKey) -> Action {
        aggregate(&shared.cluster, &key.name);
        Action::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portforward::Backends;
    use crate::resources::Registry;
    use crate::store::Store;

    #[test]
    fn defaults_aggregate_admin_edit_and_view() {
        let c = Cluster::new(
            Arc::new(Store::new(None, 1000)),
            Registry::new(),
            Backends::default(),
        );
        ensure_defaults(&c);
        let get = |n: &str| c.store.get(&ObjectKey::new(CLUSTER_ROLES, "", n)).expect(n);
        let view = PolicyRule::all_of(&get("view"));
        let edit = PolicyRule::all_of(&get("edit"));
        let admin = PolicyRule::all_of(&get("admin"));
        let has = |rules: &[PolicyRule], res: &str, verb: &str| {
            rules
                .iter()
                .any(|r| r.resources.iter().any(|x| x == res) && r.verbs.iter().any(|v| v == verb))
        };
        assert!(has(&view, "pods/log", "get"));
        assert!(!has(&view, "secrets", "get"), "view does not read secrets");
        assert!(has(&edit, "secrets", "get") && has(&edit, "pods/log", "get"));
        assert!(has(&admin, "roles", "create") && has(&admin, "secrets", "create"));
        assert!(!has(&edit, "roles", "create"));
    }
}
