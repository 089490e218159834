//! Capped exponential backoff for the worker's loops: after a Redis error a loop waits 100 ms,
//! then twice as long after each further error, never more than 5 s, and starts over after a
//! success. Each wait is jittered down by up to a half so that a fleet of workers that lost the
//! same Redis does not reconnect in lockstep.

use std::time::Duration;

/// First wait after an error.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Backoff state of one loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_MIN, BACKOFF_MAX)
    }
}

impl Backoff {
    /// A backoff from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max: max.max(min),
        }
    }

    /// The un-jittered wait the next call to [`Backoff::next_delay`] is based on.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The wait before the next attempt (in `[base/2, base]`), and doubles the base.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let mut bases = Vec::new();
        for _ in 0..10 {
            bases.push(b.peek());
            let d = b.next_delay();
            let base = *bases.last().unwrap();
            assert!(
                d <= base && d >= base / 2,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        assert_eq!(bases[0], Duration::from_millis(100));
        assert_eq!(bases[1], Duration::from_millis(200));
        assert_eq!(bases[5], Duration::from_millis(3200));
        assert_eq!(bases[6], BACKOFF_MAX);
        assert_eq!(bases[9], BACKOFF_MAX);
        b.reset();
        assert_eq!(b.peek(), BACKOFF_MIN);
    }
}
