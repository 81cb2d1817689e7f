//! What a step can reach while it runs: the playbook, its dependencies' outputs, the captured
//! secrets, the state directory, the run's resources (e.g. the cluster connection, plugged in by
//! whoever built the run), progress reporting and cancellation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::events::{EventBus, RunEvent, RunMode};
use super::identity::{Identities, Identity};
use super::resources::{Finish, Resources, RunControl};
use super::step::{StepError, StepId};
use super::wait_clock::{WaitClock, WaitSpan};
use crate::playbook::LoadedPlaybook;
use crate::secrets::{Redactor, SecretStore};

/// Everything shared by the steps of one run. Built once by the caller (CLI or test).
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// The validated playbook.
    pub playbook: Arc<LoadedPlaybook>,
    /// Captured secrets (empty for `plan` and `status`).
    pub secrets: Arc<SecretStore>,
    /// Masks secret values in everything the engine records or emits.
    pub redactor: Arc<Redactor>,
    /// Where events go.
    pub events: EventBus,
    /// Cancelled on SIGINT/SIGTERM (or when a resource stops the run): running steps are
    /// interrupted, nothing new starts.
    pub interrupt: CancellationToken,
    /// What the steps share beyond the playbook (e.g. the cluster connection).
    pub resources: Resources,
    /// The identity of the cluster this run reaches (see [`super::Checkpoint::cluster_uid`]),
    /// when it was known before the run started.
    pub cluster_uid: Option<String>,
    /// The identities the checkpoint records and the ones steps learn during the run.
    pub identities: Arc<Identities>,
}

impl RunEnv {
    /// A run environment with no secrets, no subscribers and no resources.
    #[must_use]
    pub fn new(playbook: LoadedPlaybook) -> Self {
        Self {
            secrets: Arc::new(SecretStore::new()),
            redactor: Arc::new(Redactor::default()),
            events: EventBus::new(),
            interrupt: CancellationToken::new(),
            resources: Resources::default(),
            playbook: Arc::new(playbook),
            cluster_uid: None,
            identities: Arc::new(Identities::default()),
        }
    }

    /// The same environment, reaching the cluster whose identity is `uid`.
    #[must_use]
    pub fn with_cluster_uid(mut self, uid: Option<String>) -> Self {
        self.cluster_uid = uid;
        self
    }

    /// The same environment with `secrets` (and a redactor for them).
    #[must_use]
    pub fn with_secrets(mut self, secrets: Arc<SecretStore>, redactor: Arc<Redactor>) -> Self {
        self.secrets = secrets;
        self.redactor = redactor;
        self
    }

    /// The same environment with the resource `resource` (replacing one of the same type).
    #[must_use]
    pub fn with_resource<T: std::any::Any + Send + Sync>(mut self, resource: Arc<T>) -> Self {
        self.resources.insert(resource);
        self
    }

    /// The same environment with `resource`, finished when an `apply` ends.
    #[must_use]
    pub fn with_finished_resource<T: std::any::Any + Finish>(mut self, resource: Arc<T>) -> Self {
        self.resources.insert_finished(resource);
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
    /// Time spent waiting for conditions (see [`StepContext::waiting`]).
    waits: WaitClock,
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
            waits: WaitClock::default(),
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

    /// The run's resource of type `T`, if whoever built the run provided one.
    #[must_use]
    pub fn resource<T: std::any::Any + Send + Sync>(&self) -> Option<&T> {
        self.env.resources.get::<T>()
    }

    /// A handle for helpers that outlive this step (a background renewer): they may warn and stop
    /// the run.
    #[must_use]
    pub fn run_control(&self) -> RunControl {
        RunControl::new(self.env.events.clone(), self.env.interrupt.clone())
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

    /// The step reached the cluster or Vault identified by `id`: recorded in the checkpoint
    /// at the end of the run, or, when the checkpoint records another one, the run is refused.
    ///
    /// # Errors
    /// A permanent [`StepError`] naming both identities when the checkpoint records another
    /// one; the run then ends with [`super::ApplyError::IdentityMismatch`].
    pub fn identify(&self, what: Identity, id: &str) -> Result<(), StepError> {
        self.env.identities.learn(what, id).map_err(|c| {
            StepError::permanent(format!(
                "the checkpoint was written on {what} {}, but this run reached {what} {}: it is not the one the checkpoint's records describe",
                c.recorded, c.found
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

    /// Counts the time until the returned span is dropped as time this step spent waiting for
    /// a condition (a watch, a poll): the step's report says how long it waited, apart from how
    /// long it took. Waits that run side by side count once.
    pub fn waiting(&self) -> WaitSpan<'_> {
        self.waits.open()
    }

    /// Time spent waiting for conditions so far.
    #[must_use]
    pub fn waited(&self) -> Duration {
        self.waits.waited()
    }

    /// Cancelled when the run is interrupted; long waits should select on it.
    #[must_use]
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }
}
