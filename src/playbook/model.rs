//! The playbook's typed model: one struct per TOML section (design §2).
//!
//! Every struct denies unknown fields; defaults live here so `plan` shows the values actually used.
//! Paths are stored as written; [`crate::playbook::load`] resolves relative ones against the
//! playbook's directory before anyone else sees them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

/// A whole playbook: one cluster, bootstrapped in five phases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// `[cluster]`: which cluster and how to reach or create it.
    pub cluster: Cluster,
    /// `[sandbox]`: settings for `provider = "sandbox"` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// `[flux]`: the GitOps controller and the repository it syncs.
    pub flux: Flux,
    /// `[vault]`: the secret store.
    #[serde(default)]
    pub vault: Vault,
    /// `[external_secrets]`: the operator that copies Vault secrets into Kubernetes.
    #[serde(default)]
    pub external_secrets: ExternalSecrets,
    /// `[terraform]`: the self-referencing module that writes bootstrap secrets into Vault.
    #[serde(default)]
    pub terraform: Terraform,
    /// `[[secrets]]`: bootstrap secrets read from the environment.
    #[serde(default)]
    pub secrets: Vec<SecretDecl>,
    /// `[git_auth]`: the switch of Flux's Git credentials to an ESO-managed Secret.
    #[serde(default)]
    pub git_auth: GitAuth,
    /// `[apps]`: what must reconcile once the platform is up.
    #[serde(default)]
    pub apps: Apps,
    /// `[verify]`: the final checks.
    #[serde(default)]
    pub verify: Verify,
    /// `[timeouts]`: how long each wait may take.
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name; names the state directory and the checkpoint.
    pub name: String,
    /// How the cluster comes to exist.
    pub provider: Provider,
    /// k3s version to install (`k3s-local`, `k3s-ssh`), e.g. `v1.33.1+k3s1`
    /// (`INSTALL_K3S_VERSION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s_version: Option<String>,
    /// Command and flags for the k3s install script (`INSTALL_K3S_EXEC`), e.g.
    /// `"server --disable traefik"`. Default: `server --write-kubeconfig-mode 600`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s_exec: Option<String>,
    /// Where to install k3s for `provider = "k3s-ssh"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshTarget>,
    /// Kubeconfig to use; `--kubeconfig` and `KUBECONFIG` follow kubectl's precedence over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; `--context` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Where checkpoints and locks live (default `.kubestrap` next to the playbook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
}

/// How the cluster comes to exist (`[cluster] provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// The embedded sandbox cluster (`kubestrap sandbox up`), for tests and demos.
    Sandbox,
    /// k3s installed on this machine.
    K3sLocal,
    /// k3s installed on a remote machine over SSH.
    K3sSsh,
    /// A cluster that already exists; reached through the kubeconfig.
    Existing,
}

impl Provider {
    /// The name as written in the playbook.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::K3sLocal => "k3s-local",
            Self::K3sSsh => "k3s-ssh",
            Self::Existing => "existing",
        }
    }

    /// Whether kubestrap installs k3s itself for this provider.
    #[must_use]
    pub const fn installs_k3s(self) -> bool {
        matches!(self, Self::K3sLocal | Self::K3sSsh)
    }
}

/// `[cluster.ssh]`: the machine k3s is installed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    /// Login user.
    #[serde(default = "default_ssh_user")]
    pub user: String,
    /// SSH port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Private key file (else the SSH agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
}

/// `[sandbox]`: the embedded sandbox cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sandbox {
    /// Directory the sandbox keeps its state and kubeconfig in (default
    /// `<state_dir>/<cluster>/sandbox`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Git repository URLs the sandbox's source controller serves from local directories,
    /// because the sandbox has no network: `{ "https://git.sandbox.local/org/fleet" = "sandbox/git/fleet" }`.
    pub git_repos: BTreeMap<String, PathBuf>,
    /// Faults the sandbox simulates (`kubestrap sandbox up --faults`), e.g.
    /// `seed=7,api_error_rate=0.1`; for tests and benchmarks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faults: Option<String>,
    /// A real Vault-API server binary (`bao` or `vault`) the sandbox runs as the Vault pod's
    /// process instead of its emulated Vault (`kubestrap sandbox up --vault-server`), e.g. the
    /// OpenBao `scripts/install-openbao` installs. Relative to the playbook's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_server: Option<PathBuf>,
}

/// `[flux]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flux {
    /// Flux release, e.g. `v2.6.4`; picks the default install manifest URL.
    #[serde(default = "default_flux_version")]
    pub version: String,
    /// Flux's `install.yaml`: an `https://` URL, a local path (relative to the playbook), or
    /// `sandbox:/sandbox/flux/install.yaml`, the copy the sandbox serves on its API server
    /// (fetched over its TLS, verified with the cluster CA). Default: the release's
    /// `install.yaml` on GitHub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_manifest: Option<String>,
    /// Expected sha256 of the install manifest (hex); checked before anything is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_sha256: Option<String>,
    /// Namespace Flux runs in.
    #[serde(default = "default_flux_namespace")]
    pub namespace: String,
    /// Git repository Flux syncs (`https://…`).
    pub git_url: String,
    /// Branch to follow.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Path inside the repository that holds this cluster's manifests.
    pub path: String,
    /// Environment variable holding the bootstrap Git token; must be declared in `[[secrets]]`.
    pub token_env: String,
    /// HTTPS basic-auth user name sent with the token.
    #[serde(default = "default_git_username")]
    pub git_username: String,
    /// Name of the bootstrap Git Secret (`flux bootstrap --secret-name`). The GitRepository and
    /// the root Kustomization are named after `namespace`, as `flux bootstrap` names them.
    #[serde(default = "default_flux_namespace")]
    pub bootstrap_secret: String,
    /// Sync interval of the GitRepository.
    #[serde(default = "default_flux_interval")]
    pub interval: HumanDuration,
}

impl Flux {
    /// The install manifest source actually used (URL or resolved path).
    #[must_use]
    pub fn install_manifest(&self) -> String {
        self.install_manifest.clone().unwrap_or_else(|| {
            format!(
                "https://github.com/fluxcd/flux2/releases/download/{}/install.yaml",
                self.version
            )
        })
    }
}

/// `[vault]`.
///
/// Deserialised through [`VaultSection`]: the chart, namespace and release defaults depend on
/// `flavor`, so a field left out takes the default of the flavor given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "VaultSection")]
pub struct Vault {
    /// Which server: HashiCorp Vault or OpenBao (same API; different chart, image and CLI).
    /// Left out of the serialised form when `vault`, so existing fingerprints stay the same.
    #[serde(skip_serializing_if = "VaultFlavor::is_vault")]
    pub flavor: VaultFlavor,
    /// How the server seals its data: Shamir unseal keys (the default) or OpenBao's static
    /// seal. Left out of the serialised form when `shamir`, so existing fingerprints stay the
    /// same.
    #[serde(skip_serializing_if = "VaultSeal::is_shamir")]
    pub seal: VaultSeal,
    /// Helm chart version of `hashicorp/vault` (or `openbao/openbao`).
    pub chart_version: String,
    /// Helm repository URL.
    pub chart_repo: String,
    /// Namespace Vault runs in.
    pub namespace: String,
    /// Helm release name. The chart names its StatefulSet, Service and pod after its fullname:
    /// this name if it contains the chart name (`vault` or `openbao`), else
    /// `<release>-<chart>` (pod `<fullname>-0`).
    pub release: String,
    /// Number of unseal key shares created by `sys/init`.
    pub key_shares: u8,
    /// Shares needed to unseal.
    pub key_threshold: u8,
    /// Secret (in Vault's namespace) that holds the unseal keys and root token.
    pub keys_secret: String,
    /// Mount path of the KV v2 engine.
    pub kv_mount: String,
    /// Mount path of the Kubernetes auth method.
    pub auth_mount: String,
    /// How kubestrap reaches Vault's API.
    pub access: VaultAccess,
    /// Vault address for `access = "address"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Allow an `http://` address, which sends the root token and the bootstrap secrets
    /// unencrypted; the plan shows it as a warning. Off by default: use `https://`.
    #[serde(skip_serializing_if = "is_false")]
    pub allow_http: bool,
    /// Vault role that External Secrets logs in with.
    pub eso_role: String,
    /// Vault policy granting External Secrets read access to the KV mount.
    pub eso_policy: String,
}

/// `[vault]` as written: the flavor-dependent fields are optional, filled from the flavor's
/// defaults by `From<VaultSection> for Vault`. Same field names as [`Vault`], so serde's
/// messages and the key schema ([`super::schema`]) name the playbook's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct VaultSection {
    flavor: VaultFlavor,
    seal: VaultSeal,
    chart_version: Option<String>,
    chart_repo: Option<String>,
    namespace: Option<String>,
    release: Option<String>,
    key_shares: u8,
    key_threshold: u8,
    keys_secret: String,
    kv_mount: String,
    auth_mount: String,
    access: VaultAccess,
    address: Option<String>,
    allow_http: bool,
    eso_role: String,
    eso_policy: String,
}

impl Default for VaultSection {
    fn default() -> Self {
        let v = Vault::default();
        Self {
            flavor: v.flavor,
            seal: v.seal,
            chart_version: None,
            chart_repo: None,
            namespace: None,
            release: None,
            key_shares: v.key_shares,
            key_threshold: v.key_threshold,
            keys_secret: v.keys_secret,
            kv_mount: v.kv_mount,
            auth_mount: v.auth_mount,
            access: v.access,
            address: v.address,
            allow_http: v.allow_http,
            eso_role: v.eso_role,
            eso_policy: v.eso_policy,
        }
    }
}

impl From<VaultSection> for Vault {
    fn from(s: VaultSection) -> Self {
        let f = s.flavor;
        Self {
            flavor: f,
            seal: s.seal,
            chart_version: s
                .chart_version
                .unwrap_or_else(|| f.default_chart_version().into()),
            chart_repo: s
                .chart_repo
                .unwrap_or_else(|| f.default_chart_repo().into()),
            namespace: s.namespace.unwrap_or_else(|| f.default_namespace().into()),
            release: s.release.unwrap_or_else(|| f.default_namespace().into()),
            key_shares: s.key_shares,
            key_threshold: s.key_threshold,
            keys_secret: s.keys_secret,
            kv_mount: s.kv_mount,
            auth_mount: s.auth_mount,
            access: s.access,
            address: s.address,
            allow_http: s.allow_http,
            eso_role: s.eso_role,
            eso_policy: s.eso_policy,
        }
    }
}

/// Which Vault-API server `[vault]` installs (`[vault] flavor`). Everything kubestrap does
/// through the API (init, unseal, KV v2, kubernetes auth, ESO's store, Terraform) is the same
/// for both; what differs is what the flavor's Helm chart and image are called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VaultFlavor {
    /// HashiCorp Vault: chart `vault` from `https://helm.releases.hashicorp.com`, image
    /// `hashicorp/vault`, CLI `vault` with `VAULT_ADDR`.
    #[default]
    Vault,
    /// OpenBao: chart `openbao` from `https://openbao.github.io/openbao-helm`, image
    /// `quay.io/openbao/openbao`, CLI `bao` with `BAO_ADDR`.
    Openbao,
}

impl VaultFlavor {
    /// For `skip_serializing_if`: the default flavor is left out of serialised forms.
    #[must_use]
    pub const fn is_vault(&self) -> bool {
        matches!(self, Self::Vault)
    }

    /// As written in the playbook.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::Openbao => "openbao",
        }
    }

    /// The Helm chart's name in its repository (also the name its fullname rule tests for).
    #[must_use]
    pub const fn chart(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::Openbao => "openbao",
        }
    }

    /// The name of the HelmRepository kubestrap creates for the chart (in Flux's namespace).
    #[must_use]
    pub const fn helm_repository(self) -> &'static str {
        match self {
            Self::Vault => "hashicorp",
            Self::Openbao => "openbao",
        }
    }

    /// The chart repository's URL.
    #[must_use]
    pub const fn default_chart_repo(self) -> &'static str {
        match self {
            Self::Vault => "https://helm.releases.hashicorp.com",
            Self::Openbao => "https://openbao.github.io/openbao-helm",
        }
    }

    /// The pinned chart version: hashicorp/vault-helm 0.30.0; openbao/openbao-helm 0.29.2
    /// (appVersion v2.6.2, its `Chart.yaml`).
    #[must_use]
    pub const fn default_chart_version(self) -> &'static str {
        match self {
            Self::Vault => "0.30.0",
            Self::Openbao => "0.29.2",
        }
    }

    /// The default namespace, which is also the default release name.
    #[must_use]
    pub const fn default_namespace(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::Openbao => "openbao",
        }
    }

    /// The server image the unsealer runs its CLI from: the chart's own server image
    /// (openbao-helm 0.29.2: `quay.io/openbao/openbao`, tag = appVersion without the `v`).
    #[must_use]
    pub const fn image(self) -> &'static str {
        match self {
            Self::Vault => "hashicorp/vault:1.19.0",
            Self::Openbao => "quay.io/openbao/openbao:2.6.2",
        }
    }

    /// The image's CLI.
    #[must_use]
    pub const fn cli(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::Openbao => "bao",
        }
    }

    /// The environment variable that CLI reads the server's address from.
    #[must_use]
    pub const fn addr_env(self) -> &'static str {
        match self {
            Self::Vault => "VAULT_ADDR",
            Self::Openbao => "BAO_ADDR",
        }
    }
}

/// How the Vault-API server protects its root key (`[vault] seal`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VaultSeal {
    /// Shamir: `sys/init` hands out unseal key shares; every restart needs `key_threshold` of
    /// them (kubestrap's auto-unsealer submits them from the keys Secret).
    #[default]
    Shamir,
    /// OpenBao's static seal (2.4+): the server unseals itself at every start from a 32-byte
    /// key in a file, which kubestrap generates once and keeps in a Secret mounted into the
    /// server pod. `sys/init` then hands out recovery keys instead of unseal keys, and no
    /// unsealer runs. OpenBao only: HashiCorp Vault has no static seal.
    Static,
}

impl VaultSeal {
    /// For `skip_serializing_if`: the default seal is left out of serialised forms.
    #[must_use]
    pub const fn is_shamir(&self) -> bool {
        matches!(self, Self::Shamir)
    }

    /// Whether the server unseals itself (no unseal shares, no unsealer).
    #[must_use]
    pub const fn is_static(self) -> bool {
        matches!(self, Self::Static)
    }

    /// As written in the playbook.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Shamir => "shamir",
            Self::Static => "static",
        }
    }
}

/// How kubestrap reaches Vault (`[vault] access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VaultAccess {
    /// Port-forward to the Vault pod through the Kubernetes API.
    PortForward,
    /// Talk to `[vault] address` directly.
    Address,
}

/// `[external_secrets]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalSecrets {
    /// Helm chart version of `external-secrets`.
    pub chart_version: String,
    /// Helm repository URL.
    pub chart_repo: String,
    /// Namespace the operator runs in.
    pub namespace: String,
    /// Helm release name. The chart names its Deployments after its fullname: this name if
    /// it contains `external-secrets`, else `<release>-external-secrets`.
    pub release: String,
    /// The operator's service account (bound to the Vault role).
    pub service_account: String,
    /// Name of the ClusterSecretStore pointing at Vault.
    pub store: String,
}

/// `[terraform]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Terraform {
    /// Module directory (relative to the playbook).
    pub dir: PathBuf,
    /// Which binary runs it.
    pub binary: TerraformBinary,
    /// Extra environment variables handed to Terraform, by name or glob (`AWS_*`,
    /// `TF_TOKEN_*`, `HTTPS_PROXY`, `TF_CLI_CONFIG_FILE`): its environment is otherwise cleared,
    /// so a remote backend's credentials, proxies and CA bundles must be named here. Declared
    /// `[[secrets]]` are never passed this way.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pass_env: Vec<String>,
}

/// The declared secrets `k3s_exec` references as `${NAME}`, in order, each once. kubestrap
/// hands their values to the k3s install script in its environment (over ssh's stdin for
/// `k3s-ssh`), never on a command line; the script keeps `K3S_*` variables in the 0600
/// `/etc/systemd/system/k3s.service.env`, from which systemd expands `${NAME}` in k3s's
/// command line when it starts k3s (and k3s reads `K3S_TOKEN` and the like itself).
#[must_use]
pub fn k3s_exec_secret_refs(exec: &str) -> Vec<String> {
    let mut refs: Vec<String> = Vec::new();
    let mut rest = exec;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            break;
        };
        let name = &after[..end];
        if !name.is_empty() && !refs.iter().any(|r| r == name) {
            refs.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    refs
}

/// Whether the environment variable `name` matches a `pass_env` pattern (`*` matches any run
/// of characters).
#[must_use]
pub fn env_pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            if !tail.contains('*') {
                return rest.len() >= tail.len() && rest.ends_with(tail);
            }
            (0..=rest.len())
                .any(|i| rest.is_char_boundary(i) && env_pattern_matches(tail, &rest[i..]))
        }
    }
}

/// `[terraform] binary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TerraformBinary {
    /// HashiCorp Terraform.
    Terraform,
    /// OpenTofu.
    Tofu,
}

impl TerraformBinary {
    /// Executable name looked up on `PATH`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Terraform => "terraform",
            Self::Tofu => "tofu",
        }
    }
}

/// One `[[secrets]]` entry: a bootstrap secret read from the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretDecl {
    /// Environment variable the value is read from (and then wiped).
    pub env: String,
    /// Terraform variable it is passed as (default: the env name in lower case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf_var: Option<String>,
    /// Path under the KV mount where it must end up, e.g. `bootstrap/github`.
    pub vault_path: String,
    /// Key inside that Vault secret.
    pub vault_key: String,
    /// Whether `apply` refuses to start without it.
    #[serde(default = "default_true")]
    pub required: bool,
}

impl SecretDecl {
    /// The Terraform variable name actually used.
    #[must_use]
    pub fn tf_var(&self) -> String {
        self.tf_var
            .clone()
            .unwrap_or_else(|| self.env.to_ascii_lowercase())
    }
}

/// `[git_auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitAuth {
    /// Name of the ExternalSecret in Flux's namespace. Its target is the Secret the
    /// GitRepository already names (`[flux] bootstrap_secret`), which ESO adopts in place: the
    /// GitRepository never changes, so a `gotk-sync.yaml` in Git agrees (see `steps::gitauth`).
    pub external_secret: String,
    /// The `[[secrets]]` env name whose Vault location holds the Git token (default: `[flux] token_env`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_secret: Option<String>,
    /// Refresh interval of the ExternalSecret.
    pub refresh_interval: HumanDuration,
    /// Whether `gitauth.cleanup` insists that no bootstrap copy of the Git token is left: the
    /// Secret Flux reads must be owned by the ExternalSecret. The handover rewrites the bootstrap
    /// Secret in place, so nothing is deleted (deleting it would cut Flux off Git).
    pub delete_bootstrap_secret: bool,
}

/// `[apps]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Apps {
    /// Flux Kustomizations that must become Ready: `name` (in Flux's namespace) or `namespace/name`.
    pub kustomizations: Vec<String>,
    /// Namespaces whose ExternalSecrets must be `SecretSynced` (empty: every namespace).
    pub external_secret_namespaces: Vec<String>,
}

/// `[verify]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    /// Restart the Vault pod and prove auto-unseal brings it back.
    pub restart_vault: bool,
    /// Check that no bootstrap secret value is left in the cluster outside Vault-managed Secrets.
    pub no_bootstrap_secrets: bool,
}

/// `[timeouts]`: one per kind of wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// The node becoming Ready.
    pub node_ready: HumanDuration,
    /// Flux controllers and sources becoming Ready.
    pub flux_ready: HumanDuration,
    /// Vault pod running and reachable.
    pub vault_ready: HumanDuration,
    /// External Secrets operator and store Ready.
    pub eso_ready: HumanDuration,
    /// Application Kustomizations Ready.
    pub reconcile: HumanDuration,
    /// ExternalSecrets SecretSynced.
    pub secret_sync: HumanDuration,
    /// Terraform apply.
    pub terraform: HumanDuration,
}

fn default_true() -> bool {
    true
}
// serde's skip_serializing_if passes a reference.
#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
const fn is_false(b: &bool) -> bool {
    !*b
}
fn default_ssh_user() -> String {
    "root".into()
}
const fn default_ssh_port() -> u16 {
    22
}
fn default_flux_version() -> String {
    "v2.6.4".into()
}
fn default_flux_namespace() -> String {
    "flux-system".into()
}
fn default_branch() -> String {
    "main".into()
}
fn default_git_username() -> String {
    "git".into()
}
const fn default_flux_interval() -> HumanDuration {
    HumanDuration::from_secs(60)
}

impl Default for Vault {
    fn default() -> Self {
        let flavor = VaultFlavor::Vault;
        Self {
            flavor,
            seal: VaultSeal::Shamir,
            chart_version: flavor.default_chart_version().into(),
            chart_repo: flavor.default_chart_repo().into(),
            namespace: flavor.default_namespace().into(),
            release: flavor.default_namespace().into(),
            key_shares: 5,
            key_threshold: 3,
            keys_secret: "vault-init-keys".into(),
            kv_mount: "secret".into(),
            auth_mount: "kubernetes".into(),
            access: VaultAccess::PortForward,
            address: None,
            allow_http: false,
            eso_role: "external-secrets".into(),
            eso_policy: "external-secrets".into(),
        }
    }
}

impl Default for ExternalSecrets {
    fn default() -> Self {
        Self {
            chart_version: "0.16.2".into(),
            chart_repo: "https://charts.external-secrets.io".into(),
            namespace: "external-secrets".into(),
            release: "external-secrets".into(),
            service_account: "external-secrets".into(),
            store: "vault-backend".into(),
        }
    }
}

impl Default for Terraform {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("terraform"),
            binary: TerraformBinary::Terraform,
            pass_env: Vec::new(),
        }
    }
}

impl Default for GitAuth {
    fn default() -> Self {
        Self {
            external_secret: "flux-git-auth".into(),
            from_secret: None,
            refresh_interval: HumanDuration::from_secs(3600),
            delete_bootstrap_secret: true,
        }
    }
}

impl Default for Verify {
    fn default() -> Self {
        Self {
            restart_vault: false,
            no_bootstrap_secrets: true,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            node_ready: HumanDuration::from_secs(300),
            flux_ready: HumanDuration::from_secs(300),
            vault_ready: HumanDuration::from_secs(300),
            eso_ready: HumanDuration::from_secs(300),
            reconcile: HumanDuration::from_secs(600),
            secret_sync: HumanDuration::from_secs(300),
            terraform: HumanDuration::from_secs(600),
        }
    }
}
