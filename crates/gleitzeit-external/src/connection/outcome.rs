//! What a connect attempt is and how it can end: its identity, the failures that decide what
//! happens next, and the backoff between attempts.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Why a connect attempt did not produce a ready session.
#[derive(Debug)]
pub(super) enum Failure {
    /// Unreachable, refused for a passing reason, too slow: try again after a backoff.
    Transient(String),
    /// The handshake failed: the instance could not prove it holds the token, or refused this
    /// worker's proof.
    Auth(String),
    /// Wrong protocol version or wrong service.
    Misconfigured(String),
}

/// Capped exponential backoff with jitter, so instances of a fleet do not reconnect in step.
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    pub(super) fn reset(&mut self) {
        self.next = self.min;
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        // 75%–100% of the nominal delay.
        let factor = rand::random_range(0.75..=1.0);
        base.mul_f64(factor).max(self.min.min(base))
    }
}

/// One connect attempt's identity: its session id, the nonce sent in the connect `auth`, and
/// whether its handshake has completed (answers are dropped until then).
pub(super) struct Attempt {
    pub(super) id: u64,
    pub(super) nonce: String,
    pub(super) verified: Arc<AtomicBool>,
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        let nominal = [100u64, 200, 400, 400, 400];
        for (d, n) in delays.iter().zip(nominal) {
            let n = Duration::from_millis(n);
            assert!(*d <= n && *d >= n.mul_f64(0.75), "{d:?} vs nominal {n:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
