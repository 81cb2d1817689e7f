//! External Secrets Operator: install through Flux, wait, and the ClusterSecretStore for Vault.

use serde::Serialize;

use super::obj;
use crate::engine::Action;
use crate::playbook::{HumanDuration, LoadedPlaybook};

/// `eso.install`: HelmRepository + HelmRelease for the pinned `external-secrets` chart.
#[derive(Debug, Clone, Serialize)]
pub struct EsoInstall {
    /// Flux's namespace (HelmRepository).
    pub flux_namespace: String,
    /// ESO's namespace.
    pub namespace: String,
    /// Release name.
    pub release: String,
    /// Chart repository.
    pub chart_repo: String,
    /// Pinned chart version.
    pub chart_version: String,
}

impl EsoInstall {
    /// From `[external_secrets]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let e = &pb.playbook.external_secrets;
        Self {
            flux_namespace: pb.playbook.flux.namespace.clone(),
            namespace: e.namespace.clone(),
            release: e.release.clone(),
            chart_repo: e.chart_repo.clone(),
            chart_version: e.chart_version.clone(),
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::create(format!("Namespace {}", self.namespace)),
            Action::create(obj(
                "HelmRepository",
                &self.flux_namespace,
                "external-secrets",
            ))
            .with_detail(self.chart_repo.clone()),
            Action::create(obj("HelmRelease", &self.namespace, &self.release)).with_detail(
                format!("chart external-secrets {}, installCRDs", self.chart_version),
            ),
        ]
    }
}
pending_step!(EsoInstall, "eso.install");

/// `eso.ready`: the release is Ready, its CRDs Established, the operator Available.
#[derive(Debug, Clone, Serialize)]
pub struct EsoReady {
    /// ESO's namespace.
    pub namespace: String,
    /// Release name.
    pub release: String,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl EsoReady {
    /// From `[external_secrets]` and `[timeouts]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let e = &pb.playbook.external_secrets;
        Self {
            namespace: e.namespace.clone(),
            release: e.release.clone(),
            timeout: pb.playbook.timeouts.eso_ready,
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::run(format!(
                "wait for {} Ready (timeout {})",
                obj("HelmRelease", &self.namespace, &self.release),
                self.timeout
            )),
            Action::run(
                "wait for CustomResourceDefinition clustersecretstores.external-secrets.io Established",
            ),
            Action::run(
                "wait for CustomResourceDefinition externalsecrets.external-secrets.io Established",
            ),
            Action::run(format!(
                "wait for {} Available",
                obj("Deployment", &self.namespace, &self.release)
            )),
        ]
    }
}
pending_step!(EsoReady, "eso.ready");

/// `eso.store`: the ClusterSecretStore that reads Vault with Kubernetes auth.
#[derive(Debug, Clone, Serialize)]
pub struct EsoStore {
    /// Store name.
    pub store: String,
    /// Vault's in-cluster address.
    pub vault_server: String,
    /// KV mount.
    pub kv_mount: String,
    /// Kubernetes auth mount.
    pub auth_mount: String,
    /// Vault role.
    pub role: String,
    /// ESO's namespace.
    pub namespace: String,
    /// ESO's service account.
    pub service_account: String,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl EsoStore {
    /// From `[external_secrets]` and `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let e = &pb.playbook.external_secrets;
        let v = &pb.playbook.vault;
        Self {
            store: e.store.clone(),
            vault_server: format!("http://{}.{}.svc:8200", v.release, v.namespace),
            kv_mount: v.kv_mount.clone(),
            auth_mount: v.auth_mount.clone(),
            role: v.eso_role.clone(),
            namespace: e.namespace.clone(),
            service_account: e.service_account.clone(),
            timeout: pb.playbook.timeouts.eso_ready,
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::create(format!("ClusterSecretStore {}", self.store)).with_detail(format!(
                "vault {} path {} (v2), kubernetes auth {} role {} as {}/{}",
                self.vault_server,
                self.kv_mount,
                self.auth_mount,
                self.role,
                self.namespace,
                self.service_account
            )),
            Action::run(format!(
                "wait for ClusterSecretStore {} Ready (timeout {})",
                self.store, self.timeout
            )),
        ]
    }
}
pending_step!(EsoStore, "eso.store");
