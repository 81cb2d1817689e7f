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

/// Writes [`MINIMAL`] on the cluster of `kubeconfig` (provider `existing`), with an empty
/// Terraform module in `dir/module` and `vault_extra` in `[vault]`; returns the path.
///
/// # Panics
/// When a file cannot be written.
pub fn write_existing_playbook(dir: &Path, kubeconfig: &Path, vault_extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("module")).expect("create the module directory");
    std::fs::write(dir.join("module/main.tf"), "").expect("write the module");
    write_playbook(
        dir,
        &MINIMAL.replace(
            "provider = \"existing\"",
            &format!(
                "provider = \"existing\"\nkubeconfig = {:?}\n\n[terraform]\ndir = \"module\"\n\n[vault]\n{vault_extra}",
                kubeconfig.display().to_string()
            ),
        ),
    )
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

/// A private copy of the workspace's sandbox playbook (`playbooks/sandbox.toml`), its Git
/// content and the offline Terraform module, laid out as in the repository so the playbook's
/// relative paths hold. Tests plan and apply this copy, never the checkout's own playbook,
/// whose state dir (`playbooks/.kubestrap`) a user's quickstart run may have filled, or whose
/// sandbox may still be running.
///
/// # Panics
/// When the copy cannot be made.
#[must_use]
pub fn sandbox_playbook_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let repo = workspace_root();
    std::fs::create_dir_all(root.join("playbooks")).expect("playbooks dir");
    std::fs::copy(
        repo.join("playbooks/sandbox.toml"),
        root.join("playbooks/sandbox.toml"),
    )
    .expect("copy the playbook");
    copy_tree(
        &repo.join("playbooks/sandbox"),
        &root.join("playbooks/sandbox"),
    );
    copy_tree(
        &repo.join("tests/fixtures/terraform/vault-kv"),
        &root.join("tests/fixtures/terraform/vault-kv"),
    );
    tmp
}

/// Copy the directory tree `from` to `to`.
///
/// # Panics
/// When a file cannot be copied.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}
