//! The three things the CLI asks of the engine: `plan`, `apply` and `status`. They add the
//! local lock, the checkpoint and resume rules around the walk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::checkpoint::{Checkpoint, CheckpointError, CheckpointWriter, StepStatus};
use super::context::RunEnv;
use super::events::{RunEvent, RunMode, StepEnd, StepReport};
use super::execute::{ApplyExecutor, PlanExecutor, PriorDone};
use super::graph::{Built, Engine};
use super::identity::Identity;
use super::lock::{LockError, RunLock};
use super::step::{Action, Phase, StepId};
use super::walk::{RunReport, WalkOptions, walk};

/// What to do with an existing checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointMode {
    /// Refuse to run over an existing checkpoint (the user must choose).
    #[default]
    Default,
    /// `--resume`: verify done steps, run the rest.
    Resume,
    /// `--fresh`: ignore (and replace) the checkpoint.
    Fresh,
}

/// Parameters of `apply`.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    /// Resume rules.
    pub checkpoint: CheckpointMode,
    /// `--only`: run just these steps, assuming their dependencies are done.
    pub only: Vec<String>,
    /// Steps running at once inside a phase.
    pub concurrency: usize,
}

impl Default for ApplyRequest {
    fn default() -> Self {
        Self {
            checkpoint: CheckpointMode::Default,
            only: Vec::new(),
            concurrency: 4,
        }
    }
}

/// Why `apply` did not start.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Another run holds the lock (or it could not be taken).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The checkpoint is unreadable, corrupt, newer, or could not be written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A checkpoint exists and neither `--resume` nor `--fresh` was given.
    #[error(
        "a checkpoint from an earlier run exists at {path} ({summary}); pass --resume to continue it or --fresh to start over"
    )]
    CheckpointExists {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// What it records.
        summary: String,
    },
    /// The checkpoint belongs to another cluster.
    #[error(
        "checkpoint {path} belongs to cluster {found:?}, not {expected:?}; give this playbook its own [cluster] state_dir, or remove {path} if that other cluster's records are no longer wanted"
    )]
    ClusterMismatch {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// The cluster it names.
        found: String,
        /// The playbook's cluster.
        expected: String,
    },
    /// The checkpoint was written on another cluster than the one the kubeconfig reaches now.
    #[error(
        "checkpoint {path} was written on the cluster whose kube-system namespace has UID {recorded}, but the kubeconfig and context reach a different cluster (UID {found}); switch back to that cluster (--kubeconfig/--context), or, to bootstrap this one, give the playbook its own [cluster] state_dir or remove {path}"
    )]
    IdentityMismatch {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// The identity the checkpoint records.
        recorded: String,
        /// The identity of the cluster reached now.
        found: String,
    },
    /// A step of the run reached another Vault than the one the checkpoint's records were made
    /// with.
    #[error(
        "checkpoint {path} was written with the Vault whose cluster id is {recorded}, but this run reached a Vault with cluster id {found} (initialised again, or another cluster's): the run stopped at the step that found it; switch back to that Vault's cluster (--kubeconfig/--context), or, if this Vault replaced it for good, start the records over with `kubestrap apply --fresh` (its keys Secret must hold this Vault's keys)"
    )]
    VaultMismatch {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// The Vault cluster id the checkpoint records.
        recorded: String,
        /// The one reached now.
        found: String,
    },
    /// `--only` names a step that does not exist.
    #[error("--only {step}: no such step{}; `kubestrap plan` lists them", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownStep {
        /// The name given.
        step: String,
        /// The nearest step id.
        suggestion: Option<String>,
    },
}

/// Run `apply`: lock, read the checkpoint, decide what is done, walk, record.
///
/// # Errors
/// [`ApplyError`] when the run cannot start; a started run always returns a [`RunReport`]
/// (failed steps are in it).
pub async fn apply(
    engine: &Engine<Built>,
    env: &RunEnv,
    req: &ApplyRequest,
) -> Result<RunReport, ApplyError> {
    let selected = select(engine, &req.only)?;
    let cluster_dir = env.playbook.cluster_dir();
    let acquired = RunLock::acquire(&cluster_dir)?;
    let _lock = acquired.lock;
    if let Some(pid) = acquired.reclaimed_from {
        env.emit(&RunEvent::Warning {
            message: format!(
                "reclaimed a stale lock left by pid {pid}, which is no longer running"
            ),
        });
    }
    let path = Checkpoint::path_in(&cluster_dir);
    let name = &env.playbook.playbook.cluster.name;
    let fingerprint = &env.playbook.fingerprint;
    let existing = Checkpoint::load(&path)?;
    if let Some(cp) = &existing
        && &cp.cluster != name
    {
        return Err(ApplyError::ClusterMismatch {
            path,
            found: cp.cluster.clone(),
            expected: name.clone(),
        });
    }
    if let Some(cp) = &existing
        && let (Some(recorded), Some(found)) = (&cp.cluster_uid, &env.cluster_uid)
        && recorded != found
    {
        return Err(ApplyError::IdentityMismatch {
            path,
            recorded: recorded.clone(),
            found: found.clone(),
        });
    }
    let mut checkpoint = match (req.checkpoint, existing) {
        (CheckpointMode::Fresh, _) | (_, None) => {
            if req.checkpoint == CheckpointMode::Resume {
                env.emit(&RunEvent::Warning {
                    message: "no checkpoint to resume: starting from the first step".into(),
                });
            }
            Checkpoint::new(name, fingerprint)
        }
        (CheckpointMode::Default, Some(cp)) if selected.is_none() => {
            return Err(ApplyError::CheckpointExists {
                path,
                summary: summarize(&cp),
            });
        }
        (_, Some(cp)) => {
            let changed = cp.changed_steps(engine);
            let playbook_changed = &cp.playbook_fingerprint != fingerprint;
            if playbook_changed || !changed.is_empty() {
                let which = if changed.is_empty() {
                    "no recorded step's inputs changed".to_owned()
                } else {
                    format!(
                        "these steps' inputs changed and will be applied again: {}",
                        join(&changed)
                    )
                };
                let what = if playbook_changed {
                    "the playbook changed since the checkpoint was written"
                } else {
                    "the steps changed since the checkpoint was written"
                };
                env.emit(&RunEvent::Warning {
                    message: format!("{what}; {which}"),
                });
            }
            cp
        }
    };
    checkpoint.playbook_fingerprint.clone_from(fingerprint);
    if env.cluster_uid.is_some() {
        checkpoint.cluster_uid.clone_from(&env.cluster_uid);
    }
    env.identities
        .record(Identity::Cluster, checkpoint.cluster_uid.as_deref());
    env.identities
        .record(Identity::Vault, checkpoint.vault_cluster_id.as_deref());

    let mut prior = HashMap::new();
    let mut known_outputs = BTreeMap::new();
    for node in engine.nodes() {
        let Some(rec) = checkpoint.steps.get(&node.id) else {
            continue;
        };
        if rec.status != StepStatus::Done {
            continue;
        }
        known_outputs.insert(node.id.clone(), rec.outputs.clone());
        if rec.input_hash == node.input_hash && selected.is_none() {
            prior.insert(
                node.id.clone(),
                PriorDone {
                    outputs: rec.outputs.clone(),
                },
            );
        }
    }
    if let Some(only) = &selected {
        let assumed: BTreeSet<StepId> = only
            .iter()
            .flat_map(|id| engine.transitive_dependencies(id.as_str()))
            .filter(|d| !only.contains(d))
            .collect();
        let described: Vec<String> = assumed
            .iter()
            .map(|d| {
                let status = checkpoint
                    .steps
                    .get(d)
                    .map_or(StepStatus::Pending, |r| r.status);
                format!("{d} ({})", status_name(status))
            })
            .collect();
        let message = if described.is_empty() {
            format!(
                "running only {}; it has no dependencies",
                join(&only.iter().cloned().collect::<Vec<_>>())
            )
        } else {
            format!(
                "running only {}; assuming these dependencies are done: {}",
                join(&only.iter().cloned().collect::<Vec<_>>()),
                described.join(", ")
            )
        };
        env.emit(&RunEvent::Warning { message });
    }
    checkpoint.save(&path)?;
    let recorder = CheckpointWriter::new(path, checkpoint, engine)?;
    env.events.subscribe_first(Box::new(recorder.clone()));
    let executor = Arc::new(ApplyExecutor {
        env: env.clone(),
        prior,
    });
    let opts = WalkOptions {
        mode: RunMode::Apply,
        concurrency: req.concurrency,
        selected,
        known_outputs,
        recorder: Some(recorder.clone()),
    };
    let report = walk(engine, env, executor, opts).await;
    let conflict = env.identities.conflict();
    if conflict.is_none() {
        recorder.set_identities(
            env.identities.learned(Identity::Cluster),
            env.identities.learned(Identity::Vault),
        );
    }
    if let Err(e) = recorder.compact() {
        env.emit(&RunEvent::Warning {
            message: format!("{e}; its journal next to it holds the run's records"),
        });
    }
    env.resources.finish_all(&env.events).await;
    match conflict {
        None => Ok(report),
        Some(c) => Err(match c.what {
            Identity::Cluster => ApplyError::IdentityMismatch {
                path: Checkpoint::path_in(&cluster_dir),
                recorded: c.recorded,
                found: c.found,
            },
            Identity::Vault => ApplyError::VaultMismatch {
                path: Checkpoint::path_in(&cluster_dir),
                recorded: c.recorded,
                found: c.found,
            },
        }),
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    /// Step id.
    pub id: StepId,
    /// Step kind.
    pub kind: &'static str,
    /// Dependencies.
    pub depends_on: Vec<StepId>,
    /// Intended actions.
    pub actions: Vec<Action>,
    /// Why the step could not be planned, if so.
    pub error: Option<String>,
}

/// The result of `plan`: every step, by phase, in run order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Cluster name.
    pub cluster: String,
    /// Phases in order, each with its steps in run order.
    pub phases: Vec<(Phase, Vec<PlannedStep>)>,
}

impl Plan {
    /// Whether some step could not be planned.
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.phases
            .iter()
            .flat_map(|(_, s)| s)
            .any(|s| s.error.is_some())
    }
}

/// Run `plan`: the same walk as `apply`, with an executor that only describes.
pub async fn plan(engine: &Engine<Built>, env: &RunEnv, concurrency: usize) -> Plan {
    let opts = WalkOptions {
        mode: RunMode::Plan,
        concurrency,
        selected: None,
        known_outputs: BTreeMap::new(),
        recorder: None,
    };
    let report = walk(engine, env, Arc::new(PlanExecutor), opts).await;
    let by_id: HashMap<&StepId, &StepReport> = report.steps.iter().map(|r| (&r.step, r)).collect();
    let mut phases: Vec<(Phase, Vec<PlannedStep>)> = Vec::new();
    for node in engine.nodes() {
        let r = by_id.get(&node.id).copied();
        let step = PlannedStep {
            id: node.id.clone(),
            kind: node.step.kind(),
            depends_on: node.depends_on.clone(),
            actions: r.map(|r| r.actions.clone()).unwrap_or_default(),
            error: match r {
                Some(r) if r.end == StepEnd::Failed => r.error.clone(),
                Some(_) => None,
                None => Some("not planned: an earlier step could not be planned".into()),
            },
        };
        match phases.last_mut() {
            Some((p, steps)) if *p == node.phase => steps.push(step),
            _ => phases.push((node.phase, vec![step])),
        }
    }
    Plan {
        cluster: env.playbook.playbook.cluster.name.clone(),
        phases,
    }
}

/// One step's recorded state, for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepState {
    /// Step id.
    pub id: StepId,
    /// Its phase.
    pub phase: Phase,
    /// Recorded status (pending when never recorded).
    pub status: StepStatus,
    /// Attempts of its last execution.
    pub attempts: u32,
    /// Last error (redacted when recorded).
    pub last_error: Option<String>,
    /// Whether its inputs changed since it was recorded.
    pub inputs_changed: bool,
}

/// What the checkpoint says about every step.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// Cluster name.
    pub cluster: String,
    /// Whether a checkpoint exists.
    pub has_checkpoint: bool,
    /// Whether it was written from a different playbook.
    pub playbook_changed: bool,
    /// Every step in run order.
    pub steps: Vec<StepState>,
}

/// Read the checkpoint (without taking the lock: status must work during a run).
///
/// # Errors
/// [`CheckpointError`] for unreadable, corrupt or newer checkpoints.
pub fn status(engine: &Engine<Built>, env: &RunEnv) -> Result<StatusReport, CheckpointError> {
    let cluster_dir = env.playbook.cluster_dir();
    let cp = Checkpoint::load(&Checkpoint::path_in(&cluster_dir))?;
    // "running" is only true while a live run holds the lock; otherwise that run died.
    let live = RunLock::is_held(&cluster_dir);
    let steps = engine
        .nodes()
        .map(|n| {
            let rec = cp.as_ref().and_then(|c| c.steps.get(&n.id));
            StepState {
                id: n.id.clone(),
                phase: n.phase,
                status: match rec.map_or(StepStatus::Pending, |r| r.status) {
                    StepStatus::Running if !live => StepStatus::Interrupted,
                    s => s,
                },
                attempts: rec.map_or(0, |r| r.attempts),
                last_error: rec.and_then(|r| r.last_error.clone()),
                inputs_changed: rec.is_some_and(|r| r.input_hash != n.input_hash),
            }
        })
        .collect();
    Ok(StatusReport {
        cluster: env.playbook.playbook.cluster.name.clone(),
        has_checkpoint: cp.is_some(),
        playbook_changed: cp
            .as_ref()
            .is_some_and(|c| c.playbook_fingerprint != env.playbook.fingerprint),
        steps,
    })
}

fn select(engine: &Engine<Built>, only: &[String]) -> Result<Option<BTreeSet<StepId>>, ApplyError> {
    if only.is_empty() {
        return Ok(None);
    }
    let ids: Vec<&str> = engine.nodes().map(|n| n.id.as_str()).collect();
    let mut out = BTreeSet::new();
    for step in only {
        if engine.node(step).is_none() {
            let suggestion = ids
                .iter()
                .map(|c| (strsim::jaro_winkler(step, c), *c))
                .filter(|(s, _)| *s >= 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, c)| c.to_owned());
            return Err(ApplyError::UnknownStep {
                step: step.clone(),
                suggestion,
            });
        }
        out.insert(StepId::new(step.clone()));
    }
    Ok(Some(out))
}

fn summarize(cp: &Checkpoint) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for rec in cp.steps.values() {
        *counts.entry(status_name(rec.status)).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    format!(
        "last written {}: {}",
        cp.updated_at,
        if parts.is_empty() {
            "no steps".into()
        } else {
            parts.join(", ")
        }
    )
}

/// The lowercase name of a status, as in checkpoints and JSON.
#[must_use]
pub const fn status_name(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Running => "running",
        StepStatus::Done => "done",
        StepStatus::Failed => "failed",
        StepStatus::Interrupted => "interrupted",
    }
}

fn join(ids: &[StepId]) -> String {
    ids.iter()
        .map(StepId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
