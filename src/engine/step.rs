//! The step contract: typed data plus behaviour (`plan` / `apply` / `verify`).
//!
//! Each step kind is a serde-serialisable struct in `src/steps/<component>.rs` implementing
//! [`Step`]. The engine knows nothing about what a step does; it only schedules, retries,
//! records and reports.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::context::StepContext;
use super::retry::RetryPolicy;

/// A step's identifier, e.g. `vault.init`. Unique within a DAG.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    /// Wrap a name.
    #[must_use]
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl From<&str> for StepId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::borrow::Borrow<str> for StepId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The five phases of design §3, in run order. A phase starts only when the previous one is
/// complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// k3s, Flux, Vault, External Secrets.
    Infrastructure,
    /// Bootstrap secrets through Terraform into Vault.
    Secrets,
    /// Flux's Git credentials switched to an ESO-managed Secret.
    GitAuth,
    /// Applications reconciled, their secrets synced.
    Apps,
    /// Final checks and cleanup.
    Verify,
}

impl Phase {
    /// All phases in run order.
    pub const ALL: [Self; 5] = [
        Self::Infrastructure,
        Self::Secrets,
        Self::GitAuth,
        Self::Apps,
        Self::Verify,
    ];

    /// Stable name used in output and checkpoints.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Infrastructure => "infrastructure",
            Self::Secrets => "secrets",
            Self::GitAuth => "git-auth",
            Self::Apps => "apps",
            Self::Verify => "verify",
        }
    }

    /// 1-based position.
    #[must_use]
    pub const fn number(self) -> usize {
        self as usize + 1
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// What kind of change an [`Action`] is, in `terraform plan` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `+` an object or value would be created.
    Create,
    /// `~` an existing object would be changed.
    Update,
    /// `=` already as wanted; nothing to do.
    Unchanged,
    /// `!` something would be destroyed (destructive).
    Delete,
    /// `>` a command or API call would be run (install, init, wait).
    Run,
}

impl Op {
    /// The one-character marker used in plan text.
    #[must_use]
    pub const fn marker(self) -> char {
        match self {
            Self::Create => '+',
            Self::Update => '~',
            Self::Unchanged => '=',
            Self::Delete => '!',
            Self::Run => '>',
        }
    }
}

/// One intended action of a step, as shown by `plan`. Never carries a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The kind of change.
    pub op: Op,
    /// What it acts on: `Namespace flux-system`, `POST /v1/sys/init`, `terraform apply`.
    pub target: String,
    /// A short explanation, when the target alone is not enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Action {
    /// An action of kind `op` on `target`.
    #[must_use]
    pub fn new(op: Op, target: impl Into<String>) -> Self {
        Self {
            op,
            target: target.into(),
            detail: None,
        }
    }
    /// `+ target`.
    #[must_use]
    pub fn create(target: impl Into<String>) -> Self {
        Self::new(Op::Create, target)
    }
    /// `~ target`.
    #[must_use]
    pub fn update(target: impl Into<String>) -> Self {
        Self::new(Op::Update, target)
    }
    /// `= target`.
    #[must_use]
    pub fn unchanged(target: impl Into<String>) -> Self {
        Self::new(Op::Unchanged, target)
    }
    /// `! target`.
    #[must_use]
    pub fn delete(target: impl Into<String>) -> Self {
        Self::new(Op::Delete, target)
    }
    /// `> target`.
    #[must_use]
    pub fn run(target: impl Into<String>) -> Self {
        Self::new(Op::Run, target)
    }
    /// The same action with an explanation.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// The result of a successful `apply`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepOutcome {
    /// Whether anything was changed (`false`: everything already existed as wanted).
    pub changed: bool,
    /// The step only waited for or checked something, and it held: reported as `ready`, not as
    /// `unchanged` (which reads as "nothing happened" when in fact a condition was waited for).
    #[serde(default)]
    pub ready: bool,
    /// Non-secret outputs for dependent steps (a JSON object or `null`); recorded in the
    /// checkpoint so a resumed run can hand them on without re-applying.
    pub outputs: serde_json::Value,
}

impl StepOutcome {
    /// An outcome without outputs.
    #[must_use]
    pub fn new(changed: bool) -> Self {
        Self {
            changed,
            ready: false,
            outputs: serde_json::Value::Null,
        }
    }

    /// The outcome of a wait or check that held: nothing changed, the condition is true.
    #[must_use]
    pub fn ready() -> Self {
        Self {
            ready: true,
            ..Self::new(false)
        }
    }

    /// The same outcome marked as a wait or check that held (see [`StepOutcome::ready`]).
    #[must_use]
    pub fn as_ready(mut self) -> Self {
        self.ready = true;
        self
    }

    /// An outcome with typed outputs.
    ///
    /// # Errors
    /// A permanent [`StepError`] if `outputs` cannot be serialised (a bug in the step).
    pub fn with_outputs<T: Serialize>(changed: bool, outputs: &T) -> Result<Self, StepError> {
        let outputs = serde_json::to_value(outputs)
            .map_err(|e| StepError::permanent(format!("serialise step outputs: {e}")))?;
        Ok(Self {
            changed,
            ready: false,
            outputs,
        })
    }
}

/// The answer of `verify`: does the step's postcondition hold now?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verified {
    /// It holds; a resumed run need not apply the step again.
    Holds,
    /// It does not hold; the reason is shown before the step runs again.
    DoesNotHold {
        /// What was found instead.
        reason: String,
    },
}

/// Boxed error source kept inside [`StepError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a step operation failed, classified for the retry policy.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Might succeed if tried again (connection refused, HTTP 429/5xx, conflict, not ready yet).
    #[error("{message}")]
    Transient {
        /// Lowercase description of what failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Will fail again until someone changes something (bad input, forbidden, invalid object).
    #[error("{message}")]
    Permanent {
        /// Lowercase description of what failed and what to do.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The run was interrupted while the step was running.
    #[error("interrupted before the step finished; run `kubestrap apply --resume` to continue")]
    Cancelled,
}

impl StepError {
    /// A transient error with a message.
    #[must_use]
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            source: None,
        }
    }

    /// A permanent error with a message.
    #[must_use]
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
            source: None,
        }
    }

    /// A transient error wrapping `source`.
    #[must_use]
    pub fn transient_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Transient {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A permanent error wrapping `source`.
    #[must_use]
    pub fn permanent_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Permanent {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Whether the retry policy may try again.
    #[must_use]
    pub const fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// The message with its whole source chain, for recording (after redaction).
    #[must_use]
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(err) = source {
            text.push_str(": ");
            text.push_str(&err.to_string());
            source = err.source();
        }
        text
    }
}

/// A step kind: typed, serialisable data plus the three operations of design §3.
///
/// Implementations must be idempotent: `apply` checks before it creates, reuses what exists and
/// reports `changed: false` when there was nothing to do. `plan` must not change anything.
/// Nothing a step returns (actions, outputs, errors) may contain a secret value; errors are also
/// passed through the redactor as a backstop.
#[async_trait::async_trait]
pub trait Step: Send + Sync + fmt::Debug {
    /// The kind, e.g. `vault.init`; names the step in plans and checkpoints.
    fn kind(&self) -> &'static str;

    /// The step's typed payload as JSON. Its hash is stored in the checkpoint, so a changed
    /// playbook re-applies exactly the steps whose inputs changed.
    fn payload(&self) -> serde_json::Value;

    /// Environment secrets (by env var name) that `apply` reads; `apply` refuses to start while
    /// a required one is missing.
    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }

    /// How transient failures are retried.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// What `apply` would do, without changing anything. Dependencies' outputs are not
    /// available here (nothing has run); use server-side `dryRun=All` where the cluster is
    /// reachable and "would create" where it is not yet.
    ///
    /// # Errors
    /// When the intended actions cannot even be computed.
    async fn plan(&self, ctx: &StepContext) -> Result<Vec<Action>, StepError>;

    /// Do it, idempotently.
    ///
    /// # Errors
    /// A classified [`StepError`].
    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError>;

    /// Is the postcondition true now? Used on `--resume` for steps recorded as done.
    ///
    /// # Errors
    /// When the check itself could not be made (the caller then applies again).
    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError>;
}
