//! `vault.install` and `eso.install`: a pinned Helm chart installed through Flux (its namespace,
//! a HelmRepository in Flux's namespace, a HelmRelease). The two differ only in the chart and
//! its template, so one step kind serves both.

use serde::Serialize;

use super::obj;
use super::support::TemplateStep;
use crate::engine::{Action, StepError};
use crate::playbook::LoadedPlaybook;
use crate::templates::{self, Manifest};

/// The charts kubestrap installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chart {
    /// `hashicorp/vault`.
    Vault,
    /// `external-secrets/external-secrets`.
    ExternalSecrets,
}

impl Chart {
    /// The chart's name in its repository.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::ExternalSecrets => "external-secrets",
        }
    }

    /// The HelmRepository's name (the templates' choice).
    const fn repository_name(self) -> &'static str {
        match self {
            Self::Vault => "hashicorp",
            Self::ExternalSecrets => "external-secrets",
        }
    }

    /// What the plan says about the values kubestrap sets.
    const fn values_note(self) -> &'static str {
        match self {
            Self::Vault => "; readiness tolerates a sealed pod",
            Self::ExternalSecrets => ", installCRDs",
        }
    }
}

/// HelmRepository + HelmRelease for a pinned chart.
#[derive(Debug, Clone, Serialize)]
pub struct ChartInstall {
    /// Which chart.
    pub chart: Chart,
    /// Flux's namespace (where the HelmRepository lives).
    pub flux_namespace: String,
    /// The release's namespace.
    pub namespace: String,
    /// Release name.
    pub release: String,
    /// Chart repository.
    pub chart_repo: String,
    /// Pinned chart version.
    pub chart_version: String,
}

impl ChartInstall {
    /// `vault.install`, from `[vault]`.
    #[must_use]
    pub fn vault(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            chart: Chart::Vault,
            flux_namespace: pb.playbook.flux.namespace.clone(),
            namespace: v.namespace.clone(),
            release: v.release.clone(),
            chart_repo: v.chart_repo.clone(),
            chart_version: v.chart_version.clone(),
        }
    }

    /// `eso.install`, from `[external_secrets]`.
    #[must_use]
    pub fn external_secrets(pb: &LoadedPlaybook) -> Self {
        let e = &pb.playbook.external_secrets;
        Self {
            chart: Chart::ExternalSecrets,
            flux_namespace: pb.playbook.flux.namespace.clone(),
            namespace: e.namespace.clone(),
            release: e.release.clone(),
            chart_repo: e.chart_repo.clone(),
            chart_version: e.chart_version.clone(),
        }
    }
}

#[async_trait::async_trait]
impl TemplateStep for ChartInstall {
    fn kind(&self) -> &'static str {
        match self.chart {
            Chart::Vault => "vault.install",
            Chart::ExternalSecrets => "eso.install",
        }
    }

    fn manifest(&self) -> Result<String, StepError> {
        let repository = self.chart_repo.clone();
        let chart_version = self.chart_version.clone();
        match self.chart {
            Chart::Vault => templates::VaultRelease {
                repository,
                chart_version,
            }
            .render(),
            Chart::ExternalSecrets => templates::EsoRelease {
                repository,
                chart_version,
            }
            .render(),
        }
        .map_err(|e| StepError::permanent(e.to_string()))
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::create(format!("Namespace {}", self.namespace)),
            Action::create(obj(
                "HelmRepository",
                &self.flux_namespace,
                self.chart.repository_name(),
            ))
            .with_detail(self.chart_repo.clone()),
            Action::create(obj("HelmRelease", &self.namespace, &self.release)).with_detail(
                format!(
                    "chart {} {}{}",
                    self.chart.name(),
                    self.chart_version,
                    self.chart.values_note()
                ),
            ),
        ]
    }
}
