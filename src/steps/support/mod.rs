//! What several step kinds share, in one place: the cluster connection and its lease
//! ([`cluster`]), the retry rule for each client error ([`classify`]), manifests as actions
//! ([`manifests`], [`TemplateStep`]), waits ([`waits`]) and the custom kinds ([`kinds`]).

mod classify;
pub(crate) mod cluster;
pub(crate) mod kinds;
pub(crate) mod manifests;
mod template_step;
pub(crate) mod waits;

pub use cluster::{Cluster, ClusterContext};
pub(crate) use kinds::{cluster_secret_store, external_secret, git_repository, kustomization};
pub(crate) use manifests::{apply_yaml, plan_yaml};
pub use template_step::TemplateStep;
pub(crate) use waits::{
    cancellable, deployments_available, ready_state, reporter, wait_error, wait_options,
    wait_release,
};
