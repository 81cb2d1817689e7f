//! Progress printers: subscribers that render [`RunEvent`]s for people (TTY or plain lines) or
//! machines (JSON lines), plus the final summary.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::machine::{EventDoc, end_name};
use crate::engine::{
    Phase, RunEvent, RunReport, RunStatus, StepEnd, StepId, Subscriber, SubscriberError,
};

/// Waits longer than this show their elapsed time.
const LONG_WAIT: Duration = Duration::from_secs(5);

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
        let line = serde_json::to_string(&EventDoc::new(event)).unwrap_or_default();
        ignore_io(writeln!(self.out, "{line}").and_then(|()| self.out.flush()))
    }
}

/// Plain lines, for logs and pipes (no cursor movement).
pub struct PlainLines<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> PlainLines<W> {
    /// Lines to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
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
            } if *elapsed >= LONG_WAIT => {
                format!("  {step}: {message} ({})", secs(*elapsed))
            }
            RunEvent::StepProgress { step, message, .. } => format!("  {step}: {message}"),
            RunEvent::StepRetrying { step, .. } => format!("  {step}: {}", retrying(event)),
            RunEvent::StepFinished(r) => {
                let what = match (r.end, r.changed) {
                    (StepEnd::Done, true) => "changed",
                    (StepEnd::Done, false) => "unchanged",
                    (end, _) => end_name(end),
                };
                match &r.error {
                    Some(e) => format!("  {}: {what} after {}: {e}", r.step, secs(r.duration)),
                    None => format!("  {}: {what} ({})", r.step, secs(r.duration)),
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
    status_drawn: bool,
}

/// Live progress on a terminal (stderr): finished steps scroll by, a status line shows the
/// running steps with elapsed time. Call [`TtyProgress::tick`] periodically to refresh it.
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
    if state.status_drawn {
        let _ = write!(out, "\r\x1b[2K");
        state.status_drawn = false;
    }
}

fn draw_status(state: &mut TtyState, out: &mut impl Write) {
    clear_status(state, out);
    let Some(phase) = state.phase else { return };
    if state.running.is_empty() {
        return;
    }
    let width = terminal_width();
    let parts: Vec<String> = state
        .running
        .iter()
        .map(|(id, (since, msg))| {
            let elapsed = since.elapsed();
            match msg {
                Some(m) if elapsed >= LONG_WAIT => format!("{id} ({}: {m})", secs(elapsed)),
                _ => format!("{id} ({})", secs(elapsed)),
            }
        })
        .collect();
    let mut line = format!(
        "  [{}/5 {phase}] running: {}",
        phase.number(),
        parts.join(", ")
    );
    if line.chars().count() > width {
        line = line
            .chars()
            .take(width.saturating_sub(1))
            .collect::<String>()
            + "…";
    }
    let _ = write!(out, "{line}");
    let _ = out.flush();
    state.status_drawn = true;
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
                let (mark, what) = match (r.end, r.changed) {
                    (StepEnd::Done, true) => ("\x1b[32m✓\x1b[0m", "changed"),
                    (StepEnd::Done, false) => ("\x1b[32m✓\x1b[0m", "unchanged"),
                    (StepEnd::Skipped, _) => ("\x1b[36m=\x1b[0m", "verified, not re-applied"),
                    (StepEnd::Failed, _) => ("\x1b[31m✗\x1b[0m", "failed"),
                    (StepEnd::Interrupted, _) => ("\x1b[33m■\x1b[0m", "interrupted"),
                };
                let _ = writeln!(out, "  {mark} {} {what} ({})", r.step, secs(r.duration));
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

/// The end-of-run summary: changed / unchanged / failed counts and time per phase.
///
/// # Errors
/// IO errors from `out`.
pub fn render_summary(
    report: &RunReport,
    total_steps: usize,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut changed = 0;
    let mut unchanged = 0;
    let mut failed = 0;
    let mut interrupted = 0;
    for s in &report.steps {
        match (s.end, s.changed) {
            (StepEnd::Done, true) => changed += 1,
            (StepEnd::Done, false) | (StepEnd::Skipped, _) => unchanged += 1,
            (StepEnd::Failed, _) => failed += 1,
            (StepEnd::Interrupted, _) => interrupted += 1,
        }
    }
    let not_run = total_steps.saturating_sub(report.steps.len());
    writeln!(out)?;
    write!(
        out,
        "Summary: {changed} changed, {unchanged} unchanged, {failed} failed"
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
            "  vault.ready: waiting for pod vault-0 Ready\n  vault.ready: waiting for pod vault-0 Ready (12.0s)\n  vault.ready: changed (1.5s)\n"
        );
    }

    #[test]
    fn summary_counts_changed_unchanged_failed_and_times_phases() {
        let report = RunReport {
            status: RunStatus::Failed,
            steps: vec![
                finished("a", StepEnd::Done, true, None),
                finished("b", StepEnd::Done, false, None),
                finished("c", StepEnd::Skipped, false, None),
                finished("d", StepEnd::Failed, false, Some("boom")),
            ],
            phases: vec![(Phase::Infrastructure, Duration::from_millis(2500))],
            duration: Duration::from_secs(3),
            root_cause: Some((Some(StepId::new("d")), "boom".into())),
        };
        let mut out = Vec::new();
        render_summary(&report, 6, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Summary: 1 changed, 2 unchanged, 1 failed, 2 not run in 3.0s"),
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
        assert_eq!(
            text,
            "{\"event\":\"step_finished\",\"step\":\"a\",\"status\":\"done\",\"changed\":true,\"duration_ms\":1500}\n{\"event\":\"run_finished\",\"status\":\"succeeded\",\"duration_ms\":7}\n"
        );
    }
}
