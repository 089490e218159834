//! What one process knows about an endpoint's health: its circuit breaker, a rate limit
//! that is running, whether it was found misconfigured, models it turned out not to have,
//! and its moving response latency.
//!
//! This state is per process: each worker learns it from its own calls. A fleet therefore
//! probes a failed endpoint once per worker, not once in total — cheap, and it needs no
//! coordination.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Weight of the newest sample in the moving latency.
const LATENCY_WEIGHT: f64 = 0.3;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Circuit {
    /// Calls flow.
    Closed,
    /// Failing: no calls until `until`; `cooldown` is the length of this opening.
    Open { until: Instant, cooldown: Duration },
    /// The cool-down passed: one call (the probe) may go; `probing` while it runs.
    HalfOpen { probing: bool, cooldown: Duration },
}

/// Whether an endpoint can take a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Availability {
    /// Yes.
    Ready,
    /// Yes, as the half-open breaker's single probe.
    Probe,
    /// Rate limited: not before this instant.
    NotBefore(Instant),
    /// Breaker open (or its probe out): avoid until this instant while others can serve.
    Cooling(Instant),
    /// Not in this process's life (credentials refused).
    Never,
}

/// When an endpoint can be called again ([`Health::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Now.
    Now,
    /// Not before this instant.
    At(Instant),
    /// Not in this process's life, or not for this model.
    Never,
}

impl Resume {
    /// This resume, for a call that also holds the endpoint back until `until` (its token
    /// budget is too small for the call).
    pub(crate) fn held_until(self, until: Option<Instant>, now: Instant) -> Resume {
        match (self, until.filter(|t| *t > now)) {
            (Resume::Now, Some(t)) => Resume::At(t),
            (Resume::At(a), Some(t)) => Resume::At(a.max(t)),
            (r, _) => r,
        }
    }
}

/// The earliest moment any of several endpoints can be called again: `None` when one can be
/// called now, or none ever.
pub(crate) fn earliest(resumes: impl IntoIterator<Item = Resume>) -> Option<Instant> {
    let mut earliest: Option<Instant> = None;
    for r in resumes {
        match r {
            Resume::Now => return None,
            Resume::At(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
            Resume::Never => {}
        }
    }
    earliest
}

/// One endpoint's health.
#[derive(Debug)]
pub(crate) struct Health {
    pub(crate) circuit: Circuit,
    pub(crate) rate_limited_until: Option<Instant>,
    pub(crate) misconfigured: bool,
    /// Model → until when it is taken as absent here.
    missing: HashMap<String, Instant>,
    /// Moving average of successful calls' total time, ms.
    pub(crate) latency_ms: Option<f64>,
    pub(crate) failures: u64,
}

impl Health {
    pub(crate) fn new() -> Health {
        Health {
            circuit: Circuit::Closed,
            rate_limited_until: None,
            misconfigured: false,
            missing: HashMap::new(),
            latency_ms: None,
            failures: 0,
        }
    }

    /// Whether a call may go now; moves an open breaker whose cool-down passed to half-open.
    pub(crate) fn availability(&mut self, now: Instant) -> Availability {
        if self.misconfigured {
            return Availability::Never;
        }
        if let Some(until) = self.rate_limited_until {
            if until > now {
                return Availability::NotBefore(until);
            }
            self.rate_limited_until = None;
        }
        match self.circuit {
            Circuit::Closed => Availability::Ready,
            Circuit::Open { until, cooldown } => {
                if until > now {
                    Availability::Cooling(until)
                } else {
                    self.circuit = Circuit::HalfOpen {
                        probing: false,
                        cooldown,
                    };
                    Availability::Probe
                }
            }
            Circuit::HalfOpen { probing: false, .. } => Availability::Probe,
            // The probe is out; others wait for its verdict (retry shortly).
            Circuit::HalfOpen { probing: true, .. } => {
                Availability::Cooling(now + Duration::from_millis(100))
            }
        }
    }

    /// When a task that could not be placed is worth routing again for `model` on this
    /// endpoint (read only, unlike [`Health::availability`]): once a rate limit or the
    /// fleet's hold ends and, when its breaker is open, once the cool-down ends; never
    /// (credentials refused, or taken to lack the model); else now. The router itself still
    /// tries an endpoint with an open breaker when nothing else can serve, but a task
    /// deferred after such a call only fails the same way again before the cool-down ends:
    /// an endpoint held back (429) beside one refusing connections would otherwise leave
    /// the deferral no floor and the task spinning through short backoffs.
    pub(crate) fn resume(&self, model: &str, now: Instant) -> Resume {
        if self.misconfigured || self.missing.get(model).is_some_and(|t| *t > now) {
            return Resume::Never;
        }
        let held = self.rate_limited_until.filter(|t| *t > now);
        let cooling = match self.circuit {
            Circuit::Open { until, .. } if until > now => Some(until),
            _ => None,
        };
        match (held, cooling) {
            (Some(a), Some(b)) => Resume::At(a.max(b)),
            (Some(t), None) | (None, Some(t)) => Resume::At(t),
            (None, None) => Resume::Now,
        }
    }

    /// Whether the endpoint is taken to lack `model` right now.
    pub(crate) fn lacks(&mut self, model: &str, now: Instant) -> bool {
        match self.missing.get(model) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.missing.remove(model);
                false
            }
            None => false,
        }
    }

    /// The call about to run is the half-open probe.
    pub(crate) fn start_probe(&mut self) {
        if let Circuit::HalfOpen { cooldown, .. } = self.circuit {
            self.circuit = Circuit::HalfOpen {
                probing: true,
                cooldown,
            };
        }
    }

    /// The endpoint answered (any answer that is not a connection or server fault).
    pub(crate) fn answered(&mut self) {
        self.circuit = Circuit::Closed;
    }

    /// A successful call and its total time.
    pub(crate) fn succeeded(&mut self, total_ms: u64) {
        self.answered();
        let sample = total_ms as f64;
        self.latency_ms = Some(match self.latency_ms {
            None => sample,
            Some(avg) => avg + LATENCY_WEIGHT * (sample - avg),
        });
    }

    /// A connection or server fault: open the breaker for `base` (doubled for each
    /// consecutive opening, up to `max`).
    pub(crate) fn trip(&mut self, now: Instant, base: Duration, max: Duration) {
        self.failures += 1;
        let cooldown = match self.circuit {
            Circuit::Closed => base,
            Circuit::Open { cooldown, .. } | Circuit::HalfOpen { cooldown, .. } => {
                (cooldown * 2).min(max)
            }
        };
        self.circuit = Circuit::Open {
            until: now + cooldown,
            cooldown,
        };
    }

    /// A 429: no calls until `until`.
    pub(crate) fn rate_limit(&mut self, until: Instant) {
        self.answered();
        self.rate_limited_until = Some(until);
    }

    /// The fleet holds the endpoint back until `until` (another worker saw a rate limit):
    /// like a rate limit seen here, without counting as an answer, and never shortening a
    /// hold this process already knows.
    pub(crate) fn hold(&mut self, until: Instant) {
        if self.rate_limited_until.is_none_or(|t| t < until) {
            self.rate_limited_until = Some(until);
        }
    }

    /// Credentials refused. Returns whether this is news (so it is logged once).
    pub(crate) fn misconfigure(&mut self) -> bool {
        !std::mem::replace(&mut self.misconfigured, true)
    }

    /// The endpoint does not have `model`; skip it for that model until `until`.
    pub(crate) fn missing_model(&mut self, model: &str, until: Instant) {
        self.answered();
        self.missing.insert(model.to_owned(), until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = Health::new();
        assert_eq!(h.availability(t0), Availability::Ready);
        h.trip(t0, s, Duration::from_secs(3));
        assert_eq!(h.availability(t0), Availability::Cooling(t0 + s));
        assert_eq!(h.availability(t0 + s), Availability::Probe);
        h.start_probe();
        assert!(matches!(h.availability(t0 + s), Availability::Cooling(_)));
        // The probe failed: open again, twice as long.
        h.trip(t0 + s, s, Duration::from_secs(3));
        assert_eq!(h.availability(t0 + s), Availability::Cooling(t0 + 3 * s));
        // Capped.
        h.trip(t0 + 3 * s, s, Duration::from_secs(3));
        assert_eq!(
            h.availability(t0 + 3 * s),
            Availability::Cooling(t0 + 6 * s)
        );
        assert_eq!(h.availability(t0 + 6 * s), Availability::Probe);
        h.start_probe();
        h.succeeded(10);
        assert_eq!(h.availability(t0 + 6 * s), Availability::Ready);
        assert_eq!(h.latency_ms, Some(10.0));
        h.succeeded(20);
        assert_eq!(h.latency_ms, Some(13.0));
    }

    #[test]
    fn rate_limits_missing_models_and_misconfiguration() {
        let t0 = Instant::now();
        let mut h = Health::new();
        h.rate_limit(t0 + Duration::from_secs(2));
        assert_eq!(
            h.availability(t0),
            Availability::NotBefore(t0 + Duration::from_secs(2))
        );
        assert_eq!(
            h.availability(t0 + Duration::from_secs(2)),
            Availability::Ready
        );
        h.missing_model("m", t0 + Duration::from_secs(5));
        assert!(h.lacks("m", t0));
        assert!(!h.lacks("other", t0));
        assert!(!h.lacks("m", t0 + Duration::from_secs(5)));
        assert!(h.misconfigure());
        assert!(!h.misconfigure(), "reported once");
        assert_eq!(h.availability(t0), Availability::Never);
    }

    #[test]
    fn resumes_and_the_earliest_of_them() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = Health::new();
        assert_eq!(h.resume("m", t0), Resume::Now);
        // An open breaker: worth routing again once its cool-down ended.
        h.trip(t0, s, s);
        assert_eq!(h.resume("m", t0), Resume::At(t0 + s));
        assert_eq!(h.resume("m", t0 + s), Resume::Now);
        h.rate_limit(t0 + 30 * s);
        assert_eq!(h.resume("m", t0), Resume::At(t0 + 30 * s));
        assert_eq!(h.resume("m", t0 + 30 * s), Resume::Now);
        h.missing_model("m", t0 + 5 * s);
        assert_eq!(h.resume("m", t0), Resume::Never);
        assert_eq!(
            earliest([Resume::At(t0 + 2 * s), Resume::Never, Resume::At(t0 + s)]),
            Some(t0 + s)
        );
        assert_eq!(earliest([Resume::At(t0 + s), Resume::Now]), None);
        assert_eq!(earliest([Resume::Never]), None);
    }
}
