//! The `kubestrap` binary under test and the workspace's fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::process::wait_with_timeout;

/// The `kubestrap` binary of the product's integration tests (`CARGO_BIN_EXE_kubestrap`, which
/// cargo sets only there, so this is a macro expanded in the test).
#[macro_export]
macro_rules! kubestrap_bin {
    () => {
        ::std::path::PathBuf::from(env!("CARGO_BIN_EXE_kubestrap"))
    };
}

/// The workspace root: `playbooks/`, `tests/fixtures/`.
#[must_use]
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// A minimal valid playbook (provider `existing`, one optional secret).
pub const MINIMAL: &str = r#"
[cluster]
name = "test"
provider = "existing"

[flux]
git_url = "https://example.com/org/fleet"
path = "clusters/test"
token_env = "KS_TEST_TOKEN"

[[secrets]]
env = "KS_TEST_TOKEN"
vault_path = "bootstrap/git"
vault_key = "token"
required = false
"#;

/// Write `text` to `dir/kubestrap.toml`; returns the path.
///
/// # Panics
/// When the file cannot be written.
#[must_use]
pub fn write_playbook(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("kubestrap.toml");
    std::fs::write(&path, text).expect("write the playbook");
    path
}

/// Run `bin ARGS` in `cwd` with `env` added (and `KUBECONFIG` removed, so no ambient cluster
/// is reached) to completion within a minute.
///
/// # Panics
/// When it cannot be started or does not finish in time.
#[must_use]
pub fn run(bin: &Path, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).current_dir(cwd).env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubestrap");
    wait_with_timeout(child, Duration::from_secs(60))
}
