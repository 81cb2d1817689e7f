//! The embedded manifests: the Flux-shaped install manifest the sandbox serves over HTTP,
//! and what the `vault` and `external-secrets` Helm charts create (written for this project,
//! modelled on the upstream charts; `{{namespace}}`/`{{release}}` placeholders).

use serde_json::{Value, json};

use super::kit::{self, ApplyError};

/// Served at `GET /sandbox/flux/install.yaml`; kubestrap's `flux.install` fetches it.
pub const FLUX_INSTALL: &str = include_str!("../assets/flux-install.yaml");
const VAULT_CHART: &str = include_str!("../assets/charts/vault.yaml");
const ESO_CHART: &str = include_str!("../assets/charts/external-secrets.yaml");

/// The path of the install manifest on the API server.
pub const FLUX_INSTALL_PATH: &str = "/sandbox/flux/install.yaml";

/// The Flux controller Deployments that must run for the Flux kinds to be reconciled.
pub const SOURCE_CONTROLLER: &str = "source-controller";
/// See [`SOURCE_CONTROLLER`].
pub const KUSTOMIZE_CONTROLLER: &str = "kustomize-controller";
/// See [`SOURCE_CONTROLLER`].
pub const HELM_CONTROLLER: &str = "helm-controller";

/// The charts the sandbox's helm-controller can install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    /// hashicorp/vault (standalone server).
    Vault,
    /// external-secrets/external-secrets.
    ExternalSecrets,
}

impl Chart {
    /// By chart name.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "vault" => Some(Self::Vault),
            "external-secrets" => Some(Self::ExternalSecrets),
            _ => None,
        }
    }

    /// Renders the chart's objects for a release, honouring the values the phases set
    /// (`installCRDs`, `serviceAccount.name`, the Vault readiness probe path).
    ///
    /// # Errors
    /// The embedded chart does not parse (a build-time bug).
    pub fn render(
        self,
        namespace: &str,
        release: &str,
        values: &Value,
    ) -> Result<Vec<Value>, ApplyError> {
        let (text, sa) = match self {
            Self::Vault => (VAULT_CHART, release.to_string()),
            Self::ExternalSecrets => (
                ESO_CHART,
                values["serviceAccount"]["name"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(release)
                    .to_string(),
            ),
        };
        let text = text
            .replace("{{namespace}}", namespace)
            .replace("{{release}}", release)
            .replace("{{service_account}}", &sa);
        let mut docs = kit::parse_docs("chart", &text)?;
        if self == Self::ExternalSecrets && values["installCRDs"] == false {
            docs.retain(|d| d["kind"] != "CustomResourceDefinition");
        }
        for d in &mut docs {
            let labels = &mut d["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["app.kubernetes.io/managed-by"] = json!("Helm");
            labels["helm.sh/chart"] = json!(match self {
                Self::Vault => "vault",
                Self::ExternalSecrets => "external-secrets",
            });
            d["metadata"]["annotations"]["meta.helm.sh/release-name"] = json!(release);
            d["metadata"]["annotations"]["meta.helm.sh/release-namespace"] = json!(namespace);
            if self == Self::Vault
                && d["kind"] == "StatefulSet"
                && let Some(path) = values["server"]["readinessProbe"]["path"].as_str()
            {
                d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = json!({
                    "httpGet": {"path": path, "port": 8200, "scheme": "HTTP"},
                });
            }
        }
        Ok(docs)
    }
}

/// Whether a Vault StatefulSet's probe treats a sealed and an uninitialised Vault as ready
/// (`sealedcode=204&uninitcode=204`), as the phases' release values ask (vault-helm #954).
pub fn probe_accepts_sealed(sts: &Value) -> bool {
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .is_some_and(|p| p.contains("sealedcode=2") && p.contains("uninitcode=2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_render_with_names_and_values() {
        let docs = Chart::Vault
            .render("vault", "vault", &json!({"server":{"readinessProbe":{"path":"/v1/sys/health?sealedcode=204&uninitcode=204"}}}))
            .expect("vault");
        let sts = docs
            .iter()
            .find(|d| d["kind"] == "StatefulSet")
            .expect("sts");
        assert_eq!(sts["metadata"]["name"], "vault");
        assert!(probe_accepts_sealed(sts));
        let docs = Chart::ExternalSecrets
            .render(
                "eso",
                "external-secrets",
                &json!({"installCRDs": false, "serviceAccount": {"name": "eso-sa"}}),
            )
            .expect("eso");
        assert!(docs.iter().all(|d| d["kind"] != "CustomResourceDefinition"));
        assert!(
            docs.iter()
                .any(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == "eso-sa")
        );
        assert!(!FLUX_INSTALL.contains("{{"));
        assert!(kit::parse_docs("flux", FLUX_INSTALL).expect("flux").len() > 8);
    }
}
