//! Starting a long-lived background service (the sandbox cluster) that must outlive kubestrap:
//! its own session (so a Ctrl-C or SIGHUP aimed at kubestrap's terminal never reaches it), stdin
//! from /dev/null, stdout and stderr appended to a log file.
//!
//! This module needs `unsafe` for one call: `setsid()` must run in the forked child before
//! `exec`, which only `CommandExt::pre_exec` offers, and `pre_exec` is unsafe because the closure
//! runs between fork and exec where only async-signal-safe functions may be called. `setsid` is
//! async-signal-safe and the closure touches no memory of the parent.
#![expect(
    unsafe_code,
    reason = "setsid() in pre_exec, the only way to start a child in its own session"
)]

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Spawns `command` detached, with its output appended to `log`. The returned child is not
/// waited for by anyone but the caller (who may poll it to notice an early exit).
///
/// # Errors
/// The log file cannot be opened or the process cannot be started.
pub(crate) fn spawn_detached(mut command: Command, log: &Path) -> std::io::Result<Child> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)?;
    let err = out.try_clone()?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    // SAFETY: setsid is async-signal-safe and the closure captures nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_child_runs_in_its_own_session_and_logs_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "ps -o sid= -p $$; echo done"]);
        let mut child = spawn_detached(cmd, &log).unwrap();
        let pid = child.id();
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(&log).unwrap();
        let sid: u32 = text.lines().next().unwrap().trim().parse().unwrap();
        assert_eq!(sid, pid, "the child leads its own session: {text}");
        assert!(text.contains("done"));
    }
}
