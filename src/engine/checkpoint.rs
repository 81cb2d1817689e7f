//! The checkpoint: what each step of a cluster's runs did, so a failed run can be resumed.
//!
//! A snapshot (`checkpoint.json`, written atomically: temp file, fsync, rename, fsync of the
//! directory) plus, while a run is going, a journal of its transitions (`checkpoint.journal`,
//! see [`super::journal`]) that is folded into the snapshot when the run ends. Reading replays
//! the journal over the snapshot, so `status` and a resume after a crash see every transition.
//! Both are 0600 in a 0700 directory and hold no secret: outputs are non-secret by contract and
//! errors pass through the redactor before they get here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::events::{RunEvent, StepEnd, StepReport, Subscriber, SubscriberError};
use super::execute::millis;
use super::graph::{Built, Engine};
use super::journal::{self, Entry, Journal, JournalReadError};
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
    /// The identity of the cluster the records were made on (the UID of its `kube-system`
    /// namespace, which lives as long as the cluster), once a run reached it: `--resume` on
    /// another cluster behind the same name or context is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_uid: Option<String>,
    /// Vault's cluster id (`sys/health`), once a run found Vault unsealed: `--resume` against
    /// another Vault (initialised again, or another cluster's) is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_cluster_id: Option<String>,
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
            cluster_uid: None,
            vault_cluster_id: None,
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
        let mut checkpoint: Self =
            serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        let entries = journal::read(&journal::path_for(path)).map_err(|e| match e {
            JournalReadError::Io(source) => CheckpointError::Io {
                path: journal::path_for(path),
                source,
            },
            JournalReadError::Corrupt(reason) => corrupt(reason),
        })?;
        for Entry { step, record } in entries {
            checkpoint.steps.insert(step, record);
        }
        Ok(Some(checkpoint))
    }

    /// Write atomically to `path` (0700 parent directory, 0600 temp file, fsync, rename, fsync
    /// of the directory), then drop the journal next to it, whose entries this snapshot holds.
    ///
    /// # Errors
    /// [`CheckpointError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CheckpointError::Io { path, source }
        };
        let bytes = serde_json::to_vec(self).map_err(|e| io(path)(std::io::Error::other(e)))?;
        crate::secrets::write_private(path, &bytes).map_err(io(path))?;
        let journal = journal::path_for(path);
        match fs::remove_file(&journal) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&journal)(e)),
            _ => Ok(()),
        }
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

/// The run's checkpoint in memory and its journal, shared by the subscriber that records
/// starts and retries and by the walker, which commits each completion before it counts.
#[derive(Debug, Clone)]
pub struct CheckpointWriter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    journal: Journal,
    meta: BTreeMap<StepId, (Phase, String)>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    checkpoint: Checkpoint,
    /// Steps whose latest completion is already committed (the subscriber then skips it).
    committed: BTreeSet<StepId>,
}

impl CheckpointWriter {
    /// A writer continuing `checkpoint` at `path` (already saved there) for the steps of
    /// `engine`.
    ///
    /// # Errors
    /// [`CheckpointError::Io`] when the journal cannot be opened.
    pub fn new(
        path: PathBuf,
        checkpoint: Checkpoint,
        engine: &Engine<Built>,
    ) -> Result<Self, CheckpointError> {
        let journal_path = journal::path_for(&path);
        let journal =
            Journal::open(journal_path.clone()).map_err(|source| CheckpointError::Io {
                path: journal_path,
                source,
            })?;
        let meta = engine
            .nodes()
            .map(|n| (n.id.clone(), (n.phase, n.input_hash.clone())))
            .collect();
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                journal,
                meta,
                state: Mutex::new(State {
                    checkpoint,
                    committed: BTreeSet::new(),
                }),
            }),
        })
    }

    /// Make `report`'s completion durable; returns once it is on disk. Blocking (file IO):
    /// call it off the async threads ([`tokio::task::spawn_blocking`]).
    ///
    /// # Errors
    /// A message saying the checkpoint could not be written.
    pub(crate) fn commit_finished(&self, report: &StepReport) -> Result<(), String> {
        if report.end == StepEnd::Skipped {
            // Verified: the earlier record stands.
            return Ok(());
        }
        let entry = {
            let mut state = self.state();
            let rec = self.shared.record(&mut state.checkpoint, &report.step);
            finish(rec, report);
            let record = rec.clone();
            state.committed.insert(report.step.clone());
            Entry {
                step: report.step.clone(),
                record,
            }
        };
        self.shared
            .journal
            .commit(&entry)
            .map_err(|e| self.failed(&e))
    }

    /// Records the identities a run learned (see [`super::Identities`]) in the checkpoint
    /// written by the next [`CheckpointWriter::compact`]; `None` keeps what is recorded.
    pub fn set_identities(&self, cluster_uid: Option<String>, vault_cluster_id: Option<String>) {
        let mut state = self.state();
        if cluster_uid.is_some() {
            state.checkpoint.cluster_uid = cluster_uid;
        }
        if vault_cluster_id.is_some() {
            state.checkpoint.vault_cluster_id = vault_cluster_id;
        }
    }

    /// Fold the journal into the snapshot (at the end of a run).
    ///
    /// # Errors
    /// [`CheckpointError::Io`].
    pub fn compact(&self) -> Result<(), CheckpointError> {
        let mut state = self.state();
        state.checkpoint.updated_at = Timestamp::now();
        state.checkpoint.save(&self.shared.path)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, e: &std::io::Error) -> String {
        format!(
            "failed to write checkpoint journal {}: {e}; the run was stopped so no work goes unrecorded",
            self.shared.journal.path().display()
        )
    }
}

impl Shared {
    fn record<'a>(&self, checkpoint: &'a mut Checkpoint, step: &StepId) -> &'a mut StepRecord {
        let (phase, input_hash) = self
            .meta
            .get(step)
            .cloned()
            .unwrap_or((Phase::Verify, String::new()));
        checkpoint
            .steps
            .entry(step.clone())
            .or_insert_with(|| StepRecord::new(StepStatus::Pending, phase, input_hash))
    }
}

/// A finished step's record.
fn finish(rec: &mut StepRecord, r: &StepReport) {
    rec.status = match r.end {
        StepEnd::Done | StepEnd::Skipped => StepStatus::Done,
        StepEnd::Failed => StepStatus::Failed,
        StepEnd::Interrupted => StepStatus::Interrupted,
    };
    rec.finished_at = Some(Timestamp::now());
    rec.duration_ms = Some(millis(r.duration));
    rec.changed = Some(r.changed);
    rec.outputs = r.outputs.clone();
    rec.last_error.clone_from(&r.error);
}

impl Subscriber for CheckpointWriter {
    fn on_event(&mut self, event: &RunEvent) -> Result<(), SubscriberError> {
        let entry = {
            let mut state = self.state();
            let step = match event {
                RunEvent::StepStarted { step, attempt, .. } => {
                    let input_hash = self
                        .shared
                        .meta
                        .get(step)
                        .map(|m| m.1.clone())
                        .unwrap_or_default();
                    state.committed.remove(step);
                    let rec = self.shared.record(&mut state.checkpoint, step);
                    rec.status = StepStatus::Running;
                    rec.attempts = *attempt;
                    rec.input_hash = input_hash;
                    if *attempt == 1 {
                        rec.started_at = Some(Timestamp::now());
                        rec.finished_at = None;
                        rec.duration_ms = None;
                    }
                    step
                }
                RunEvent::StepRetrying { step, error, .. } => {
                    self.shared.record(&mut state.checkpoint, step).last_error =
                        Some(error.clone());
                    step
                }
                RunEvent::StepFinished(r) => {
                    // Committed by the walker before anyone saw it: nothing left to write.
                    if r.end == StepEnd::Skipped || state.committed.contains(&r.step) {
                        return Ok(());
                    }
                    drop(state);
                    return self.commit_finished(r).map_err(SubscriberError);
                }
                _ => return Ok(()),
            };
            Entry {
                step: step.clone(),
                record: self.shared.record(&mut state.checkpoint, step).clone(),
            }
        };
        // A start or a retry need not be synced: a crash then loses only a running step.
        self.shared
            .journal
            .append(&entry)
            .map(|_| ())
            .map_err(|e| SubscriberError(self.failed(&e)))
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
