//! Everything kubestrap shows: plan renderings, progress printers (subscribers to engine
//! events), the run summary and the versioned machine formats.

pub mod machine;
pub mod plan;
pub mod progress;
pub mod result;

pub use machine::{EventDoc, EventLine, FORMAT_VERSION, PlanDoc, StatusDoc};
pub use plan::{render_dot, render_json, render_text};
pub use progress::{JsonLines, PlainLines, TtyProgress, render_summary};
pub use result::{RunResult, VaultResult};
