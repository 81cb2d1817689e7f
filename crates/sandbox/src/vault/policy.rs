//! ACL policies: parsing Vault's HCL (or JSON) policy language and deciding whether a request
//! path and operation are allowed, with Vault's glob (`*` suffix), segment wildcard (`+`) and
//! priority rules.

use std::collections::BTreeMap;

/// Why a policy document was rejected; reported as a 400 `failed to parse policy: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The document is not valid HCL or JSON.
    #[error("failed to parse policy: {0}")]
    Syntax(String),
    /// A key, block or value that the policy language does not have.
    #[error("failed to parse policy: {0}")]
    Invalid(String),
}

/// What a request wants to do, the logical operation Vault derives from the HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST`/`PUT` on something that does not exist yet.
    Create,
    /// `GET`.
    Read,
    /// `POST`/`PUT` on something that exists (or a path without an existence check).
    Update,
    /// `DELETE`.
    Delete,
    /// `LIST` or `GET ?list=true`.
    List,
}

/// A set of capabilities as a bit mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps(u8);

impl Caps {
    /// `create`.
    pub const CREATE: Caps = Caps(1);
    /// `read`.
    pub const READ: Caps = Caps(1 << 1);
    /// `update`.
    pub const UPDATE: Caps = Caps(1 << 2);
    /// `delete`.
    pub const DELETE: Caps = Caps(1 << 3);
    /// `list`.
    pub const LIST: Caps = Caps(1 << 4);
    /// `sudo`: needed on root-protected paths.
    pub const SUDO: Caps = Caps(1 << 5);
    /// `deny`: overrides everything else.
    pub const DENY: Caps = Caps(1 << 6);
    /// `patch`.
    pub const PATCH: Caps = Caps(1 << 7);

    /// Whether every capability of `other` is in `self`.
    pub fn contains(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }

    /// Capability names, sorted as Vault lists them; `["deny"]` for nothing.
    pub fn names(self) -> Vec<&'static str> {
        if self.contains(Self::DENY) || self == Self::default() {
            return vec!["deny"];
        }
        [
            (Self::CREATE, "create"),
            (Self::DELETE, "delete"),
            (Self::LIST, "list"),
            (Self::PATCH, "patch"),
            (Self::READ, "read"),
            (Self::SUDO, "sudo"),
            (Self::UPDATE, "update"),
        ]
        .into_iter()
        .filter(|(cap, _)| self.contains(*cap))
        .map(|(_, name)| name)
        .collect()
    }

    fn union(self, other: Caps) -> Caps {
        Caps(self.0 | other.0)
    }

    fn from_name(name: &str) -> Option<Caps> {
        Some(match name {
            "create" => Self::CREATE,
            "read" => Self::READ,
            "update" => Self::UPDATE,
            "delete" => Self::DELETE,
            "list" => Self::LIST,
            "sudo" => Self::SUDO,
            "deny" => Self::DENY,
            "patch" => Self::PATCH,
            // Vault accepts this capability; the sandbox has no subscriptions.
            "subscribe" => Self::default(),
            _ => return None,
        })
    }

    /// The legacy `policy = "read|write|deny|sudo"` shorthand.
    fn from_legacy(name: &str) -> Option<Caps> {
        let read = Self::READ.union(Self::LIST);
        let write = read
            .union(Self::CREATE)
            .union(Self::UPDATE)
            .union(Self::DELETE)
            .union(Self::PATCH);
        Some(match name {
            "deny" => Self::DENY,
            "read" => read,
            "write" => write,
            "sudo" => write.union(Self::SUDO),
            _ => return None,
        })
    }

    fn for_operation(op: Operation) -> Caps {
        match op {
            Operation::Create => Self::CREATE,
            Operation::Read => Self::READ,
            Operation::Update => Self::UPDATE,
            Operation::Delete => Self::DELETE,
            Operation::List => Self::LIST,
        }
    }
}

/// A parsed policy: path patterns and their capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: BTreeMap<String, Caps>,
}

/// The `default` policy every login token gets unless the role says otherwise: enough to look
/// itself up, renew and revoke itself, as Vault's built-in one.
pub const DEFAULT_POLICY: &str = r#"# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}
"#;

impl Policy {
    /// Parses a policy document in HCL, or in JSON when it starts with `{`.
    ///
    /// # Errors
    /// [`PolicyError`] naming the offending key or value.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if text.trim_start().starts_with('{') {
            return Self::parse_json(text);
        }
        let body = hcl::parse(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let mut policy = Policy::default();
        for attr in body.attributes() {
            if attr.key() != "name" {
                return Err(PolicyError::Invalid(format!(
                    "invalid key {:?}",
                    attr.key()
                )));
            }
        }
        for block in body.blocks() {
            if block.identifier() != "path" {
                return Err(PolicyError::Invalid(format!(
                    "invalid key {:?}",
                    block.identifier()
                )));
            }
            let [label] = block.labels() else {
                return Err(PolicyError::Invalid(
                    "a path block needs exactly one path label".into(),
                ));
            };
            let mut caps = Caps::default();
            for attr in block.body().attributes() {
                match attr.key() {
                    "capabilities" => {
                        let hcl::Expression::Array(items) = attr.expr() else {
                            return Err(PolicyError::Invalid(
                                "capabilities must be a list of strings".into(),
                            ));
                        };
                        for item in items {
                            let hcl::Expression::String(name) = item else {
                                return Err(PolicyError::Invalid(
                                    "capabilities must be a list of strings".into(),
                                ));
                            };
                            caps = caps.union(capability(name)?);
                        }
                    }
                    "policy" => {
                        let hcl::Expression::String(name) = attr.expr() else {
                            return Err(PolicyError::Invalid("policy must be a string".into()));
                        };
                        caps = caps.union(Caps::from_legacy(name).ok_or_else(|| {
                            PolicyError::Invalid(format!("invalid policy {name:?}"))
                        })?);
                    }
                    // Parameter constraints and wrapping limits are accepted, not enforced.
                    "allowed_parameters"
                    | "denied_parameters"
                    | "required_parameters"
                    | "min_wrapping_ttl"
                    | "max_wrapping_ttl" => {}
                    other => {
                        return Err(PolicyError::Invalid(format!("invalid key {other:?}")));
                    }
                }
            }
            policy.add(label.as_str(), caps);
        }
        Ok(policy)
    }

    fn parse_json(text: &str) -> Result<Self, PolicyError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            #[serde(default)]
            path: BTreeMap<String, Rule>,
            #[serde(default)]
            #[expect(
                dead_code,
                reason = "accepted for compatibility, the name comes from the URL"
            )]
            name: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Rule {
            #[serde(default)]
            capabilities: Vec<String>,
            #[serde(default)]
            policy: Option<String>,
        }
        let doc: Doc =
            serde_json::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let mut policy = Policy::default();
        for (path, rule) in doc.path {
            let mut caps = Caps::default();
            for name in &rule.capabilities {
                caps = caps.union(capability(name)?);
            }
            if let Some(name) = rule.policy {
                caps = caps.union(
                    Caps::from_legacy(&name)
                        .ok_or_else(|| PolicyError::Invalid(format!("invalid policy {name:?}")))?,
                );
            }
            policy.add(&path, caps);
        }
        Ok(policy)
    }

    fn add(&mut self, pattern: &str, caps: Caps) {
        let pattern = pattern.trim_start_matches('/').to_string();
        let entry = self.rules.entry(pattern).or_default();
        *entry = entry.union(caps);
    }
}

fn capability(name: &str) -> Result<Caps, PolicyError> {
    Caps::from_name(name)
        .ok_or_else(|| PolicyError::Invalid(format!("invalid capability {name:?}")))
}

/// The merged rules of a token's policies.
#[derive(Debug, Default)]
pub struct Acl {
    rules: BTreeMap<String, Caps>,
}

impl Acl {
    /// Merges policies; capabilities on the same pattern are united, `deny` wins.
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Self {
        let mut rules: BTreeMap<String, Caps> = BTreeMap::new();
        for policy in policies {
            for (pattern, caps) in &policy.rules {
                let entry = rules.entry(pattern.clone()).or_default();
                *entry = entry.union(*caps);
            }
        }
        Self { rules }
    }

    /// The capabilities granted on `path`: those of the exact rule, else of the
    /// highest-priority matching glob rule; empty when nothing matches; only `deny` when denied.
    pub fn capabilities(&self, path: &str) -> Caps {
        let caps = if let Some(caps) = self.rules.get(path).filter(|_| !is_glob(path)) {
            *caps
        } else {
            self.rules
                .iter()
                .filter(|(pattern, _)| is_glob(pattern) && matches(pattern, path))
                .max_by(|(a, _), (b, _)| priority(a).cmp(&priority(b)))
                .map(|(_, caps)| *caps)
                .unwrap_or_default()
        };
        if caps.contains(Caps::DENY) {
            Caps::DENY
        } else {
            caps
        }
    }

    /// Whether `op` on `path` is allowed, also requiring `sudo` on root-protected paths.
    pub fn allows(&self, path: &str, op: Operation, needs_sudo: bool) -> bool {
        let caps = self.capabilities(path);
        caps.contains(Caps::for_operation(op)) && (!needs_sudo || caps.contains(Caps::SUDO))
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.ends_with('*') || pattern.split('/').any(|segment| segment == "+")
}

/// Whether `pattern` (with an optional `*` suffix and `+` segments) matches `path`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let (body, prefix) = match pattern.strip_suffix('*') {
        Some(body) => (body, true),
        None => (pattern, false),
    };
    let pattern_segments: Vec<&str> = body.split('/').collect();
    let path_segments: Vec<&str> = path.split('/').collect();
    if prefix {
        if path_segments.len() < pattern_segments.len() {
            return false;
        }
        let last = pattern_segments.len() - 1;
        pattern_segments.iter().enumerate().all(|(i, want)| {
            let got = path_segments[i];
            if *want == "+" {
                return true;
            }
            if i == last {
                got.starts_with(want)
            } else {
                got == *want
            }
        })
    } else {
        path_segments.len() == pattern_segments.len()
            && pattern_segments
                .iter()
                .zip(&path_segments)
                .all(|(want, got)| *want == "+" || want == got)
    }
}

/// Vault's priority order between matching glob patterns: a later first wildcard wins, then no
/// `*` suffix, then fewer `+` segments, then a longer pattern, then the lexicographically larger.
fn priority(pattern: &str) -> (usize, bool, std::cmp::Reverse<usize>, usize, &str) {
    let first_wildcard = pattern
        .char_indices()
        .find(|(i, c)| {
            *c == '*'
                || (*c == '+'
                    && (*i == 0 || pattern.as_bytes()[i - 1] == b'/')
                    && matches!(pattern.as_bytes().get(i + 1), None | Some(b'/')))
        })
        .map_or(pattern.len(), |(i, _)| i);
    let plus_segments = pattern.split('/').filter(|s| *s == "+").count();
    (
        first_wildcard,
        !pattern.ends_with('*'),
        std::cmp::Reverse(plus_segments),
        pattern.len(),
        pattern,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        let policy = Policy::parse(text).expect("valid policy");
        Acl::new([&policy])
    }

    #[test]
    fn glob_suffix_and_segment_wildcard_match() {
        assert!(matches("secret/data/*", "secret/data/app/db"));
        assert!(matches("secret/data/*", "secret/data/"));
        assert!(!matches("secret/data/*", "secret/data"));
        assert!(matches("secret/data/ap*", "secret/data/app/db"));
        assert!(matches("secret/+/app", "secret/data/app"));
        assert!(!matches("secret/+/app", "secret/data/other/app"));
        assert!(matches("secret/+/app/*", "secret/metadata/app/x/y"));
        assert!(!matches("secret/data/app", "secret/data/app/x"));
    }

    #[test]
    fn hcl_capabilities_are_enforced() {
        let acl = acl(r#"
            path "secret/data/app/*" { capabilities = ["read", "list"] }
            path "secret/metadata/*" { capabilities = ["list"] }
        "#);
        assert!(acl.allows("secret/data/app/db", Operation::Read, false));
        assert!(!acl.allows("secret/data/app/db", Operation::Update, false));
        assert!(!acl.allows("secret/data/other", Operation::Read, false));
        assert!(acl.allows("secret/metadata/", Operation::List, false));
        assert!(!acl.allows("secret/data/app/db", Operation::Read, true));
    }

    #[test]
    fn exact_rule_beats_glob_and_deny_wins() {
        let acl = acl(r#"
            path "secret/data/*" { capabilities = ["read"] }
            path "secret/data/app/root" { capabilities = ["deny"] }
            path "secret/data/app/*" { capabilities = ["create", "update"] }
        "#);
        assert!(!acl.allows("secret/data/app/root", Operation::Read, false));
        // The longer glob has priority over the shorter: read is not granted there.
        assert!(acl.allows("secret/data/app/x", Operation::Update, false));
        assert!(!acl.allows("secret/data/app/x", Operation::Read, false));
        assert!(acl.allows("secret/data/other", Operation::Read, false));
    }

    #[test]
    fn priority_prefers_later_wildcards_and_fewer_pluses() {
        let acl = acl(r#"
            path "secret/+/app/db" { capabilities = ["read"] }
            path "secret/data/+/db" { capabilities = ["update"] }
            path "secret/data/app/*" { capabilities = ["list"] }
        "#);
        // All three match; `secret/data/app/*` has its first wildcard latest.
        assert_eq!(acl.capabilities("secret/data/app/db"), Caps::LIST);
    }

    #[test]
    fn merged_policies_unite_capabilities() {
        let a = Policy::parse(r#"path "kv/*" { capabilities = ["read"] }"#).unwrap();
        let b = Policy::parse(r#"path "kv/*" { capabilities = ["list"] }"#).unwrap();
        let acl = Acl::new([&a, &b]);
        assert!(acl.allows("kv/x", Operation::Read, false));
        assert!(acl.allows("kv/x", Operation::List, false));
    }

    #[test]
    fn capability_names_are_sorted() {
        let acl = acl(r#"path "kv/*" { capabilities = ["update", "read", "create"] }"#);
        assert_eq!(
            acl.capabilities("kv/a").names(),
            ["create", "read", "update"]
        );
        assert_eq!(acl.capabilities("other").names(), ["deny"]);
    }

    #[test]
    fn bad_policies_are_rejected() {
        assert!(Policy::parse(r#"path "x" { capabilities = ["fly"] }"#).is_err());
        assert!(Policy::parse(r#"pth "x" { capabilities = ["read"] }"#).is_err());
        assert!(Policy::parse("path \"x\" {").is_err());
    }

    #[test]
    fn json_and_legacy_forms_parse() {
        let acl = acl(r#"{"path": {"kv/*": {"policy": "write"}}}"#);
        assert!(acl.allows("kv/a", Operation::Create, false));
        assert!(acl.allows("kv/a", Operation::Delete, false));
        assert!(!acl.allows("kv/a", Operation::Read, true));
    }

    #[test]
    fn default_policy_allows_lookup_self() {
        let acl = acl(DEFAULT_POLICY);
        assert!(acl.allows("auth/token/lookup-self", Operation::Read, false));
        assert!(!acl.allows("secret/data/x", Operation::Read, false));
    }
}
