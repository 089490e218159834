//! Retry arithmetic: how many attempts a task gets and how long to wait before the next one.
//!
//! Everything here is pure. The caller supplies the random number, so workers stay testable
//! and the arithmetic can be checked exactly.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_duration;

/// How the delay grows with the number of failed attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// Always `base_delay`.
    Fixed,
    /// `base_delay × failed_attempts`.
    Linear,
    /// `base_delay × 2^(failed_attempts − 1)`.
    #[default]
    Exponential,
}

impl Backoff {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Backoff::Fixed => "fixed",
            Backoff::Linear => "linear",
            Backoff::Exponential => "exponential",
        }
    }
}

/// When and how often a failed task is tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Total attempts including the first; at least 1 (1 means "never retry").
    pub max_attempts: u32,
    /// Growth of the delay.
    pub backoff: Backoff,
    /// Delay after the first failure (before jitter).
    #[serde(with = "serde_duration")]
    pub base_delay: Duration,
    /// Upper bound of any delay.
    #[serde(with = "serde_duration")]
    pub max_delay: Duration,
    /// Spread delays randomly ("equal jitter", see [`RetryPolicy::delay_for`]).
    pub jitter: bool,
    /// How long the task may wait for an endpoint or service that can take it (every one
    /// down, overloaded or rate limited) before it fails. Such waits use no attempt; the
    /// clock starts at the first wait after the last real attempt. Zero: fail at once.
    #[serde(with = "serde_duration")]
    pub wait_limit: Duration,
}

/// The built-in [`RetryPolicy::wait_limit`]: an hour rides out a restart, a deployment or
/// a rate-limit window without holding a task forever.
pub const DEFAULT_WAIT_LIMIT: Duration = Duration::from_secs(3600);

impl Default for RetryPolicy {
    /// The built-in policy: 3 attempts, exponential from 1 s up to 60 s, with jitter; waits
    /// for capacity up to an hour.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            jitter: true,
            wait_limit: DEFAULT_WAIT_LIMIT,
        }
    }
}

impl RetryPolicy {
    /// True when a task that has failed `failed_attempts` times may be attempted again.
    pub fn should_retry(&self, failed_attempts: u32) -> bool {
        failed_attempts < self.max_attempts
    }

    /// The delay before the next attempt of a task that has failed `failed_attempts` times
    /// (`0` is treated as `1`).
    ///
    /// The backoff delay is computed without overflow and capped by `max_delay`. With jitter
    /// the result uses *equal jitter*: half of the capped delay is kept and the other half is
    /// scaled by `random_unit`, giving a delay in `[capped / 2, capped)`. Equal jitter (rather
    /// than full jitter) keeps a lower bound so that a failing endpoint is never hammered by
    /// immediate retries. `random_unit` should be uniform in `[0, 1)`; values outside are
    /// clamped and NaN counts as 0.
    pub fn delay_for(&self, failed_attempts: u32, random_unit: f64) -> Duration {
        let capped = self.backoff_delay(failed_attempts);
        if !self.jitter {
            return capped;
        }
        let r = if random_unit.is_nan() {
            0.0
        } else {
            random_unit.clamp(0.0, 1.0)
        };
        let fixed = capped / 2;
        let span = capped - fixed;
        // `try_from` guards the rounding of huge spans in f64; the result never exceeds `span`.
        let random = Duration::try_from_secs_f64(span.as_secs_f64() * r)
            .unwrap_or(span)
            .min(span);
        fixed + random
    }

    /// The delay before jitter, capped by `max_delay`.
    fn backoff_delay(&self, failed_attempts: u32) -> Duration {
        if self.base_delay.is_zero() {
            return Duration::ZERO;
        }
        let n = failed_attempts.max(1);
        let raw = match self.backoff {
            Backoff::Fixed => Some(self.base_delay),
            Backoff::Linear => self.base_delay.checked_mul(n),
            Backoff::Exponential => 1u32
                .checked_shl(n - 1)
                .and_then(|factor| self.base_delay.checked_mul(factor)),
        };
        // `None` means the product overflowed, which is certainly above the cap.
        raw.map_or(self.max_delay, |d| d.min(self.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff, jitter: bool) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            jitter,
            wait_limit: DEFAULT_WAIT_LIMIT,
        }
    }

    #[test]
    fn builtin_default() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.backoff, Backoff::Exponential);
        assert_eq!(p.base_delay, Duration::from_secs(1));
        assert_eq!(p.max_delay, Duration::from_secs(60));
        assert!(p.jitter);
    }

    #[test]
    fn should_retry_counts_total_attempts() {
        let p = policy(Backoff::Fixed, false);
        assert!(p.should_retry(0));
        assert!(p.should_retry(1));
        assert!(p.should_retry(4));
        assert!(!p.should_retry(5));
        assert!(!p.should_retry(u32::MAX));
        let once = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert!(!once.should_retry(1));
    }

    #[test]
    fn fixed_linear_exponential_without_jitter() {
        let secs = |p: &RetryPolicy, n| p.delay_for(n, 0.5).as_secs();
        let fixed = policy(Backoff::Fixed, false);
        assert_eq!([1, 2, 3, 10].map(|n| secs(&fixed, n)), [1, 1, 1, 1]);
        let linear = policy(Backoff::Linear, false);
        assert_eq!(
            [1, 2, 3, 10, 31].map(|n| secs(&linear, n)),
            [1, 2, 3, 10, 30]
        );
        let exp = policy(Backoff::Exponential, false);
        assert_eq!(
            [1, 2, 3, 4, 5, 6].map(|n| secs(&exp, n)),
            [1, 2, 4, 8, 16, 30]
        );
    }

    #[test]
    fn zero_failed_attempts_counts_as_one() {
        let exp = policy(Backoff::Exponential, false);
        assert_eq!(exp.delay_for(0, 0.0), Duration::from_secs(1));
        let linear = policy(Backoff::Linear, false);
        assert_eq!(linear.delay_for(0, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn huge_attempt_numbers_are_capped_without_overflow() {
        for backoff in [Backoff::Fixed, Backoff::Linear, Backoff::Exponential] {
            let p = RetryPolicy {
                base_delay: Duration::from_secs(u64::MAX / 2),
                max_delay: Duration::MAX,
                ..policy(backoff, false)
            };
            for n in [31, 32, 33, 64, 1000, u32::MAX] {
                assert!(p.delay_for(n, 0.0) <= Duration::MAX);
            }
            let q = policy(backoff, false);
            for n in [32, 33, 64, u32::MAX] {
                let expected = if backoff == Backoff::Fixed { 1 } else { 30 };
                assert_eq!(q.delay_for(n, 0.9).as_secs(), expected, "{backoff:?} {n}");
            }
        }
        let p = RetryPolicy {
            max_delay: Duration::MAX,
            ..policy(Backoff::Exponential, true)
        };
        assert!(p.delay_for(u32::MAX, 0.999_999) <= Duration::MAX);
        assert!(p.delay_for(u32::MAX, 1.0) <= Duration::MAX);
    }

    #[test]
    fn exponential_at_the_shift_boundary() {
        let p = RetryPolicy {
            base_delay: Duration::from_nanos(1),
            max_delay: Duration::MAX,
            ..policy(Backoff::Exponential, false)
        };
        assert_eq!(p.delay_for(32, 0.0), Duration::from_nanos(1 << 31));
        // 2^32 does not fit the u32 factor: treated as overflow, i.e. the cap.
        assert_eq!(p.delay_for(33, 0.0), Duration::MAX);
    }

    #[test]
    fn equal_jitter_stays_in_half_open_range() {
        let p = policy(Backoff::Exponential, true);
        for n in 1..=8 {
            let capped = policy(Backoff::Exponential, false).delay_for(n, 0.0);
            let low = p.delay_for(n, 0.0);
            assert_eq!(low, capped / 2, "attempt {n}");
            for r in [0.1, 0.25, 0.5, 0.75, 0.999_999] {
                let d = p.delay_for(n, r);
                assert!(d >= capped / 2 && d < capped, "attempt {n} r {r}: {d:?}");
            }
            assert!(p.delay_for(n, 1.0) <= capped);
        }
        assert_eq!(p.delay_for(3, 0.5), Duration::from_secs(3));
    }

    #[test]
    fn random_unit_out_of_range_is_clamped() {
        let p = policy(Backoff::Fixed, true);
        assert_eq!(p.delay_for(1, -3.0), Duration::from_millis(500));
        assert_eq!(p.delay_for(1, f64::NAN), Duration::from_millis(500));
        assert_eq!(p.delay_for(1, 7.0), Duration::from_secs(1));
        assert_eq!(p.delay_for(1, f64::INFINITY), Duration::from_secs(1));
    }

    #[test]
    fn zero_base_delay_is_zero() {
        let p = RetryPolicy {
            base_delay: Duration::ZERO,
            ..policy(Backoff::Exponential, true)
        };
        assert_eq!(p.delay_for(1000, 0.7), Duration::ZERO);
    }

    #[test]
    fn cap_below_base_caps() {
        let p = RetryPolicy {
            base_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(2),
            ..policy(Backoff::Fixed, false)
        };
        assert_eq!(p.delay_for(1, 0.0), Duration::from_secs(2));
    }

    #[test]
    fn serde_uses_humantime_and_fills_defaults() {
        let p = policy(Backoff::Linear, false);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"max_attempts": 5, "backoff": "linear", "base_delay": "1s",
                               "max_delay": "30s", "jitter": false, "wait_limit": "1h"})
        );
        assert_eq!(serde_json::from_value::<RetryPolicy>(json).unwrap(), p);
        let partial: RetryPolicy =
            serde_json::from_value(serde_json::json!({"max_attempts": 7, "base_delay": 2}))
                .unwrap();
        assert_eq!(
            partial,
            RetryPolicy {
                max_attempts: 7,
                base_delay: Duration::from_secs(2),
                ..RetryPolicy::default()
            }
        );
    }
}
