//! The real `kubectl`, the judge of the sandbox's API fidelity.
//!
//! Without kubectl its tests print a loud SKIP line and pass, unless
//! `KUBESTRAP_REQUIRE_KUBECTL=1` (CI), which turns a missing kubectl into a failure.

use std::path::PathBuf;

/// `kubectl` on PATH, if any.
#[must_use]
pub fn find_kubectl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

/// `kubectl` on PATH; `None` after printing a SKIP line for `test` when it is missing.
///
/// # Panics
/// When kubectl is missing and `KUBESTRAP_REQUIRE_KUBECTL=1`.
#[must_use]
pub fn kubectl_or_skip(test: &str) -> Option<PathBuf> {
    let found = find_kubectl();
    if found.is_none() {
        assert!(
            std::env::var("KUBESTRAP_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "kubectl is required (KUBESTRAP_REQUIRE_KUBECTL=1) but not on PATH"
        );
        eprintln!("SKIP: kubectl not found ({test})");
    }
    found
}

/// `kubectl.1.<minor>`: on PATH, or beside the binary the `kubectl` on PATH resolves to (a
/// version dispatcher keeps every version there).
#[must_use]
pub fn find_kubectl_version(minor: u32) -> Option<PathBuf> {
    let name = format!("kubectl.1.{minor}");
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
        .or_else(|| {
            let dispatcher = std::fs::canonicalize(find_kubectl()?).ok()?;
            let beside = dispatcher.parent()?.join(&name);
            beside.is_file().then_some(beside)
        })
}

/// [`find_kubectl_version`]; `None` after printing a SKIP line for `test` when missing.
///
/// # Panics
/// When the version is missing and `KUBESTRAP_REQUIRE_KUBECTL=1`: CI must run every version.
#[must_use]
pub fn kubectl_version_or_skip(minor: u32, test: &str) -> Option<PathBuf> {
    let found = find_kubectl_version(minor);
    if found.is_none() {
        assert!(
            std::env::var("KUBESTRAP_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "kubectl 1.{minor} is required (KUBESTRAP_REQUIRE_KUBECTL=1) but neither kubectl.1.{minor} on PATH nor beside the kubectl on PATH"
        );
        eprintln!("SKIP: kubectl 1.{minor} not found ({test})");
    }
    found
}
