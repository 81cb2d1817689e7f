//! Vault: install through Flux, initialise (keys straight into the keys Secret), unseal, the
//! auto-unsealer, and the configuration External Secrets needs (KV v2, Kubernetes auth, policy,
//! role).

use serde::Serialize;

use super::obj;
use crate::engine::Action;
use crate::playbook::{HumanDuration, LoadedPlaybook, VaultAccess};

/// How a step reaches Vault's API, for plan text.
fn reach(access: VaultAccess, namespace: &str, release: &str, address: Option<&str>) -> Action {
    match access {
        VaultAccess::PortForward => Action::run(format!(
            "port-forward to Service {namespace}/{release}:8200"
        )),
        VaultAccess::Address => Action::run(format!("connect to {}", address.unwrap_or("?"))),
    }
}

/// Where Vault is and how to reach it; shared by the Vault API steps.
#[derive(Debug, Clone, Serialize)]
pub struct VaultEndpoint {
    /// Vault's namespace.
    pub namespace: String,
    /// Release / Service name.
    pub release: String,
    /// Access mode.
    pub access: VaultAccess,
    /// Address for `access = "address"`.
    pub address: Option<String>,
}

impl VaultEndpoint {
    fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            namespace: v.namespace.clone(),
            release: v.release.clone(),
            access: v.access,
            address: v.address.clone(),
        }
    }

    fn action(&self) -> Action {
        reach(
            self.access,
            &self.namespace,
            &self.release,
            self.address.as_deref(),
        )
    }
}

/// `vault.install`: HelmRepository + HelmRelease for the pinned `hashicorp/vault` chart.
#[derive(Debug, Clone, Serialize)]
pub struct VaultInstall {
    /// Flux's namespace (where the HelmRepository lives).
    pub flux_namespace: String,
    /// Vault's namespace.
    pub namespace: String,
    /// Release name.
    pub release: String,
    /// Chart repository.
    pub chart_repo: String,
    /// Pinned chart version.
    pub chart_version: String,
}

impl VaultInstall {
    /// From `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            flux_namespace: pb.playbook.flux.namespace.clone(),
            namespace: v.namespace.clone(),
            release: v.release.clone(),
            chart_repo: v.chart_repo.clone(),
            chart_version: v.chart_version.clone(),
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::create(format!("Namespace {}", self.namespace)),
            Action::create(obj("HelmRepository", &self.flux_namespace, "hashicorp"))
                .with_detail(self.chart_repo.clone()),
            Action::create(obj("HelmRelease", &self.namespace, &self.release)).with_detail(
                format!(
                    "chart vault {}; readiness tolerates a sealed pod",
                    self.chart_version
                ),
            ),
        ]
    }
}
pending_step!(VaultInstall, "vault.install");

/// `vault.ready`: the HelmRelease is Ready and the Vault pod runs (sealed is expected here).
#[derive(Debug, Clone, Serialize)]
pub struct VaultReady {
    /// Vault's namespace.
    pub namespace: String,
    /// Release name.
    pub release: String,
    /// Wait limit.
    pub timeout: HumanDuration,
}

impl VaultReady {
    /// From `[vault]` and `[timeouts]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            namespace: v.namespace.clone(),
            release: v.release.clone(),
            timeout: pb.playbook.timeouts.vault_ready,
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            Action::run(format!(
                "wait for {} Ready (timeout {})",
                obj("HelmRelease", &self.namespace, &self.release),
                self.timeout
            )),
            Action::run(format!(
                "wait for {} Running",
                obj("Pod", &self.namespace, &format!("{}-0", self.release))
            )),
            Action::run("GET /v1/sys/health (501 uninitialised or 503 sealed are expected)"),
        ]
    }
}
pending_step!(VaultReady, "vault.ready");

/// `vault.init`: `sys/init` once, the keys into the keys Secret immediately after.
#[derive(Debug, Clone, Serialize)]
pub struct VaultInit {
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// Key shares.
    pub key_shares: u8,
    /// Threshold.
    pub key_threshold: u8,
    /// Secret that receives the keys and root token.
    pub keys_secret: String,
}

impl VaultInit {
    /// From `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            endpoint: VaultEndpoint::from_playbook(pb),
            key_shares: v.key_shares,
            key_threshold: v.key_threshold,
            keys_secret: v.keys_secret.clone(),
        }
    }

    fn actions(&self) -> Vec<Action> {
        let secret = obj("Secret", &self.endpoint.namespace, &self.keys_secret);
        vec![
            self.endpoint.action(),
            Action::run("GET /v1/sys/init"),
            Action::run(format!(
                "POST /v1/sys/init (secret_shares {}, secret_threshold {})",
                self.key_shares, self.key_threshold
            ))
            .with_detail(format!("only when not initialised; initialised without {secret} is an error with a documented recovery")),
            Action::create(secret).with_detail(format!("{} unseal keys and the root token, written right after init", self.key_shares)),
        ]
    }
}
pending_step!(VaultInit, "vault.init");

/// `vault.unseal`: submit `threshold` keys from the keys Secret.
#[derive(Debug, Clone, Serialize)]
pub struct VaultUnseal {
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// Secret holding the keys.
    pub keys_secret: String,
    /// Keys needed.
    pub key_threshold: u8,
}

impl VaultUnseal {
    /// From `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            endpoint: VaultEndpoint::from_playbook(pb),
            keys_secret: v.keys_secret.clone(),
            key_threshold: v.key_threshold,
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            self.endpoint.action(),
            Action::run("GET /v1/sys/seal-status"),
            Action::run(format!(
                "read {}",
                obj("Secret", &self.endpoint.namespace, &self.keys_secret)
            )),
            Action::run(format!(
                "PUT /v1/sys/unseal x{} (only while sealed)",
                self.key_threshold
            )),
        ]
    }
}
pending_step!(VaultUnseal, "vault.unseal");

/// `vault.auto-unseal`: a small workload that unseals Vault from the keys Secret after restarts.
#[derive(Debug, Clone, Serialize)]
pub struct VaultAutoUnseal {
    /// Vault's namespace.
    pub namespace: String,
    /// Secret holding the keys (the only thing the workload may read).
    pub keys_secret: String,
}

impl VaultAutoUnseal {
    /// From `[vault]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        Self {
            namespace: v.namespace.clone(),
            keys_secret: v.keys_secret.clone(),
        }
    }

    fn actions(&self) -> Vec<Action> {
        let name = "vault-auto-unseal";
        vec![
            Action::create(obj("ServiceAccount", &self.namespace, name)),
            Action::create(obj("Role", &self.namespace, name))
                .with_detail(format!("get secrets/{} only", self.keys_secret)),
            Action::create(obj("RoleBinding", &self.namespace, name)),
            Action::create(obj("Deployment", &self.namespace, name)),
            Action::run(format!(
                "wait for {} Available",
                obj("Deployment", &self.namespace, name)
            )),
        ]
    }
}
pending_step!(VaultAutoUnseal, "vault.auto-unseal");

/// `vault.configure`: KV v2, Kubernetes auth, the ESO policy and role.
#[derive(Debug, Clone, Serialize)]
pub struct VaultConfigure {
    /// How to reach Vault.
    pub endpoint: VaultEndpoint,
    /// KV v2 mount.
    pub kv_mount: String,
    /// Kubernetes auth mount.
    pub auth_mount: String,
    /// ESO's policy.
    pub eso_policy: String,
    /// ESO's role.
    pub eso_role: String,
    /// ESO's namespace.
    pub eso_namespace: String,
    /// ESO's service account.
    pub eso_service_account: String,
    /// KV paths the ESO policy may read: the declared secrets' paths and nothing else.
    pub read_paths: Vec<String>,
}

impl VaultConfigure {
    /// From `[vault]` and `[external_secrets]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let v = &pb.playbook.vault;
        let e = &pb.playbook.external_secrets;
        Self {
            endpoint: VaultEndpoint::from_playbook(pb),
            kv_mount: v.kv_mount.clone(),
            auth_mount: v.auth_mount.clone(),
            eso_policy: v.eso_policy.clone(),
            eso_role: v.eso_role.clone(),
            eso_namespace: e.namespace.clone(),
            eso_service_account: e.service_account.clone(),
            read_paths: {
                let mut paths: Vec<String> = pb
                    .playbook
                    .secrets
                    .iter()
                    .map(|s| s.vault_path.clone())
                    .collect();
                paths.sort();
                paths.dedup();
                paths
            },
        }
    }

    fn actions(&self) -> Vec<Action> {
        vec![
            self.endpoint.action(),
            Action::create(format!(
                "POST /v1/sys/mounts/{} (kv version 2)",
                self.kv_mount
            )),
            Action::create(format!(
                "POST /v1/sys/auth/{} (kubernetes)",
                self.auth_mount
            )),
            Action::update(format!("POST /v1/auth/{}/config", self.auth_mount))
                .with_detail("kubernetes_host https://kubernetes.default.svc"),
            Action::create(format!("PUT /v1/sys/policy/{}", self.eso_policy)).with_detail(
                if self.read_paths.is_empty() {
                    "no read access: no [[secrets]] declared".to_owned()
                } else {
                    let paths: Vec<String> = self
                        .read_paths
                        .iter()
                        .map(|p| format!("{}/data/{p}", self.kv_mount))
                        .collect();
                    format!("read only on {}", paths.join(", "))
                },
            ),
            Action::create(format!(
                "POST /v1/auth/{}/role/{}",
                self.auth_mount, self.eso_role
            ))
            .with_detail(format!(
                "bound to ServiceAccount {}/{}, policy {}",
                self.eso_namespace, self.eso_service_account, self.eso_policy
            )),
        ]
    }
}
pending_step!(VaultConfigure, "vault.configure");
