//! Test fixtures shared by the workspace's integration tests: an in-process sandbox with a kube
//! client on its kubeconfig, a local port-forward listener, Vault clients, bounded waits and the
//! real `kubectl`. Each fixture owns its temp dir and ports, so tests never share state.
//!
//! Only tests depend on this crate; it may import the sandbox, never the product.

mod kubectl;
mod sandbox;
mod wait;

pub use kubectl::{find_kubectl, find_kubectl_version, kubectl_or_skip, kubectl_version_or_skip};
pub use sandbox::{
    api_for, apply, apply_yaml, forward, gvk, kube_client, kube_client_with_token, kube_config,
    start_sandbox, vault_client,
};
pub use wait::{DEFAULT_LIMIT, wait_for, within, within_for};
