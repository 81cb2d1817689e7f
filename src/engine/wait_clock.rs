//! How long a step spent waiting for conditions, with waits that run side by side counted once.
//!
//! Why not a sum of each wait's time: a step that waits for seven Deployments at once for 10 s
//! waited 10 s, not 70 s, and `waited_ms` is documented as the part of the step's duration spent
//! waiting, so it can never exceed the duration.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The union of a step's wait intervals.
#[derive(Debug, Default)]
pub struct WaitClock {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Waits in progress.
    open: usize,
    /// When the oldest of them began (`Some` while `open > 0`).
    since: Option<Instant>,
    /// Closed time: intervals in which at least one wait was in progress.
    total: Duration,
}

/// One wait in progress; it ends when dropped.
#[must_use = "the wait is counted until this is dropped"]
#[derive(Debug)]
pub struct WaitSpan<'a> {
    clock: &'a WaitClock,
}

impl WaitClock {
    /// Starts counting a wait.
    pub fn open(&self) -> WaitSpan<'_> {
        let mut s = self.lock();
        if s.open == 0 {
            s.since = Some(Instant::now());
        }
        s.open += 1;
        WaitSpan { clock: self }
    }

    /// Time during which at least one wait was in progress, up to now.
    #[must_use]
    pub fn waited(&self) -> Duration {
        let s = self.lock();
        s.total + s.since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for WaitSpan<'_> {
    fn drop(&mut self) {
        let mut s = self.clock.lock();
        s.open = s.open.saturating_sub(1);
        if s.open == 0
            && let Some(since) = s.since.take()
        {
            s.total += since.elapsed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates measurable wait time (not a wait for a condition: the clock is what is tested).
    fn pass(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    #[test]
    fn overlapping_waits_count_once_not_per_wait() {
        let clock = WaitClock::default();
        let wall = Instant::now();
        {
            let _a = clock.open();
            let _b = clock.open();
            let _c = clock.open();
            pass(20);
        }
        let wall = wall.elapsed();
        let waited = clock.waited();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        assert!(
            waited <= wall,
            "three side-by-side waits counted {waited:?} in {wall:?}"
        );
    }

    #[test]
    fn separate_waits_add_up_and_a_running_one_counts_so_far() {
        let clock = WaitClock::default();
        drop({
            let a = clock.open();
            pass(5);
            a
        });
        let first = clock.waited();
        assert!(first >= Duration::from_millis(5), "{first:?}");
        let _b = clock.open();
        pass(5);
        assert!(clock.waited() >= first + Duration::from_millis(5));
    }

    #[test]
    fn no_wait_is_zero() {
        assert_eq!(WaitClock::default().waited(), Duration::ZERO);
    }
}
