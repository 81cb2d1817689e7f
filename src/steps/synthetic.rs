//! Synthetic steps: a **test hook**, not a product feature.
//!
//! The engine's behaviour (phases, concurrency, retries, crash and resume) must be testable
//! through the real binary without a cluster. `kubestrap apply --synthetic-steps FILE` (a hidden
//! flag) replaces the step registry with steps described in FILE; each one really sleeps, really
//! fails as told, records what it did in `<cluster dir>/synthetic/log` and leaves a marker file
//! that its `verify` checks. Nothing here touches a cluster.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::engine::{
    Action, Building, Built, Engine, GraphErrors, Phase, RetryPolicy, Step, StepContext, StepError,
    StepOutcome, Verified,
};

/// The FILE format: `[[step]]` tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSpec {
    /// The steps.
    #[serde(default)]
    pub step: Vec<SyntheticStepSpec>,
}

/// One synthetic step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticStepSpec {
    /// Step id.
    pub id: String,
    /// Phase.
    pub phase: Phase,
    /// Dependencies.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// How long `apply` works.
    #[serde(default)]
    pub sleep_ms: u64,
    /// The first N attempts of each run fail transiently.
    #[serde(default)]
    pub fail_transient: u32,
    /// Every attempt fails permanently.
    #[serde(default)]
    pub fail_permanent: bool,
    /// Environment secrets `apply` needs.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Fail permanently with an error that quotes the value of this secret, to prove the
    /// redaction backstop keeps it out of checkpoints and output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_with_secret: Option<String>,
    /// Panic with a message that quotes the value of this secret, to prove a panicking step's
    /// message is redacted in the checkpoint, the output and the panic report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_with_secret: Option<String>,
    /// Return the value of this secret in the outputs, to prove outputs are redacted before
    /// they are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_secret: Option<String>,
    /// Retry: attempts in total.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Retry: first backoff in milliseconds.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
}

const fn default_attempts() -> u32 {
    3
}
const fn default_backoff() -> u64 {
    10
}

/// Why a synthetic spec could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    /// Unreadable file.
    #[error("failed to read synthetic steps {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not a valid spec.
    #[error("synthetic steps {path} are invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The DAG is invalid.
    #[error(transparent)]
    Graph(#[from] GraphErrors),
}

/// A step driven by a [`SyntheticStepSpec`].
#[derive(Debug, Serialize)]
pub struct SyntheticStep {
    /// Its spec (the payload).
    pub spec: SyntheticStepSpec,
    #[serde(skip)]
    attempts: AtomicU32,
}

impl SyntheticStep {
    /// A step following `spec`.
    #[must_use]
    pub fn new(spec: SyntheticStepSpec) -> Self {
        Self {
            spec,
            attempts: AtomicU32::new(0),
        }
    }

    fn dir(ctx: &StepContext) -> PathBuf {
        ctx.state_dir().join("synthetic")
    }

    fn marker(&self, ctx: &StepContext) -> PathBuf {
        Self::dir(ctx).join(format!("done-{}", self.spec.id))
    }

    fn log(&self, ctx: &StepContext, what: &str) -> Result<(), StepError> {
        let dir = Self::dir(ctx);
        append_line(&dir, &format!("{what} {}", self.spec.id)).map_err(|e| {
            StepError::permanent_from(format!("write synthetic log in {}", dir.display()), e)
        })
    }
}

fn append_line(dir: &Path, line: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))?;
    // One write call, so a SIGKILL never leaves half a line.
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

#[async_trait::async_trait]
impl Step for SyntheticStep {
    fn kind(&self) -> &'static str {
        "synthetic"
    }

    fn payload(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }

    fn secrets(&self) -> Vec<String> {
        self.spec.secrets.clone()
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.spec.max_attempts,
            initial_delay: Duration::from_millis(self.spec.backoff_ms),
            max_delay: Duration::from_millis(self.spec.backoff_ms.saturating_mul(8)),
            multiplier: 2,
            max_elapsed: Duration::from_secs(60),
        }
    }

    async fn plan(&self, _ctx: &StepContext) -> Result<Vec<Action>, StepError> {
        Ok(vec![Action::run(format!(
            "synthetic work for {}ms",
            self.spec.sleep_ms
        ))])
    }

    async fn apply(&self, ctx: &StepContext) -> Result<StepOutcome, StepError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        self.log(ctx, "apply")?;
        for env in &self.spec.secrets {
            ctx.secret(env)?;
        }
        if self.spec.sleep_ms > 0 {
            ctx.progress(format!("working for {}ms", self.spec.sleep_ms));
            tokio::time::sleep(Duration::from_millis(self.spec.sleep_ms)).await;
        }
        if let Some(env) = &self.spec.fail_with_secret {
            let value = ctx.secret(env)?.expose_secret();
            return Err(StepError::permanent(format!(
                "upstream rejected credential {value}"
            )));
        }
        if let Some(env) = &self.spec.panic_with_secret {
            let value = ctx.secret(env)?.expose_secret().to_owned();
            panic!("synthetic step panics holding credential {value}");
        }
        if self.spec.fail_permanent {
            return Err(StepError::permanent(format!(
                "synthetic step {} fails permanently",
                self.spec.id
            )));
        }
        if attempt <= self.spec.fail_transient {
            return Err(StepError::transient(format!(
                "synthetic step {} fails transiently (attempt {attempt})",
                self.spec.id
            )));
        }
        let marker = self.marker(ctx);
        std::fs::write(&marker, b"done\n")
            .map_err(|e| StepError::permanent_from(format!("write {}", marker.display()), e))?;
        let mut outputs = serde_json::json!({ "id": self.spec.id, "attempts": attempt });
        if let Some(env) = &self.spec.output_secret {
            outputs["leaked"] = ctx.secret(env)?.expose_secret().into();
        }
        StepOutcome::with_outputs(true, &outputs)
    }

    async fn verify(&self, ctx: &StepContext) -> Result<Verified, StepError> {
        self.log(ctx, "verify")?;
        Ok(if self.marker(ctx).exists() {
            Verified::Holds
        } else {
            Verified::DoesNotHold {
                reason: format!("marker {} is missing", self.marker(ctx).display()),
            }
        })
    }
}

/// Register the steps of `spec`.
pub fn register(engine: &mut Engine<Building>, spec: &SyntheticSpec) {
    for s in &spec.step {
        let deps: Vec<&str> = s.depends_on.iter().map(String::as_str).collect();
        engine.add(
            s.id.as_str(),
            s.phase,
            &deps,
            Arc::new(SyntheticStep::new(s.clone())),
        );
    }
}

/// Load FILE and build its DAG.
///
/// # Errors
/// [`SyntheticError`] for unreadable or invalid files and invalid graphs.
pub fn build_from_file(path: &Path) -> Result<Engine<Built>, SyntheticError> {
    let text = std::fs::read_to_string(path).map_err(|source| SyntheticError::Read {
        path: path.to_owned(),
        source,
    })?;
    let spec: SyntheticSpec = toml::from_str(&text).map_err(|e| SyntheticError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut engine = Engine::new();
    register(&mut engine, &spec);
    Ok(engine.seal()?)
}
