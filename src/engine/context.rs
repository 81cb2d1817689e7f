//! What a step can reach while it runs: the playbook, its dependencies' outputs, the cluster,
//! the captured secrets, the state directory, progress reporting and cancellation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::events::{EventBus, RunEvent, RunMode};
use super::kube_access::KubeAccess;
use super::lease::{LeaseConfig, LeaseError, LeaseSlot};
use super::step::{StepError, StepId};
use crate::playbook::LoadedPlaybook;
use crate::secrets::{Redactor, SecretStore};

/// Everything shared by the steps of one run. Built once by the caller (CLI or test).
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// The validated playbook.
    pub playbook: Arc<LoadedPlaybook>,
    /// The cluster's API.
    pub kube: Arc<KubeAccess>,
    /// Captured secrets (empty for `plan` and `status`).
    pub secrets: Arc<SecretStore>,
    /// Masks secret values in everything the engine records or emits.
    pub redactor: Arc<Redactor>,
    /// Where events go.
    pub events: EventBus,
    /// Cancelled on SIGINT/SIGTERM (or when the cluster lease is lost): running steps are
    /// interrupted, nothing new starts.
    pub interrupt: CancellationToken,
    /// The in-cluster lease, taken when an `apply` step first reaches the API.
    pub lease: Arc<LeaseSlot>,
}

impl RunEnv {
    /// A run environment with no secrets, no subscribers and kubectl-default cluster access.
    #[must_use]
    pub fn new(playbook: LoadedPlaybook) -> Self {
        let kube = KubeAccess::new(
            playbook.kubeconfig(),
            playbook.playbook.cluster.context.clone(),
        );
        Self {
            kube: Arc::new(kube),
            secrets: Arc::new(SecretStore::new()),
            redactor: Arc::new(Redactor::default()),
            events: EventBus::new(),
            interrupt: CancellationToken::new(),
            lease: Arc::new(LeaseSlot::new(LeaseConfig::for_cluster(
                &playbook.playbook.cluster.name,
                &playbook.cluster_dir(),
            ))),
            playbook: Arc::new(playbook),
        }
    }

    /// The same environment with `secrets` (and a redactor for them).
    #[must_use]
    pub fn with_secrets(mut self, secrets: Arc<SecretStore>, redactor: Arc<Redactor>) -> Self {
        self.secrets = secrets;
        self.redactor = redactor;
        self
    }

    /// The same environment with a different cluster access.
    #[must_use]
    pub fn with_kube(mut self, kube: Arc<KubeAccess>) -> Self {
        self.kube = kube;
        self
    }

    /// The same environment with a different lease slot (e.g. [`LeaseSlot::disabled`]).
    #[must_use]
    pub fn with_lease(mut self, lease: Arc<LeaseSlot>) -> Self {
        self.lease = lease;
        self
    }

    /// Emit `event` to subscribers.
    pub fn emit(&self, event: &RunEvent) {
        self.events.emit(event);
    }
}

/// A step's view of the run.
#[derive(Debug)]
pub struct StepContext {
    env: RunEnv,
    step: StepId,
    mode: RunMode,
    outputs: BTreeMap<StepId, serde_json::Value>,
    started: Instant,
    cancel: CancellationToken,
}

impl StepContext {
    pub(crate) fn new(
        env: RunEnv,
        step: StepId,
        mode: RunMode,
        outputs: BTreeMap<StepId, serde_json::Value>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            env,
            step,
            mode,
            outputs,
            started: Instant::now(),
            cancel,
        }
    }

    /// This step's id.
    #[must_use]
    pub fn step_id(&self) -> &StepId {
        &self.step
    }

    /// Plan or apply.
    #[must_use]
    pub fn mode(&self) -> RunMode {
        self.mode
    }

    /// The playbook.
    #[must_use]
    pub fn playbook(&self) -> &LoadedPlaybook {
        &self.env.playbook
    }

    /// This cluster's state directory (`<state_dir>/<cluster>`).
    #[must_use]
    pub fn state_dir(&self) -> PathBuf {
        self.env.playbook.cluster_dir()
    }

    /// The typed outputs of dependency `dep`.
    ///
    /// Only direct dependencies are visible, so every data flow is a declared edge.
    ///
    /// # Errors
    /// Permanent [`StepError`] when `dep` is not a dependency or its outputs have another shape.
    pub fn output<T: DeserializeOwned>(&self, dep: &str) -> Result<T, StepError> {
        let value = self.outputs.get(dep).ok_or_else(|| {
            StepError::permanent(format!(
                "step {} read outputs of {dep}, which is not one of its dependencies",
                self.step
            ))
        })?;
        serde_json::from_value(value.clone()).map_err(|e| {
            StepError::permanent(format!(
                "outputs of {dep} do not have the shape {} expects: {e}",
                self.step
            ))
        })
    }

    /// The raw outputs of dependency `dep`, if it is one.
    #[must_use]
    pub fn raw_output(&self, dep: &str) -> Option<&serde_json::Value> {
        self.outputs.get(dep)
    }

    /// The cluster's API client, built on first use. In `apply`, the first call also takes the
    /// in-cluster lease (design §4), so two runs never work on one cluster.
    ///
    /// # Errors
    /// Permanent [`StepError`] when the kubeconfig is unusable or another run holds the lease;
    /// transient when the lease could not be written.
    pub async fn kube(&self) -> Result<::kube::Client, StepError> {
        let client = self
            .env
            .kube
            .client()
            .await
            .map_err(|e| StepError::permanent_from("connect to the Kubernetes API", e))?;
        if self.mode == RunMode::Apply {
            self.env
                .lease
                .ensure(&client, &self.env.events, &self.env.interrupt)
                .await
                .map_err(|e| match e {
                    LeaseError::Held { .. } => StepError::permanent(e.to_string()),
                    LeaseError::Api { .. } => {
                        StepError::transient_from("take the cluster lease", e)
                    }
                })?;
        }
        Ok(client)
    }

    /// The captured secret `env`.
    ///
    /// # Errors
    /// Permanent [`StepError`] when it was not captured (not exported, or a `plan` run).
    pub fn secret(&self, env: &str) -> Result<&SecretString, StepError> {
        self.env.secrets.get(env).ok_or_else(|| {
            StepError::permanent(format!(
                "secret {env} was not captured: export it and run `kubestrap apply` again"
            ))
        })
    }

    /// The redactor, for steps that relay external text (Terraform output) to the user.
    #[must_use]
    pub fn redactor(&self) -> &Redactor {
        &self.env.redactor
    }

    /// Report progress ("waiting for pod vault-0 Ready"); shown with the time since the step
    /// started. The message is redacted.
    pub fn progress(&self, message: impl AsRef<str>) {
        let message = self.env.redactor.redact(message.as_ref()).into_owned();
        self.env.emit(&RunEvent::StepProgress {
            step: self.step.clone(),
            message,
            elapsed: self.started.elapsed(),
        });
    }

    /// Kubeconfig path the run uses, when one was named (playbook, sandbox or `--kubeconfig`).
    #[must_use]
    pub fn kubeconfig_path(&self) -> Option<&std::path::Path> {
        self.env.kube.kubeconfig()
    }

    /// Cancelled when the run is interrupted; long waits should select on it.
    #[must_use]
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }
}
