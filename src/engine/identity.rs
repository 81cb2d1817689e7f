//! Which cluster and which Vault a checkpoint's records were made on, learned by the steps that
//! reach them, so `--resume` never verifies or applies against another one.
//!
//! The cluster's identity (its `kube-system` namespace UID) is usually known before the run
//! starts; a cluster that a run creates, and Vault's cluster id (known once Vault is
//! unsealed), are learned by a step during the run. A step that learns an identity other than
//! the one the checkpoint records fails, and the run ends refused (exit 2), naming both.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// What an identity identifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Identity {
    /// The Kubernetes cluster: its `kube-system` namespace UID.
    Cluster,
    /// Vault: the `cluster_id` of `sys/health` (HashiCorp Vault and OpenBao alike).
    Vault,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cluster => "the Kubernetes cluster whose kube-system namespace has UID",
            Self::Vault => "the Vault whose cluster id is",
        })
    }
}

/// An identity learned during the run that differs from the recorded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConflict {
    /// What it identifies.
    pub what: Identity,
    /// What the checkpoint records.
    pub recorded: String,
    /// What the run found.
    pub found: String,
}

/// The identities a run's checkpoint records and the ones the run learned.
#[derive(Debug, Default)]
pub struct Identities {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    recorded: BTreeMap<Identity, String>,
    learned: BTreeMap<Identity, String>,
    conflict: Option<IdentityConflict>,
}

impl Identities {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The checkpoint records `id` for `what` (nothing when `None`).
    pub fn record(&self, what: Identity, id: Option<&str>) {
        if let Some(id) = id {
            self.state().recorded.insert(what, id.to_owned());
        }
    }

    /// The run found `id` for `what`: kept for the checkpoint, or the conflict with what the
    /// checkpoint records (kept too, for the refusal at the end of the run).
    ///
    /// # Errors
    /// The [`IdentityConflict`] when the checkpoint records another identity.
    pub fn learn(&self, what: Identity, id: &str) -> Result<(), IdentityConflict> {
        let mut state = self.state();
        if let Some(recorded) = state.recorded.get(&what)
            && recorded != id
        {
            let conflict = IdentityConflict {
                what,
                recorded: recorded.clone(),
                found: id.to_owned(),
            };
            state.conflict.get_or_insert_with(|| conflict.clone());
            return Err(conflict);
        }
        state.learned.insert(what, id.to_owned());
        Ok(())
    }

    /// What the run learned for `what`.
    #[must_use]
    pub fn learned(&self, what: Identity) -> Option<String> {
        self.state().learned.get(&what).cloned()
    }

    /// The first conflict a step found, if any.
    #[must_use]
    pub fn conflict(&self) -> Option<IdentityConflict> {
        self.state().conflict.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_identity_is_kept_and_another_one_is_a_conflict() {
        let ids = Identities::default();
        ids.record(Identity::Vault, Some("a"));
        ids.record(Identity::Cluster, None);
        assert_eq!(ids.learn(Identity::Cluster, "k"), Ok(()));
        assert_eq!(ids.learn(Identity::Vault, "a"), Ok(()));
        let conflict = ids.learn(Identity::Vault, "b").unwrap_err();
        assert_eq!(
            (conflict.recorded.as_str(), conflict.found.as_str()),
            ("a", "b")
        );
        assert_eq!(ids.conflict(), Some(conflict));
        assert_eq!(ids.learned(Identity::Cluster).as_deref(), Some("k"));
        assert_eq!(ids.learned(Identity::Vault).as_deref(), Some("a"));
    }
}
