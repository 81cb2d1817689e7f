//! Sending SIGTERM to a background sandbox (`sandbox down`).
//!
//! `kill(2)` has no safe wrapper in the crates we depend on, so this module alone allows
//! `unsafe`: each call passes a plain integer pid and signal number, touches no memory,
//! and the pid is checked to be a running kubestrap sandbox first.
#![expect(unsafe_code, reason = "kill(2) for sandbox down; see the module docs")]

/// Whether a process with this pid exists.
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence; no memory is involved.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A zombie (exited, not yet reaped by its parent) has stopped.
    exists && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Sends SIGTERM.
///
/// # Errors
/// The OS refused (no such process, no permission).
pub fn terminate(pid: i32) -> std::io::Result<()> {
    if pid <= 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    // SAFETY: plain syscall with integer arguments; pid was validated as positive.
    let r = unsafe { libc::kill(pid, libc::SIGTERM) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether the process looks like a kubestrap sandbox (guards against a reused pid).
pub fn is_sandbox(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let s = String::from_utf8_lossy(&c);
            s.contains("sandbox")
        })
        .unwrap_or(false)
}
