//! The walker: phases in order, steps inside a phase as their dependencies allow, at most
//! `concurrency` at once. What happens to a step is the executor's business (apply or plan), so
//! dry-run is the same walk with a different executor.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::checkpoint::CheckpointWriter;
use super::context::{RunEnv, StepContext};
use super::events::{RunEvent, RunMode, RunStatus, StepEnd, StepReport};
use super::graph::{Built, Engine, Node};
use super::step::{Phase, StepId};

/// Runs one step (apply with retries, or plan) and reports how it ended. Never panics on step
/// errors: they become a failed [`StepReport`].
#[async_trait::async_trait]
pub(crate) trait Executor: Send + Sync + 'static {
    async fn execute(&self, node: Node, ctx: StepContext) -> StepReport;
}

/// Walk options.
#[derive(Debug, Clone)]
pub(crate) struct WalkOptions {
    pub mode: RunMode,
    pub concurrency: usize,
    /// Only these steps run; the others are assumed done (`--only`). `None`: all.
    pub selected: Option<BTreeSet<StepId>>,
    /// Outputs already known (from the checkpoint) for steps that will not run.
    pub known_outputs: BTreeMap<StepId, serde_json::Value>,
    /// Where a step's completion is made durable before it counts (apply); `None` for plan.
    pub recorder: Option<CheckpointWriter>,
}

/// What a walk did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How the run ended.
    pub status: RunStatus,
    /// Every step that finished in this run, in finishing order.
    pub steps: Vec<StepReport>,
    /// Wall time per phase that started.
    pub phases: Vec<(Phase, Duration)>,
    /// Total wall time.
    pub duration: Duration,
    /// The first error: the failed step and its message, or why recording failed.
    pub root_cause: Option<(Option<StepId>, String)>,
}

impl RunReport {
    /// Reports of finished steps by id.
    #[must_use]
    pub fn step(&self, id: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.step.as_str() == id)
    }
}

pub(crate) async fn walk<E: Executor>(
    engine: &Engine<Built>,
    env: &RunEnv,
    executor: Arc<E>,
    opts: WalkOptions,
) -> RunReport {
    let started = Instant::now();
    let concurrency = opts.concurrency.max(1);
    let is_selected = |n: &Node| opts.selected.as_ref().is_none_or(|s| s.contains(&n.id));
    let total = engine.nodes().filter(|n| is_selected(n)).count();
    env.emit(&RunEvent::RunStarted {
        cluster: env.playbook.playbook.cluster.name.clone(),
        mode: opts.mode,
        steps: total,
    });
    let mut outputs = opts.known_outputs;
    let mut report = RunReport {
        status: RunStatus::Succeeded,
        steps: Vec::new(),
        phases: Vec::new(),
        duration: Duration::ZERO,
        root_cause: None,
    };
    let mut interrupted = false;

    for phase in Phase::ALL {
        let nodes: Vec<&Node> = engine
            .phase_nodes(phase)
            .filter(|n| is_selected(n))
            .collect();
        if nodes.is_empty() {
            continue;
        }
        if env.interrupt.is_cancelled() {
            interrupted = true;
            report.status = RunStatus::Interrupted;
            break;
        }
        env.emit(&RunEvent::PhaseStarted {
            phase,
            steps: nodes.len(),
        });
        let phase_started = Instant::now();
        let position: HashMap<&StepId, usize> =
            nodes.iter().enumerate().map(|(i, n)| (&n.id, i)).collect();
        let mut waiting: Vec<usize> = nodes
            .iter()
            .map(|n| {
                n.depends_on
                    .iter()
                    .filter(|d| position.contains_key(d))
                    .count()
            })
            .collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            for d in &n.depends_on {
                if let Some(&p) = position.get(d) {
                    dependents[p].push(i);
                }
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len())
            .filter(|&i| waiting[i] == 0)
            .map(Reverse)
            .collect();
        let mut running = JoinSet::new();
        let mut task_step: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut finished = 0usize;
        let mut stopping = interrupted;

        loop {
            while !stopping && running.len() < concurrency {
                let Some(Reverse(i)) = ready.pop() else { break };
                let node = nodes[i].clone();
                let dep_outputs = node
                    .depends_on
                    .iter()
                    .filter_map(|d| outputs.get(d).map(|v| (d.clone(), v.clone())))
                    .collect();
                let ctx = StepContext::new(
                    env.clone(),
                    node.id.clone(),
                    opts.mode,
                    dep_outputs,
                    env.interrupt.child_token(),
                );
                let exec = Arc::clone(&executor);
                let recorder = opts.recorder.clone();
                let events = env.events.clone();
                let handle = running.spawn(async move {
                    let report = exec.execute(node, ctx).await;
                    if let Some(recorder) = recorder {
                        commit(recorder, &report, &events).await;
                    }
                    report
                });
                task_step.insert(handle.id(), i);
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                joined = running.join_next_with_id() => {
                    let Some(joined) = joined else { break };
                    let step_report = match joined {
                        Ok((_, r)) => r,
                        Err(e) => {
                            let node = nodes[task_step[&e.id()]];
                            panicked(node, &e, &env.redactor)
                        }
                    };
                    finished += 1;
                    env.emit(&RunEvent::StepFinished(step_report.clone()));
                    // Crash point (feature `failpoints`): recorded, dependents not started yet.
                    fail::fail_point!(&format!("after-record:{}", step_report.step));
                    match step_report.end {
                        StepEnd::Done | StepEnd::Skipped => {
                            let i = position[&step_report.step];
                            outputs.insert(step_report.step.clone(), step_report.outputs.clone());
                            for &d in &dependents[i] {
                                waiting[d] -= 1;
                                if waiting[d] == 0 {
                                    ready.push(Reverse(d));
                                }
                            }
                        }
                        StepEnd::Failed => {
                            stopping = true;
                            if report.status != RunStatus::Failed {
                                report.status = RunStatus::Failed;
                                report.root_cause = Some((
                                    Some(step_report.step.clone()),
                                    step_report.error.clone().unwrap_or_default(),
                                ));
                            }
                        }
                        StepEnd::Interrupted => {
                            stopping = true;
                            if report.status == RunStatus::Succeeded {
                                report.status = RunStatus::Interrupted;
                            }
                        }
                    }
                    if let Some(failure) = env.events.take_failure() {
                        stopping = true;
                        if report.status != RunStatus::Failed {
                            report.status = RunStatus::Failed;
                            report.root_cause = Some((None, failure));
                        }
                    }
                    report.steps.push(step_report);
                }
                () = env.interrupt.cancelled(), if !interrupted => {
                    interrupted = true;
                    stopping = true;
                    if report.status == RunStatus::Succeeded {
                        report.status = RunStatus::Interrupted;
                    }
                }
            }
        }
        let duration = phase_started.elapsed();
        let complete = finished == nodes.len() && !stopping;
        report.phases.push((phase, duration));
        env.emit(&RunEvent::PhaseFinished {
            phase,
            duration,
            complete,
        });
        if !complete {
            if report.status == RunStatus::Succeeded {
                report.status = if interrupted {
                    RunStatus::Interrupted
                } else {
                    RunStatus::Failed
                };
            }
            break;
        }
    }
    if interrupted && report.status == RunStatus::Succeeded {
        report.status = RunStatus::Interrupted;
    }
    report.duration = started.elapsed();
    env.emit(&RunEvent::RunFinished {
        status: report.status,
        duration: report.duration,
    });
    if let Some(failure) = env.events.take_failure()
        && report.root_cause.is_none()
    {
        report.status = RunStatus::Failed;
        report.root_cause = Some((None, failure));
    }
    report
}

/// Make a step's completion durable before it counts: its dependents start and printers
/// announce it only afterwards. Steps finishing together share one sync. A failure stops the
/// run, as a checkpoint that cannot be written must.
async fn commit(recorder: CheckpointWriter, report: &StepReport, events: &super::events::EventBus) {
    let finished = report.clone();
    let result = tokio::task::spawn_blocking(move || recorder.commit_finished(&finished)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(message)) => events.fail(message),
        Err(e) => events.fail(format!("recording step {} failed: {e}", report.step)),
    }
}

/// The report of a step whose task panicked. The panic message may quote anything the step
/// held, secrets included: it is redacted like every other error before it is recorded.
fn panicked(
    node: &Node,
    err: &tokio::task::JoinError,
    redactor: &crate::secrets::Redactor,
) -> StepReport {
    let message = format!("step task ended abnormally ({err}); this is a bug, please report it");
    StepReport {
        step: node.id.clone(),
        kind: node.step.kind(),
        phase: node.phase,
        end: StepEnd::Failed,
        changed: false,
        ready: false,
        waited: Duration::ZERO,
        attempts: 1,
        duration: Duration::ZERO,
        outputs: serde_json::Value::Null,
        error: Some(redactor.redact(&message).into_owned()),
        actions: Vec::new(),
    }
}
