//! The captured bootstrap secrets, by environment variable name.

use std::collections::BTreeMap;

use secrecy::SecretString;

/// Bootstrap secrets captured at process start (see [`super::capture()`]).
///
/// Values are only reachable through [`secrecy::ExposeSecret`], so every place that reads one is
/// visible in the code. `Debug` prints names only.
#[derive(Default)]
pub struct SecretStore {
    values: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretStore {
    /// An empty store (what `plan` and `status` run with).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace a value.
    pub fn insert(&mut self, env: impl Into<String>, value: SecretString) {
        self.values.insert(env.into(), value);
    }

    /// The value of `env`, if captured.
    #[must_use]
    pub fn get(&self, env: &str) -> Option<&SecretString> {
        self.values.get(env)
    }

    /// Whether `env` was captured.
    #[must_use]
    pub fn contains(&self, env: &str) -> bool {
        self.values.contains_key(env)
    }

    /// Names and values, for building the redactor.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of captured secrets.
    #[must_use]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing was captured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}
