//! Retry policy for transient step errors: exponential backoff with jitter, bounded by a
//! number of attempts and by total elapsed time.

use std::time::Duration;

use rand::Rng;

/// How a step's transient failures are retried. Permanent failures are never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_delay: Duration,
    /// Upper bound for a single delay.
    pub max_delay: Duration,
    /// Growth factor per attempt.
    pub multiplier: u32,
    /// No retry is started once this much time has passed since the first attempt began.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts, 1s doubling up to 30s, within 5 minutes: enough for API blips and
    /// "not ready yet", short enough that a real fault surfaces.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            multiplier: 2,
            max_elapsed: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    #[must_use]
    pub const fn none() -> Self {
        Self {
            max_attempts: 1,
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            multiplier: 1,
            max_elapsed: Duration::ZERO,
        }
    }

    /// The backoff ceiling before attempt `next_attempt` (2 = first retry), without jitter.
    #[must_use]
    pub fn ceiling(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(31);
        let factor = self.multiplier.max(1).saturating_pow(exp);
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }

    /// The delay before attempt `next_attempt`, or `None` when the policy says stop.
    ///
    /// Jitter is "equal jitter": half the ceiling plus a random part of the other half, so
    /// concurrent retries spread out but never retry immediately.
    #[must_use]
    pub fn delay(
        &self,
        next_attempt: u32,
        elapsed: Duration,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        if next_attempt > self.max_attempts {
            return None;
        }
        let ceiling = self.ceiling(next_attempt);
        let half = ceiling / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let delay = half
            + Duration::from_nanos(if jitter_ns == 0 {
                0
            } else {
                rng.random_range(0..=jitter_ns)
            });
        (elapsed.saturating_add(delay) <= self.max_elapsed).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            multiplier: 2,
            max_elapsed: Duration::from_secs(60),
        };
        let ceilings: Vec<_> = (2..=7).map(|a| p.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jittered_delay_stays_within_half_and_full_ceiling() {
        let p = RetryPolicy {
            max_attempts: 10,
            ..RetryPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 2..=6 {
            let d = p.delay(attempt, Duration::ZERO, &mut rng).unwrap();
            assert!(
                d >= p.ceiling(attempt) / 2 && d <= p.ceiling(attempt),
                "{d:?}"
            );
        }
    }

    #[test]
    fn stops_after_max_attempts_or_max_elapsed() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert!(p.delay(3, Duration::ZERO, &mut rng).is_some());
        assert!(p.delay(4, Duration::ZERO, &mut rng).is_none());
        assert!(p.delay(2, p.max_elapsed, &mut rng).is_none());
        assert!(
            RetryPolicy::none()
                .delay(2, Duration::ZERO, &mut rng)
                .is_none()
        );
    }
}
