//! Kubernetes building blocks for the steps: connecting like kubectl, server-side apply with a
//! dry-run plan, watch-based waits and port-forwarding.
//!
//! Everything here speaks the real Kubernetes API through kube-rs, so the same code runs against
//! k3s, any conformant cluster and the sandbox. Nothing here knows about steps or playbooks.

pub mod apply;
pub mod client;
pub mod object;
pub mod portforward;
pub mod wait;

#[cfg(test)]
mod mock;

pub use apply::{
    Applier, ApplyAction, ApplyError, ApplyOptions, ApplyOutcome, PlanAction, PlanOutcome,
};
pub use client::{ClientError, connect, install_crypto_provider};
pub use object::ObjectKey;
pub use portforward::{PortForward, PortForwardError};
pub use wait::{WaitError, WaitOptions, WaitProgress};
