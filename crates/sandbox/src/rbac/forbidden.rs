//! The 403 the apiserver answers a denied request with (`responsewriters.Forbidden` and
//! `apierrors.NewForbidden`), word for word.

use serde_json::json;

use super::attributes::{Attributes, Target};
use crate::status::ApiError;

/// `User "u" cannot get resource "secrets" in API group "" in the namespace "ns"`.
pub fn forbidden_message(a: &Attributes) -> String {
    let user = &a.user.name;
    match &a.target {
        Target::NonResource { path } => {
            format!("User {user:?} cannot {} path {path:?}", a.verb)
        }
        Target::Resource {
            group,
            resource,
            subresource,
            namespace,
            ..
        } => {
            let res = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {namespace:?}")
            };
            format!(
                "User {user:?} cannot {} resource {res:?} in API group {group:?} {scope}",
                a.verb
            )
        }
    }
}

/// `<group-resource> ["<name>"] is forbidden: <err>`, or `forbidden: <err>` for paths.
pub fn new_forbidden(group: &str, resource: &str, name: &str, err: &str) -> ApiError {
    let gr = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let message = if resource.is_empty() && group.is_empty() {
        format!("forbidden: {err}")
    } else if name.is_empty() {
        format!("{gr} is forbidden: {err}")
    } else {
        format!("{gr} {name:?} is forbidden: {err}")
    };
    let mut details = json!({});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    if !resource.is_empty() {
        details["kind"] = json!(resource);
    }
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(details),
        retry_after: None,
    }
}

/// The Forbidden Status for a denied request with the authorizer's `reason` (usually empty).
pub fn forbidden(a: &Attributes, reason: &str) -> ApiError {
    let msg = forbidden_message(a);
    let err = if reason.is_empty() {
        msg
    } else {
        format!("{msg}: {reason}")
    };
    match &a.target {
        Target::NonResource { .. } => new_forbidden("", "", "", &err),
        Target::Resource {
            group,
            resource,
            name,
            ..
        } => new_forbidden(group, resource, name, &err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::user::UserInfo;

    #[test]
    fn messages_match_the_apiserver() {
        let sa = UserInfo::service_account("ns", "sa", "u");
        let get = Attributes::resource(&sa, "get", "", "v1", "secrets", "", "ns", "x");
        assert_eq!(
            forbidden(&get, "").message,
            r#"secrets "x" is forbidden: User "system:serviceaccount:ns:sa" cannot get resource "secrets" in API group "" in the namespace "ns""#
        );
        let u = UserInfo {
            name: "u".into(),
            ..UserInfo::default()
        };
        let list = Attributes::resource(&u, "list", "", "v1", "secrets", "", "", "");
        assert_eq!(
            forbidden(&list, "").message,
            r#"secrets is forbidden: User "u" cannot list resource "secrets" in API group "" at the cluster scope"#
        );
        let create = Attributes::resource(
            &u,
            "create",
            "external-secrets.io",
            "v1",
            "externalsecrets",
            "",
            "ns",
            "",
        );
        assert_eq!(
            forbidden(&create, "").message,
            r#"externalsecrets.external-secrets.io is forbidden: User "u" cannot create resource "externalsecrets" in API group "external-secrets.io" in the namespace "ns""#
        );
        let exec = Attributes::resource(&u, "create", "", "v1", "pods", "exec", "ns", "p");
        assert_eq!(
            forbidden(&exec, "").message,
            r#"pods "p" is forbidden: User "u" cannot create resource "pods/exec" in API group "" in the namespace "ns""#
        );
        let path = Attributes::non_resource(&u, "get", "/metrics");
        let e = forbidden(&path, "");
        assert_eq!(
            e.message,
            r#"forbidden: User "u" cannot get path "/metrics""#
        );
        assert_eq!(e.code, 403);
        assert_eq!(e.to_status()["reason"], "Forbidden");
        let e = forbidden(
            &get,
            r#"RBAC: clusterrole.rbac.authorization.k8s.io "foo" not found"#,
        );
        assert!(e.message.ends_with(
            r#"in the namespace "ns": RBAC: clusterrole.rbac.authorization.k8s.io "foo" not found"#
        ));
        assert_eq!(e.to_status()["details"]["kind"], "secrets");
        assert_eq!(e.to_status()["details"]["name"], "x");
    }
}
