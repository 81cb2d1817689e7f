//! The token store: service tokens (`hvs.`), their policies and TTLs, and the JSON shapes of
//! `auth/token/lookup-self` and of a login's `auth` object.
//!
//! Tokens are stored under the SHA-256 of their ID (as Vault stores salted IDs), inside the
//! encrypted barrier.

use std::collections::BTreeMap;

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Default and maximum lease of a token when nothing shorter is asked for: 768h, Vault's
/// system default.
pub const DEFAULT_TTL: u64 = 768 * 3600;

/// What Vault knows about one token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Public handle of the token (not a credential).
    pub accessor: String,
    /// Attached policies, sorted; `["root"]` for the root token.
    pub policies: Vec<String>,
    /// The path that created it (`auth/token/root`, `auth/kubernetes/login`, ...).
    pub path: String,
    /// Human-readable name (`root`, `kubernetes-ns-sa`, `token`).
    pub display_name: String,
    /// Metadata (a login's role and service account).
    pub meta: Option<BTreeMap<String, String>>,
    /// Unix seconds when issued.
    pub creation_time: i64,
    /// TTL at creation, seconds; 0 for a non-expiring token.
    pub creation_ttl: u64,
    /// Unix seconds when it expires; `None` never.
    pub expire_at: Option<i64>,
    /// Identity entity of the login, `""` for tokens without one.
    pub entity_id: String,
    /// Whether the token has no parent.
    pub orphan: bool,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// The auth role that issued it, if any.
    pub role: Option<String>,
}

impl TokenEntry {
    /// Whether this is a root token (bypasses ACLs).
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    fn ttl_left(&self, now: i64) -> u64 {
        self.expire_at
            .map_or(0, |at| u64::try_from(at.saturating_sub(now)).unwrap_or(0))
    }

    /// The `data` of `auth/token/lookup-self` (and `lookup`): every field vaultrs'
    /// `LookupTokenResponse` and ESO's `checkToken` read. No `role`: Vault's token store only
    /// reports one for tokens created through a token role (`auth/token/create/<role>`), never
    /// for an auth method's login token (an auth role is in `meta.role`).
    pub fn lookup_body(&self, id: &str, now: i64) -> Value {
        json!({
            "accessor": self.accessor,
            "creation_time": self.creation_time,
            "creation_ttl": self.creation_ttl,
            "display_name": self.display_name,
            "entity_id": self.entity_id,
            "expire_time": self.expire_at.map(rfc3339),
            "explicit_max_ttl": 0,
            "id": id,
            "issue_time": rfc3339(self.creation_time),
            "meta": self.meta,
            "num_uses": 0,
            "orphan": self.orphan,
            "path": self.path,
            "policies": self.policies,
            "renewable": self.renewable,
            "ttl": self.ttl_left(now),
            "type": "service",
        })
    }

    /// The envelope's `auth` object for a freshly issued token: every field vaultrs'
    /// `AuthInfo` requires.
    pub fn auth_body(&self, id: &str) -> Value {
        let token_policies: Vec<&String> = self.policies.iter().collect();
        json!({
            "client_token": id,
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": token_policies,
            "metadata": self.meta,
            "lease_duration": self.creation_ttl,
            "renewable": self.renewable,
            "entity_id": self.entity_id,
            "token_type": "service",
            "orphan": self.orphan,
            "mfa_requirement": null,
            "num_uses": 0,
        })
    }
}

/// Formats unix seconds as RFC 3339 UTC.
pub fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The tokens Vault has issued.
#[derive(Default, Serialize, Deserialize)]
pub struct TokenStore {
    by_hash: BTreeMap<String, TokenEntry>,
}

impl TokenStore {
    /// Stores `entry` under a fresh random ID and returns the ID (the credential).
    pub fn issue(&mut self, entry: TokenEntry) -> String {
        let id = format!("hvs.{}", random_id(24));
        self.by_hash.insert(hash(&id), entry);
        id
    }

    /// The live entry for `id`; `None` when unknown or expired.
    pub fn lookup(&self, id: &str, now: i64) -> Option<&TokenEntry> {
        self.by_hash
            .get(&hash(id))
            .filter(|entry| entry.expire_at.is_none_or(|at| at > now))
    }

    /// Forgets `id`.
    pub fn revoke(&mut self, id: &str) {
        self.by_hash.remove(&hash(id));
    }

    /// Drops expired tokens, so storage does not grow without bound.
    pub fn purge_expired(&mut self, now: i64) {
        self.by_hash
            .retain(|_, entry| entry.expire_at.is_none_or(|at| at > now));
    }

    /// Extends a renewable token by `increment` seconds (or its creation TTL), up to the
    /// system maximum from now; returns the new TTL.
    pub fn renew(&mut self, id: &str, increment: u64, now: i64) -> Option<u64> {
        let entry = self.by_hash.get_mut(&hash(id))?;
        if !entry.renewable || entry.expire_at.is_none() {
            return Some(entry.ttl_left(now));
        }
        let ttl = if increment == 0 {
            entry.creation_ttl
        } else {
            increment
        }
        .min(DEFAULT_TTL);
        entry.expire_at = Some(now + i64::try_from(ttl).unwrap_or(i64::MAX / 2));
        Some(ttl)
    }
}

/// A random alphanumeric identifier (token IDs, accessors).
pub fn random_id(len: usize) -> String {
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// Normalises a policy list as Vault does: lowercased, trimmed, sorted, deduplicated, with
/// `default` added unless asked not to (never next to `root`).
pub fn normalize_policies(policies: &[String], add_default: bool) -> Vec<String> {
    let mut out: Vec<String> = policies
        .iter()
        .map(|p| p.trim().to_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    if add_default && !out.iter().any(|p| p == "root") {
        out.push("default".into());
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ttl: Option<i64>) -> TokenEntry {
        TokenEntry {
            accessor: random_id(24),
            policies: vec!["default".into()],
            path: "auth/token/create".into(),
            display_name: "token".into(),
            meta: None,
            creation_time: 1000,
            creation_ttl: ttl.map_or(0, |t| t as u64),
            expire_at: ttl.map(|t| 1000 + t),
            entity_id: String::new(),
            orphan: false,
            renewable: true,
            role: None,
        }
    }

    #[test]
    fn issued_tokens_look_up_until_they_expire() {
        let mut store = TokenStore::default();
        let id = store.issue(entry(Some(60)));
        assert!(id.starts_with("hvs."));
        assert!(store.lookup(&id, 1059).is_some());
        assert!(store.lookup(&id, 1060).is_none());
        assert!(store.lookup("hvs.unknown", 1000).is_none());
        assert_eq!(store.renew(&id, 120, 1050), Some(120));
        assert!(store.lookup(&id, 1169).is_some());
        store.revoke(&id);
        assert!(store.lookup(&id, 1000).is_none());
    }

    #[test]
    fn lookup_body_has_the_fields_clients_require() {
        let root = TokenEntry {
            policies: vec!["root".into()],
            ..entry(None)
        };
        let body = root.lookup_body("hvs.x", 2000);
        for key in [
            "accessor",
            "creation_time",
            "creation_ttl",
            "display_name",
            "entity_id",
            "explicit_max_ttl",
            "id",
            "num_uses",
            "orphan",
            "path",
            "policies",
            "ttl",
            "type",
        ] {
            assert!(body.get(key).is_some_and(|v| !v.is_null()), "{key}");
        }
        assert!(body["expire_time"].is_null());
        assert_eq!(body["ttl"], 0);
        let timed = entry(Some(60)).lookup_body("hvs.y", 1010);
        assert_eq!(timed["ttl"], 50);
        assert_eq!(timed["expire_time"], "1970-01-01T00:17:40Z");
    }

    /// Found by the differential test against OpenBao: lookup-self reported the kubernetes
    /// auth role of a login token as the token's `role` (and `role: null` for others).
    #[test]
    fn login_tokens_report_their_auth_role_in_meta_only() {
        let login = TokenEntry {
            meta: Some(BTreeMap::from([("role".to_string(), "eso".to_string())])),
            role: Some("eso".into()),
            ..entry(Some(60))
        };
        let body = login.lookup_body("hvs.z", 1000);
        assert!(body.get("role").is_none(), "{body}");
        assert_eq!(body["meta"]["role"], "eso");
        assert!(entry(None).lookup_body("hvs.x", 1000).get("role").is_none());
    }

    #[test]
    fn policies_are_normalised() {
        let got = normalize_policies(&["B".into(), "a".into(), "a".into()], true);
        assert_eq!(got, ["a", "b", "default"]);
        assert_eq!(normalize_policies(&["root".into()], true), ["root"]);
    }
}
