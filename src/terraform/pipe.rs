//! Handing secrets to a child process through an inherited pipe.
//!
//! Secrets must not reach Terraform through argv (visible in `ps` to every local user), the
//! environment (`/proc/<pid>/environ`, inherited by every provider and provisioner) or a temp
//! file (survives a crash, lands in backups). A pipe leaves no trace: the child reads
//! `/dev/fd/N` and the bytes are gone.
//!
//! Both ends are created close-on-exec, so no other child spawned concurrently by this process
//! inherits them; only the read end is made inheritable, and only inside the one child, between
//! `fork` and `exec`.

use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use zeroize::Zeroizing;

/// A pipe whose read end is meant for exactly one child.
#[derive(Debug)]
pub struct SecretPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl SecretPipe {
    /// Creates the pipe, both ends close-on-exec.
    ///
    /// # Errors
    /// The `pipe2` system call failed (out of file descriptors).
    pub fn new() -> std::io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(Self { read, write })
    }

    /// The descriptor number the child will read, for `-var-file=/dev/fd/N`.
    #[must_use]
    pub fn child_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Lets `command`'s child inherit the read end (see [`inherit_in_child`]).
    pub fn share_with(&self, command: &mut tokio::process::Command) {
        inherit_in_child(command, self.read.as_raw_fd());
    }

    /// After the child is spawned: closes our copy of the read end (so the writer sees EPIPE
    /// if the child exits without reading, instead of blocking forever) and writes `data` from a
    /// blocking thread (a pipe holds 64 KiB; the child drains it concurrently). The buffer is
    /// wiped when the write ends; closing the write end is the child's EOF.
    ///
    /// # Errors
    /// The write failed, e.g. the child exited before reading (EPIPE).
    pub async fn feed(self, data: Zeroizing<String>) -> std::io::Result<()> {
        let Self { read, write } = self;
        drop(read);
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::from(write);
            file.write_all(data.as_bytes())
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Clears `FD_CLOEXEC` on `fd` in the child only, between fork and exec, so the child inherits
/// it while the parent's copy stays close-on-exec for every other child.
#[expect(
    unsafe_code,
    reason = "`pre_exec` is unsafe because the closure runs in the forked child, where only \
              async-signal-safe operations are allowed; ours is a single fcntl(2) system call \
              on a descriptor that the parent keeps open until after spawn"
)]
fn inherit_in_child(command: &mut tokio::process::Command, fd: RawFd) {
    // SAFETY: the closure performs one fcntl(F_SETFD) syscall through rustix: no allocation, no
    // locks, async-signal-safe. `fd` is open in the child because the parent holds the OwnedFd
    // (in `SecretPipe`) until `spawn` has returned, and fork duplicates the descriptor table.
    unsafe {
        command.pre_exec(move || {
            let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_child_reads_the_pipe_through_dev_fd() {
        let pipe = SecretPipe::new().unwrap();
        let fd = pipe.child_fd();
        let mut cmd = tokio::process::Command::new("/bin/cat");
        cmd.arg(format!("/dev/fd/{fd}"))
            .stdout(std::process::Stdio::piped())
            .env_clear();
        pipe.share_with(&mut cmd);
        let child = cmd.spawn().unwrap();
        pipe.feed(Zeroizing::new("var = \"value\"\n".to_owned()))
            .await
            .unwrap();
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
                .await
                .expect("cat finished")
                .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"var = \"value\"\n");
    }

    #[tokio::test]
    async fn other_children_do_not_inherit_the_pipe() {
        let pipe = SecretPipe::new().unwrap();
        let fd = pipe.child_fd();
        // A child that was not given the pipe cannot open it.
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!(
                    "test -e /dev/fd/{fd} && echo leaked || echo closed"
                ))
                .output(),
        )
        .await
        .expect("sh finished")
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "closed");
        drop(pipe);
    }
}
