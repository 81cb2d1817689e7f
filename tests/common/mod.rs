//! Helpers shared by the engine's integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use kubestrap::playbook::{LoadedPlaybook, Playbook};

/// A minimal valid playbook whose state lives in `dir`.
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

/// Write [`MINIMAL`] (or `text`) to `dir/kubestrap.toml` and load it.
pub fn playbook_in(dir: &Path, text: &str) -> LoadedPlaybook {
    let path = dir.join("kubestrap.toml");
    std::fs::write(&path, text).unwrap();
    Playbook::load(&path).unwrap()
}

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubestrap"))
}

/// Run the binary to completion with a timeout (tests never hang).
pub fn run(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).current_dir(cwd).env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child, Duration::from_secs(60))
}

/// Wait for `child`, killing it if it exceeds `limit`.
pub fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> Output {
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kubestrap did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// stdout + stderr as text, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
