//! Who a request acts as: the authenticated (or impersonated) user with its groups, as the
//! apiserver's `user.Info`.

use std::collections::BTreeMap;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The privileged group: the apiserver allows it everything, before RBAC is asked.
pub const MASTERS: &str = "system:masters";
/// The group of every service account.
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// The user name of the kubeconfig's admin credential (k3s: CN `system:admin`).
pub const ADMIN: &str = "system:admin";

/// `system:serviceaccount:<ns>:<name>`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The namespace and name of a service-account user name.
pub fn split_service_account(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// User name (`system:serviceaccount:vault:vault`).
    pub name: String,
    /// Uid (a service account's object uid).
    pub uid: String,
    /// Groups, in order.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The kubeconfig's admin: `system:admin` in `system:masters`, like k3s's admin certificate.
    pub fn admin() -> Self {
        Self {
            name: ADMIN.into(),
            uid: String::new(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
            extra: BTreeMap::new(),
        }
    }

    /// A service account as its token authenticates it.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            name: service_account_username(namespace, name),
            uid: uid.into(),
            groups: vec![
                SERVICE_ACCOUNTS.into(),
                format!("{SERVICE_ACCOUNTS}:{namespace}"),
                AUTHENTICATED.into(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The `["g1" "g2"]` rendering Go's `%q` gives a string slice (escalation messages).
    pub fn groups_quoted(&self) -> String {
        let inner: Vec<String> = self.groups.iter().map(|g| format!("{g:?}")).collect();
        format!("[{}]", inner.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_names_round_trip() {
        let u = UserInfo::service_account("vault", "vault", "u1");
        assert_eq!(u.name, "system:serviceaccount:vault:vault");
        assert_eq!(split_service_account(&u.name), Some(("vault", "vault")));
        assert!(u.in_group("system:serviceaccounts:vault"));
        assert_eq!(split_service_account("alice"), None);
        assert_eq!(split_service_account("system:serviceaccount:ns"), None);
    }
}
