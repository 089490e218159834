//! The reader's linger: after a read that emptied its streams, whether to wait a moment
//! before the next read, so that the entries arriving meanwhile are read and begun together.
//!
//! Why: a worker that keeps up with its producers otherwise waits in the consumer group and
//! is woken for each new entry alone, and every such entry costs Redis three requests that
//! each arrive alone (the fenced begin, the next wait, the completion). On a small Redis host
//! those wake-ups cost more than the scripts (docs/benchmarks.md, "The thirteenth round").
//! A reader that lingers for a couple of milliseconds and then reads takes what came in that
//! time with one script call. It lingers only while entries arrive often enough that one is
//! expected within the linger: a quiet worker waits in the group at once, as without it, so
//! a lone task is not held back and an idle fleet does not poll.

use std::time::Duration;

// The reader's clock (tokio's, so a test with paused time moves it too).
use tokio::time::Instant;

/// How many linger periods make the window over which the arrival rate is counted.
const WINDOW_PERIODS: u32 = 50;

/// Decides after each take how long the reader waits before its next read.
#[derive(Debug)]
pub(super) struct Linger {
    period: Duration,
    window: Duration,
    /// Start of the current counting window.
    start: Instant,
    /// Entries taken in the current window and in the one before it.
    current: usize,
    previous: usize,
}

impl Linger {
    /// A linger of `period` (zero: never).
    pub(super) fn new(period: Duration, now: Instant) -> Linger {
        Linger {
            period,
            window: period * WINDOW_PERIODS,
            start: now,
            current: 0,
            previous: 0,
        }
    }

    /// Records a take of `taken` entries for which the reader held `free` slots, and returns
    /// how long to wait before the next read: the period when the take emptied the streams
    /// (fewer entries than slots, but some) and at least one entry per period arrived over
    /// the last window; zero otherwise (a take that filled every slot waits for a slot
    /// anyway, and one that found nothing waits in the group).
    pub(super) fn after_take(&mut self, now: Instant, taken: usize, free: usize) -> Duration {
        if self.period.is_zero() {
            return Duration::ZERO;
        }
        let age = now.saturating_duration_since(self.start);
        if age >= self.window {
            self.previous = if age >= self.window * 2 {
                0
            } else {
                self.current
            };
            self.current = 0;
            self.start = now;
        }
        self.current += taken;
        let busy = self.current.max(self.previous) >= WINDOW_PERIODS as usize;
        if busy && taken > 0 && taken < free {
            self.period
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_quiet_reader_never_lingers() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * MS, t0);
        // One entry every 10 ms: fewer than one per period.
        for k in 0..100u32 {
            assert_eq!(l.after_take(t0 + 10 * MS * k, 1, 32), Duration::ZERO);
        }
    }

    #[test]
    fn a_busy_reader_lingers_after_emptying_the_streams() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * MS, t0);
        // Three entries per millisecond: busy once 50 have been taken in the window.
        let mut lingered = 0;
        for k in 0..40u32 {
            let pause = l.after_take(t0 + MS * k, 3, 32);
            if k < 16 {
                assert_eq!(pause, Duration::ZERO, "not busy yet at take {k}");
            } else {
                assert_eq!(pause, 2 * MS, "busy at take {k}");
                lingered += 1;
            }
        }
        assert_eq!(lingered, 24);
    }

    #[test]
    fn no_linger_after_a_full_or_an_empty_take() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * MS, t0);
        assert_eq!(l.after_take(t0, 60, 64), 2 * MS);
        // Every slot filled: the next read waits for a slot anyway.
        assert_eq!(l.after_take(t0 + MS, 8, 8), Duration::ZERO);
        // Nothing found: the reader waits in the group.
        assert_eq!(l.after_take(t0 + 2 * MS, 0, 8), Duration::ZERO);
        assert_eq!(l.after_take(t0 + 3 * MS, 1, 8), 2 * MS);
    }

    #[test]
    fn the_rate_is_forgotten_when_arrivals_stop() {
        let t0 = Instant::now();
        let mut l = Linger::new(2 * MS, t0);
        assert_eq!(l.after_take(t0, 60, 64), 2 * MS);
        // Within the next window the previous one still counts...
        assert_eq!(l.after_take(t0 + 150 * MS, 1, 64), 2 * MS);
        // ...two windows after the last busy one it does not.
        assert_eq!(l.after_take(t0 + 400 * MS, 1, 64), Duration::ZERO);
    }

    #[test]
    fn a_zero_period_turns_it_off() {
        let t0 = Instant::now();
        let mut l = Linger::new(Duration::ZERO, t0);
        assert_eq!(l.after_take(t0, 60, 64), Duration::ZERO);
    }
}
