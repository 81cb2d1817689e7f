//! k3s: make the cluster exist (or find it) and wait for its node to be Ready.

use serde::Serialize;

use super::{not_implemented, payload_of};
use crate::engine::{Action, Step, StepContext, StepError, StepOutcome, Verified};
use crate::playbook::{HumanDuration, LoadedPlaybook, Provider};

/// `INSTALL_K3S_EXEC` when the playbook gives none: a server whose kubeconfig only root reads.
pub const DEFAULT_K3S_EXEC: &str = "server --write-kubeconfig-mode 600";

/// `k3s.install`: install k3s (k3s-local, k3s-ssh), or check that the sandbox / existing cluster
/// is reachable.
#[derive(Debug, Clone, Serialize)]
pub struct K3sInstall {
    /// How the cluster comes to exist.
    pub provider: Provider,
    /// Pinned k3s version (installing providers).
    pub k3s_version: Option<String>,
    /// `INSTALL_K3S_EXEC` for the install script.
    pub k3s_exec: String,
    /// `user@host:port` for k3s-ssh.
    pub ssh_target: Option<String>,
    /// The kubeconfig the rest of the run uses.
    pub kubeconfig: Option<String>,
    /// The sandbox directory (provider sandbox).
    pub sandbox_dir: Option<String>,
}

impl K3sInstall {
    /// From the playbook's `[cluster]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        let c = &pb.playbook.cluster;
        Self {
            provider: c.provider,
            k3s_version: c.k3s_version.clone(),
            k3s_exec: c
                .k3s_exec
                .clone()
                .unwrap_or_else(|| DEFAULT_K3S_EXEC.to_owned()),
            ssh_target: c
                .ssh
                .as_ref()
                .map(|s| format!("{}@{}:{}", s.user, s.host, s.port)),
            kubeconfig: pb.kubeconfig().map(|p| p.display().to_string()),
            sandbox_dir: pb.sandbox_dir().map(|p| p.display().to_string()),
        }
    }

    fn install_command(&self) -> String {
        format!(
            "curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION={} INSTALL_K3S_EXEC='{}' sh -",
            self.k3s_version.as_deref().unwrap_or("?"),
            self.k3s_exec
        )
    }
}

#[async_trait::async_trait]
impl Step for K3sInstall {
    fn kind(&self) -> &'static str {
        "k3s.install"
    }

    fn payload(&self) -> serde_json::Value {
        payload_of(self)
    }

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        let kubeconfig = self
            .kubeconfig
            .as_deref()
            .unwrap_or("KUBECONFIG / ~/.kube/config");
        Ok(match self.provider {
            Provider::Sandbox => {
                let dir = self.sandbox_dir.as_deref().unwrap_or("?");
                vec![
                    Action::run(format!(
                        "start the sandbox cluster in {dir} unless it is already running"
                    ))
                    .with_detail(format!(
                        "as `kubestrap sandbox up --dir {dir}`, in the background"
                    )),
                    Action::create(format!("kubeconfig {kubeconfig}"))
                        .with_detail("written by the sandbox"),
                ]
            }
            Provider::K3sLocal => vec![
                Action::run(self.install_command())
                    .with_detail("skipped when k3s of this version already runs"),
                Action::create("kubeconfig /etc/rancher/k3s/k3s.yaml"),
            ],
            Provider::K3sSsh => {
                let target = self.ssh_target.as_deref().unwrap_or("?");
                vec![
                    Action::run(format!("ssh {target} -- {}", self.install_command()))
                        .with_detail("skipped when k3s of this version already runs"),
                    Action::create(format!(
                        "kubeconfig copied from {target}:/etc/rancher/k3s/k3s.yaml"
                    )),
                ]
            }
            Provider::Existing => vec![Action::unchanged(format!(
                "existing cluster from {kubeconfig}"
            ))],
        })
    }

    async fn apply(&self, _ctx: &StepContext) -> Result<StepOutcome, StepError> {
        Err(not_implemented(self, "apply"))
    }

    async fn verify(&self, _ctx: &StepContext) -> Result<Verified, StepError> {
        Err(not_implemented(self, "verify"))
    }
}

/// `k3s.ready`: the API answers `/readyz` and the node reports `Ready`.
#[derive(Debug, Clone, Serialize)]
pub struct K3sReady {
    /// How long to wait for the node.
    pub timeout: HumanDuration,
}

impl K3sReady {
    /// From the playbook's `[timeouts]`.
    #[must_use]
    pub fn from_playbook(pb: &LoadedPlaybook) -> Self {
        Self {
            timeout: pb.playbook.timeouts.node_ready,
        }
    }
}

#[async_trait::async_trait]
impl Step for K3sReady {
    fn kind(&self) -> &'static str {
        "k3s.ready"
    }

    fn payload(&self) -> serde_json::Value {
        payload_of(self)
    }

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(vec![
            Action::run("GET /readyz"),
            Action::run(format!(
                "wait for every Node condition Ready=True (timeout {})",
                self.timeout
            )),
        ])
    }

    async fn apply(&self, _ctx: &StepContext) -> Result<StepOutcome, StepError> {
        Err(not_implemented(self, "apply"))
    }

    async fn verify(&self, _ctx: &StepContext) -> Result<Verified, StepError> {
        Err(not_implemented(self, "verify"))
    }
}
