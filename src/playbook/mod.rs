//! The playbook: one TOML file per cluster (design §2), loaded into a validated, typed model.
//!
//! Loading touches no network and no cluster: it reads one file and reports every problem at
//! once, each with file:line, the key and the nearest valid key.

mod duration;
mod error;
mod load;
mod model;
mod placeholders;
mod schema;
mod validate;

pub use duration::{DurationError, HumanDuration, parse_duration};
pub use error::{PlaybookError, PlaybookProblems, Problem};
pub use load::LoadedPlaybook;
pub use model::{
    Apps, Cluster, ExternalSecrets, Flux, GitAuth, Playbook, Provider, Sandbox, SecretDecl,
    SshTarget, Terraform, TerraformBinary, Timeouts, Vault, VaultAccess, Verify,
};
pub use placeholders::PLACEHOLDER_PREFIX;
