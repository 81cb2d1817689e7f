//! Progress printers: subscribers that render [`RunEvent`]s for people (TTY or plain lines) or
//! machines (JSON lines), plus the final summary.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::machine::{EventLine, end_name};
use crate::engine::{
    Phase, RunEvent, RunReport, RunStatus, StepEnd, StepId, StepReport, Subscriber, SubscriberError,
};

/// Waits longer than this show their elapsed time.
const LONG_WAIT: Duration = Duration::from_secs(5);

/// How a wait's progress message begins (`waiting for <object> <condition>: <last seen>`, as
/// the steps' wait helper and their polls word it): only those are throttled in plain mode.
pub const WAIT_PREFIX: &str = "waiting for ";

/// Plain mode repeats an unchanged wait message at most this often (with the elapsed
/// time), so a CI log shows a long wait as a few lines, not one per tick.
pub const PLAIN_REPEAT: Duration = Duration::from_secs(10);

/// How a finished `done` step reads: `changed`, `unchanged` or `ready` (a wait or check that
/// held), with the time it spent waiting when that is worth saying.
fn done_text(r: &StepReport) -> String {
    let what = super::machine::outcome_name(r).unwrap_or("done");
    if r.waited >= Duration::from_millis(100) {
        format!("{what} ({}, waited {})", secs(r.duration), secs(r.waited))
    } else {
        format!("{what} ({})", secs(r.duration))
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Short delays (backoffs) read better in milliseconds.
fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        secs(d)
    }
}

fn steps(n: usize) -> String {
    if n == 1 {
        "1 step".to_owned()
    } else {
        format!("{n} steps")
    }
}

fn ignore_io(_: io::Result<()>) -> Result<(), SubscriberError> {
    // Output is best-effort: a closed terminal must not abort a bootstrap half-way.
    Ok(())
}

/// One event per line as JSON on a writer (stdout for `--output json`).
pub struct JsonLines<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> JsonLines<W> {
    /// Lines to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write + Send> Subscriber for JsonLines<W> {
    fn on_event(&mut self, event: &RunEvent) -> Result<(), SubscriberError> {
        let line = serde_json::to_string(&EventLine::now(event)).unwrap_or_default();
        ignore_io(writeln!(self.out, "{line}").and_then(|()| self.out.flush()))
    }
}

/// Plain lines, for logs and pipes (no cursor movement). A wait's progress ([`WAIT_PREFIX`]) is
/// printed when its message changes (a new status or reason), and an unchanged one at most
/// every [`PLAIN_REPEAT`], with the elapsed time; other progress is printed as it comes.
pub struct PlainLines<W: Write + Send> {
    out: W,
    /// Per running step: the last progress message printed and the step's elapsed time then.
    shown: BTreeMap<StepId, (String, Duration)>,
}

impl<W: Write + Send> PlainLines<W> {
    /// Lines to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            shown: BTreeMap::new(),
        }
    }

    /// The line for a progress message, or `None` when it repeats the last one too soon.
    fn progress(&mut self, step: &StepId, message: &str, elapsed: Duration) -> Option<String> {
        if !message.starts_with(WAIT_PREFIX) {
            // Not a wait (an object created, a line of Terraform's output): every one counts.
            self.shown.remove(step);
            return Some(if elapsed >= LONG_WAIT {
                format!("  {step}: {message} ({})", secs(elapsed))
            } else {
                format!("  {step}: {message}")
            });
        }
        let repeat = match self.shown.get(step) {
            Some((last, at)) if last == message => {
                if elapsed.saturating_sub(*at) < PLAIN_REPEAT {
                    return None;
                }
                true
            }
            _ => false,
        };
        self.shown
            .insert(step.clone(), (message.to_owned(), elapsed));
        Some(if repeat {
            format!("  {step}: still {message} ({})", secs(elapsed))
        } else if elapsed >= LONG_WAIT {
            format!("  {step}: {message} ({})", secs(elapsed))
        } else {
            format!("  {step}: {message}")
        })
    }
}

impl<W: Write + Send> Subscriber for PlainLines<W> {
    fn on_event(&mut self, event: &RunEvent) -> Result<(), SubscriberError> {
        let line = match event {
            RunEvent::RunStarted {
                cluster, steps: n, ..
            } => {
                format!("cluster {cluster}: {}", steps(*n))
            }
            RunEvent::PhaseStarted { phase, steps: n } => {
                format!("phase {}/5 {phase}: {}", phase.number(), steps(*n))
            }
            RunEvent::StepStarted { step, attempt, .. } if *attempt > 1 => {
                format!("  {step}: attempt {attempt}")
            }
            RunEvent::StepStarted { step, .. } => format!("  {step}: started"),
            RunEvent::StepVerifying { step } => {
                format!("  {step}: verifying (done in an earlier run)")
            }
            RunEvent::StepVerifyFailed { step, reason } => {
                format!("  {step}: no longer holds ({reason}); applying again")
            }
            RunEvent::StepProgress {
                step,
                message,
                elapsed,
            } => match self.progress(step, message, *elapsed) {
                Some(line) => line,
                None => return Ok(()),
            },
            RunEvent::StepRetrying { step, .. } => format!("  {step}: {}", retrying(event)),
            RunEvent::StepFinished(r) => {
                self.shown.remove(&r.step);
                match (&r.error, r.end) {
                    (Some(e), end) => format!(
                        "  {}: {} after {}: {e}",
                        r.step,
                        end_name(end),
                        secs(r.duration)
                    ),
                    (None, StepEnd::Done) => format!("  {}: {}", r.step, done_text(r)),
                    (None, end) => {
                        format!("  {}: {} ({})", r.step, end_name(end), secs(r.duration))
                    }
                }
            }
            RunEvent::PhaseFinished {
                phase,
                duration,
                complete,
            } => format!(
                "phase {phase} {} in {}",
                if *complete { "complete" } else { "stopped" },
                secs(*duration)
            ),
            RunEvent::Warning { message } => format!("warning: {message}"),
            RunEvent::RunFinished { .. } => return Ok(()),
        };
        ignore_io(writeln!(self.out, "{line}"))
    }
}

#[derive(Debug, Default)]
struct TtyState {
    phase: Option<Phase>,
    running: BTreeMap<StepId, (Instant, Option<String>)>,
    /// Lines of the live block currently on screen (the cursor is at the end of the last one).
    status_lines: usize,
}

/// Live progress on a terminal (stderr): finished steps scroll by; below them one live line per
/// running step shows its elapsed time and what it is waiting for. Call [`TtyProgress::tick`]
/// periodically to refresh it.
#[derive(Debug, Clone, Default)]
pub struct TtyProgress {
    state: Arc<Mutex<TtyState>>,
}

impl TtyProgress {
    /// A printer drawing on stderr.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The subscriber half.
    #[must_use]
    pub fn subscriber(&self) -> Box<dyn Subscriber> {
        Box::new(self.clone())
    }

    /// Redraw the status line (elapsed times move on even without events).
    pub fn tick(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut err = io::stderr().lock();
        draw_status(&mut state, &mut err);
    }
}

fn clear_status(state: &mut TtyState, out: &mut impl Write) {
    if state.status_lines > 0 {
        let _ = write!(out, "\r");
        if state.status_lines > 1 {
            let _ = write!(out, "\x1b[{}A", state.status_lines - 1);
        }
        let _ = write!(out, "\x1b[J");
        state.status_lines = 0;
    }
}

/// The live block: one line per running step, each cut to the terminal's width.
fn status_lines(state: &TtyState, width: usize) -> Vec<String> {
    let Some(phase) = state.phase else {
        return Vec::new();
    };
    state
        .running
        .iter()
        .map(|(id, (since, msg))| {
            let elapsed = since.elapsed();
            let mut line = match msg {
                Some(m) => format!(
                    "  [{}/5 {phase}] {id} {}: {m}",
                    phase.number(),
                    secs(elapsed)
                ),
                None => format!("  [{}/5 {phase}] {id} {}", phase.number(), secs(elapsed)),
            };
            if line.chars().count() > width {
                line = line
                    .chars()
                    .take(width.saturating_sub(1))
                    .collect::<String>()
                    + "…";
            }
            line
        })
        .collect()
}

fn draw_status(state: &mut TtyState, out: &mut impl Write) {
    clear_status(state, out);
    let lines = status_lines(state, terminal_width());
    if lines.is_empty() {
        return;
    }
    let _ = write!(out, "{}", lines.join("\n"));
    let _ = out.flush();
    state.status_lines = lines.len();
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

impl Subscriber for TtyProgress {
    fn on_event(&mut self, event: &RunEvent) -> Result<(), SubscriberError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = io::stderr().lock();
        clear_status(&mut state, &mut out);
        match event {
            RunEvent::PhaseStarted { phase, steps } => {
                state.phase = Some(*phase);
                let _ = writeln!(
                    out,
                    "\x1b[1mPhase {}/5: {phase}\x1b[0m ({steps} steps)",
                    phase.number()
                );
            }
            RunEvent::StepStarted { step, attempt, .. } => {
                if *attempt == 1 {
                    state.running.insert(step.clone(), (Instant::now(), None));
                }
            }
            RunEvent::StepVerifying { step } => {
                state
                    .running
                    .insert(step.clone(), (Instant::now(), Some("verifying".into())));
            }
            RunEvent::StepVerifyFailed { step, reason } => {
                let _ = writeln!(
                    out,
                    "  \x1b[33m~\x1b[0m {step}: no longer holds ({reason}); applying again"
                );
            }
            RunEvent::StepProgress { step, message, .. } => {
                if let Some(entry) = state.running.get_mut(step) {
                    entry.1 = Some(message.clone());
                }
            }
            RunEvent::StepRetrying { step, .. } => {
                let _ = writeln!(out, "  \x1b[33m↻\x1b[0m {step}: {}", retrying(event));
            }
            RunEvent::StepFinished(r) => {
                state.running.remove(&r.step);
                let (mark, what) = match r.end {
                    StepEnd::Done => ("\x1b[32m✓\x1b[0m", done_text(r)),
                    StepEnd::Skipped => ("\x1b[36m=\x1b[0m", "verified, not re-applied".into()),
                    StepEnd::Failed => ("\x1b[31m✗\x1b[0m", "failed".into()),
                    StepEnd::Interrupted => ("\x1b[33m■\x1b[0m", "interrupted".into()),
                };
                let what = match r.end {
                    StepEnd::Done => what,
                    _ => format!("{what} ({})", secs(r.duration)),
                };
                let _ = writeln!(out, "  {mark} {} {what}", r.step);
                if let Some(e) = &r.error {
                    let _ = writeln!(out, "      {e}");
                }
            }
            RunEvent::Warning { message } => {
                let _ = writeln!(out, "\x1b[33mwarning:\x1b[0m {message}");
            }
            RunEvent::RunStarted { .. }
            | RunEvent::PhaseFinished { .. }
            | RunEvent::RunFinished { .. } => {}
        }
        draw_status(&mut state, &mut out);
        Ok(())
    }
}

/// What a retry announces: the failed attempt, its error and the backoff.
fn retrying(event: &RunEvent) -> String {
    match event {
        RunEvent::StepRetrying {
            attempt,
            error,
            delay,
            ..
        } => format!(
            "attempt {attempt} failed ({error}); retrying in {}",
            short(*delay)
        ),
        _ => String::new(),
    }
}

/// The end-of-run summary: changed / unchanged / ready / failed counts and time per phase.
///
/// # Errors
/// IO errors from `out`.
pub fn render_summary(
    report: &RunReport,
    total_steps: usize,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut changed = 0;
    let mut ready = 0;
    let mut unchanged = 0;
    let mut failed = 0;
    let mut interrupted = 0;
    for s in &report.steps {
        match (s.end, s.changed) {
            (StepEnd::Done, true) => changed += 1,
            (StepEnd::Done, false) if s.ready => ready += 1,
            (StepEnd::Done, false) | (StepEnd::Skipped, _) => unchanged += 1,
            (StepEnd::Failed, _) => failed += 1,
            (StepEnd::Interrupted, _) => interrupted += 1,
        }
    }
    let not_run = total_steps.saturating_sub(report.steps.len());
    writeln!(out)?;
    write!(
        out,
        "Summary: {changed} changed, {unchanged} unchanged, {ready} ready, {failed} failed"
    )?;
    if interrupted > 0 {
        write!(out, ", {interrupted} interrupted")?;
    }
    if not_run > 0 {
        write!(out, ", {not_run} not run")?;
    }
    writeln!(out, " in {}", secs(report.duration))?;
    for (phase, d) in &report.phases {
        writeln!(out, "  {:<16} {}", phase.name(), secs(*d))?;
    }
    match report.status {
        RunStatus::Succeeded => writeln!(out, "Result: succeeded")?,
        RunStatus::Failed => {
            match &report.root_cause {
                Some((Some(step), msg)) => writeln!(out, "Result: failed at {step}: {msg}")?,
                Some((None, msg)) => writeln!(out, "Result: failed: {msg}")?,
                None => writeln!(out, "Result: failed")?,
            }
            writeln!(
                out,
                "Fix the cause, then continue with `kubestrap apply --resume`."
            )?;
        }
        RunStatus::Interrupted => {
            writeln!(
                out,
                "Result: interrupted; continue with `kubestrap apply --resume`."
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StepReport;

    fn finished(id: &str, end: StepEnd, changed: bool, error: Option<&str>) -> StepReport {
        StepReport {
            step: StepId::new(id),
            kind: "probe",
            phase: Phase::Infrastructure,
            end,
            changed,
            ready: false,
            waited: Duration::ZERO,
            attempts: 1,
            duration: Duration::from_millis(1500),
            outputs: serde_json::Value::Null,
            error: error.map(str::to_owned),
            actions: Vec::new(),
        }
    }

    #[test]
    fn plain_lines_show_elapsed_time_only_on_long_waits() {
        let mut out = Vec::new();
        let mut p = PlainLines::new(&mut out);
        let progress = |secs| RunEvent::StepProgress {
            step: StepId::new("vault.ready"),
            message: "waiting for pod vault-0 Ready".into(),
            elapsed: Duration::from_secs(secs),
        };
        p.on_event(&progress(1)).unwrap();
        p.on_event(&progress(12)).unwrap();
        p.on_event(&RunEvent::StepFinished(finished(
            "vault.ready",
            StepEnd::Done,
            true,
            None,
        )))
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "  vault.ready: waiting for pod vault-0 Ready\n  vault.ready: still waiting for pod vault-0 Ready (12.0s)\n  vault.ready: changed (1.5s)\n"
        );
    }

    /// The issue-14 bug: a wait polled every 200 ms printed `waiting for Vault unsealed: Sealed`
    /// once per tick off a terminal. Now: one line per change of status, and an unchanged one at
    /// most every 10 s, with the elapsed time.
    #[test]
    fn plain_wait_prints_one_line_per_status_change_or_ten_seconds() {
        let mut out = Vec::new();
        let mut p = PlainLines::new(&mut out);
        let step = StepId::new("verify.vault");
        // 30 s of ticks every 200 ms: Sealed for 25 s, then Unsealed.
        for tick in 0..150u64 {
            let status = if tick < 125 { "Sealed" } else { "Unsealed" };
            p.on_event(&RunEvent::StepProgress {
                step: step.clone(),
                message: format!("waiting for Vault unsealed: {status}"),
                elapsed: Duration::from_millis(tick * 200),
            })
            .unwrap();
        }
        // Other progress (Terraform's output relayed) is never dropped, repeated or not.
        for _ in 0..2 {
            p.on_event(&RunEvent::StepProgress {
                step: step.clone(),
                message: "terraform: ".into(),
                elapsed: Duration::from_secs(31),
            })
            .unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "  verify.vault: waiting for Vault unsealed: Sealed\n\
             \x20 verify.vault: still waiting for Vault unsealed: Sealed (10.0s)\n\
             \x20 verify.vault: still waiting for Vault unsealed: Sealed (20.0s)\n\
             \x20 verify.vault: waiting for Vault unsealed: Unsealed (25.0s)\n\
             \x20 verify.vault: terraform:  (31.0s)\n\
             \x20 verify.vault: terraform:  (31.0s)\n"
        );
    }

    /// A terminal shows one live line per running step (not one line joining them all), each
    /// cut to the width, and redrawing moves up over every one of them.
    #[test]
    fn tty_keeps_one_live_line_per_running_step() {
        let mut state = TtyState {
            phase: Some(Phase::Infrastructure),
            ..TtyState::default()
        };
        state.running.insert(
            StepId::new("vault.ready"),
            (
                Instant::now(),
                Some("waiting for HelmRelease vault/vault Ready=True: Progressing".into()),
            ),
        );
        state
            .running
            .insert(StepId::new("eso.ready"), (Instant::now(), None));
        let lines = status_lines(&state, 60);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("  [1/5 infrastructure] eso.ready 0."),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("  [1/5 infrastructure] vault.ready 0."),
            "{lines:?}"
        );
        assert!(
            lines[1].ends_with('…') && lines[1].chars().count() == 60,
            "{lines:?}"
        );
        let mut out = Vec::new();
        state.status_lines = lines.len();
        clear_status(&mut state, &mut out);
        assert_eq!(out, b"\r\x1b[1A\x1b[J");
        assert_eq!(state.status_lines, 0);
    }

    #[test]
    fn ready_steps_read_as_ready_with_their_waiting_time() {
        let mut out = Vec::new();
        let mut p = PlainLines::new(&mut out);
        let mut r = finished("vault.ready", StepEnd::Done, false, None);
        r.ready = true;
        r.waited = Duration::from_millis(1200);
        p.on_event(&RunEvent::StepFinished(r)).unwrap();
        p.on_event(&RunEvent::StepFinished(finished(
            "vault.init",
            StepEnd::Done,
            false,
            None,
        )))
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  vault.ready: ready (1.5s, waited 1.2s)\n  vault.init: unchanged (1.5s)\n"
        );
    }

    #[test]
    fn summary_counts_changed_unchanged_failed_and_times_phases() {
        let report = RunReport {
            status: RunStatus::Failed,
            steps: vec![
                finished("a", StepEnd::Done, true, None),
                finished("b", StepEnd::Done, false, None),
                StepReport {
                    ready: true,
                    ..finished("r", StepEnd::Done, false, None)
                },
                finished("c", StepEnd::Skipped, false, None),
                finished("d", StepEnd::Failed, false, Some("boom")),
            ],
            phases: vec![(Phase::Infrastructure, Duration::from_millis(2500))],
            duration: Duration::from_secs(3),
            root_cause: Some((Some(StepId::new("d")), "boom".into())),
        };
        let mut out = Vec::new();
        render_summary(&report, 7, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Summary: 1 changed, 2 unchanged, 1 ready, 1 failed, 2 not run in 3.0s"),
            "{text}"
        );
        assert!(text.contains("  infrastructure   2.5s"), "{text}");
        assert!(text.contains("Result: failed at d: boom"), "{text}");
    }

    #[test]
    fn json_lines_are_one_document_per_event() {
        let mut out = Vec::new();
        let mut j = JsonLines::new(&mut out);
        j.on_event(&RunEvent::StepFinished(finished(
            "a",
            StepEnd::Done,
            true,
            None,
        )))
        .unwrap();
        j.on_event(&RunEvent::RunFinished {
            status: RunStatus::Succeeded,
            duration: Duration::from_millis(7),
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        // Each line ends with the time it was emitted; the rest is the event's own fields.
        let mut stamps = Vec::new();
        let events: Vec<String> = text
            .lines()
            .map(|line| {
                let (event, at) = line.rsplit_once(",\"at\":\"").expect(line);
                let at = at.strip_suffix("\"}").expect(line);
                stamps.push(at.parse::<jiff::Timestamp>().expect(at));
                format!("{event}}}")
            })
            .collect();
        assert_eq!(
            events,
            [
                "{\"event\":\"step_finished\",\"step\":\"a\",\"status\":\"done\",\"changed\":true,\"outcome\":\"changed\",\"duration_ms\":1500,\"waited_ms\":0}",
                "{\"event\":\"run_finished\",\"status\":\"succeeded\",\"duration_ms\":7}",
            ]
        );
        assert!(stamps[0] <= stamps[1], "{stamps:?}");
        assert!(text.ends_with('\n'));
    }
}
