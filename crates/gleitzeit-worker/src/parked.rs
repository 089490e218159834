//! Slot leases kept for the next call: the bookkeeping behind [`crate::bridge::RedisSlots`]'s
//! lease reuse.
//!
//! Taking a fleet-wide slot is a script call (`lease_acquire.lua`) and returning it a `ZREM`:
//! two Redis round trips per LLM call, about a third of what a task costs Redis when calls
//! are short and many. A worker that is busy takes its next call on the same endpoint a few
//! milliseconds after returning a slot, so instead of returning a slot after a plain answer
//! the worker *parks* it: the lease stays in Redis (counted by every worker, as before) and
//! the next call of this process that would take a slot there takes the parked lease
//! without a round trip. A parked lease that nobody reuses within the linger goes back to
//! the fleet (the sweep the store starts for it), so an idle worker holds nothing.
//!
//! What a reused lease does not do is ask the fleet again: holds (rate limits), adapted
//! limits and reported budgets that other workers recorded since the lease was taken are
//! not seen by the reuse. So a lease is reused only while its last real acquisition is
//! recent (the reuse window, at most a quarter of the lease's lifetime, so the router's
//! renewals, every third of it, keep it alive), and only after a plain answer: an answer
//! that reported a budget, one that adapted the limit, an overload, a rate limit and every
//! error return the lease for real. Which candidate a reuse may take follows the pick: the
//! first candidate for an in-order pick (the one the strategy prefers; taking it is what the
//! script would do when it has a free slot, which the parked lease is), any parked candidate
//! for least-loaded (continuing on an endpoint leaves the loads as they were).
//!
//! This module is the pure state (no Redis): which leases are parked, which router lease id
//! stands for which lease in Redis, and what a call may reuse.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest time since a lease's last real acquisition during which it is reused (capped at a
/// quarter of the lease's lifetime): how stale the fleet's holds and limits may be for a
/// reusing call.
pub const REUSE_WINDOW: Duration = Duration::from_millis(250);

/// A lease in use or parked: its member id in Redis and when the fleet last granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease id the lease was taken under in Redis (the router's id of the call that
    /// took it; later calls that reuse it have ids of their own).
    pub real: String,
    /// When `lease_acquire.lua` granted it.
    pub granted: Instant,
    /// How long after `granted` it may be reused: [`REUSE_WINDOW`], at most a quarter of
    /// the lifetime it was taken for.
    pub window: Duration,
}

#[derive(Debug)]
struct Parked {
    endpoint: String,
    lease: Lease,
    since: Instant,
}

/// What [`Lot::take`] decided for one call.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Take {
    /// The candidate index whose parked lease the call now uses.
    pub reused: Option<usize>,
    /// Parked leases on the call's candidates that were not reused: the caller returns
    /// them before it asks the fleet, so that this process never holds a slot it does not
    /// use while it takes another.
    pub returned: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct State {
    parked: Vec<Parked>,
    /// Router lease id -> the lease it uses, for every call holding a slot.
    active: HashMap<String, Lease>,
    /// Set by [`Lot::close`]: nothing is parked any more.
    closed: bool,
}

/// The parked and active leases of one process.
#[derive(Debug)]
pub struct Lot {
    linger: Duration,
    state: Mutex<State>,
}

impl Lot {
    /// A lot that keeps a returned lease for `linger` (zero: never parks).
    pub fn new(linger: Duration) -> Lot {
        Lot {
            linger,
            state: Mutex::new(State::default()),
        }
    }

    /// How long a parked lease waits for a call.
    pub fn linger(&self) -> Duration {
        self.linger
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a few inserts and removals; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `lease` may still serve a call.
    fn fresh(lease: &Lease, now: Instant) -> bool {
        now.saturating_duration_since(lease.granted) < lease.window
    }

    /// For a call under `lease_id` over `candidates` (endpoint names, in the order given):
    /// the parked lease it uses, if one is fresh and the pick allows it (`first_only`: an
    /// in-order pick), and the parked leases on its candidates it must return first.
    pub fn take(&self, candidates: &[&str], first_only: bool, lease_id: &str) -> Take {
        let now = Instant::now();
        let mut st = self.state();
        let mut take = Take::default();
        // Parked leases on the call's candidates, with their candidate index; the others
        // stay parked for calls that name their endpoints.
        let mut mine = Vec::new();
        let mut k = 0;
        while k < st.parked.len() {
            match candidates.iter().position(|c| *c == st.parked[k].endpoint) {
                Some(pos) => mine.push((pos, st.parked.swap_remove(k))),
                None => k += 1,
            }
        }
        let mut keep = Vec::new();
        for (pos, p) in mine {
            let usable = (!first_only || pos == 0)
                && now.saturating_duration_since(p.since) < self.linger
                && Lot::fresh(&p.lease, now);
            if usable && take.reused.is_none() {
                take.reused = Some(pos);
                st.active.insert(lease_id.to_owned(), p.lease);
            } else if usable {
                keep.push(p);
            } else {
                take.returned.push((p.endpoint, p.lease.real));
            }
        }
        match take.reused {
            // More parked leases for the next calls.
            Some(_) => st.parked.extend(keep),
            // The call asks the fleet: nothing of these endpoints stays parked meanwhile.
            None => take
                .returned
                .extend(keep.into_iter().map(|p| (p.endpoint, p.lease.real))),
        }
        take
    }

    /// Records a lease the fleet just granted to the call `lease_id` for `ttl`.
    pub fn granted(&self, lease_id: &str, ttl: Duration) {
        self.state().active.insert(
            lease_id.to_owned(),
            Lease {
                real: lease_id.to_owned(),
                granted: Instant::now(),
                window: REUSE_WINDOW.min(ttl / 4),
            },
        );
    }

    /// The lease id in Redis of the call `lease_id` (itself unless it reuses a lease).
    pub fn real(&self, lease_id: &str) -> String {
        self.state()
            .active
            .get(lease_id)
            .map_or_else(|| lease_id.to_owned(), |l| l.real.clone())
    }

    /// The call `lease_id` ended: its lease, to return to the fleet (`Err`) or parked for
    /// the next call (`Ok`, with when it was parked, for the sweep). A lease is parked only
    /// when `plain` (the answer taught the fleet nothing), the lot is open and the lease is
    /// still fresh enough to be reused.
    pub fn finish(
        &self,
        endpoint: &str,
        lease_id: &str,
        plain: bool,
    ) -> Result<(String, Instant), String> {
        let now = Instant::now();
        let mut st = self.state();
        // A lease the lot does not know (taken before it existed) is never parked.
        let Some(lease) = st.active.remove(lease_id) else {
            return Err(lease_id.to_owned());
        };
        if !plain || st.closed || self.linger.is_zero() || !Lot::fresh(&lease, now) {
            return Err(lease.real);
        }
        let real = lease.real.clone();
        st.parked.push(Parked {
            endpoint: endpoint.to_owned(),
            lease,
            since: now,
        });
        Ok((real, now))
    }

    /// Removes the lease `real` if it is still parked since `since` (the sweep of one
    /// parked lease): `true` when the caller must now return it.
    pub fn expire(&self, real: &str, since: Instant) -> bool {
        let mut st = self.state();
        match st
            .parked
            .iter()
            .position(|p| p.lease.real == real && p.since == since)
        {
            Some(k) => {
                st.parked.swap_remove(k);
                true
            }
            None => false,
        }
    }

    /// Parks nothing from now on and hands back every parked lease (endpoint, lease id) to
    /// return: the worker's drain.
    pub fn close(&self) -> Vec<(String, String)> {
        let mut st = self.state();
        st.closed = true;
        st.parked
            .drain(..)
            .map(|p| (p.endpoint, p.lease.real))
            .collect()
    }

    /// Leases parked now (for tests and the operator's view of one process).
    pub fn parked(&self) -> usize {
        self.state().parked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_plain_answer_parks_the_lease_and_the_next_call_reuses_it_under_its_own_id() {
        let lot = Lot::new(Duration::from_secs(60));
        lot.granted("a1", TTL);
        assert_eq!(lot.real("a1"), "a1");
        let (real, _) = lot.finish("e", "a1", true).unwrap();
        assert_eq!(real, "a1");
        assert_eq!(lot.parked(), 1);

        let take = lot.take(&["e"], true, "a2");
        assert_eq!(take.reused, Some(0));
        assert!(take.returned.is_empty());
        // The second call's renewals and release name the lease taken by the first.
        assert_eq!(lot.real("a2"), "a1");
        assert_eq!(lot.parked(), 0);
        // A second call finds nothing parked.
        assert_eq!(lot.take(&["e"], true, "a3"), Take::default());
    }

    #[test]
    fn only_plain_answers_park_and_a_closed_lot_parks_nothing() {
        let lot = Lot::new(Duration::from_secs(60));
        lot.granted("a1", TTL);
        assert_eq!(lot.finish("e", "a1", false), Err("a1".to_owned()));
        assert_eq!(lot.parked(), 0);

        lot.granted("b1", TTL);
        lot.finish("e", "b1", true).unwrap();
        assert_eq!(lot.close(), vec![("e".to_owned(), "b1".to_owned())]);
        lot.granted("c1", TTL);
        assert_eq!(lot.finish("e", "c1", true), Err("c1".to_owned()));
    }

    #[test]
    fn a_zero_linger_never_parks() {
        let lot = Lot::new(Duration::ZERO);
        lot.granted("a1", TTL);
        assert_eq!(lot.finish("e", "a1", true), Err("a1".to_owned()));
    }

    #[test]
    fn an_in_order_pick_reuses_only_its_first_candidate_and_returns_the_others() {
        let lot = Lot::new(Duration::from_secs(60));
        lot.granted("a1", TTL);
        lot.finish("second", "a1", true).unwrap();
        let take = lot.take(&["first", "second"], true, "a2");
        assert_eq!(take.reused, None);
        assert_eq!(take.returned, vec![("second".to_owned(), "a1".to_owned())]);
        assert_eq!(lot.parked(), 0);
        // A lease on an endpoint the call does not name stays parked.
        lot.granted("b1", TTL);
        lot.finish("other", "b1", true).unwrap();
        assert_eq!(lot.take(&["first"], true, "b2"), Take::default());
        assert_eq!(lot.parked(), 1);
    }

    #[test]
    fn a_least_loaded_pick_reuses_any_candidate_and_leaves_the_rest_parked() {
        let lot = Lot::new(Duration::from_secs(60));
        for (id, ep) in [("a1", "x"), ("b1", "y"), ("c1", "y")] {
            lot.granted(id, TTL);
            lot.finish(ep, id, true).unwrap();
        }
        let take = lot.take(&["z", "y", "x"], false, "d1");
        assert!(matches!(take.reused, Some(1 | 2)));
        // The others wait for the next calls: a busy worker keeps a slot per call in flight.
        assert!(take.returned.is_empty());
        assert_eq!(lot.parked(), 2);
        assert!(lot.take(&["x", "y"], false, "d2").reused.is_some());
        assert!(lot.take(&["x", "y"], false, "d3").reused.is_some());
        assert_eq!(lot.parked(), 0);
    }

    #[test]
    fn a_lease_granted_too_long_ago_is_returned_not_reused() {
        let lot = Lot::new(Duration::from_secs(60));
        // A lifetime without a reuse window (a quarter of it): the lease is never fresh.
        lot.granted("a1", Duration::ZERO);
        assert_eq!(lot.finish("e", "a1", true), Err("a1".to_owned()));
        // A lease reused by the call "b2" keeps the window of its first grant.
        lot.granted("b1", TTL);
        lot.finish("e", "b1", true).unwrap();
        assert_eq!(lot.take(&["e"], true, "b2").reused, Some(0));
        assert_eq!(lot.state().active["b2"].window, REUSE_WINDOW);
    }

    #[test]
    fn the_sweep_removes_only_the_parking_it_was_started_for() {
        let lot = Lot::new(Duration::from_secs(60));
        lot.granted("a1", TTL);
        let (real, since) = lot.finish("e", "a1", true).unwrap();
        // Reused and parked again: the first parking's sweep must leave it alone.
        assert_eq!(lot.take(&["e"], true, "a2").reused, Some(0));
        let (_, again) = lot.finish("e", "a2", true).unwrap();
        if again != since {
            assert!(!lot.expire(&real, since));
            assert_eq!(lot.parked(), 1);
        }
        assert!(lot.expire(&real, again));
        assert_eq!(lot.parked(), 0);
        assert!(!lot.expire(&real, again));
    }
}
