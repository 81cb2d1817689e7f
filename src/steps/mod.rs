//! The step kinds of design §3 and the registry that wires them into the five-phase DAG.
//!
//! One file per component. Each step is a serde-serialisable struct built from the playbook
//! (its payload) implementing [`crate::engine::Step`] with real operations: Kubernetes through
//! kube-rs (server-side apply with dry-run plans, watch-based waits), Vault through vaultrs over
//! a port-forward, Terraform through the runner with secrets on a pipe. `support`, `vault_api`
//! and `vault_status` (Vault's health and seal status, for Vault and OpenBao) hold what several
//! steps share; `unseal` is `kubestrap unseal` (outside the DAG, sharing the steps' way to Vault); `detach` starts the sandbox as a service.

mod apps;
mod chart;
mod detach;
mod eso;
mod flux;
mod gitauth;
mod k3s;
mod seal_key;
pub mod support;
#[cfg(feature = "test-hooks")]
pub mod synthetic;
mod terraform;
pub mod unseal;
mod vault;
mod vault_api;
mod vault_status;
mod verify;

use std::sync::Arc;

use crate::engine::{Building, Built, Engine, GraphErrors, Phase};
use crate::playbook::LoadedPlaybook;

pub use apps::{AppsReconcile, AppsSecretsSynced};
pub use chart::{Chart, ChartInstall, EsoNames, VaultNames, fullname};
pub use eso::{EsoReady, EsoStore};
pub use flux::{FluxInstall, FluxReady, FluxSource};
pub use gitauth::{GitAuthCleanup, GitAuthExternalSecret, GitAuthSwitch};
pub use k3s::{K3sInstall, K3sReady};
pub use seal_key::{StaticSeal, VaultSealKey};
pub use support::{Cluster, ClusterContext, TemplateStep};
pub use terraform::{SecretsTerraform, SecretsVerify};
pub use vault::{VaultAutoUnseal, VaultConfigure, VaultInit, VaultReady, VaultUnseal};
pub use verify::{Cleanup, VerifyEso, VerifyFlux, VerifyNoBootstrapSecrets, VerifyVault};

/// Serialise a step's payload (steps are plain data, so this cannot fail in practice).
pub(crate) fn payload_of<T: serde::Serialize>(step: &T) -> serde_json::Value {
    serde_json::to_value(step).unwrap_or(serde_json::Value::Null)
}

/// Register the full step list of design §3 for `pb`, with its real dependencies.
pub fn register(engine: &mut Engine<Building>, pb: &LoadedPlaybook) {
    use Phase::{Apps, GitAuth, Infrastructure, Secrets, Verify};
    let p = pb;
    // OpenBao's static seal: the server unseals itself from a key Secret that must exist before
    // its pod starts (`vault.seal-key`), and no unsealer runs, so `vault.auto-unseal` is not
    // in the DAG and the restart proof follows `vault.unseal`.
    let static_seal = p.playbook.vault.seal.is_static();
    let unsealed_by = if static_seal {
        "vault.unseal"
    } else {
        "vault.auto-unseal"
    };
    engine
        // Phase 1: infrastructure.
        .add(
            "k3s.install",
            Infrastructure,
            &[],
            Arc::new(K3sInstall::from_playbook(p)),
        )
        .add(
            "k3s.ready",
            Infrastructure,
            &["k3s.install"],
            Arc::new(K3sReady::from_playbook(p)),
        )
        .add(
            "flux.install",
            Infrastructure,
            &["k3s.ready"],
            Arc::new(FluxInstall::from_playbook(p)),
        )
        .add(
            "flux.ready",
            Infrastructure,
            &["flux.install"],
            Arc::new(FluxReady::from_playbook(p)),
        )
        .add(
            "flux.source",
            Infrastructure,
            &["flux.ready"],
            Arc::new(FluxSource::from_playbook(p)),
        );
    if static_seal {
        engine.add(
            "vault.seal-key",
            Infrastructure,
            &["k3s.ready"],
            Arc::new(VaultSealKey::from_playbook(p)),
        );
    }
    engine
        .add(
            "vault.install",
            Infrastructure,
            if static_seal {
                &["flux.ready", "vault.seal-key"]
            } else {
                &["flux.ready"]
            },
            Arc::new(ChartInstall::vault(p)),
        )
        .add(
            "vault.ready",
            Infrastructure,
            &["vault.install"],
            Arc::new(VaultReady::from_playbook(p)),
        )
        .add(
            "vault.init",
            Infrastructure,
            &["vault.ready"],
            Arc::new(VaultInit::from_playbook(p)),
        )
        .add(
            "vault.unseal",
            Infrastructure,
            &["vault.init"],
            Arc::new(VaultUnseal::from_playbook(p)),
        );
    if !static_seal {
        engine.add(
            "vault.auto-unseal",
            Infrastructure,
            &["vault.init"],
            Arc::new(VaultAutoUnseal::from_playbook(p)),
        );
    }
    engine
        .add(
            "vault.configure",
            Infrastructure,
            &["vault.unseal"],
            Arc::new(VaultConfigure::from_playbook(p)),
        )
        .add(
            "eso.install",
            Infrastructure,
            &["flux.ready"],
            Arc::new(ChartInstall::external_secrets(p)),
        )
        .add(
            "eso.ready",
            Infrastructure,
            &["eso.install"],
            Arc::new(EsoReady::from_playbook(p)),
        )
        .add(
            "eso.store",
            Infrastructure,
            &["eso.ready", "vault.configure"],
            Arc::new(EsoStore::from_playbook(p)),
        )
        // Phase 2: secrets.
        .add(
            "secrets.terraform",
            Secrets,
            &["vault.configure"],
            Arc::new(SecretsTerraform::from_playbook(p)),
        )
        .add(
            "secrets.verify",
            Secrets,
            &["secrets.terraform"],
            Arc::new(SecretsVerify::from_playbook(p)),
        )
        // Phase 3: git-auth.
        .add(
            "gitauth.external-secret",
            GitAuth,
            &["eso.store", "secrets.verify"],
            Arc::new(GitAuthExternalSecret::from_playbook(p)),
        )
        .add(
            "gitauth.switch",
            GitAuth,
            &["gitauth.external-secret", "flux.source"],
            Arc::new(GitAuthSwitch::from_playbook(p)),
        )
        .add(
            "gitauth.cleanup",
            GitAuth,
            &["gitauth.switch"],
            Arc::new(GitAuthCleanup::from_playbook(p)),
        )
        // Phase 4: apps.
        .add(
            "apps.reconcile",
            Apps,
            &["gitauth.switch"],
            Arc::new(AppsReconcile::from_playbook(p)),
        )
        .add(
            "apps.secrets-synced",
            Apps,
            &["apps.reconcile", "eso.store"],
            Arc::new(AppsSecretsSynced::from_playbook(p)),
        )
        // Phase 5: verify.
        .add(
            "verify.vault",
            Verify,
            &[unsealed_by],
            Arc::new(VerifyVault::from_playbook(p)),
        )
        .add(
            "verify.flux",
            Verify,
            &["apps.reconcile"],
            Arc::new(VerifyFlux::from_playbook(p)),
        )
        .add(
            "verify.eso",
            Verify,
            &["apps.secrets-synced"],
            Arc::new(VerifyEso::from_playbook(p)),
        )
        .add(
            "verify.no-bootstrap-secrets",
            Verify,
            &["gitauth.cleanup"],
            Arc::new(VerifyNoBootstrapSecrets::from_playbook(p)),
        )
        .add(
            "cleanup",
            Verify,
            &[
                "verify.vault",
                "verify.flux",
                "verify.eso",
                "verify.no-bootstrap-secrets",
            ],
            Arc::new(Cleanup::from_playbook(p)),
        );
}

/// The full, validated DAG for `pb`.
///
/// # Errors
/// [`GraphErrors`] if the registry itself is inconsistent (a bug caught by the tests).
pub fn build(pb: &LoadedPlaybook) -> Result<Engine<Built>, GraphErrors> {
    let mut engine = Engine::new();
    register(&mut engine, pb);
    engine.seal()
}

/// `Namespace/Name` for plan targets.
pub(crate) fn obj(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind} {namespace}/{name}")
}
