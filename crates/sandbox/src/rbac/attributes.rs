//! What a request asks to do, as the apiserver's `RequestInfoFactory` reads it from the URL:
//! a resource request (verb, group, version, resource, subresource, namespace, name) or a
//! non-resource request (lowercased HTTP method on a path).

use super::user::UserInfo;
use crate::http::Query;
use crate::store::selector::FieldSelector;

/// The object or path a request targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/api/v1/...` or `/apis/<group>/<version>/...` below the group-version.
    Resource {
        /// API group (`""` for core).
        group: String,
        /// API version.
        version: String,
        /// Plural resource.
        resource: String,
        /// Subresource (`status`, `token`, `portforward`, `log`), or empty.
        subresource: String,
        /// Namespace, or empty (cluster-scoped, or all namespaces).
        namespace: String,
        /// Object name, or empty (collections and creates).
        name: String,
    },
    /// Anything else (`/version`, `/api`, `/apis/apps`, `/openapi/v2`).
    NonResource {
        /// The URL path.
        path: String,
    },
}

/// One authorization question: may `user` do `verb` on `target`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `impersonate`, ... (non-resource: the lowercased HTTP method).
    pub verb: String,
    /// What.
    pub target: Target,
}

/// Subresources of `namespaces` that stay on the namespace itself (`/namespaces/x/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl Attributes {
    /// A resource request built by hand (controllers, reviews).
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the resource attributes of an access review"
    )]
    pub fn resource(
        user: &UserInfo,
        verb: &str,
        group: &str,
        version: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Self {
            user: user.clone(),
            verb: verb.into(),
            target: Target::Resource {
                group: group.into(),
                version: version.into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: namespace.into(),
                name: name.into(),
            },
        }
    }

    /// A non-resource request.
    pub fn non_resource(user: &UserInfo, verb: &str, path: &str) -> Self {
        Self {
            user: user.clone(),
            verb: verb.into(),
            target: Target::NonResource { path: path.into() },
        }
    }

    /// Reads the attributes of an HTTP request as the apiserver does: the verb from the
    /// method (`GET` on a collection is `list`, or `watch` with `watch=true`; `DELETE` on a
    /// collection is `deletecollection`), namespace and name from the path, and for list and
    /// watch the name a `metadata.name` field selector pins.
    pub fn from_request(user: &UserInfo, method: &str, path: &str, query: &Query) -> Self {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match parts.as_slice() {
            ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
            ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
            _ => {
                return Self::non_resource(user, &method.to_ascii_lowercase(), path);
            }
        };
        let mut verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
        let mut namespace = String::new();
        let mut current: &[&str] = rest;
        if current.first() == Some(&"namespaces")
            && let Some(ns) = current.get(1)
        {
            namespace = (*ns).to_string();
            if current.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&current[2]) {
                current = &current[2..];
            }
        }
        let resource = current.first().copied().unwrap_or("").to_string();
        let mut name = current.get(1).copied().unwrap_or("").to_string();
        let subresource = current.get(2).copied().unwrap_or("").to_string();
        if name.is_empty() && verb == "get" {
            verb = if query.flag("watch") { "watch" } else { "list" }.into();
            if let Ok(fields) = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
                && let Some(n) = fields.pinned_name()
            {
                name = n.to_string();
            }
        }
        if name.is_empty() && verb == "delete" {
            verb = "deletecollection".into();
        }
        Self::resource(
            user,
            &verb,
            group,
            version,
            &resource,
            &subresource,
            &namespace,
            &name,
        )
    }

    /// The namespace of a resource request (empty otherwise).
    pub fn namespace(&self) -> &str {
        match &self.target {
            Target::Resource { namespace, .. } => namespace,
            Target::NonResource { .. } => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, path: &str, q: &str) -> Attributes {
        Attributes::from_request(&UserInfo::admin(), method, path, &Query::parse(Some(q)))
    }

    fn res(a: &Attributes) -> (String, String, String, String, String) {
        match &a.target {
            Target::Resource {
                resource,
                subresource,
                namespace,
                name,
                ..
            } => (
                a.verb.clone(),
                resource.clone(),
                subresource.clone(),
                namespace.clone(),
                name.clone(),
            ),
            Target::NonResource { path } => (
                a.verb.clone(),
                path.clone(),
                "".into(),
                "".into(),
                "".into(),
            ),
        }
    }

    #[test]
    fn verbs_namespaces_and_names_come_from_the_url() {
        let s = |v: &str| v.to_string();
        assert_eq!(
            res(&attrs("GET", "/api/v1/namespaces/ns/secrets/x", "")),
            (s("get"), s("secrets"), s(""), s("ns"), s("x"))
        );
        assert_eq!(
            res(&attrs("GET", "/api/v1/secrets", "")),
            (s("list"), s("secrets"), s(""), s(""), s(""))
        );
        assert_eq!(
            res(&attrs(
                "GET",
                "/api/v1/namespaces/ns/secrets",
                "watch=true&fieldSelector=metadata.name%3Dk"
            )),
            (s("watch"), s("secrets"), s(""), s("ns"), s("k"))
        );
        assert_eq!(
            res(&attrs("DELETE", "/api/v1/namespaces/ns/pods", "")),
            (s("deletecollection"), s("pods"), s(""), s("ns"), s(""))
        );
        assert_eq!(
            res(&attrs(
                "POST",
                "/api/v1/namespaces/ns/pods/p/portforward",
                ""
            )),
            (s("create"), s("pods"), s("portforward"), s("ns"), s("p"))
        );
        // A namespace is its own namespace; its status is a subresource.
        assert_eq!(
            res(&attrs("GET", "/api/v1/namespaces/ns", "")),
            (s("get"), s("namespaces"), s(""), s("ns"), s("ns"))
        );
        assert_eq!(
            res(&attrs("PUT", "/api/v1/namespaces/ns/status", "")),
            (s("update"), s("namespaces"), s("status"), s("ns"), s("ns"))
        );
        assert_eq!(
            res(&attrs("GET", "/apis/apps/v1", "")),
            (s("get"), s("/apis/apps/v1"), s(""), s(""), s(""))
        );
        assert_eq!(
            attrs("GET", "/version", "").target,
            Target::NonResource {
                path: "/version".into()
            }
        );
    }
}
