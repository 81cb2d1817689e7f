//! The engine: a phased DAG of typed steps (petgraph), walked with bounded concurrency, with
//! durable checkpoints and resume.
//!
//! - [`step`]: the [`Step`] contract every step kind implements;
//! - [`graph`]: [`Engine<Building>`] → [`Engine::seal`] → [`Engine<Built>`];
//! - [`session`]: `plan`, `apply` (lock, checkpoint, resume) and `status`;
//! - [`events`]: the [`RunEvent`]s the engine emits instead of printing.

pub mod checkpoint;
mod classify;
pub mod context;
pub mod diagnosis;
pub mod events;
mod execute;
pub mod graph;
pub mod identity;
mod journal;
pub mod lock;
pub mod resources;
pub mod retry;
pub mod session;
pub mod step;
mod wait_clock;
mod walk;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointWriter, StepRecord, StepStatus};
pub use classify::Classify;
pub use context::{RunEnv, StepContext};
pub use diagnosis::{Diagnosis, Level};
pub use events::{
    EventBus, Recorder, RunEvent, RunMode, RunStatus, StepEnd, StepReport, Subscriber,
    SubscriberError,
};
pub use graph::{Building, Built, Engine, GraphErrors, GraphProblem, Node};
pub use identity::{Identities, Identity, IdentityConflict};
pub use lock::{LockError, RunLock};
pub use resources::{Finish, Resources, RunControl};
pub use retry::RetryPolicy;
pub use session::{
    ApplyError, ApplyRequest, CheckpointMode, Plan, PlannedStep, StatusReport, StepState, apply,
    plan, status, status_name,
};
pub use step::{Action, BoxError, Op, Phase, Step, StepError, StepId, StepOutcome, Verified};
pub use wait_clock::WaitSpan;
pub use walk::RunReport;
