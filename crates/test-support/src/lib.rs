//! Test fixtures shared by the workspace's integration tests, so no test file carries its own
//! copy: an in-process sandbox with a kube client on its kubeconfig, a local port-forward
//! listener, Vault clients, bounded waits, the real `kubectl`, a real Vault-API server binary
//! (OpenBao); for the product's tests, the `kubestrap` binary with the workspace's fixture
//! playbooks, a whole sandbox bootstrap ([`Bootstrap`]) and the scanners of the
//! secret-lifecycle proof ([`scan`]). Each fixture owns its temp dir and ports, so tests never
//! share state.
//!
//! Only tests depend on this crate; it may import the sandbox, never the product.

mod bootstrap;
mod echo;
mod kubectl;
mod kubestrap;
mod process;
mod sandbox;
pub mod scan;
mod vault_server;
mod wait;

pub use bootstrap::{
    Bootstrap, Options, RUN_LIMIT, STEPS, assert_all_done, assert_vault_restarted,
};
pub use echo::EchoBackend;
pub use kubectl::{find_kubectl, find_kubectl_version, kubectl_or_skip, kubectl_version_or_skip};
pub use kubestrap::{
    MINIMAL, copy_tree, run, sandbox_playbook_copy, workspace_root, write_existing_playbook,
    write_playbook,
};
pub use process::{Lines, events, finished, runtime, serving_runtime, text, wait_with_timeout};
pub use sandbox::{
    api_for, apply, apply_yaml, forward, gvk, kube_client, kube_client_from,
    kube_client_with_token, kube_config, kube_config_from, start_sandbox, vault_client,
    vault_wait_active, vault_wait_kv2, wait_pod_running,
};
pub use vault_server::{
    OPENBAO_VERSION, REQUIRE_VAULT_SERVER_ENV, VAULT_SERVER_ENV, assert_real_openbao,
    find_vault_server, pinned_openbao_path, vault_server_or_skip,
};
pub use wait::{DEFAULT_LIMIT, wait_for, within, within_for};
