//! Phase 5: prove the platform is in the state the bootstrap promised, then clean up.

use serde::Serialize;

use super::obj;
use crate::engine::Action;
use crate::playbook::{HumanDuration, LoadedPlaybook};

/// `verify.vault`: Vault is initialised and unsealed; optionally restart it to prove
/// auto-unseal.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyVault {
    /// Vault's namespace.
    pub namespace: String,
    /// Release name.
    pub release: String,
    /// Restart the pod and wait for auto-unseal.
    pub restart: bool,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl VerifyVault {
    /// From `[verify]` and `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        Self {
            namespace: p.vault.namespace.clone(),
            release: p.vault.release.clone(),
            restart: p.verify.restart_vault,
            timeout: p.timeouts.vault_ready,
        }
    }

    fn actions(&self) -> Vec<Action> {
        let mut actions = vec![Action::run(
            "GET /v1/sys/health (200: initialised, unsealed, active)",
        )];
        if self.restart {
            let pod = obj("Pod", &self.namespace, &format!("{}-0", self.release));
            actions.push(
                Action::delete(pod)
                    .with_detail("restart to prove auto-unseal ([verify] restart_vault = true)"),
            );
            actions.push(Action::run(format!(
                "wait for Vault unsealed again by the auto-unsealer (timeout {})",
                self.timeout
            )));
        }
        actions
    }
}
pending_step!(VerifyVault, "verify.vault");

/// `verify.flux`: every Flux source and Kustomization/HelmRelease is Ready.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyFlux {
    /// Flux's namespace.
    pub namespace: String,
}

impl VerifyFlux {
    /// From `[flux]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            namespace: pb.playbook.flux.namespace.clone(),
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![Action::run(
            "check every GitRepository, HelmRepository, Kustomization and HelmRelease is Ready",
        )]
    }
}
pending_step!(VerifyFlux, "verify.flux");

/// `verify.eso`: the store is Ready and every ExternalSecret is synced.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyEso {
    /// Store name.
    pub store: String,
}

impl VerifyEso {
    /// From `[external_secrets]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            store: pb.playbook.external_secrets.store.clone(),
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::run(format!("check ClusterSecretStore {} Ready", self.store)),
            Action::run("check every ExternalSecret SecretSynced"),
        ]
    }
}
pending_step!(VerifyEso, "verify.eso");

/// `verify.no-bootstrap-secrets`: the bootstrap Git Secret is gone and no Secret outside
/// ESO's ownership holds a bootstrap secret value.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyNoBootstrapSecrets {
    /// Flux's namespace.
    pub namespace: String,
    /// The bootstrap Secret.
    pub bootstrap_secret: String,
    /// Whether the check runs.
    pub enabled: bool,
    /// Env names of the values to look for (compared in memory, never printed).
    pub secrets: Vec<String>,
}

impl VerifyNoBootstrapSecrets {
    /// From `[verify]`, `[flux]`, `[[secrets]]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let p = &pb.playbook;
        Self {
            namespace: p.flux.namespace.clone(),
            bootstrap_secret: p.flux.bootstrap_secret.clone(),
            enabled: p.verify.no_bootstrap_secrets,
            secrets: p.secrets.iter().map(|s| s.env.clone()).collect(),
        }
    }

    fn actions(&self) -> Vec<Action> {
        if !self.enabled {
            return vec![Action::unchanged(
                "no check: [verify] no_bootstrap_secrets = false",
            )];
        }
        vec![
            Action::run(format!(
                "check {} is absent",
                obj("Secret", &self.namespace, &self.bootstrap_secret)
            )),
            Action::run(format!(
                "scan Secrets not owned by an ExternalSecret for the values of {}",
                self.secrets.join(", ")
            )),
        ]
    }
}
pending_step!(VerifyNoBootstrapSecrets, "verify.no-bootstrap-secrets");

/// `cleanup`: wipe the captured secrets from memory and write the run report.
#[derive(Debug, Clone, Serialize)]
pub struct Cleanup {
    /// Where the report goes.
    pub report: String,
}

impl Cleanup {
    /// From the state directory.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            report: pb.cluster_dir().join("report.json").display().to_string(),
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::run("wipe the captured bootstrap secrets from memory"),
            Action::create(format!("report {}", self.report)),
        ]
    }
}
pending_step!(Cleanup, "cleanup");
