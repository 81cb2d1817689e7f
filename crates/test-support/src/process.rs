//! Running a process to completion in a test: bounded, with its output kept for assertion
//! messages.

use std::io::{BufRead, BufReader};
use std::process::{Child, Output};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Wait for `child`, killing it (and failing the test with its output) past `limit`. Its piped
/// stdout and stderr are read while it runs, so a child that prints more than a pipe holds
/// (`KUBESTRAP_LOG=trace`) does not block on a full pipe.
///
/// # Panics
/// When the child outlives `limit` or cannot be waited for.
#[must_use]
pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    fn drain(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the process did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Exit code, stdout and stderr as text, for assertion messages.
#[must_use]
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The events named `event` of a JSON-lines output (`apply --output json`).
#[must_use]
pub fn events(out: &Output, event: &str) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == event)
        .collect()
}

/// The `step_finished` events of a JSON-lines apply output.
#[must_use]
pub fn finished(out: &Output) -> Vec<Value> {
    events(out, "step_finished")
}

/// A runtime for the async assertions of a synchronous test.
///
/// # Panics
/// When the runtime cannot be built.
#[must_use]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A runtime whose worker threads keep an in-process sandbox serving while the test thread
/// waits for a kubestrap process: with [`runtime`] the sandbox would be deaf meanwhile, and a
/// "no writes" assertion meaningless.
///
/// # Panics
/// When the runtime cannot be built.
#[must_use]
pub fn serving_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The lines a running child prints on stdout, as they come (read on a thread, so waiting for
/// one is bounded).
pub struct Lines {
    rx: Receiver<String>,
}

impl Lines {
    /// Follow `child`'s stdout (which must be piped).
    ///
    /// # Panics
    /// When the child's stdout was not piped.
    #[must_use]
    pub fn follow(child: &mut Child) -> Self {
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    /// The JSON events up to and including the first one `stop_at` accepts (lines that are not
    /// JSON are skipped).
    ///
    /// # Panics
    /// When no such event comes within `limit`, listing the events seen.
    #[must_use]
    pub fn events_until(&self, limit: Duration, stop_at: impl Fn(&Value) -> bool) -> Vec<Value> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            let Ok(line) = self.rx.recv_timeout(left) else {
                panic!("the awaited event never came within {limit:?}; events: {seen:#?}");
            };
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let hit = stop_at(&event);
            seen.push(event);
            if hit {
                return seen;
            }
        }
    }

    /// Every remaining line, until the child closes its stdout or is silent for `idle`.
    #[must_use]
    pub fn rest(&self, idle: Duration) -> Vec<String> {
        let mut rest = Vec::new();
        while let Ok(line) = self.rx.recv_timeout(idle) {
            rest.push(line);
        }
        rest
    }
}
