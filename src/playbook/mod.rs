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
pub use load::{K3S_LOCAL_KUBECONFIG, LoadedPlaybook};

/// The candidate nearest to `name` (Jaro-Winkler ≥ 0.8), for did-you-mean hints elsewhere
/// (kubeconfig contexts, step ids).
#[must_use]
pub fn nearest_name<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    schema::nearest(name, candidates)
}
pub use model::{
    Apps, Cluster, ExternalSecrets, Flux, GitAuth, Playbook, Provider, Sandbox, SecretDecl,
    SshTarget, Terraform, TerraformBinary, Timeouts, Vault, VaultAccess, VaultFlavor, VaultSeal,
    Verify, env_pattern_matches, k3s_exec_secret_refs,
};
pub use placeholders::PLACEHOLDER_PREFIX;
