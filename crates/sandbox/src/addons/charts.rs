//! The embedded manifests: the Flux-shaped install manifest the sandbox serves over HTTP,
//! and what the `vault`, `openbao` and `external-secrets` Helm charts create (written for this
//! project, modelled on the upstream charts; `{{namespace}}`/`{{release}}` placeholders), each
//! served only from its upstream repository's URL.

use serde_json::{Value, json};

use super::kit::{self, ApplyError};

/// Served at `GET /sandbox/flux/install.yaml`; kubestrap's `flux.install` fetches it.
pub const FLUX_INSTALL: &str = include_str!("../assets/flux-install.yaml");
const VAULT_CHART: &str = include_str!("../assets/charts/vault.yaml");
const OPENBAO_CHART: &str = include_str!("../assets/charts/openbao.yaml");
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
    /// openbao/openbao (standalone server): vault-helm's fork, the same values keys.
    OpenBao,
    /// external-secrets/external-secrets.
    ExternalSecrets,
}

impl Chart {
    const ALL: [Self; 3] = [Self::Vault, Self::OpenBao, Self::ExternalSecrets];

    /// The chart `name` of the Helm repository at `url`, as helm-controller finds it in that
    /// repository's index: `None` when that repository does not serve it (the hashicorp
    /// repository has no `openbao` chart, and the OpenBao one no `vault`).
    pub fn find(url: &str, name: &str) -> Option<Self> {
        let url = url.trim_end_matches('/');
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name && c.repository() == url)
    }

    /// The chart's name (`.Chart.Name`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::OpenBao => "openbao",
            Self::ExternalSecrets => "external-secrets",
        }
    }

    /// The URL of the Helm repository that serves the chart upstream.
    pub const fn repository(self) -> &'static str {
        match self {
            Self::Vault => "https://helm.releases.hashicorp.com",
            Self::OpenBao => "https://openbao.github.io/openbao-helm",
            Self::ExternalSecrets => "https://charts.external-secrets.io",
        }
    }

    /// Whether the chart runs a Vault-API server (the sandbox serves Vault behind its pod).
    pub const fn is_vault_server(self) -> bool {
        matches!(self, Self::Vault | Self::OpenBao)
    }

    /// Renders the chart's objects for a release, honouring the values the phases set
    /// (`installCRDs`, `serviceAccount.name`, the Vault readiness probe path) and the naming
    /// values of both upstream charts (`fullnameOverride`, `nameOverride`): every object is
    /// named after [`fullname`], as the real chart names it.
    ///
    /// # Errors
    /// The embedded chart does not parse (a build-time bug).
    pub fn render(
        self,
        namespace: &str,
        release: &str,
        values: &Value,
    ) -> Result<Vec<Value>, ApplyError> {
        let fullname = fullname(self.name(), release, values);
        let text = match self {
            Self::Vault => VAULT_CHART,
            Self::OpenBao => OPENBAO_CHART,
            Self::ExternalSecrets => ESO_CHART,
        };
        // `<chart>.serviceAccountName` / `server.serviceAccount.name`: the value, else the
        // fullname (the charts create the account by default).
        let account = match self {
            Self::Vault | Self::OpenBao => &values["server"]["serviceAccount"]["name"],
            Self::ExternalSecrets => &values["serviceAccount"]["name"],
        };
        let sa = account
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(&fullname)
            .to_string();
        let text = text
            .replace("{{namespace}}", namespace)
            .replace("{{release}}", release)
            .replace("{{fullname}}", &fullname)
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
            labels["helm.sh/chart"] = json!(self.name());
            d["metadata"]["annotations"]["meta.helm.sh/release-name"] = json!(release);
            d["metadata"]["annotations"]["meta.helm.sh/release-namespace"] = json!(namespace);
            // `server.standalone.config`: the server's configuration file, as the chart
            // writes it into `<fullname>-config`.
            if self.is_vault_server()
                && d["kind"] == "ConfigMap"
                && let Some(config) = values["server"]["standalone"]["config"].as_str()
            {
                d["data"]["extraconfig-from-values.hcl"] = json!(config);
            }
            // `server.volumes` / `server.volumeMounts`: extra pod volumes and the server
            // container's mounts of them, appended as the charts' templates append them.
            if self.is_vault_server() && d["kind"] == "StatefulSet" {
                let spec = &mut d["spec"]["template"]["spec"];
                append(&mut spec["volumes"], &values["server"]["volumes"]);
                append(
                    &mut spec["containers"][0]["volumeMounts"],
                    &values["server"]["volumeMounts"],
                );
            }
            if self.is_vault_server()
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

/// Appends the items of the list `extra` (a chart value) to the list at `target`.
fn append(target: &mut Value, extra: &Value) {
    let Some(items) = extra.as_array().filter(|a| !a.is_empty()) else {
        return;
    };
    if !target.is_array() {
        *target = json!([]);
    }
    if let Some(list) = target.as_array_mut() {
        list.extend(items.iter().cloned());
    }
}

/// Helm's fullname rule, as the upstream charts define it (`vault.fullname` in
/// hashicorp/vault-helm's `_helpers.tpl`, `openbao.fullname` in openbao/openbao-helm's,
/// `external-secrets.fullname` in external-secrets' chart): `fullnameOverride` when set; else the release name when it
/// contains the chart name (or `nameOverride`), else `<release>-<name>`; cut to 63 characters
/// (a DNS label) without a trailing `-`. So release `bank` of `vault` names its StatefulSet
/// `bank-vault` and its pod `bank-vault-0`, while release `vault-prod` keeps `vault-prod`.
pub fn fullname(chart: &str, release: &str, values: &Value) -> String {
    let non_empty = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let name = match non_empty(&values["fullnameOverride"]) {
        Some(o) => o,
        None => {
            let chart = non_empty(&values["nameOverride"]).unwrap_or_else(|| chart.to_string());
            if release.contains(chart.as_str()) {
                release.to_string()
            } else {
                format!("{release}-{chart}")
            }
        }
    };
    trunc63(&name)
}

/// Sprig's `trunc 63 | trimSuffix "-"`: at most 63 bytes, one trailing `-` removed.
fn trunc63(name: &str) -> String {
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let cut = &name[..end];
    cut.strip_suffix('-').unwrap_or(cut).to_string()
}

/// The `app.kubernetes.io/name` of the charts' Vault-API server objects.
pub fn is_vault_server_name(name: &Value) -> bool {
    name == "vault" || name == "openbao"
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

    fn names(docs: &[Value], kind: &str) -> Vec<String> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .map(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn vault_release_without_chart_name_gets_fullname_pod() {
        let docs = Chart::Vault
            .render("secrets-mgmt", "bank", &json!({}))
            .expect("vault");
        assert_eq!(names(&docs, "StatefulSet"), ["bank-vault"]);
        assert_eq!(
            names(&docs, "Service"),
            ["bank-vault", "bank-vault-internal"]
        );
        assert_eq!(names(&docs, "ServiceAccount"), ["bank-vault"]);
        let sts = docs
            .iter()
            .find(|d| d["kind"] == "StatefulSet")
            .expect("sts");
        assert_eq!(sts["spec"]["serviceName"], "bank-vault-internal");
        assert_eq!(
            sts["spec"]["template"]["spec"]["serviceAccountName"],
            "bank-vault"
        );
        assert_eq!(
            sts["metadata"]["labels"]["app.kubernetes.io/instance"], "bank",
            "the instance label is the release name"
        );
        // A release name containing the chart name is the fullname itself.
        let docs = Chart::Vault
            .render("v", "vault-prod", &json!({}))
            .expect("vault");
        assert_eq!(names(&docs, "StatefulSet"), ["vault-prod"]);
    }

    /// openbao-helm names by `openbao.fullname`: a release without "openbao" in its name
    /// gets `<release>-openbao`, even one named `vault`; labels say `openbao`; the server
    /// account gets system:auth-delegator (authDelegator); the pod runs as the image's user.
    #[test]
    fn openbao_release_names_follow_the_openbao_fullname_rule() {
        let docs = Chart::OpenBao
            .render("openbao", "openbao", &json!({}))
            .expect("openbao");
        assert_eq!(names(&docs, "StatefulSet"), ["openbao"]);
        assert_eq!(names(&docs, "Service"), ["openbao", "openbao-internal"]);
        assert_eq!(names(&docs, "ServiceAccount"), ["openbao"]);
        assert_eq!(
            names(&docs, "ClusterRoleBinding"),
            ["openbao-server-binding"]
        );
        let crb = docs
            .iter()
            .find(|d| d["kind"] == "ClusterRoleBinding")
            .expect("crb");
        assert_eq!(crb["roleRef"]["name"], "system:auth-delegator");
        assert_eq!(crb["subjects"][0]["namespace"], "openbao");
        let sts = docs
            .iter()
            .find(|d| d["kind"] == "StatefulSet")
            .expect("sts");
        let pod = &sts["spec"]["template"];
        assert_eq!(
            pod["metadata"]["labels"]["app.kubernetes.io/name"],
            "openbao"
        );
        assert_eq!(pod["spec"]["containers"][0]["name"], "openbao");
        assert_eq!(
            pod["spec"]["containers"][0]["image"],
            "quay.io/openbao/openbao:2.6.2"
        );
        assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 100);
        assert_eq!(pod["spec"]["securityContext"]["fsGroup"], 1000);
        let docs = Chart::OpenBao
            .render("secrets", "vault", &json!({}))
            .expect("openbao");
        assert_eq!(names(&docs, "StatefulSet"), ["vault-openbao"]);
        let docs = Chart::OpenBao
            .render("secrets", "bank", &json!({"server":{"readinessProbe":{"path":"/v1/sys/health?sealedcode=204&uninitcode=204"}}}))
            .expect("openbao");
        let sts = docs
            .iter()
            .find(|d| d["kind"] == "StatefulSet")
            .expect("sts");
        assert_eq!(sts["metadata"]["name"], "bank-openbao");
        assert!(probe_accepts_sealed(sts));
        let docs = Chart::OpenBao
            .render(
                "secrets",
                "bank",
                &json!({"server":{"standalone":{"config":"storage \"raft\" {}"}}}),
            )
            .expect("openbao");
        let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("cm");
        assert_eq!(cm["metadata"]["name"], "bank-openbao-config");
        assert_eq!(
            cm["data"]["extraconfig-from-values.hcl"],
            "storage \"raft\" {}"
        );
    }

    /// Each chart is served by its own repository only, as helm-controller finds charts in
    /// the repository's index.
    #[test]
    fn charts_are_found_only_in_their_upstream_repository() {
        assert_eq!(
            Chart::find("https://openbao.github.io/openbao-helm/", "openbao"),
            Some(Chart::OpenBao)
        );
        assert_eq!(
            Chart::find("https://helm.releases.hashicorp.com", "vault"),
            Some(Chart::Vault)
        );
        assert_eq!(
            Chart::find("https://helm.releases.hashicorp.com", "openbao"),
            None
        );
        assert_eq!(
            Chart::find("https://openbao.github.io/openbao-helm", "vault"),
            None
        );
    }

    #[test]
    fn eso_release_without_chart_name_gets_fullname_deployment() {
        let docs = Chart::ExternalSecrets
            .render("ops", "eso", &json!({"serviceAccount": {"name": "eso-sa"}}))
            .expect("eso");
        assert_eq!(
            names(&docs, "Deployment"),
            [
                "eso-external-secrets",
                "eso-external-secrets-webhook",
                "eso-external-secrets-cert-controller"
            ]
        );
        assert!(names(&docs, "ServiceAccount").contains(&"eso-sa".to_string()));
        assert!(
            names(&docs, "ClusterRole").contains(&"eso-external-secrets-controller".to_string())
        );
    }

    #[test]
    fn fullname_follows_the_helm_rule_and_its_overrides() {
        assert_eq!(fullname("vault", "vault", &json!({})), "vault");
        assert_eq!(fullname("vault", "myvault", &json!({})), "myvault");
        assert_eq!(fullname("vault", "bank", &json!({})), "bank-vault");
        assert_eq!(
            fullname("vault", "bank", &json!({"nameOverride": "bank"})),
            "bank"
        );
        assert_eq!(
            fullname("vault", "x", &json!({"fullnameOverride": "kv"})),
            "kv"
        );
        let long = "a".repeat(62);
        // 62 + "-vault" cut at 63 ends in "-", which is trimmed.
        assert_eq!(fullname("vault", &long, &json!({})), long);
    }

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
        let eso = Chart::ExternalSecrets
            .render("eso", "eso", &json!({}))
            .expect("eso");
        assert!(
            eso.iter().any(|d| d["kind"] == "ServiceAccount"
                && d["metadata"]["name"] == "eso-external-secrets")
        );
        assert!(kit::parse_docs("flux", FLUX_INSTALL).expect("flux").len() > 8);
    }
}
