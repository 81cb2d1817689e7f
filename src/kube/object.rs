//! How objects are named in messages: `Kind namespace/name`, the way operators read them.

use std::fmt;

/// Identifies one object for messages, plans and errors.
///
/// Kept separate from kube-rs types so errors and plan entries stay small, cloneable and
/// serialisable, and so every message names objects the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ObjectKey {
    /// `apiVersion` as written in the manifest, e.g. `source.toolkit.fluxcd.io/v1`.
    pub api_version: String,
    /// The kind, e.g. `GitRepository`.
    pub kind: String,
    /// The namespace, `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key from its parts.
    #[must_use]
    pub fn new(
        api_version: impl Into<String>,
        kind: impl Into<String>,
        namespace: Option<&str>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_owned),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_kind_namespace_and_name() {
        let k = ObjectKey::new("v1", "Secret", Some("flux-system"), "flux-system");
        assert_eq!(k.to_string(), "Secret flux-system/flux-system");
        let c = ObjectKey::new("v1", "Namespace", None, "vault");
        assert_eq!(c.to_string(), "Namespace vault");
    }
}
