//! Exit codes, in one place: every expected error maps onto exactly one documented code.

use std::process::ExitCode;

use crate::engine::{ApplyError, CheckpointError, GraphErrors, LockError, StepId};
use crate::playbook::PlaybookError;
use crate::preflight::PreflightError;
use crate::secrets::CaptureError;
#[cfg(feature = "test-hooks")]
use crate::steps::synthetic::SyntheticError;

/// kubestrap's documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: everything asked for succeeded.
    Success,
    /// 1: a step failed or the run was interrupted; the checkpoint is written and
    /// `apply --resume` continues (`unseal`: Vault could not be unsealed).
    StepFailed,
    /// 2: bad input (playbook, flags, missing secret, unusable checkpoint) before anything was
    /// touched.
    BadInput,
    /// 3: refused: another run holds the lock.
    Refused,
}

impl ExitStatus {
    /// The process exit code.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::StepFailed => 1,
            Self::BadInput => 2,
            Self::Refused => 3,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        Self::from(s.code())
    }
}

/// Every error the CLI expects, each with its exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The playbook could not be read or is invalid.
    #[error(transparent)]
    Playbook(#[from] PlaybookError),
    /// The step graph is invalid.
    #[error(transparent)]
    Graph(#[from] GraphErrors),
    /// The synthetic test steps could not be loaded.
    #[cfg(feature = "test-hooks")]
    #[error(transparent)]
    Synthetic(#[from] SyntheticError),
    /// Secrets could not be captured.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Required secrets are not in the environment.
    #[error("{}", missing_message(.0))]
    MissingSecrets(Vec<(String, Vec<StepId>)>),
    /// A local fact the run needs does not hold (file, binary, kubeconfig, known_hosts).
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// Several bad inputs at once (missing secrets and preflight problems), all reported.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<CliError>),
    /// `apply` could not start.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// `status` could not read the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The sandbox cluster could not start or stop.
    #[cfg(feature = "sandbox")]
    #[error(transparent)]
    Sandbox(#[from] kubestrap_sandbox::SandboxError),
    /// `sandbox down -p PLAYBOOK` with a playbook whose provider is not the sandbox.
    #[cfg(feature = "sandbox")]
    #[error(
        "playbook {} uses provider {provider:?}, which has no sandbox to stop; name a playbook with provider = \"sandbox\", or the sandbox's directory with --dir",
        .playbook.display()
    )]
    NoSandbox {
        /// The playbook.
        playbook: std::path::PathBuf,
        /// Its provider.
        provider: &'static str,
    },
    /// `kubestrap unseal` could not unseal Vault (the message says what to do).
    #[error(transparent)]
    Unseal(#[from] crate::steps::unseal::UnsealError),
    /// The async runtime could not be started.
    #[error("failed to start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// There is no playbook at the given (or default) path.
    #[error(
        "no playbook at {}: write a commented starter with `kubestrap init --provider sandbox` (or k3s-local, k3s-ssh, existing), or pass -p FILE",
        .0.display()
    )]
    NoPlaybook(std::path::PathBuf),
    /// `kubestrap init` refused or could not write.
    #[error(transparent)]
    Init(#[from] super::init::InitError),
    /// Writing the output failed.
    #[error("failed to write output: {0}")]
    Output(#[source] std::io::Error),
}

fn missing_message(missing: &[(String, Vec<StepId>)]) -> String {
    let mut text = format!(
        "{} required secret{} not set; export {} and run again:",
        missing.len(),
        if missing.len() == 1 { " is" } else { "s are" },
        if missing.len() == 1 { "it" } else { "them" }
    );
    for (env, steps) in missing {
        let users: Vec<&str> = steps.iter().map(StepId::as_str).collect();
        if users.is_empty() {
            text.push_str(&format!("\n  {env} (declared required in [[secrets]])"));
        } else {
            text.push_str(&format!("\n  {env} (needed by {})", users.join(", ")));
        }
    }
    text
}

fn checkpoint_status(e: &CheckpointError) -> ExitStatus {
    match e {
        CheckpointError::Corrupt { .. } | CheckpointError::Newer { .. } => ExitStatus::BadInput,
        CheckpointError::Io { .. } => ExitStatus::StepFailed,
    }
}

impl CliError {
    /// Every error of `results` at once: none, the one, or [`CliError::Several`].
    ///
    /// # Errors
    /// The errors among `results`.
    pub fn all(results: impl IntoIterator<Item = Result<(), Self>>) -> Result<(), Self> {
        let mut errors: Vec<Self> = results.into_iter().filter_map(Result::err).collect();
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Self::Several(errors)),
        }
    }

    /// The exit status for this error.
    #[must_use]
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Playbook(_)
            | Self::NoPlaybook(_)
            | Self::Graph(_)
            | Self::Capture(_)
            | Self::MissingSecrets(_)
            | Self::Preflight(_) => ExitStatus::BadInput,
            Self::Several(all) => all
                .iter()
                .map(Self::exit_status)
                .max_by_key(|s| s.code())
                .unwrap_or(ExitStatus::BadInput),
            #[cfg(feature = "test-hooks")]
            Self::Synthetic(_) => ExitStatus::BadInput,
            Self::Apply(e) => match e {
                ApplyError::Lock(LockError::Held { .. }) => ExitStatus::Refused,
                ApplyError::Lock(LockError::Io { .. }) => ExitStatus::StepFailed,
                ApplyError::Checkpoint(c) => checkpoint_status(c),
                ApplyError::CheckpointExists { .. }
                | ApplyError::ClusterMismatch { .. }
                | ApplyError::IdentityMismatch { .. }
                | ApplyError::VaultMismatch { .. }
                | ApplyError::UnknownStep { .. } => ExitStatus::BadInput,
            },
            Self::Checkpoint(c) => checkpoint_status(c),
            #[cfg(feature = "sandbox")]
            Self::Sandbox(
                kubestrap_sandbox::SandboxError::Faults(_)
                | kubestrap_sandbox::SandboxError::VaultServer(_)
                | kubestrap_sandbox::SandboxError::GitRepo(_)
                | kubestrap_sandbox::SandboxError::GitRepoDir { .. },
            )
            | Self::NoSandbox { .. } => ExitStatus::BadInput,
            #[cfg(feature = "sandbox")]
            Self::Sandbox(_) => ExitStatus::StepFailed,
            Self::Init(e) if e.is_bad_input() => ExitStatus::BadInput,
            Self::Runtime(_) | Self::Output(_) | Self::Init(_) | Self::Unseal(_) => {
                ExitStatus::StepFailed
            }
        }
    }
}
