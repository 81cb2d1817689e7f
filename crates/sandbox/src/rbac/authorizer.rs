//! The authorizer chain of a k3s apiserver (`--authorization-mode=Node,RBAC`) as far as the
//! sandbox's users reach it: the privileged `system:masters` group is allowed everything, then
//! RBAC visits every ClusterRoleBinding and the RoleBindings of the request's namespace whose
//! subjects name the user, and allows when one of the bound rules matches. RBAC never denies:
//! no match is "no opinion", which the apiserver answers with 403 Forbidden.

use std::sync::Arc;

use serde_json::Value;

use super::attributes::Attributes;
use super::rules::PolicyRule;
use super::user::{MASTERS, UserInfo};
use crate::store::{ObjectKey, Store};

/// Storage keys of the RBAC kinds.
pub(crate) const CLUSTER_ROLES: &str = "rbac.authorization.k8s.io/clusterroles";
pub(crate) const CLUSTER_ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/clusterrolebindings";
pub(crate) const ROLES: &str = "rbac.authorization.k8s.io/roles";
pub(crate) const ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/rolebindings";

/// The answer to one authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed.
    pub allowed: bool,
    /// `RBAC: allowed by ...` when allowed through a binding; empty or `RBAC: <errors>` when
    /// not (a binding to a missing role is such an error).
    pub reason: String,
}

/// Where a rule came from, for the "allowed by" reason.
struct Source<'a> {
    binding: &'a Value,
    subject: &'a Value,
}

impl Source<'_> {
    /// `ClusterRoleBinding "b" of ClusterRole "r" to Group "g"` /
    /// `RoleBinding "b/ns" of Role "r" to ServiceAccount "sa/ns"`.
    fn describe(&self) -> String {
        let b = self.binding;
        let name = b["metadata"]["name"].as_str().unwrap_or("");
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or("");
        let role = b["roleRef"]["name"].as_str().unwrap_or("");
        let binding = match b["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
        {
            Some(ns) => format!("RoleBinding \"{name}/{ns}\""),
            None => format!("ClusterRoleBinding \"{name}\""),
        };
        let s = self.subject;
        let subject_name = s["name"].as_str().unwrap_or("");
        let subject = match s["kind"].as_str().unwrap_or("") {
            "ServiceAccount" => {
                let ns = s["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .or_else(|| b["metadata"]["namespace"].as_str())
                    .unwrap_or("");
                format!("ServiceAccount \"{subject_name}/{ns}\"")
            }
            kind => format!("{kind} \"{subject_name}\""),
        };
        format!("{binding} of {role_kind} \"{role}\" to {subject}")
    }
}

/// The subject of `binding` that names `user`, if any (`appliesToUser` upstream).
fn subject_for<'a>(binding: &'a Value, user: &UserInfo) -> Option<&'a Value> {
    let binding_ns = binding["metadata"]["namespace"].as_str().unwrap_or("");
    binding["subjects"].as_array()?.iter().find(|s| {
        let name = s["name"].as_str().unwrap_or("");
        match s["kind"].as_str().unwrap_or("") {
            "User" => user.name == name,
            "Group" => user.in_group(name),
            "ServiceAccount" => {
                let ns = s["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_ns);
                !ns.is_empty() && user.name == super::user::service_account_username(ns, name)
            }
            _ => false,
        }
    })
}

/// The role a binding refers to, or the error RBAC records when it is missing.
fn role_of(store: &Store, binding: &Value) -> Result<Arc<Value>, String> {
    let r = &binding["roleRef"];
    let name = r["name"].as_str().unwrap_or("");
    let ns = binding["metadata"]["namespace"].as_str().unwrap_or("");
    match r["kind"].as_str().unwrap_or("") {
        "ClusterRole" => store
            .get(&ObjectKey::new(CLUSTER_ROLES, "", name))
            .ok_or_else(|| format!("clusterrole.rbac.authorization.k8s.io \"{name}\" not found")),
        "Role" => store
            .get(&ObjectKey::new(ROLES, ns, name))
            .ok_or_else(|| format!("role.rbac.authorization.k8s.io \"{name}\" not found")),
        other => Err(format!("unsupported role reference kind: {other:?}")),
    }
}

/// Visits every rule bound to `user` in `namespace` (cluster-wide bindings first), until
/// `visit` returns `true`. Returns the resolution errors met on the way.
fn visit_rules(
    store: &Store,
    user: &UserInfo,
    namespace: &str,
    visit: &mut dyn FnMut(&Source<'_>, &PolicyRule) -> bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut lists = vec![store.list(CLUSTER_ROLE_BINDINGS, None).0];
    if !namespace.is_empty() {
        lists.push(store.list(ROLE_BINDINGS, Some(namespace)).0);
    }
    for bindings in lists {
        for b in &bindings {
            let Some(subject) = subject_for(b, user) else {
                continue;
            };
            let role = match role_of(store, b) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let source = Source {
                binding: b,
                subject,
            };
            for rule in PolicyRule::all_of(&role) {
                if visit(&source, &rule) {
                    return errors;
                }
            }
        }
    }
    errors
}

/// `utilerrors.NewAggregate(errs).Error()`: one message, or `[a, b]`.
fn aggregate(errors: &[String]) -> String {
    let mut uniq: Vec<&String> = Vec::new();
    for e in errors {
        if !uniq.contains(&e) {
            uniq.push(e);
        }
    }
    match uniq.as_slice() {
        [one] => (*one).clone(),
        many => format!(
            "[{}]",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Decides one request.
pub fn authorize(store: &Store, a: &Attributes) -> Decision {
    if a.user.in_group(MASTERS) {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let mut allowed_by = None;
    let errors = visit_rules(store, &a.user, a.namespace(), &mut |source, rule| {
        if rule.allows(a) {
            allowed_by = Some(source.describe());
            true
        } else {
            false
        }
    });
    match allowed_by {
        Some(d) => Decision {
            allowed: true,
            reason: format!("RBAC: allowed by {d}"),
        },
        None => Decision {
            allowed: false,
            reason: if errors.is_empty() {
                String::new()
            } else {
                format!("RBAC: {}", aggregate(&errors))
            },
        },
    }
}

/// Every rule bound to `user` in `namespace` (cluster-wide and namespaced), with whether
/// resolution was incomplete (`SelfSubjectRulesReview`, escalation checks).
pub fn rules_for(
    store: &Store,
    user: &UserInfo,
    namespace: &str,
) -> (Vec<PolicyRule>, Vec<String>) {
    if user.in_group(MASTERS) {
        let all = PolicyRule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            ..PolicyRule::default()
        };
        let urls = PolicyRule {
            verbs: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..PolicyRule::default()
        };
        return (vec![all, urls], Vec::new());
    }
    let mut rules = Vec::new();
    let errors = visit_rules(store, user, namespace, &mut |_, r| {
        rules.push(r.clone());
        false
    });
    (rules, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Actor, Mutation, WriteMeta};
    use serde_json::json;

    fn put(store: &Store, res: &str, obj: Value) {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        store
            .mutate(
                &ObjectKey::new(res, ns, name),
                WriteMeta {
                    verb: "create",
                    resource: res.into(),
                    field_manager: None,
                    actor: Actor::Client,
                    dry_run: false,
                },
                |_| Ok(Mutation::Put(obj)),
            )
            .expect("put");
    }

    fn get_secret(user: &UserInfo, ns: &str, name: &str) -> Attributes {
        Attributes::resource(user, "get", "", "v1", "secrets", "", ns, name)
    }

    #[test]
    fn role_bindings_grant_in_their_namespace_only() {
        let store = Store::new(None, 100);
        put(
            &store,
            CLUSTER_ROLES,
            json!({"metadata": {"name": "reader"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
        );
        put(
            &store,
            ROLE_BINDINGS,
            json!({"metadata": {"name": "rb", "namespace": "a"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}),
        );
        let sa = UserInfo::service_account("a", "sa", "u");
        let d = authorize(&store, &get_secret(&sa, "a", "x"));
        assert!(d.allowed);
        assert_eq!(
            d.reason,
            r#"RBAC: allowed by RoleBinding "rb/a" of ClusterRole "reader" to ServiceAccount "sa/a""#
        );
        assert!(!authorize(&store, &get_secret(&sa, "b", "x")).allowed);
        let other = UserInfo::service_account("b", "sa", "u");
        assert!(!authorize(&store, &get_secret(&other, "a", "x")).allowed);
        assert!(authorize(&store, &get_secret(&UserInfo::admin(), "b", "x")).allowed);
    }

    #[test]
    fn a_binding_to_a_missing_role_is_the_denial_reason() {
        let store = Store::new(None, 100);
        put(
            &store,
            CLUSTER_ROLE_BINDINGS,
            json!({"metadata": {"name": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "foo"},
            "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"}]}),
        );
        let d = authorize(
            &store,
            &get_secret(&UserInfo::service_account("a", "sa", "u"), "a", "x"),
        );
        assert!(!d.allowed);
        assert_eq!(
            d.reason,
            r#"RBAC: clusterrole.rbac.authorization.k8s.io "foo" not found"#
        );
    }
}
