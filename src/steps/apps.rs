//! Phase 4: applications reconcile and their secrets sync.

use serde::Serialize;

use crate::engine::Action;
use crate::playbook::{HumanDuration, LoadedPlaybook};

/// `apps.reconcile`: the root and the named Kustomizations are Ready.
#[derive(Debug, Clone, Serialize)]
pub struct AppsReconcile {
    /// `namespace/name` of every Kustomization to wait for, root first.
    pub kustomizations: Vec<String>,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl AppsReconcile {
    /// From `[apps]` and `[flux]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        let ns = &p.flux.namespace;
        let mut kustomizations = vec![format!("{ns}/{}", p.flux.bootstrap_secret)];
        kustomizations.extend(p.apps.kustomizations.iter().map(|k| {
            if k.contains('/') {
                k.clone()
            } else {
                format!("{ns}/{k}")
            }
        }));
        Self {
            kustomizations,
            timeout: p.timeouts.reconcile,
        }
    }

    fn actions(&self) -> Vec<Action> {
        self.kustomizations
            .iter()
            .map(|k| {
                Action::run(format!(
                    "wait for Kustomization {k} Ready (timeout {})",
                    self.timeout
                ))
            })
            .collect()
    }
}
pending_step!(AppsReconcile, "apps.reconcile");

/// `apps.secrets-synced`: every ExternalSecret is `SecretSynced`; failures are diagnosed (store
/// not ready vs value missing in Vault).
#[derive(Debug, Clone, Serialize)]
pub struct AppsSecretsSynced {
    /// Namespaces to check (empty: all).
    pub namespaces: Vec<String>,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl AppsSecretsSynced {
    /// From `[apps]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        Self {
            namespaces: p.apps.external_secret_namespaces.clone(),
            timeout: p.timeouts.secret_sync,
        }
    }

    fn actions(&self) -> Vec<Action> {
        let scope = if self.namespaces.is_empty() {
            "in every namespace".to_owned()
        } else {
            format!("in {}", self.namespaces.join(", "))
        };
        vec![Action::run(format!("wait for every ExternalSecret {scope} SecretSynced (timeout {})", self.timeout))
            .with_detail("a failure names the ExternalSecret and says whether the store or the Vault value is the problem")]
    }
}
pending_step!(AppsSecretsSynced, "apps.secrets-synced");
