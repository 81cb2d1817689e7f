//! The checkpoint: one JSON file per cluster recording what each step did (design §4).
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory) after every step
//! transition, as a 0600 file in a 0700 directory. It holds no secret: outputs are non-secret by
//! contract and errors pass through the redactor before they get here.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::events::{RunEvent, StepEnd, Subscriber, SubscriberError};
use super::execute::millis;
use super::graph::{Built, Engine};
use super::step::{Phase, StepId};

/// Format version written by this build. Older versions are read; newer ones are refused.
pub const CHECKPOINT_VERSION: u32 = 1;

/// File name inside the cluster's state directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing failed.
    #[error("failed to access checkpoint {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a checkpoint this build understands.
    #[error(
        "checkpoint {path} is corrupt ({reason}); it was left untouched: inspect it, then move it away and run `kubestrap apply --fresh`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a newer kubestrap.
    #[error(
        "checkpoint {path} has format version {found}, newer than this kubestrap understands ({CHECKPOINT_VERSION}); it was left untouched: upgrade kubestrap"
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u64,
    },
}

/// Where a step stands, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not started (or not yet recorded).
    Pending,
    /// Started and not finished: the process died or is still running.
    Running,
    /// Finished successfully.
    Done,
    /// Failed; `last_error` says why.
    Failed,
    /// Stopped by a signal.
    Interrupted,
}

/// The record of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    /// Where it stands.
    pub status: StepStatus,
    /// Its phase.
    pub phase: Phase,
    /// Hash of the step's inputs when it last ran.
    pub input_hash: String,
    /// Attempts made by the last run that executed it.
    pub attempts: u32,
    /// When the last execution started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// How long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Whether it changed anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Non-secret outputs for dependents.
    #[serde(default)]
    pub outputs: serde_json::Value,
    /// The last error (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl StepRecord {
    /// A record with `status` and nothing run yet.
    #[must_use]
    pub fn new(status: StepStatus, phase: Phase, input_hash: String) -> Self {
        Self {
            status,
            phase,
            input_hash,
            attempts: 0,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            changed: None,
            outputs: serde_json::Value::Null,
            last_error: None,
        }
    }
}

/// The whole checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Cluster name.
    pub cluster: String,
    /// Fingerprint of the playbook the records were made with.
    pub playbook_fingerprint: String,
    /// When the first run started.
    pub created_at: Timestamp,
    /// Last write.
    pub updated_at: Timestamp,
    /// Per-step records (steps never started are absent = pending).
    pub steps: BTreeMap<StepId, StepRecord>,
}

impl Checkpoint {
    /// An empty checkpoint for `cluster`.
    #[must_use]
    pub fn new(cluster: &str, fingerprint: &str) -> Self {
        let now = Timestamp::now();
        Self {
            version: CHECKPOINT_VERSION,
            cluster: cluster.to_owned(),
            playbook_fingerprint: fingerprint.to_owned(),
            created_at: now,
            updated_at: now,
            steps: BTreeMap::new(),
        }
    }

    /// The checkpoint path for a cluster state directory.
    #[must_use]
    pub fn path_in(cluster_dir: &Path) -> PathBuf {
        cluster_dir.join(CHECKPOINT_FILE)
    }

    /// Read the checkpoint at `path`; `Ok(None)` if there is none.
    ///
    /// # Errors
    /// [`CheckpointError::Newer`] / [`CheckpointError::Corrupt`] for files this build must not
    /// touch, [`CheckpointError::Io`] for read errors.
    pub fn load(path: &Path) -> Result<Option<Self>, CheckpointError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| corrupt("no numeric \"version\" field".into()))?;
        if version > u64::from(CHECKPOINT_VERSION) {
            return Err(CheckpointError::Newer {
                path: path.to_owned(),
                found: version,
            });
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    /// Write atomically to `path`: 0700 parent directory, 0600 temp file, fsync, rename, fsync
    /// of the directory.
    ///
    /// # Errors
    /// [`CheckpointError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec(self).map_err(|e| CheckpointError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        crate::secrets::write_private(path, &bytes).map_err(|source| CheckpointError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Steps whose recorded inputs differ from the current DAG's (inputs changed since).
    #[must_use]
    pub fn changed_steps(&self, engine: &Engine<Built>) -> Vec<StepId> {
        engine
            .nodes()
            .filter(|n| {
                self.steps
                    .get(&n.id)
                    .is_some_and(|r| r.input_hash != n.input_hash)
            })
            .map(|n| n.id.clone())
            .collect()
    }
}

/// Subscriber that keeps the checkpoint in step with the run, writing it after every transition.
pub struct CheckpointWriter {
    path: PathBuf,
    checkpoint: Checkpoint,
    meta: BTreeMap<StepId, (Phase, String)>,
}

impl std::fmt::Debug for CheckpointWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl CheckpointWriter {
    /// A writer continuing `checkpoint` at `path` for the steps of `engine`.
    #[must_use]
    pub fn new(path: PathBuf, checkpoint: Checkpoint, engine: &Engine<Built>) -> Self {
        let meta = engine
            .nodes()
            .map(|n| (n.id.clone(), (n.phase, n.input_hash.clone())))
            .collect();
        Self {
            path,
            checkpoint,
            meta,
        }
    }

    fn record(&mut self, step: &StepId) -> &mut StepRecord {
        let (phase, input_hash) = self
            .meta
            .get(step)
            .cloned()
            .unwrap_or((Phase::Verify, String::new()));
        self.checkpoint
            .steps
            .entry(step.clone())
            .or_insert_with(|| StepRecord::new(StepStatus::Pending, phase, input_hash))
    }

    fn save(&mut self) -> Result<(), SubscriberError> {
        self.checkpoint.updated_at = Timestamp::now();
        self.checkpoint.save(&self.path).map_err(|e| {
            SubscriberError(format!(
                "{e}; the run was stopped so no work goes unrecorded"
            ))
        })
    }
}

impl Subscriber for CheckpointWriter {
    fn on_event(&mut self, event: &RunEvent) -> Result<(), SubscriberError> {
        match event {
            RunEvent::StepStarted { step, attempt, .. } => {
                let input_hash = self.meta.get(step).map(|m| m.1.clone()).unwrap_or_default();
                let rec = self.record(step);
                rec.status = StepStatus::Running;
                rec.attempts = *attempt;
                rec.input_hash = input_hash;
                if *attempt == 1 {
                    rec.started_at = Some(Timestamp::now());
                    rec.finished_at = None;
                    rec.duration_ms = None;
                }
            }
            RunEvent::StepRetrying { step, error, .. } => {
                self.record(step).last_error = Some(error.clone());
            }
            RunEvent::StepFinished(r) => {
                if r.end == StepEnd::Skipped {
                    // Verified: the earlier record stands.
                    return Ok(());
                }
                let rec = self.record(&r.step);
                rec.status = match r.end {
                    StepEnd::Done => StepStatus::Done,
                    StepEnd::Failed => StepStatus::Failed,
                    StepEnd::Interrupted => StepStatus::Interrupted,
                    StepEnd::Skipped => unreachable!("handled above"),
                };
                rec.finished_at = Some(Timestamp::now());
                rec.duration_ms = Some(millis(r.duration));
                rec.changed = Some(r.changed);
                rec.outputs = r.outputs.clone();
                rec.last_error.clone_from(&r.error);
            }
            _ => return Ok(()),
        }
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/checkpoint.json");
        let mut cp = Checkpoint::new("c", "sha256:abc");
        cp.steps.insert(
            StepId::new("a"),
            StepRecord {
                status: StepStatus::Done,
                phase: Phase::Secrets,
                input_hash: "sha256:1".into(),
                attempts: 2,
                started_at: Some(Timestamp::now()),
                finished_at: Some(Timestamp::now()),
                duration_ms: Some(5),
                changed: Some(true),
                outputs: serde_json::json!({"k": "v"}),
                last_error: None,
            },
        );
        cp.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(cp));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "the temp file must be renamed away");
    }

    #[test]
    fn missing_is_none_and_bad_files_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        assert!(Checkpoint::load(&path).unwrap().is_none());
        std::fs::write(&path, "[1,2").unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(CheckpointError::Corrupt { .. })
        ));
        std::fs::write(&path, r#"{"steps":{}}"#).unwrap();
        assert!(
            matches!(Checkpoint::load(&path), Err(CheckpointError::Corrupt { reason, .. }) if reason.contains("version"))
        );
        std::fs::write(&path, r#"{"version":2}"#).unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(CheckpointError::Newer { found: 2, .. })
        ));
        std::fs::write(&path, r#"{"version":1,"cluster":"c"}"#).unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(CheckpointError::Corrupt { .. })
        ));
    }
}
