//! RBAC escalation prevention: a user may only write a Role or ClusterRole granting what it
//! already holds (or with verb `escalate` on it), and only bind a role whose permissions it
//! holds (or with verb `bind` on it) — `ConfirmNoEscalation`, `EscalationAllowed`,
//! `BindingAuthorized` upstream.

use serde_json::Value;

use super::attributes::Attributes;
use super::authorizer::{authorize, rules_for};
use super::forbidden::new_forbidden;
use super::rules::PolicyRule;
use super::user::{MASTERS, UserInfo};
use crate::resources::ResourceType;
use crate::status::ApiError;
use crate::store::{ObjectKey, Store};

const GROUP: &str = "rbac.authorization.k8s.io";

/// Merges broken-down rules that differ only by verb (`CompactRules`).
fn compact(missing: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for m in missing {
        let simple = m.resource_names.is_empty() && m.non_resource_urls.is_empty();
        match out.iter_mut().find(|o| {
            simple
                && o.resource_names.is_empty()
                && o.non_resource_urls.is_empty()
                && o.api_groups == m.api_groups
                && o.resources == m.resources
        }) {
            Some(o) => {
                for v in &m.verbs {
                    if !o.verbs.contains(v) {
                        o.verbs.push(v.clone());
                    }
                }
            }
            None => out.push(m.clone()),
        }
    }
    out
}

/// Checks that `user` holds every permission of `rules` in `namespace`.
fn confirm_no_escalation(
    store: &Store,
    user: &UserInfo,
    namespace: &str,
    rules: &[PolicyRule],
) -> Result<(), String> {
    let (owned, errors) = rules_for(store, user, namespace);
    let missing: Vec<PolicyRule> = rules
        .iter()
        .flat_map(PolicyRule::breakdown)
        .filter(|atom| !owned.iter().any(|o| o.covers(atom)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut lines: Vec<String> = compact(&missing).iter().map(PolicyRule::compact).collect();
    lines.sort();
    lines.dedup();
    let mut msg = format!(
        "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        user.groups_quoted(),
        lines.join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(msg)
}

/// Whether `user` may `verb` (escalate, bind) the role `resource/name`.
fn may(store: &Store, user: &UserInfo, verb: &str, resource: &str, ns: &str, name: &str) -> bool {
    authorize(
        store,
        &Attributes::resource(user, verb, GROUP, "v1", resource, "", ns, name),
    )
    .allowed
}

/// The check for a write of `obj` (a Role, ClusterRole, RoleBinding or ClusterRoleBinding as
/// it would be stored) by `user`; other kinds pass.
///
/// # Errors
/// 403 Forbidden naming the permissions the user does not hold.
pub fn check(
    store: &Store,
    user: &UserInfo,
    rt: &ResourceType,
    obj: &Value,
) -> Result<(), ApiError> {
    if rt.group != GROUP || user.in_group(MASTERS) {
        return Ok(());
    }
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let denied = |err: String| new_forbidden(GROUP, &rt.plural, name, &err);
    match rt.plural.as_str() {
        "roles" | "clusterroles" => {
            if may(store, user, "escalate", &rt.plural, ns, name) {
                return Ok(());
            }
            confirm_no_escalation(store, user, ns, &PolicyRule::all_of(obj)).map_err(denied)
        }
        "rolebindings" | "clusterrolebindings" => {
            let r = &obj["roleRef"];
            let role = r["name"].as_str().unwrap_or("");
            let (resource, role_ns) = match r["kind"].as_str() {
                Some("Role") => ("roles", ns),
                _ => ("clusterroles", ""),
            };
            if may(
                store,
                user,
                "bind",
                resource,
                if ns.is_empty() { role_ns } else { ns },
                role,
            ) {
                return Ok(());
            }
            let key = ObjectKey::new(format!("{GROUP}/{resource}"), role_ns, role);
            let Some(role_obj) = store.get(&key) else {
                let kind = if resource == "roles" {
                    "role"
                } else {
                    "clusterrole"
                };
                return Err(denied(format!("{kind}.{GROUP} {role:?} not found")));
            };
            confirm_no_escalation(store, user, ns, &PolicyRule::all_of(&role_obj)).map_err(denied)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;
    use serde_json::json;

    #[test]
    fn granting_more_than_held_is_forbidden() {
        let store = Store::new(None, 10);
        let reg = Registry::new();
        let roles = reg.lookup(GROUP, "v1", "roles").expect("roles");
        let sa = UserInfo::service_account("ns", "sa", "u");
        let role = json!({"metadata": {"name": "r", "namespace": "ns"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete", "get"]}]});
        let e = check(&store, &sa, &roles, &role).expect_err("escalation");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "roles.rbac.authorization.k8s.io \"r\" is forbidden: user \"system:serviceaccount:ns:sa\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:ns\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\" \"get\"]}"
        );
        assert!(check(&store, &UserInfo::admin(), &roles, &role).is_ok());
    }
}
