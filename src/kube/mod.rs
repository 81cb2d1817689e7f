//! Kubernetes building blocks for the steps: connecting like kubectl, the run's lease,
//! server-side apply with a dry-run plan, watch-based waits and port-forwarding.
//!
//! Everything here speaks the real Kubernetes API through kube-rs, so the same code runs against
//! k3s, any conformant cluster and the sandbox. Nothing here knows about steps or playbooks.

pub mod access;
pub mod apply;
pub mod client;
pub mod lease;
pub mod object;
pub mod portforward;
pub mod reach;
pub mod secret;
pub mod wait;

#[cfg(test)]
pub(crate) mod mock;

pub use access::{KubeAccess, KubeAccessError};
pub use apply::{
    ApiRejection, Applier, ApplyAction, ApplyError, ApplyOptions, ApplyOutcome, PlanAction,
    PlanOutcome, create_secret_if_absent, parse_manifests, plan_offline, plan_secret_if_absent,
};
pub use client::{ClientError, connect, install_crypto_provider};
pub use lease::{ClusterLease, LeaseConfig, LeaseError, OnLost};
pub use object::ObjectKey;
pub use portforward::{PortForward, PortForwardError};
pub use reach::Endpoint;
pub use secret::{git_basic_auth_secret, opaque_secret};
pub use wait::{Check, ConditionSpec, PodState, WaitError, WaitOptions, WaitProgress};
