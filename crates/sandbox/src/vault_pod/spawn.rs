//! Starting the server process so that it never outlives the sandbox.
//!
//! # Why a parent-death signal, and why from a dedicated thread
//! The sandbox stops the server gracefully (SIGTERM, then SIGKILL after a grace period) when
//! it shuts down or restarts the pod. That cannot help when the sandbox itself is SIGKILLed
//! or crashes: an orphaned server would keep its ports and its raft files. So every server
//! process is started with `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills it the moment its
//! parent goes away, whatever the way.
//!
//! Linux counts the *thread* that forked as the parent (prctl(2)): had a tokio worker or a
//! blocking-pool thread spawned the server, the server would be killed when that thread
//! retires (the blocking pool retires idle threads after 10 s). Every spawn therefore happens
//! on one dedicated thread, [`Spawner`], that lives exactly as long as the supervisor that owns
//! it: it ends after the last server was stopped, or with the process.
//!
//! Setting the signal must happen in the child between `fork` and `exec`; std's only hook
//! there is `CommandExt::pre_exec`, which is `unsafe`. That one call is the only `unsafe` of
//! the sandbox's server support (see [`set_parent_death_signal`]); everything else (signals,
//! process groups) uses safe APIs.

use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

type Request = (Command, oneshot::Sender<std::io::Result<Child>>);

/// The thread every server process is forked from (see the module docs).
#[derive(Debug)]
pub struct Spawner {
    requests: mpsc::Sender<Request>,
}

impl Spawner {
    /// Starts the spawning thread, bound to the current tokio runtime (child reaping needs it).
    ///
    /// # Errors
    /// The thread cannot be created.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let (requests, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("vault-server-spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                // Ends when the supervisor drops its Spawner; the kernel then sends the
                // parent-death signal to any server this thread forked that still runs.
                while let Ok((mut command, reply)) = rx.recv() {
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(Self { requests })
    }

    /// Spawns `command` (with the parent-death signal set) from the spawning thread.
    ///
    /// # Errors
    /// The spawn failed (missing binary, no permission), or the thread is gone.
    pub async fn spawn(&self, mut command: Command) -> std::io::Result<Child> {
        set_parent_death_signal(&mut command);
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((command, tx))
            .map_err(|_| std::io::Error::other("the vault-server spawner thread is gone"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the vault-server spawner thread is gone"))?
    }
}

/// Makes the kernel SIGKILL the child when the thread that forked it ends (Linux only; on
/// other systems the sandbox's own shutdown is the only stop).
#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "`pre_exec` is unsafe because the closure runs in the forked child, where only \
              async-signal-safe operations are allowed; ours are two raw system calls \
              (prctl, getppid) through rustix, with no allocation and no locks"
)]
fn set_parent_death_signal(command: &mut Command) {
    use rustix::process::{Pid, Signal, getppid, set_parent_process_death_signal};
    let parent = Pid::from_raw(i32::try_from(std::process::id()).unwrap_or(0));
    // SAFETY: the closure only issues prctl(PR_SET_PDEATHSIG) and getppid(2) through rustix's
    // raw syscall layer: no allocation, no locks, no shared state, so it is async-signal-safe.
    // `parent` is a plain integer copied into the closure before the fork.
    unsafe {
        command.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // The parent may have died between fork and prctl: then no signal will ever come,
            // so refuse to exec (the spawn fails instead of leaving an orphan).
            if getppid() != parent {
                return Err(std::io::Error::other(
                    "the sandbox exited while starting the vault server",
                ));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_command: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn children_run_and_die_with_their_spawner() {
        let spawner = Spawner::start().expect("spawner");
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("30");
        let mut child = spawner.spawn(cmd).await.expect("spawn");
        assert!(child.try_wait().expect("wait").is_none(), "runs");
        // The spawner (its thread) goes away: the kernel kills the child.
        drop(spawner);
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
            .await
            .expect("the child dies with its spawner thread")
            .expect("status");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    #[tokio::test]
    async fn a_missing_binary_is_an_error() {
        let spawner = Spawner::start().expect("spawner");
        let err = spawner
            .spawn(Command::new("/nonexistent/bao"))
            .await
            .expect_err("missing");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
