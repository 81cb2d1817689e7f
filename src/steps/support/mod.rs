//! What several step kinds share, in one place: the cluster connection and its lease
//! ([`cluster`]), the retry rule for each client error ([`classify`]), manifests as actions
//! ([`manifests`], [`TemplateStep`]), waits ([`waits`]) and the custom kinds ([`kinds`]).

/// `kind` and `payload`, written the same way by every step kind: use inside `impl Step for T`
/// as `step_identity!("vault.init");`.
macro_rules! step_identity {
    ($kind:literal) => {
        fn kind(&self) -> &'static str {
            $kind
        }

        fn payload(&self) -> serde_json::Value {
            $crate::steps::payload_of(self)
        }
    };
}
pub(crate) use step_identity;

pub(crate) mod checks;
mod classify;
pub(crate) mod cluster;
pub(crate) mod diagnose;
pub(crate) mod kinds;
pub(crate) mod manifests;
mod template_step;
pub(crate) mod tunnels;
pub(crate) mod waits;

pub use cluster::{Cluster, ClusterContext};
pub(crate) use kinds::{cluster_secret_store, external_secret, git_repository, kustomization};
pub(crate) use manifests::{apply_yaml, plan_yaml};
pub use template_step::TemplateStep;
pub(crate) use waits::{
    StepWaits, cancellable, deployments_available, ready_state, reporter, wait_error, wait_options,
};
