//! Running kubestrap under `KUBESTRAP_AUDIT_PAUSE=1` and auditing it while it waits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::children::{ChildRecord, ChildWatcher};
use super::memory::{MemoryScan, scan_process};
use super::{Form, Hit, scan_bytes};

/// A kubestrap process started with canary secrets, stopped at its audit pause.
#[derive(Debug)]
pub struct PausedRun {
    child: Child,
    /// The process id (also announced on stderr).
    pub pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
    watcher: Option<ChildWatcher>,
}

/// What the process printed and how it ended, once the pause is released.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: Vec<u8>,
    /// Everything on stderr.
    pub stderr: Vec<u8>,
    /// Every child the watcher saw.
    pub children: Vec<ChildRecord>,
}

impl Finished {
    /// stdout and stderr, for assertion messages.
    #[must_use]
    pub fn text(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr (last 6000 bytes)\n{}",
            self.status.code(),
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr[self.stderr.len().saturating_sub(6000)..])
        )
    }
}

/// Start `command` (kubestrap with its arguments, working directory and environment set) with
/// the pause on, output to files in `out_dir`, and wait for `audit-pause pid=N` on stderr.
///
/// # Panics
/// When the process exits or does not pause within `limit`.
#[must_use]
pub fn run_until_pause(mut command: Command, out_dir: &Path, limit: Duration) -> PausedRun {
    let stdout = out_dir.join("kubestrap.stdout");
    let stderr = out_dir.join("kubestrap.stderr");
    let child = command
        .env("KUBESTRAP_AUDIT_PAUSE", "1")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start kubestrap");
    let pid = child.id();
    let mut run = PausedRun {
        watcher: Some(ChildWatcher::start(pid)),
        child,
        pid,
        stdout,
        stderr,
    };
    let announce = format!("audit-pause pid={pid}\n");
    let start = Instant::now();
    loop {
        let err = std::fs::read(&run.stderr).unwrap_or_default();
        if memchr::memmem::find(&err, announce.as_bytes()).is_some() {
            return run;
        }
        if let Some(status) = run.child.try_wait().unwrap() {
            panic!(
                "kubestrap exited ({status}) without pausing:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        if start.elapsed() > limit {
            let _ = run.child.kill();
            let _ = run.child.wait();
            panic!(
                "kubestrap did not reach its audit pause within {limit:?}:\n{}",
                String::from_utf8_lossy(&err[err.len().saturating_sub(8000)..])
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl PausedRun {
    /// Scan every readable mapping of the paused process.
    #[must_use]
    pub fn scan_memory(&self, forms: &[Form]) -> MemoryScan {
        scan_process(self.pid, forms)
    }

    /// `/proc/PID/environ` of the paused process, scanned for `forms`.
    #[must_use]
    pub fn scan_environ(&self, forms: &[Form]) -> (Vec<u8>, Vec<Hit>) {
        let environ = std::fs::read(format!("/proc/{}/environ", self.pid)).unwrap();
        let hits = scan_bytes(&environ, forms, "/proc/PID/environ", 0);
        (environ, hits)
    }

    /// Close stdin (ending the pause) and wait for the exit, at most `limit`.
    ///
    /// # Panics
    /// When the process does not exit in time.
    #[must_use]
    pub fn release(mut self, limit: Duration) -> Finished {
        drop(self.child.stdin.take());
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("kubestrap did not exit within {limit:?} of its stdin closing");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let children = self
            .watcher
            .take()
            .map(ChildWatcher::finish)
            .unwrap_or_default();
        Finished {
            status,
            stdout: std::fs::read(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read(&self.stderr).unwrap_or_default(),
            children,
        }
    }
}

impl Drop for PausedRun {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
