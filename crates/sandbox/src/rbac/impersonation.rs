//! `Impersonate-User` / `Impersonate-Group` / `Impersonate-Uid` / `Impersonate-Extra-*`
//! (`kubectl --as`, `--as-group`): each requested item is authorized for the requesting user
//! with verb `impersonate`, then the request continues as the impersonated user
//! (`endpoints/filters/impersonation.go`).

use std::collections::BTreeMap;

use hyper::HeaderMap;

use super::attributes::Attributes;
use super::authorizer::authorize;
use super::forbidden::forbidden;
use super::user::{AUTHENTICATED, UNAUTHENTICATED, UserInfo, split_service_account};
use crate::status::ApiError;
use crate::store::Store;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// Whether the request carries any impersonation header.
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"))
}

fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

/// The identity the request acts as: `requestor` itself without impersonation headers, or
/// the impersonated user once every requested item is allowed.
///
/// # Errors
/// 403 Forbidden for the first item the requestor may not impersonate; 400 for groups,
/// extras or a uid without a user.
pub fn resolve(
    store: &Store,
    requestor: &UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    if !requested(headers) {
        return Ok(requestor.clone());
    }
    let user = values(headers, USER).into_iter().next();
    let groups = values(headers, GROUP);
    let uid = values(headers, UID).into_iter().next();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix(EXTRA_PREFIX)
            && let Ok(v) = v.to_str()
        {
            extra
                .entry(crate::http::decode(key).to_lowercase())
                .or_default()
                .push(v.to_string());
        }
    }
    let mut checks: Vec<Attributes> = Vec::new();
    if let Some(u) = &user {
        checks.push(match split_service_account(u) {
            Some((ns, name)) => Attributes::resource(
                requestor,
                "impersonate",
                "",
                "v1",
                "serviceaccounts",
                "",
                ns,
                name,
            ),
            None => Attributes::resource(requestor, "impersonate", "", "v1", "users", "", "", u),
        });
    }
    for g in &groups {
        checks.push(Attributes::resource(
            requestor,
            "impersonate",
            "",
            "v1",
            "groups",
            "",
            "",
            g,
        ));
    }
    for (k, vs) in &extra {
        for v in vs {
            checks.push(Attributes::resource(
                requestor,
                "impersonate",
                "authentication.k8s.io",
                "v1",
                "userextras",
                k,
                "",
                v,
            ));
        }
    }
    if let Some(u) = &uid {
        checks.push(Attributes::resource(
            requestor,
            "impersonate",
            "authentication.k8s.io",
            "v1",
            "uids",
            "",
            "",
            u,
        ));
    }
    let Some(name) = user else {
        return Err(ApiError::bad_request(
            "requested impersonation of groups, extras or a uid without impersonating a user",
        ));
    };
    for a in &checks {
        let d = authorize(store, a);
        if !d.allowed {
            return Err(forbidden(a, &d.reason));
        }
    }
    let mut out_groups = groups.clone();
    if groups.is_empty()
        && let Some((ns, _)) = split_service_account(&name)
    {
        out_groups = vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    if name == "system:anonymous" {
        if !out_groups.iter().any(|g| g == UNAUTHENTICATED) {
            out_groups.push(UNAUTHENTICATED.into());
        }
    } else if !out_groups
        .iter()
        .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
    {
        out_groups.push(AUTHENTICATED.into());
    }
    Ok(UserInfo {
        name,
        uid: uid.unwrap_or_default(),
        groups: out_groups,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn admins_impersonate_service_accounts_with_their_groups() {
        let store = Store::new(None, 10);
        let u = resolve(
            &store,
            &UserInfo::admin(),
            &headers(&[("Impersonate-User", "system:serviceaccount:ns:sa")]),
        )
        .expect("allowed");
        assert_eq!(u.name, "system:serviceaccount:ns:sa");
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns",
                "system:authenticated"
            ]
        );
        let g = resolve(
            &store,
            &UserInfo::admin(),
            &headers(&[("Impersonate-User", "bob"), ("Impersonate-Group", "devs")]),
        )
        .expect("allowed");
        assert_eq!(g.groups, ["devs", "system:authenticated"]);
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb() {
        let store = Store::new(None, 10);
        let sa = UserInfo::service_account("ns", "sa", "u");
        let e = resolve(&store, &sa, &headers(&[("Impersonate-User", "bob")])).expect_err("denied");
        assert_eq!(
            e.message,
            r#"users "bob" is forbidden: User "system:serviceaccount:ns:sa" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        let e = resolve(&store, &sa, &headers(&[("Impersonate-Group", "x")])).expect_err("no user");
        assert_eq!(e.code, 400);
    }
}
