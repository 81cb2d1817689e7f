//! Machine-readable output (`--output json`): stable, versioned document types, kept apart from
//! the engine's internal types so internals can change without breaking consumers. The formats
//! are documented in the README.

use serde::Serialize;

use crate::engine::{
    Diagnosis, Op, Plan, RunEvent, RunMode, RunStatus, StatusReport, StepEnd, StepReport,
    status_name,
};

/// Version of every JSON document below; bumped on incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// `plan --output json`.
#[derive(Debug, Serialize)]
pub struct PlanDoc<'a> {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Cluster name.
    pub cluster: &'a str,
    /// Phases in run order.
    pub phases: Vec<PlanPhaseDoc<'a>>,
}

/// One phase of a plan.
#[derive(Debug, Serialize)]
pub struct PlanPhaseDoc<'a> {
    /// Phase name.
    pub name: &'static str,
    /// Steps in run order.
    pub steps: Vec<PlanStepDoc<'a>>,
}

/// One step of a plan.
#[derive(Debug, Serialize)]
pub struct PlanStepDoc<'a> {
    /// Step id.
    pub id: &'a str,
    /// Step kind.
    pub kind: &'a str,
    /// Dependencies.
    pub depends_on: Vec<&'a str>,
    /// Intended actions.
    pub actions: Vec<ActionDoc<'a>>,
    /// Why the step could not be planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// One intended action.
#[derive(Debug, Serialize)]
pub struct ActionDoc<'a> {
    /// `create`, `update`, `unchanged`, `delete` or `run`.
    pub op: &'static str,
    /// What it acts on.
    pub target: &'a str,
    /// Explanation, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

/// The lowercase op name.
#[must_use]
pub const fn op_name(op: Op) -> &'static str {
    match op {
        Op::Create => "create",
        Op::Update => "update",
        Op::Unchanged => "unchanged",
        Op::Delete => "delete",
        Op::Run => "run",
    }
}

impl<'a> PlanDoc<'a> {
    /// The document for `plan`.
    #[must_use]
    pub fn new(plan: &'a Plan) -> Self {
        let phases = plan
            .phases
            .iter()
            .map(|(phase, steps)| PlanPhaseDoc {
                name: phase.name(),
                steps: steps
                    .iter()
                    .map(|s| PlanStepDoc {
                        id: s.id.as_str(),
                        kind: s.kind,
                        depends_on: s.depends_on.iter().map(|d| d.as_str()).collect(),
                        actions: s
                            .actions
                            .iter()
                            .map(|a| ActionDoc {
                                op: op_name(a.op),
                                target: &a.target,
                                detail: a.detail.as_deref(),
                            })
                            .collect(),
                        error: s.error.as_deref(),
                    })
                    .collect(),
            })
            .collect();
        Self {
            version: FORMAT_VERSION,
            cluster: &plan.cluster,
            phases,
        }
    }
}

/// `status --output json`.
#[derive(Debug, Serialize)]
pub struct StatusDoc<'a> {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Cluster name.
    pub cluster: &'a str,
    /// The kubeconfig in use, if known.
    pub kubeconfig: Option<String>,
    /// Every step in run order.
    pub steps: Vec<StatusStepDoc<'a>>,
}

/// One step's status.
#[derive(Debug, Serialize)]
pub struct StatusStepDoc<'a> {
    /// Step id.
    pub id: &'a str,
    /// Phase name.
    pub phase: &'static str,
    /// `done`, `failed`, `pending`, `running` or `interrupted`.
    pub status: &'static str,
    /// A failed step's root-cause chain, deepest object first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// Whether `diagnosis` was read from the cluster now (else as recorded at the failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis_live: Option<bool>,
}

impl<'a> StatusDoc<'a> {
    /// The document for `status`.
    #[must_use]
    pub fn new(report: &'a StatusReport, kubeconfig: Option<String>) -> Self {
        Self {
            version: FORMAT_VERSION,
            cluster: &report.cluster,
            kubeconfig,
            steps: report
                .steps
                .iter()
                .map(|s| StatusStepDoc {
                    id: s.id.as_str(),
                    phase: s.phase.name(),
                    status: status_name(s.status),
                    diagnosis: None,
                    diagnosis_live: None,
                })
                .collect(),
        }
    }
}

/// One line of `apply --output json`: the event and when it was emitted.
///
/// Why a timestamp on every line: a consumer reading the stream (a CI log collector, a
/// benchmark measuring how fast a wait reacts) learns when the run saw something, not when the
/// pipe delivered it; the two differ by scheduling, buffering and the reader's own load.
#[derive(Debug, Serialize)]
pub struct EventLine<'a> {
    /// The event's fields, `event` first.
    #[serde(flatten)]
    pub doc: EventDoc<'a>,
    /// When kubestrap emitted it (RFC 3339, UTC, nanoseconds).
    pub at: jiff::Timestamp,
}

impl<'a> EventLine<'a> {
    /// `event`, stamped now.
    #[must_use]
    pub fn now(event: &'a RunEvent) -> Self {
        Self {
            doc: EventDoc::new(event),
            at: jiff::Timestamp::now(),
        }
    }
}

/// The event part of one line of `apply --output json`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventDoc<'a> {
    /// The run begins.
    RunStarted {
        /// [`FORMAT_VERSION`].
        version: u32,
        /// Cluster.
        cluster: &'a str,
        /// `plan` or `apply`.
        mode: &'static str,
        /// Steps considered.
        steps: usize,
    },
    /// A phase begins.
    PhaseStarted {
        /// Phase name.
        phase: &'static str,
        /// Steps in it.
        steps: usize,
    },
    /// An attempt starts.
    StepStarted {
        /// Step id.
        step: &'a str,
        /// Phase name.
        phase: &'static str,
        /// Attempt number.
        attempt: u32,
    },
    /// A done step is being verified.
    StepVerifying {
        /// Step id.
        step: &'a str,
    },
    /// Verification failed; the step is applied again.
    StepVerifyFailed {
        /// Step id.
        step: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// Progress inside a step.
    StepProgress {
        /// Step id.
        step: &'a str,
        /// Message.
        message: &'a str,
        /// Time since the step started.
        elapsed_ms: u64,
    },
    /// A transient failure; retrying.
    StepRetrying {
        /// Step id.
        step: &'a str,
        /// Failed attempt.
        attempt: u32,
        /// Its error.
        error: &'a str,
        /// Backoff.
        delay_ms: u64,
    },
    /// A step finished.
    StepFinished {
        /// Step id.
        step: &'a str,
        /// `done`, `failed`, `skipped` (verified from an earlier run) or `interrupted`.
        status: &'static str,
        /// Whether it changed anything.
        changed: bool,
        /// For `done` steps: `changed`, `unchanged` or `ready` (a wait or check that held).
        #[serde(skip_serializing_if = "Option::is_none")]
        outcome: Option<&'static str>,
        /// Wall time.
        duration_ms: u64,
        /// Of which spent waiting for conditions.
        waited_ms: u64,
        /// Error, for failed/interrupted steps.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
        /// The error's root-cause chain, deepest object first, when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        diagnosis: Option<Diagnosis>,
    },
    /// A phase finished.
    PhaseFinished {
        /// Phase name.
        phase: &'static str,
        /// Wall time.
        duration_ms: u64,
        /// Whether every step in it finished.
        complete: bool,
    },
    /// A warning.
    Warning {
        /// Message.
        message: &'a str,
    },
    /// The run finished.
    RunFinished {
        /// `succeeded`, `failed` or `interrupted`.
        status: &'static str,
        /// Wall time.
        duration_ms: u64,
    },
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The name of a step end.
#[must_use]
pub const fn end_name(end: StepEnd) -> &'static str {
    match end {
        StepEnd::Done => "done",
        StepEnd::Failed => "failed",
        StepEnd::Skipped => "skipped",
        StepEnd::Interrupted => "interrupted",
    }
}

/// What a `done` step did: `changed`, `unchanged` or `ready` (a wait or check that held);
/// `None` for other ends.
#[must_use]
pub const fn outcome_name(r: &StepReport) -> Option<&'static str> {
    match r.end {
        StepEnd::Done if r.changed => Some("changed"),
        StepEnd::Done if r.ready => Some("ready"),
        StepEnd::Done => Some("unchanged"),
        _ => None,
    }
}

/// The name of a run status.
#[must_use]
pub const fn run_status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Interrupted => "interrupted",
    }
}

impl<'a> EventDoc<'a> {
    /// The document for `event`.
    #[must_use]
    pub fn new(event: &'a RunEvent) -> Self {
        match event {
            RunEvent::RunStarted {
                cluster,
                mode,
                steps,
            } => Self::RunStarted {
                version: FORMAT_VERSION,
                cluster,
                mode: match mode {
                    RunMode::Plan => "plan",
                    RunMode::Apply => "apply",
                },
                steps: *steps,
            },
            RunEvent::PhaseStarted { phase, steps } => Self::PhaseStarted {
                phase: phase.name(),
                steps: *steps,
            },
            RunEvent::StepStarted {
                step,
                phase,
                attempt,
            } => Self::StepStarted {
                step: step.as_str(),
                phase: phase.name(),
                attempt: *attempt,
            },
            RunEvent::StepVerifying { step } => Self::StepVerifying {
                step: step.as_str(),
            },
            RunEvent::StepVerifyFailed { step, reason } => Self::StepVerifyFailed {
                step: step.as_str(),
                reason,
            },
            RunEvent::StepProgress {
                step,
                message,
                elapsed,
            } => Self::StepProgress {
                step: step.as_str(),
                message,
                elapsed_ms: ms(*elapsed),
            },
            RunEvent::StepRetrying {
                step,
                attempt,
                error,
                delay,
            } => Self::StepRetrying {
                step: step.as_str(),
                attempt: *attempt,
                error,
                delay_ms: ms(*delay),
            },
            RunEvent::StepFinished(r) => Self::StepFinished {
                step: r.step.as_str(),
                status: end_name(r.end),
                changed: r.changed,
                outcome: outcome_name(r),
                duration_ms: ms(r.duration),
                waited_ms: ms(r.waited),
                error: r.error.as_deref(),
                diagnosis: r.error.as_deref().and_then(Diagnosis::parse),
            },
            RunEvent::PhaseFinished {
                phase,
                duration,
                complete,
            } => Self::PhaseFinished {
                phase: phase.name(),
                duration_ms: ms(*duration),
                complete: *complete,
            },
            RunEvent::Warning { message } => Self::Warning { message },
            RunEvent::RunFinished { status, duration } => Self::RunFinished {
                status: run_status_name(*status),
                duration_ms: ms(*duration),
            },
        }
    }
}
