//! The container runtime's record of simulated containers: what each instance printed, how it
//! ended, and when the kubelet restarts it (the first restart at once, then a crash-loop
//! back-off of 10s doubling to 5m), so a
//! simulated process that fails shows it as a real pod does: `kubectl logs` (and
//! `--previous`), `restartCount`, `lastState.terminated` and a `CrashLoopBackOff` waiting state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First crash-loop back-off.
const BACKOFF_START: Duration = Duration::from_secs(10);
/// Longest crash-loop back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// RFC 3339, second precision.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// RFC 3339 in UTC with nine fractional digits, the kubelet's log timestamp format.
fn rfc3339_nano(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

#[derive(Debug, Clone, Default)]
struct Instance {
    /// What the process printed, each line with when it was printed.
    lines: Vec<(jiff::Timestamp, String)>,
    started_ms: i64,
    exit: Option<(i32, i64)>,
}

#[derive(Debug, Default)]
struct Record {
    restarts: u32,
    current: Instance,
    previous: Option<Instance>,
    restart_at_ms: Option<i64>,
}

impl Record {
    /// Starts the next instance once the back-off is over.
    fn advance(&mut self, now: i64) {
        if let Some(at) = self.restart_at_ms
            && now >= at
        {
            self.restart_at_ms = None;
            self.restarts += 1;
            let next = Instance {
                lines: Vec::new(),
                started_ms: now,
                exit: None,
            };
            self.previous = Some(std::mem::replace(&mut self.current, next));
        }
    }
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// Exit code.
    pub exit_code: i32,
    /// `Error` (non-zero) or `Completed`.
    pub reason: &'static str,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
}

/// A container's state as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Restarts so far.
    pub restarts: u32,
    /// Running since (RFC 3339), or `None` while waiting to restart.
    pub running_since: Option<String>,
    /// The crash-loop wait left, while waiting.
    pub backoff: Option<Duration>,
    /// The back-off the kubelet announces (`back-off 10s restarting failed container=...`).
    pub backoff_total: Duration,
    /// How the last instance ended.
    pub last_terminated: Option<Terminated>,
}

fn terminated(i: &Instance) -> Option<Terminated> {
    let (code, at) = i.exit?;
    Some(Terminated {
        exit_code: code,
        reason: if code == 0 { "Completed" } else { "Error" },
        started_at: rfc3339(i.started_ms),
        finished_at: rfc3339(at),
    })
}

/// How long the kubelet waits before the next restart, after `restarts` restarts so far.
fn backoff_for(restarts: u32) -> Duration {
    match restarts {
        0 => Duration::ZERO,
        n => BACKOFF_START
            .saturating_mul(1 << (n - 1).min(6))
            .min(BACKOFF_MAX),
    }
}

/// Every simulated container's record, by pod uid and container name.
#[derive(Debug, Default)]
pub struct Runtime {
    records: Mutex<HashMap<(String, String), Record>>,
}

impl Runtime {
    fn with<T>(&self, pod_uid: &str, container: &str, f: impl FnOnce(&mut Record) -> T) -> T {
        let mut g = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let r = g
            .entry((pod_uid.to_string(), container.to_string()))
            .or_insert_with(|| Record {
                current: Instance {
                    started_ms: now_ms(),
                    ..Instance::default()
                },
                ..Record::default()
            });
        r.advance(now_ms());
        f(r)
    }

    /// Whether the runtime has a record of the container (a simulated process ran in it).
    pub fn knows(&self, pod_uid: &str, container: &str) -> bool {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&(pod_uid.to_string(), container.to_string()))
    }

    /// Whether the container's current instance runs (it has not exited, or was restarted).
    /// Returns the instance's number (its restart count) so a caller sees restarts.
    pub fn running(&self, pod_uid: &str, container: &str) -> Option<u32> {
        self.with(pod_uid, container, |r| {
            r.current.exit.is_none().then_some(r.restarts)
        })
    }

    /// Whether the current instance has printed nothing yet (it just started).
    pub fn fresh(&self, pod_uid: &str, container: &str) -> bool {
        self.with(pod_uid, container, |r| r.current.lines.is_empty())
    }

    /// Appends a line to the current instance's log.
    pub fn log(&self, pod_uid: &str, container: &str, line: &str) {
        let line = (jiff::Timestamp::now(), line.to_string());
        self.with(pod_uid, container, |r| r.current.lines.push(line));
    }

    /// The current instance exits with `code`; the kubelet restarts it after the back-off.
    pub fn exit(&self, pod_uid: &str, container: &str, code: i32) {
        self.with(pod_uid, container, |r| {
            let now = now_ms();
            r.current.exit = Some((code, now));
            r.restart_at_ms = Some(now + backoff_for(r.restarts).as_millis() as i64);
        });
    }

    /// The container's state now, if the runtime knows it.
    pub fn view(&self, pod_uid: &str, container: &str) -> Option<ContainerView> {
        if !self.knows(pod_uid, container) {
            return None;
        }
        Some(self.with(pod_uid, container, |r| {
            let now = now_ms();
            let waiting = r.current.exit.is_some();
            ContainerView {
                restarts: r.restarts,
                running_since: (!waiting).then(|| rfc3339(r.current.started_ms)),
                backoff: r
                    .restart_at_ms
                    .map(|at| Duration::from_millis((at - now).max(0) as u64)),
                backoff_total: backoff_for(r.restarts),
                last_terminated: if waiting {
                    terminated(&r.current)
                } else {
                    r.previous.as_ref().and_then(terminated)
                },
            }
        }))
    }

    /// The log of the latest instance (`previous`: the one before), one line per entry;
    /// `timestamps` prefixes each line with when it was printed, as the kubelet does for
    /// `kubectl logs --timestamps` (RFC 3339 with nanoseconds, then a space).
    pub fn logs(
        &self,
        pod_uid: &str,
        container: &str,
        previous: bool,
        timestamps: bool,
    ) -> Option<String> {
        if !self.knows(pod_uid, container) {
            return if previous { None } else { Some(String::new()) };
        }
        self.with(pod_uid, container, |r| {
            let inst = if previous {
                r.previous.as_ref()?
            } else {
                &r.current
            };
            Some(
                inst.lines
                    .iter()
                    .map(|(at, line)| match timestamps {
                        true => format!("{} {line}\n", rfc3339_nano(*at)),
                        false => format!("{line}\n"),
                    })
                    .collect(),
            )
        })
    }

    /// Forgets a pod's containers (the pod is gone).
    pub fn forget(&self, pod_uid: &str) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(uid, _), _| uid != pod_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_waits_out_the_back_off_and_keeps_the_previous_log() {
        let rt = Runtime::default();
        rt.log("p", "c", "starting");
        assert_eq!(rt.running("p", "c"), Some(0));
        rt.log("p", "c", "cannot read the keys");
        rt.exit("p", "c", 1);
        // The first restart is immediate.
        assert_eq!(rt.running("p", "c"), Some(1));
        assert_eq!(
            rt.logs("p", "c", true, false).expect("previous"),
            "starting\ncannot read the keys\n"
        );
        rt.log("p", "c", "cannot read the keys");
        rt.exit("p", "c", 1);
        assert_eq!(rt.running("p", "c"), None);
        let v = rt.view("p", "c").expect("known");
        assert!(v.running_since.is_none());
        assert_eq!(v.restarts, 1);
        assert_eq!(v.backoff_total, Duration::from_secs(10));
        assert_eq!(v.last_terminated.expect("ended").exit_code, 1);
        assert_eq!(
            rt.logs("p", "c", false, false).expect("log"),
            "cannot read the keys\n"
        );
        assert_eq!(backoff_for(2), Duration::from_secs(20));
        assert_eq!(backoff_for(9), BACKOFF_MAX);
    }

    #[test]
    fn timestamped_logs_prefix_each_line_as_the_kubelet_does() {
        let rt = Runtime::default();
        let before = jiff::Timestamp::now();
        rt.log("p", "c", "vault-unsealer: vault is unsealed");
        let log = rt.logs("p", "c", false, true).expect("log");
        let (stamp, line) = log.trim_end().split_once(' ').expect("stamp, space, line");
        assert_eq!(line, "vault-unsealer: vault is unsealed");
        let at: jiff::Timestamp = stamp.parse().expect("RFC 3339");
        assert!(at >= before && at <= jiff::Timestamp::now());
        assert_eq!(
            stamp.len(),
            "2026-12-03T11:02:03.123456789Z".len(),
            "{stamp}"
        );
    }
}
