//! What the engine tells the world. The engine never prints: it emits [`RunEvent`]s and
//! subscribers (progress printers, JSON lines, the checkpoint writer) decide what to do.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::step::{Phase, StepId};

/// Whether a walk changes things or only describes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// `plan`: every step's `plan`, nothing changed.
    Plan,
    /// `apply`: every step's `apply` (or `verify` on resume).
    Apply,
}

/// How a step ended in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepEnd {
    /// Applied (or planned) successfully.
    Done,
    /// Failed; the run stops starting new work.
    Failed,
    /// Recorded as done by an earlier run and verified: not applied again.
    Skipped,
    /// Stopped by a signal before it finished.
    Interrupted,
}

/// How a whole run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every selected step finished.
    Succeeded,
    /// A step failed (or recording failed); nothing new was started after that.
    Failed,
    /// A signal stopped the run.
    Interrupted,
}

/// Everything the engine reports while it walks the DAG.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The walk begins.
    RunStarted {
        /// Cluster name.
        cluster: String,
        /// Plan or apply.
        mode: RunMode,
        /// Steps that will be considered in this run.
        steps: usize,
    },
    /// A phase begins (the previous one is complete).
    PhaseStarted {
        /// The phase.
        phase: Phase,
        /// Steps in it for this run.
        steps: usize,
    },
    /// An attempt of a step's operation starts.
    StepStarted {
        /// The step.
        step: StepId,
        /// Its phase.
        phase: Phase,
        /// 1-based attempt number.
        attempt: u32,
    },
    /// A step recorded as done is being verified instead of applied.
    StepVerifying {
        /// The step.
        step: StepId,
    },
    /// Verification said the postcondition no longer holds; the step is applied again.
    StepVerifyFailed {
        /// The step.
        step: StepId,
        /// Why (redacted).
        reason: String,
    },
    /// A progress message from inside a step ("waiting for pod vault-0 Ready").
    StepProgress {
        /// The step.
        step: StepId,
        /// Message (redacted).
        message: String,
        /// Time since the step started.
        elapsed: Duration,
    },
    /// An attempt failed transiently; another follows after `delay`.
    StepRetrying {
        /// The step.
        step: StepId,
        /// The attempt that failed.
        attempt: u32,
        /// Its error (redacted).
        error: String,
        /// Backoff before the next attempt.
        delay: Duration,
    },
    /// A step is finished for this run.
    StepFinished(StepReport),
    /// A phase is finished (or stopped).
    PhaseFinished {
        /// The phase.
        phase: Phase,
        /// Wall time spent in it.
        duration: Duration,
        /// Whether every step in it finished.
        complete: bool,
    },
    /// Something the user should know that is not a failure (stale lock reclaimed, assumed deps).
    Warning {
        /// Message (redacted).
        message: String,
    },
    /// The walk is over.
    RunFinished {
        /// How it ended.
        status: RunStatus,
        /// Total wall time.
        duration: Duration,
    },
}

/// The final record of one step in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The step.
    pub step: StepId,
    /// Its kind.
    pub kind: &'static str,
    /// Its phase.
    pub phase: Phase,
    /// How it ended.
    pub end: StepEnd,
    /// Whether it changed anything.
    pub changed: bool,
    /// Whether it was a wait or check that held (nothing changed, the condition is true).
    pub ready: bool,
    /// Time spent in waits (watches and polls for a condition), summed over its attempts.
    pub waited: Duration,
    /// Attempts made in this run (0 when only verified).
    pub attempts: u32,
    /// Wall time from first start to finish.
    pub duration: Duration,
    /// Non-secret outputs (done or skipped steps).
    pub outputs: serde_json::Value,
    /// The error (redacted), for failed or interrupted steps.
    pub error: Option<String>,
    /// Planned actions (plan mode only).
    pub actions: Vec<super::step::Action>,
}

/// A failure of a subscriber that must stop the run (e.g. the checkpoint could not be written:
/// continuing would lose the record of what was done).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SubscriberError(pub String);

/// Receives every [`RunEvent`], in order, synchronously. Keep handlers short: they run on the
/// scheduler's task. A returned error stops the run (nothing new is started).
pub trait Subscriber: Send {
    /// Handle one event.
    ///
    /// # Errors
    /// [`SubscriberError`] when the subscriber cannot do its job; the engine then stops.
    fn on_event(&mut self, event: &RunEvent) -> Result<(), SubscriberError>;
}

/// Fan-out of events to subscribers. Cheap to clone; steps get one through their context.
#[derive(Clone, Default)]
pub struct EventBus {
    inner: Arc<Mutex<BusState>>,
}

#[derive(Default)]
struct BusState {
    subscribers: Vec<Box<dyn Subscriber>>,
    failure: Option<String>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").finish_non_exhaustive()
    }
}

impl EventBus {
    /// A bus with no subscribers.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a subscriber; it sees every event emitted from now on.
    pub fn subscribe(&self, subscriber: Box<dyn Subscriber>) {
        self.lock().subscribers.push(subscriber);
    }

    /// Add a subscriber that sees each event before all others: the checkpoint writer, so a
    /// transition is durable before anything announces it.
    pub fn subscribe_first(&self, subscriber: Box<dyn Subscriber>) {
        self.lock().subscribers.insert(0, subscriber);
    }

    /// Deliver `event` to every subscriber, in subscription order.
    pub fn emit(&self, event: &RunEvent) {
        let mut state = self.lock();
        let BusState {
            subscribers,
            failure,
        } = &mut *state;
        for s in subscribers.iter_mut() {
            if let Err(e) = s.on_event(event)
                && failure.is_none()
            {
                *failure = Some(e.0);
            }
        }
    }

    /// Record a failure to keep the run's work recorded (as a failing subscriber does): the run
    /// stops starting work. The first one is kept.
    pub(crate) fn fail(&self, message: String) {
        let mut state = self.lock();
        if state.failure.is_none() {
            state.failure = Some(message);
        }
    }

    /// The first subscriber failure, if any (taken: reported once).
    pub fn take_failure(&self) -> Option<String> {
        self.lock().failure.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A subscriber that keeps every event; for tests and the plan collector.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<RunEvent>>>,
}

impl Recorder {
    /// An empty recorder.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything recorded so far.
    #[must_use]
    pub fn events(&self) -> Vec<RunEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A subscriber feeding this recorder.
    #[must_use]
    pub fn subscriber(&self) -> Box<dyn Subscriber> {
        Box::new(self.clone())
    }
}

impl Subscriber for Recorder {
    fn on_event(&mut self, event: &RunEvent) -> Result<(), SubscriberError> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event.clone());
        Ok(())
    }
}
