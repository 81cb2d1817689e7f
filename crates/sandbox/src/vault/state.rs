//! Everything behind the barrier: mounts and their data, auth methods, policies and tokens.
//! It exists in memory only while Vault is unsealed and is persisted encrypted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::mounts::{AuthMount, MountInfo, SecretMount, builtin_mounts};
use super::policy::{Acl, DEFAULT_POLICY, Policy};
use super::tokens::{TokenEntry, TokenStore, random_id};

/// The decrypted barrier content.
#[derive(Serialize, Deserialize)]
pub struct State {
    /// Reported by seal-status and health while unsealed.
    pub cluster_name: String,
    /// Reported by seal-status and health while unsealed.
    pub cluster_id: String,
    /// `sys/`, `cubbyhole/`, `identity/`: listed, not user data.
    pub builtin: BTreeMap<String, MountInfo>,
    /// The always-present `token/` auth method.
    pub token_auth: MountInfo,
    /// User secrets engines by path (`secret/`).
    pub mounts: BTreeMap<String, SecretMount>,
    /// User auth methods by path (`kubernetes/`).
    pub auths: BTreeMap<String, AuthMount>,
    /// ACL policies by name (raw text as written); `default` only when overridden.
    pub policies: BTreeMap<String, String>,
    /// Issued tokens.
    pub tokens: TokenStore,
}

impl State {
    /// The state of a freshly initialised Vault, with its root token; returns the root token.
    pub fn initial(now: i64) -> (Self, String) {
        let mut state = Self {
            cluster_name: format!("vault-cluster-{}", random_id(8).to_lowercase()),
            cluster_id: uuid::Uuid::new_v4().to_string(),
            builtin: builtin_mounts(),
            token_auth: MountInfo::new("token", "token based credentials", None),
            mounts: BTreeMap::new(),
            auths: BTreeMap::new(),
            policies: BTreeMap::new(),
            tokens: TokenStore::default(),
        };
        let root = state.tokens.issue(TokenEntry {
            accessor: random_id(24),
            policies: vec!["root".into()],
            path: "auth/token/root".into(),
            display_name: "root".into(),
            meta: None,
            creation_time: now,
            creation_ttl: 0,
            expire_at: None,
            entity_id: String::new(),
            orphan: true,
            renewable: false,
            role: None,
        });
        (state, root)
    }

    /// The text of a policy (`default` falls back to the built-in one).
    pub fn policy_text(&self, name: &str) -> Option<&str> {
        match self.policies.get(name) {
            Some(text) => Some(text),
            None if name == "default" => Some(DEFAULT_POLICY),
            None if name == "root" => Some(""),
            None => None,
        }
    }

    /// Every policy name, sorted, including `default` and `root`.
    pub fn policy_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.policies.keys().cloned().collect();
        names.extend(["default".to_string(), "root".to_string()]);
        names.sort();
        names.dedup();
        names
    }

    /// The merged ACL of a token's policies (unknown policy names grant nothing).
    pub fn acl(&self, token: &TokenEntry) -> Acl {
        let parsed: Vec<Policy> = token
            .policies
            .iter()
            .filter_map(|name| self.policy_text(name))
            .filter_map(|text| Policy::parse(text).ok())
            .collect();
        Acl::new(&parsed)
    }

    /// The user secrets mount owning `path` (longest prefix) and the path below it.
    pub fn secret_mount_of<'p>(&self, path: &'p str) -> Option<(String, &'p str)> {
        self.mounts
            .keys()
            .filter(|m| path.starts_with(m.as_str()) || format!("{path}/") == **m)
            .max_by_key(|m| m.len())
            .map(|m| (m.clone(), path.get(m.len()..).unwrap_or("")))
    }

    /// The user auth mount owning `rest` (the path after `auth/`) and the path below it.
    pub fn auth_mount_of<'p>(&self, rest: &'p str) -> Option<(String, &'p str)> {
        self.auths
            .keys()
            .filter(|m| rest.starts_with(m.as_str()) || format!("{rest}/") == **m)
            .max_by_key(|m| m.len())
            .map(|m| (m.clone(), rest.get(m.len()..).unwrap_or("")))
    }
}
