//! `vault.install` and `eso.install`: a pinned Helm chart installed through Flux (its namespace,
//! a HelmRepository in Flux's namespace, a HelmRelease). The two differ only in the chart and
//! its template, so one step kind serves both.
//!
//! This module is also the one place that knows how the charts name what they create
//! ([`fullname`], [`VaultNames`], [`EsoNames`]): every step that waits on or talks to a
//! chart-made object derives its name here, by the charts' own rule.

use serde::Serialize;

use super::obj;
use super::seal_key::StaticSeal;
use super::support::TemplateStep;
use crate::engine::{Action, StepError};
use crate::playbook::{LoadedPlaybook, VaultFlavor};
use crate::templates::{self, Manifest};

/// The charts kubestrap installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chart {
    /// `hashicorp/vault`.
    Vault,
    /// `openbao/openbao` (`[vault] flavor = "openbao"`).
    #[serde(rename = "openbao")]
    OpenBao,
    /// `external-secrets/external-secrets`.
    ExternalSecrets,
}

impl Chart {
    /// The server chart of a `[vault] flavor`.
    #[must_use]
    pub const fn vault(flavor: VaultFlavor) -> Self {
        match flavor {
            VaultFlavor::Vault => Self::Vault,
            VaultFlavor::Openbao => Self::OpenBao,
        }
    }

    /// The chart's name in its repository.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::OpenBao => "openbao",
            Self::ExternalSecrets => "external-secrets",
        }
    }

    /// The HelmRepository's name (the templates' choice).
    const fn repository_name(self) -> &'static str {
        match self {
            Self::Vault => VaultFlavor::Vault.helm_repository(),
            Self::OpenBao => VaultFlavor::Openbao.helm_repository(),
            Self::ExternalSecrets => "external-secrets",
        }
    }

    /// What the plan says about the values kubestrap sets.
    const fn values_note(self) -> &'static str {
        match self {
            Self::Vault | Self::OpenBao => "; readiness tolerates a sealed pod",
            Self::ExternalSecrets => ", installCRDs",
        }
    }
}

/// Helm's fullname rule of the upstream charts (`vault.fullname` in hashicorp/vault-helm's
/// `_helpers.tpl`, `openbao.fullname` in openbao/openbao-helm's, `external-secrets.fullname` in
/// external-secrets' chart), for the values
/// kubestrap sets (no `fullnameOverride` or `nameOverride`): the release name if it contains the
/// chart name, else `<release>-<chart>`; cut to 63 characters without a trailing `-`. So
/// `[vault] release = "bank"` gives StatefulSet `bank-vault` and pod `bank-vault-0` (with
/// `flavor = "openbao"`: `bank-openbao`, `bank-openbao-0`), and `[external_secrets] release =
/// "eso"` gives Deployment `eso-external-secrets`.
#[must_use]
pub fn fullname(chart: Chart, release: &str) -> String {
    let name = if release.contains(chart.name()) {
        release.to_owned()
    } else {
        format!("{release}-{}", chart.name())
    };
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &name[..end];
    cut.strip_suffix('-').unwrap_or(cut).to_owned()
}

/// What the vault or openbao chart (standalone server) names after its fullname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultNames {
    /// The chart's fullname: the StatefulSet, the Service and the server's ServiceAccount.
    pub fullname: String,
}

impl VaultNames {
    /// For `[vault] flavor` and `release`.
    #[must_use]
    pub fn new(flavor: VaultFlavor, release: &str) -> Self {
        Self {
            fullname: fullname(Chart::vault(flavor), release),
        }
    }

    /// The one server pod of the standalone StatefulSet.
    #[must_use]
    pub fn pod(&self) -> String {
        format!("{}-0", self.fullname)
    }

    /// The Service in front of the server (port 8200).
    #[must_use]
    pub fn service(&self) -> &str {
        &self.fullname
    }

    /// Vault's in-cluster address in `namespace`.
    #[must_use]
    pub fn address(&self, namespace: &str) -> String {
        format!("http://{}.{namespace}.svc:8200", self.fullname)
    }
}

/// What the external-secrets chart names after its fullname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EsoNames {
    /// The chart's fullname: the controller Deployment.
    pub fullname: String,
}

impl EsoNames {
    /// For `[external_secrets] release`.
    #[must_use]
    pub fn new(release: &str) -> Self {
        Self {
            fullname: fullname(Chart::ExternalSecrets, release),
        }
    }

    /// The controller Deployment.
    #[must_use]
    pub fn controller(&self) -> &str {
        &self.fullname
    }

    /// The admission webhook's Deployment (and Service).
    #[must_use]
    pub fn webhook(&self) -> String {
        format!("{}-webhook", self.fullname)
    }

    /// The cert-controller's Deployment, which injects the webhook's CA.
    #[must_use]
    pub fn cert_controller(&self) -> String {
        format!("{}-cert-controller", self.fullname)
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
    /// ESO's service account (`[external_secrets] service_account`); empty for Vault.
    pub service_account: String,
    /// OpenBao's static seal (`[vault] seal = "static"`): the key Secret the server mounts.
    /// Left out of the payload otherwise, so existing checkpoints keep their input hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_seal: Option<StaticSeal>,
}

impl ChartInstall {
    /// `vault.install`, from `[vault]`.
    #[must_use]
    pub fn vault(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            chart: Chart::vault(v.flavor),
            flux_namespace: pb.playbook.flux.namespace.clone(),
            namespace: v.namespace.clone(),
            release: v.release.clone(),
            chart_repo: v.chart_repo.clone(),
            chart_version: v.chart_version.clone(),
            service_account: String::new(),
            static_seal: v.seal.is_static().then(|| StaticSeal::new(&v.release)),
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
            service_account: e.service_account.clone(),
            static_seal: None,
        }
    }
}

#[async_trait::async_trait]
impl TemplateStep for ChartInstall {
    fn kind(&self) -> &'static str {
        match self.chart {
            Chart::Vault | Chart::OpenBao => "vault.install",
            Chart::ExternalSecrets => "eso.install",
        }
    }

    fn manifest(&self) -> Result<String, StepError> {
        let repository = self.chart_repo.clone();
        let chart_version = self.chart_version.clone();
        match self.chart {
            Chart::Vault | Chart::OpenBao => templates::VaultRelease {
                flavor: if self.chart == Chart::OpenBao {
                    VaultFlavor::Openbao
                } else {
                    VaultFlavor::Vault
                },
                namespace: self.namespace.clone(),
                release: self.release.clone(),
                flux_namespace: self.flux_namespace.clone(),
                repository,
                chart_version,
                static_seal: self
                    .static_seal
                    .as_ref()
                    .map(|seal| templates::StaticSealMount {
                        secret: seal.secret.clone(),
                        volume: seal.volume().to_owned(),
                        mount_dir: seal.mount_dir(),
                        stanza: seal.stanza(),
                    }),
            }
            .render(),
            Chart::ExternalSecrets => templates::EsoRelease {
                namespace: self.namespace.clone(),
                release: self.release.clone(),
                flux_namespace: self.flux_namespace.clone(),
                service_account: self.service_account.clone(),
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
                    "chart {} {}{}{}",
                    self.chart.name(),
                    self.chart_version,
                    self.chart.values_note(),
                    self.static_seal
                        .as_ref()
                        .map_or(String::new(), |seal| format!(
                            "; static seal from Secret {}/{} mounted read-only",
                            self.namespace, seal.secret
                        ))
                ),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_release_without_chart_name_gets_fullname_pod() {
        let names = VaultNames::new(VaultFlavor::Vault, "bank");
        assert_eq!(names.fullname, "bank-vault");
        assert_eq!(names.pod(), "bank-vault-0");
        assert_eq!(names.service(), "bank-vault");
        assert_eq!(
            names.address("secrets-mgmt"),
            "http://bank-vault.secrets-mgmt.svc:8200"
        );
        assert_eq!(
            VaultNames::new(VaultFlavor::Vault, "vault").pod(),
            "vault-0"
        );
        assert_eq!(
            VaultNames::new(VaultFlavor::Vault, "my-vault").pod(),
            "my-vault-0"
        );
    }

    /// openbao-helm's `openbao.fullname`: the release if it contains "openbao", else
    /// `<release>-openbao`. A release named `vault` is not exempt: it contains "vault", not
    /// the chart's name.
    #[test]
    fn openbao_release_names_follow_the_openbao_fullname_rule() {
        let names = VaultNames::new(VaultFlavor::Openbao, "openbao");
        assert_eq!(names.pod(), "openbao-0");
        assert_eq!(names.address("openbao"), "http://openbao.openbao.svc:8200");
        assert_eq!(
            VaultNames::new(VaultFlavor::Openbao, "bank").pod(),
            "bank-openbao-0"
        );
        assert_eq!(
            VaultNames::new(VaultFlavor::Openbao, "vault").service(),
            "vault-openbao"
        );
        assert_eq!(
            VaultNames::new(VaultFlavor::Openbao, "my-openbao").pod(),
            "my-openbao-0"
        );
        assert_eq!(
            Chart::vault(VaultFlavor::Openbao).repository_name(),
            "openbao"
        );
    }

    #[test]
    fn eso_release_without_chart_name_gets_fullname_deployment() {
        let names = EsoNames::new("eso");
        assert_eq!(names.controller(), "eso-external-secrets");
        assert_eq!(names.webhook(), "eso-external-secrets-webhook");
        assert_eq!(
            names.cert_controller(),
            "eso-external-secrets-cert-controller"
        );
        assert_eq!(
            EsoNames::new("external-secrets").controller(),
            "external-secrets"
        );
    }

    #[test]
    fn fullname_is_a_dns_label_without_a_trailing_dash() {
        let release = "r".repeat(62);
        assert_eq!(fullname(Chart::Vault, &release), release);
        let release = "r".repeat(70);
        assert_eq!(fullname(Chart::Vault, &release).len(), 63);
    }
}
