//! The manifests kubestrap applies itself, embedded in the binary, and a strict renderer.
//!
//! Templates live in `phases/<n>-<name>/` so they can be read and reviewed as plain YAML. A
//! placeholder is `{{ name }}` and must sit inside a double-quoted YAML string; the value is
//! escaped for that context, so no value can change the structure of the document. Rendering
//! fails on a placeholder without a value and on a value no placeholder uses, so a template and
//! its typed context cannot drift apart silently.
//!
//! Each template has a typed context ([`FluxSync`], [`VaultRelease`], ...) implementing
//! [`Manifest`]; steps fill the struct and call [`Manifest::render`], then hand the YAML to
//! [`crate::kube::apply`].

use std::collections::BTreeMap;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A placeholder has no value in the context.
    #[error("template {template}: no value for {{{{ {name} }}}}: add it to the template's context")]
    Missing {
        /// The template path, e.g. `1-infrastructure/flux-sync.yaml`.
        template: &'static str,
        /// The placeholder name.
        name: String,
    },
    /// A context value is used by no placeholder.
    #[error(
        "template {template}: value {name:?} is not used by the template: remove it from the context or use it"
    )]
    Unused {
        /// The template path.
        template: &'static str,
        /// The unused name.
        name: String,
    },
    /// A placeholder is malformed or not inside a double-quoted string.
    #[error("template {template} line {line}: {problem}")]
    Syntax {
        /// The template path.
        template: &'static str,
        /// One-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// An embedded template: its path under `phases/` and its text.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// Path under `phases/`, for messages.
    pub path: &'static str,
    /// The template text.
    pub source: &'static str,
}

macro_rules! template {
    ($path:literal) => {
        Template {
            path: $path,
            source: include_str!(concat!("../phases/", $path)),
        }
    };
}

/// Renders `template` with `values`, escaping each value for a YAML double-quoted string.
///
/// # Errors
/// [`TemplateError`] for a missing or unused value, or a malformed or unquoted placeholder.
pub fn render(
    template: &Template,
    values: &[(&'static str, String)],
) -> Result<String, TemplateError> {
    let map: BTreeMap<&str, &str> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut used: BTreeMap<&str, bool> = map.keys().map(|k| (*k, false)).collect();
    let mut out = String::with_capacity(template.source.len() + 256);
    for (index, line) in template.source.split_inclusive('\n').enumerate() {
        let syntax = |problem: String| TemplateError::Syntax {
            template: template.path,
            line: index + 1,
            problem,
        };
        let mut rest = line;
        let mut quotes = 0usize;
        while let Some(start) = rest.find("{{") {
            let before = &rest[..start];
            quotes += count_quotes(before);
            out.push_str(before);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| syntax("`{{` without a closing `}}`".to_owned()))?;
            let name = after[..end].trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(syntax(format!("{name:?} is not a valid placeholder name")));
            }
            if quotes.is_multiple_of(2) {
                return Err(syntax(format!(
                    "{{{{ {name} }}}} must be inside a double-quoted string"
                )));
            }
            let value = map.get(name).ok_or_else(|| TemplateError::Missing {
                template: template.path,
                name: name.to_owned(),
            })?;
            if let Some(u) = used.get_mut(name) {
                *u = true;
            }
            escape_into(&mut out, value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    if let Some((name, _)) = used.iter().find(|(_, u)| !**u) {
        return Err(TemplateError::Unused {
            template: template.path,
            name: (*name).to_owned(),
        });
    }
    Ok(out)
}

/// Unescaped `"` characters, to know whether a position is inside a double-quoted string.
fn count_quotes(s: &str) -> usize {
    let mut n = 0;
    let mut escaped = false;
    for c in s.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => n += 1,
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    n
}

/// Escapes for the inside of a YAML double-quoted scalar. JSON's string escapes are all YAML
/// escapes too (YAML 1.2 is a superset of JSON), so serde_json's encoder does it.
fn escape_into(out: &mut String, value: &str) {
    let quoted = serde_json::Value::String(value.to_owned()).to_string();
    out.push_str(&quoted[1..quoted.len() - 1]);
}

/// Re-renders `text` (the output of `template`) with `edit` applied to each YAML document:
/// for values a plain placeholder cannot express (lists, flavor-specific blocks).
fn rewrite_docs(
    template: &Template,
    text: &str,
    mut edit: impl FnMut(&mut serde_json::Value),
) -> Result<String, TemplateError> {
    let mut out = String::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let mut value: serde_json::Value =
            serde::Deserialize::deserialize(doc).map_err(|e: serde_yaml_ng::Error| {
                TemplateError::Syntax {
                    template: template.path,
                    line: e.location().map_or(0, |l| l.line()),
                    problem: "the rendered template is not valid YAML".to_owned(),
                }
            })?;
        if value.is_null() {
            continue;
        }
        edit(&mut value);
        out.push_str("---\n");
        let yaml = serde_yaml_ng::to_string(&value).map_err(|_| TemplateError::Syntax {
            template: template.path,
            line: 0,
            problem: "the rendered template could not be written back as YAML".to_owned(),
        })?;
        out.push_str(&yaml);
    }
    Ok(out)
}

/// A typed template context.
pub trait Manifest {
    /// The template this context fills.
    const TEMPLATE: Template;

    /// Placeholder name => value.
    fn values(&self) -> Vec<(&'static str, String)>;

    /// Renders the template with this context.
    ///
    /// # Errors
    /// See [`render`].
    fn render(&self) -> Result<String, TemplateError> {
        render(&Self::TEMPLATE, &self.values())
    }
}

/// A duration as Go prints it (`time.Duration.String`): `1m0s`, `1h0m0s`, `1.5s`, `500ms`.
/// Flux and `flux bootstrap` write intervals this way, so kubestrap's copy matches theirs.
#[must_use]
pub fn go_duration(d: std::time::Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if d.as_secs() == 0 {
        let micros = d.as_micros();
        return if micros.is_multiple_of(1000) {
            format!("{}ms", micros / 1000)
        } else {
            format!("{}µs", micros)
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let nanos = d.subsec_nanos();
    let mut sec = s.to_string();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        sec.push('.');
        sec.push_str(frac.trim_end_matches('0'));
    }
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// Phase 1: the Flux sync objects `flux bootstrap` would write (`gotk-sync.yaml`): the
/// GitRepository and Kustomization named after Flux's namespace, in it (as `flux bootstrap`
/// names them). The Git credentials Secret is created in code (create-if-absent), not from a
/// template.
#[derive(Debug, Clone)]
pub struct FluxSync {
    /// Flux's namespace, which also names both objects.
    pub namespace: String,
    /// The GitRepository's and Kustomization's name (`flux bootstrap`: the namespace).
    pub name: String,
    /// The GitRepository's sync interval.
    pub interval: std::time::Duration,
    /// Git URL (`https://...`).
    pub url: String,
    /// Branch to track.
    pub branch: String,
    /// Path in the repository, e.g. `./clusters/sandbox`.
    pub path: String,
    /// Name of the Secret with the Git credentials.
    pub secret_name: String,
}

impl Manifest for FluxSync {
    const TEMPLATE: Template = template!("1-infrastructure/flux-sync.yaml");

    fn values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("url", self.url.clone()),
            ("branch", self.branch.clone()),
            ("path", self.path.clone()),
            ("secret_name", self.secret_name.clone()),
            ("namespace", self.namespace.clone()),
            ("name", self.name.clone()),
            ("interval", go_duration(self.interval)),
        ]
    }
}

/// Phase 1: the Vault Helm chart through Flux (namespace, HelmRepository, HelmRelease).
#[derive(Debug, Clone)]
pub struct VaultRelease {
    /// Which chart: `vault` from the `hashicorp` HelmRepository, or `openbao` from `openbao`.
    pub flavor: crate::playbook::VaultFlavor,
    /// The release's namespace (`[vault] namespace`).
    pub namespace: String,
    /// The HelmRelease's and Helm release's name (`[vault] release`).
    pub release: String,
    /// Flux's namespace, where the HelmRepository lives.
    pub flux_namespace: String,
    /// Chart repository URL.
    pub repository: String,
    /// Pinned chart version from the playbook.
    pub chart_version: String,
    /// OpenBao's static seal (`[vault] seal = "static"`): the key Secret to mount and the
    /// seal stanza to add; `None` for the Shamir seal.
    pub static_seal: Option<StaticSealMount>,
}

/// How the server pod gets OpenBao's static seal: the key Secret mounted read-only
/// (`server.volumes` / `server.volumeMounts`, both charts' values) and the `seal "static"`
/// stanza in the server configuration pointing at the mounted file.
#[derive(Debug, Clone)]
pub struct StaticSealMount {
    /// The Secret holding the key.
    pub secret: String,
    /// The pod volume's name.
    pub volume: String,
    /// Where the volume is mounted.
    pub mount_dir: String,
    /// The `seal "static"` stanza appended to the server configuration.
    pub stanza: String,
}

impl Manifest for VaultRelease {
    const TEMPLATE: Template = template!("1-infrastructure/vault-release.yaml");

    fn values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("namespace", self.namespace.clone()),
            ("release", self.release.clone()),
            ("flux_namespace", self.flux_namespace.clone()),
            ("repository", self.repository.clone()),
            ("repository_name", self.flavor.helm_repository().to_owned()),
            ("chart", self.flavor.chart().to_owned()),
            ("chart_version", self.chart_version.clone()),
        ]
    }

    /// For OpenBao, also sets the standalone server's configuration to raft storage
    /// ([`OPENBAO_STANDALONE_CONFIG`]); HashiCorp Vault keeps its chart's default.
    fn render(&self) -> Result<String, TemplateError> {
        let text = render(&Self::TEMPLATE, &self.values())?;
        if self.flavor == crate::playbook::VaultFlavor::Vault {
            return Ok(text);
        }
        rewrite_docs(&Self::TEMPLATE, &text, |value| {
            if value["kind"] != "HelmRelease" {
                return;
            }
            let server = &mut value["spec"]["values"]["server"];
            let mut config = OPENBAO_STANDALONE_CONFIG.to_owned();
            if let Some(seal) = &self.static_seal {
                config.push('\n');
                config.push_str(&seal.stanza);
                server["volumes"] = serde_json::json!([{
                    "name": seal.volume,
                    "secret": {"secretName": seal.secret, "defaultMode": 0o440},
                }]);
                server["volumeMounts"] = serde_json::json!([{
                    "name": seal.volume,
                    "mountPath": seal.mount_dir,
                    "readOnly": true,
                }]);
            }
            server["standalone"]["config"] = serde_json::Value::String(config);
        })
    }
}

/// The OpenBao standalone server's configuration (`server.standalone.config`). openbao-helm's
/// default uses `storage "file"`, which OpenBao 2.7 no longer has (`unknown storage type
/// file`, measured with the 2.7.2 server), so a chart bumped to a 2.7 image would crash-loop.
/// Single-node raft (the storage the chart's own raft example uses, at the same
/// `/openbao/data` volume) works on every OpenBao 2.x; the chart sets the raft cluster address
/// (`BAO_CLUSTER_ADDR`) itself.
pub const OPENBAO_STANDALONE_CONFIG: &str = r#"ui = false

listener "tcp" {
  tls_disable = 1
  address = "[::]:8200"
  cluster_address = "[::]:8201"
}

storage "raft" {
  path = "/openbao/data"
}
"#;

/// Phase 1: the External Secrets Operator Helm chart through Flux.
#[derive(Debug, Clone)]
pub struct EsoRelease {
    /// The release's namespace (`[external_secrets] namespace`).
    pub namespace: String,
    /// The HelmRelease's and Helm release's name (`[external_secrets] release`).
    pub release: String,
    /// Flux's namespace, where the HelmRepository lives.
    pub flux_namespace: String,
    /// The controller's service account (`[external_secrets] service_account`), which the
    /// ClusterSecretStore and Vault's role name.
    pub service_account: String,
    /// Chart repository URL.
    pub repository: String,
    /// Pinned chart version from the playbook (the phase 3 template pins defaults for 0.16–2.8).
    pub chart_version: String,
}

impl Manifest for EsoRelease {
    const TEMPLATE: Template = template!("1-infrastructure/eso-release.yaml");

    fn values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("namespace", self.namespace.clone()),
            ("release", self.release.clone()),
            ("flux_namespace", self.flux_namespace.clone()),
            ("service_account", self.service_account.clone()),
            ("repository", self.repository.clone()),
            ("chart_version", self.chart_version.clone()),
        ]
    }
}

/// Phase 1: the auto-unsealer workload in Vault's namespace.
///
/// Contract with `vault.init`: the keys Secret holds one entry per unseal share named
/// `unseal-key-<n>` (hex or base64, no trailing newline) and the root token as `root-token`,
/// which the unsealer never mounts.
#[derive(Debug, Clone)]
pub struct VaultAutoUnseal {
    /// Which server: the CLI the loop runs (`vault` or `bao`) and the variable it reads the
    /// address from (`VAULT_ADDR` or `BAO_ADDR`).
    pub flavor: crate::playbook::VaultFlavor,
    /// Vault's namespace (`[vault] namespace`), where the unsealer runs beside the keys.
    pub namespace: String,
    /// Name of the keys Secret in Vault's namespace, e.g. `vault-init-keys`.
    pub keys_secret: String,
    /// The Vault or OpenBao image whose CLI runs the loop (same version as the server).
    pub vault_image: String,
    /// Address of the Vault server to unseal, e.g. `http://vault-0.vault-internal:8200`.
    pub vault_addr: String,
    /// Time between seal-status polls (sub-second, so a restarted Vault is unsealed within
    /// a second of serving).
    pub poll_interval: std::time::Duration,
    /// How many shares to mount (the playbook's threshold): `unseal-key-0` onwards.
    pub unseal_keys: u32,
}

impl VaultAutoUnseal {
    /// The default poll interval: half a second, so Vault is unsealed within a second of
    /// serving again, at the cost of two tiny HTTP requests a second.
    pub const DEFAULT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
}

impl Manifest for VaultAutoUnseal {
    const TEMPLATE: Template = template!("1-infrastructure/vault-auto-unseal.yaml");

    fn values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("namespace", self.namespace.clone()),
            ("keys_secret", self.keys_secret.clone()),
            ("vault_image", self.vault_image.clone()),
            ("vault_addr", self.vault_addr.clone()),
            ("addr_env", self.flavor.addr_env().to_owned()),
            ("cli", self.flavor.cli().to_owned()),
            (
                "poll_seconds",
                format!("{}", self.poll_interval.as_secs_f64()),
            ),
        ]
    }

    /// Renders the template, then lists exactly the `unseal-key-<n>` entries to mount (a list
    /// of variable length, which plain placeholders cannot express).
    fn render(&self) -> Result<String, TemplateError> {
        let text = render(&Self::TEMPLATE, &self.values())?;
        let items: Vec<serde_json::Value> = (0..self.unseal_keys)
            .map(|i| serde_json::json!({"key": format!("unseal-key-{i}"), "path": format!("unseal-key-{i}")}))
            .collect();
        rewrite_docs(&Self::TEMPLATE, &text, |value| {
            if value["kind"] == "Deployment"
                && let Some(volumes) = value
                    .pointer_mut("/spec/template/spec/volumes")
                    .and_then(serde_json::Value::as_array_mut)
            {
                for v in volumes.iter_mut().filter(|v| v["name"] == "keys") {
                    v["secret"]["items"] = serde_json::Value::Array(items.clone());
                }
            }
        })
    }
}

/// Phase 1: the ClusterSecretStore on Vault with kubernetes auth, and the TokenReview grant.
#[derive(Debug, Clone)]
pub struct ClusterSecretStore {
    /// Store name from the playbook.
    pub name: String,
    /// Vault URL as seen from ESO's pods, e.g. `http://vault.vault.svc:8200`.
    pub vault_server: String,
    /// KV v2 mount, e.g. `secret`.
    pub kv_mount: String,
    /// Kubernetes auth mount, e.g. `kubernetes`.
    pub auth_mount: String,
    /// Vault role bound to ESO's service account.
    pub role: String,
    /// ESO's namespace.
    pub eso_namespace: String,
    /// ESO's service account.
    pub eso_service_account: String,
}

impl Manifest for ClusterSecretStore {
    const TEMPLATE: Template = template!("1-infrastructure/cluster-secret-store.yaml");

    fn values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", self.name.clone()),
            ("vault_server", self.vault_server.clone()),
            ("kv_mount", self.kv_mount.clone()),
            ("auth_mount", self.auth_mount.clone()),
            ("role", self.role.clone()),
            ("eso_namespace", self.eso_namespace.clone()),
            ("eso_service_account", self.eso_service_account.clone()),
        ]
    }
}

/// Phase 3: the ExternalSecret that makes the Flux Git credentials from Vault, with ESO's
/// defaulted fields pinned so GitOps sees no drift (seed 002; ESO 0.16–2.8 defaults).
#[derive(Debug, Clone)]
pub struct GitExternalSecret {
    /// ExternalSecret name.
    pub name: String,
    /// Namespace (Flux's, `flux-system`).
    pub namespace: String,
    /// ClusterSecretStore name.
    pub store_name: String,
    /// Refresh interval as ESO writes it back, e.g. `1h`.
    pub refresh_interval: String,
    /// Target Secret name (what the GitRepository's `secretRef` will point to).
    pub target_name: String,
    /// Vault path below the KV mount, e.g. `bootstrap/github`.
    pub vault_key: String,
    /// The Git user name (not secret; GitHub tokens use `git`), written by ESO's template.
    pub username: String,
    /// Property holding the Git password or token.
    pub password_property: String,
}

impl Manifest for GitExternalSecret {
    const TEMPLATE: Template = template!("3-gitauth/git-external-secret.yaml");

    fn values(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", self.name.clone()),
            ("namespace", self.namespace.clone()),
            ("store_name", self.store_name.clone()),
            ("refresh_interval", self.refresh_interval.clone()),
            ("target_name", self.target_name.clone()),
            ("vault_key", self.vault_key.clone()),
            ("password_property", self.password_property.clone()),
        ]
    }

    /// Renders the template, then adds `spec.target.template`: the user name as a literal and
    /// the password from the fetched data (`{{ .password }}`, ESO's Go template syntax).
    fn render(&self) -> Result<String, TemplateError> {
        let text = render(&Self::TEMPLATE, &self.values())?;
        let invalid = |problem: &str| TemplateError::Syntax {
            template: Self::TEMPLATE.path,
            line: 0,
            problem: problem.to_owned(),
        };
        let mut value: serde_json::Value = serde_yaml_ng::from_str(&text)
            .map_err(|_| invalid("the rendered template is not valid YAML"))?;
        let target = value
            .pointer_mut("/spec/target")
            .and_then(serde_json::Value::as_object_mut)
            .ok_or_else(|| invalid("the template has no spec.target"))?;
        target.insert(
            "template".to_owned(),
            serde_json::json!({
                "engineVersion": "v2",
                "mergePolicy": "Replace",
                "type": "Opaque",
                "data": {
                    "username": self.username,
                    "password": "{{ .password }}",
                },
            }),
        );
        serde_yaml_ng::to_string(&value)
            .map_err(|_| invalid("the rendered template could not be written back as YAML"))
    }
}

/// Phase 2: the documented example Terraform module for real users (hashicorp/vault provider),
/// embedded so the binary can hand it out; see `phases/2-secrets/README.md`.
pub const EXAMPLE_SECRETS_MODULE: &str = include_str!("../phases/2-secrets/main.tf");

/// Every embedded template, for listing and checks.
pub const ALL: &[Template] = &[
    FluxSync::TEMPLATE,
    VaultRelease::TEMPLATE,
    EsoRelease::TEMPLATE,
    VaultAutoUnseal::TEMPLATE,
    ClusterSecretStore::TEMPLATE,
    GitExternalSecret::TEMPLATE,
];

#[cfg(test)]
mod tests;
