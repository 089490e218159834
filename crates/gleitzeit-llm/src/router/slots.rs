//! In-flight slots per endpoint: the [`Slots`] store the router takes them from, and
//! [`LocalSlots`], the store of a single process.
//!
//! The router asks a store for one slot among several candidate endpoints at a time, so a
//! store can choose atomically (a fleet-wide store does it in one Redis script). Slots are
//! leases: they carry an expiry, so a holder that dies without releasing frees them anyway,
//! and long calls renew them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::budget;
use crate::ratelimit::{unix_ms, RateBudget};

/// One endpoint a slot may be taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotCandidate<'a> {
    /// Endpoint name.
    pub endpoint: &'a str,
    /// Most slots held at once; 0 = unlimited (counted, never refused).
    pub max: u32,
}

/// How a store chooses among candidates with a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotPick {
    /// The first candidate, in the order given, with a free slot.
    InOrder,
    /// The candidate with the lowest load (held / max; unlimited endpoints count as
    /// held / 1e6); ties go to the earlier candidate, so the router shuffles first.
    LeastLoaded,
}

/// What [`Slots::acquire_with`] decided, with what it learned about each candidate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotGrant {
    /// Index of the candidate the slot was taken on; `None` when none could take it.
    pub chosen: Option<usize>,
    /// Per candidate: how much longer the fleet holds it back for every call (after a rate
    /// limit, or while its reported request budget is spent: see [`super::budget`]), `None`
    /// when it is not held.
    pub holds: Vec<Option<Duration>>,
    /// Per candidate: how much longer it is held back for this call only, because its
    /// reported token budget is below the call's estimate; `None` when the call fits.
    pub token_waits: Vec<Option<Duration>>,
    /// Per candidate: the concurrency limit the fleet adapted to after overload answers
    /// (below the configured `max`), `None` when it is not adapting.
    pub limits: Vec<Option<u32>>,
}

/// How a call that held a slot ended, as far as the endpoint's fleet-wide state is
/// concerned ([`Slots::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOutcome {
    /// The endpoint answered. `adapting`: its limit is adapted (see [`SlotGrant::limits`]),
    /// so a success raises it (additive increase). `budget`: what the answer's headers said
    /// is left of the endpoint's rate limits, kept for every caller until the resets.
    Answered {
        /// Whether the endpoint's limit is being adapted.
        adapting: bool,
        /// The endpoint's configured limit (0 = none): an adapted limit that grows back to
        /// it is dropped.
        max: u32,
        /// The rate-limit budget the answer reported, if any.
        budget: Option<RateBudget>,
    },
    /// The endpoint said it is overloaded (503 busy, 529): its limit is halved from what
    /// it held (multiplicative decrease), for every worker.
    Overloaded,
    /// The endpoint rate limited the call: every worker holds it back for `wait`.
    RateLimited {
        /// How long (the `Retry-After`, or the configured cool-down).
        wait: Duration,
    },
    /// Anything else: the slot is returned, nothing is learned.
    Other,
}

/// The slot store could not be reached or answered nonsense. Retrying later can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slot store: {message}")]
pub struct SlotError {
    /// What went wrong (never contains a credential).
    pub message: String,
}

/// Where in-flight slots are kept: per process ([`LocalSlots`]) or fleet-wide (the worker
/// keeps them as leases in Redis).
pub trait Slots: Send + Sync + fmt::Debug {
    /// Takes one slot, valid for `ttl`, under `lease_id` on one of `candidates`; returns
    /// the index of the chosen candidate, `None` when all are full.
    fn acquire<'a>(
        &'a self,
        candidates: &'a [SlotCandidate<'a>],
        pick: SlotPick,
        lease_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<usize>, SlotError>>;

    /// Extends a held slot by `ttl` from now; `false` when it had already expired.
    fn renew<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SlotError>>;

    /// Returns a slot.
    fn release<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SlotError>>;

    /// Slots held now on each endpoint.
    fn counts<'a>(&'a self, endpoints: &'a [&'a str])
        -> BoxFuture<'a, Result<Vec<u64>, SlotError>>;
    /// Like [`Slots::acquire`], but skipping candidates the fleet holds back (rate limited,
    /// without the budget left for a call estimated at `tokens`, or at the limit it adapted
    /// to after overload answers) and saying so; the slot taken spends from the chosen
    /// endpoint's budget ([`super::budget`]). The default knows no holds, budgets or
    /// adapted limits.
    fn acquire_with<'a>(
        &'a self,
        candidates: &'a [SlotCandidate<'a>],
        pick: SlotPick,
        lease_id: &'a str,
        ttl: Duration,
        tokens: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, SlotError>> {
        let _ = tokens;
        async move {
            let chosen = self.acquire(candidates, pick, lease_id, ttl).await?;
            Ok(SlotGrant {
                chosen,
                holds: vec![None; candidates.len()],
                token_waits: vec![None; candidates.len()],
                limits: vec![None; candidates.len()],
            })
        }
        .boxed()
    }

    /// Returns a slot and records what the call taught about the endpoint (see
    /// [`SlotOutcome`]). The default only returns the slot.
    fn settle<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
        outcome: SlotOutcome,
    ) -> BoxFuture<'a, Result<(), SlotError>> {
        let _ = outcome;
        self.release(endpoint, lease_id)
    }

    /// Returns every slot the store keeps for later calls (a store that parks returned
    /// slots for the next call, as the worker's does) and keeps none from now on: the
    /// process is draining. The default keeps nothing.
    fn flush(&self) -> BoxFuture<'_, Result<(), SlotError>> {
        async { Ok(()) }.boxed()
    }
}

/// Slots of one process, in memory. Right for a single worker and for tests; a fleet needs
/// a shared store so that limits hold across processes.
#[derive(Debug, Default)]
pub struct LocalSlots {
    held: Mutex<HashMap<String, HashMap<String, Instant>>>,
    /// Holds, budgets and adapted limits per endpoint (the same rules the fleet's store
    /// applies).
    learned: Mutex<HashMap<String, Learned>>,
}

/// What the calls taught about one endpoint.
#[derive(Debug, Clone, Copy, Default)]
struct Learned {
    /// Held back until then.
    hold_until: Option<Instant>,
    /// Adapted concurrency limit and when it is forgotten.
    limit: Option<(f64, Instant)>,
    /// The rate-limit budget the answers reported (resets in Unix ms).
    budget: RateBudget,
}

/// The rules of adaptive concurrency, shared by every slot store so that a single process
/// and a fleet behave alike: on an overload answer the limit becomes half of what was in
/// flight (at least 1); each success while adapting adds `1 / limit` (about one more slot
/// per round of calls); a limit that grows back to the configured maximum is dropped, and
/// one not lowered again for [`ADAPTED_LIMIT_TTL`] is forgotten.
pub mod aimd {
    use std::time::Duration;

    /// How long an adapted limit lasts after the last overload answer.
    pub const ADAPTED_LIMIT_TTL: Duration = Duration::from_secs(600);

    /// The limit after an overload answer with `in_flight` calls held (this one included).
    pub fn decrease(current: Option<f64>, in_flight: u64) -> f64 {
        let base = current.map_or(in_flight as f64, |c| c.min(in_flight as f64));
        (base / 2.0).floor().max(1.0)
    }

    /// The limit after a success; `None` when it reached `max` (0 = none) and is dropped.
    pub fn increase(current: f64, max: u32) -> Option<f64> {
        let next = current + 1.0 / current.max(1.0);
        (max == 0 || next < f64::from(max)).then_some(next)
    }
}

impl LocalSlots {
    /// An empty store.
    pub fn new() -> LocalSlots {
        LocalSlots::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Instant>>> {
        // The map stays consistent even if a holder panicked mid-update (single inserts).
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, HashMap<String, Learned>> {
        self.learned.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn acquire_now(
        &self,
        candidates: &[SlotCandidate<'_>],
        pick: SlotPick,
        lease_id: &str,
        ttl: Duration,
        tokens: u64,
    ) -> SlotGrant {
        let now = Instant::now();
        let now_ms = unix_ms(std::time::SystemTime::now());
        let mut held = self.lock();
        let mut learned = self.learned();
        let mut grant = SlotGrant {
            chosen: None,
            holds: vec![None; candidates.len()],
            token_waits: vec![None; candidates.len()],
            limits: vec![None; candidates.len()],
        };
        let mut chosen: Option<(usize, f64)> = None;
        for (i, c) in candidates.iter().enumerate() {
            let leases = held.entry(c.endpoint.to_owned()).or_default();
            leases.retain(|_, until| *until > now);
            let n = leases.len() as u64;
            let known = learned.get(c.endpoint).copied().unwrap_or_default();
            let mut max = c.max;
            if let Some((limit, _)) = known.limit.filter(|(_, until)| *until > now) {
                let limit = limit as u32;
                if max == 0 || limit < max {
                    max = limit;
                    grant.limits[i] = Some(limit);
                }
            }
            let hold = known.hold_until.filter(|t| *t > now).map(|t| t - now);
            let spent = budget::requests_wait_ms(&known.budget, now_ms).map(Duration::from_millis);
            grant.holds[i] = hold.max(spent);
            grant.token_waits[i] =
                budget::tokens_wait_ms(&known.budget, tokens, now_ms).map(Duration::from_millis);
            if grant.holds[i].is_some() || grant.token_waits[i].is_some() {
                continue;
            }
            if max != 0 && n >= u64::from(max) {
                continue;
            }
            let load = if max == 0 {
                n as f64 / 1e6
            } else {
                n as f64 / f64::from(max)
            };
            match (pick, chosen) {
                (_, None) => chosen = Some((i, load)),
                (SlotPick::LeastLoaded, Some((_, best))) if load < best => chosen = Some((i, load)),
                _ => {}
            }
            if pick == SlotPick::InOrder && chosen.is_some() {
                break;
            }
        }
        let Some((i, _)) = chosen else {
            return grant;
        };
        held.entry(candidates[i].endpoint.to_owned())
            .or_default()
            .insert(lease_id.to_owned(), now + ttl);
        if let Some(known) = learned.get_mut(candidates[i].endpoint) {
            budget::spend(&mut known.budget, tokens, now_ms);
        }
        grant.chosen = Some(i);
        grant
    }

    fn settle_now(&self, endpoint: &str, lease_id: &str, outcome: SlotOutcome) {
        let now = Instant::now();
        let in_flight = {
            let mut held = self.lock();
            let leases = held.entry(endpoint.to_owned()).or_default();
            leases.retain(|_, until| *until > now);
            let n = leases.len() as u64;
            leases.remove(lease_id);
            n
        };
        let mut learned = self.learned();
        let known = learned.entry(endpoint.to_owned()).or_default();
        let current = known.limit.filter(|(_, until)| *until > now);
        if let SlotOutcome::Answered {
            budget: Some(reported),
            ..
        } = &outcome
        {
            budget::merge(&mut known.budget, reported);
        }
        match outcome {
            SlotOutcome::Answered {
                adapting: true,
                max,
                ..
            } => {
                known.limit =
                    current.and_then(|(l, until)| aimd::increase(l, max).map(|next| (next, until)));
            }
            SlotOutcome::Overloaded => {
                let next = aimd::decrease(current.map(|(l, _)| l), in_flight.max(1));
                known.limit = Some((next, now + aimd::ADAPTED_LIMIT_TTL));
            }
            SlotOutcome::RateLimited { wait } => {
                if known.hold_until.is_none_or(|t| t < now + wait) {
                    known.hold_until = Some(now + wait);
                }
            }
            SlotOutcome::Answered {
                adapting: false, ..
            }
            | SlotOutcome::Other => {}
        }
    }
}

impl Slots for LocalSlots {
    fn acquire<'a>(
        &'a self,
        candidates: &'a [SlotCandidate<'a>],
        pick: SlotPick,
        lease_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<usize>, SlotError>> {
        let r = self.acquire_now(candidates, pick, lease_id, ttl, 0).chosen;
        async move { Ok(r) }.boxed()
    }

    fn acquire_with<'a>(
        &'a self,
        candidates: &'a [SlotCandidate<'a>],
        pick: SlotPick,
        lease_id: &'a str,
        ttl: Duration,
        tokens: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, SlotError>> {
        let r = self.acquire_now(candidates, pick, lease_id, ttl, tokens);
        async move { Ok(r) }.boxed()
    }

    fn settle<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
        outcome: SlotOutcome,
    ) -> BoxFuture<'a, Result<(), SlotError>> {
        self.settle_now(endpoint, lease_id, outcome);
        async move { Ok(()) }.boxed()
    }

    fn renew<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SlotError>> {
        let now = Instant::now();
        let mut held = self.lock();
        let renewed = match held.get_mut(endpoint).and_then(|l| l.get_mut(lease_id)) {
            Some(until) if *until > now => {
                *until = now + ttl;
                true
            }
            _ => false,
        };
        drop(held);
        async move { Ok(renewed) }.boxed()
    }

    fn release<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SlotError>> {
        if let Some(l) = self.lock().get_mut(endpoint) {
            l.remove(lease_id);
        }
        async move { Ok(()) }.boxed()
    }

    fn counts<'a>(
        &'a self,
        endpoints: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<u64>, SlotError>> {
        let now = Instant::now();
        let held = self.lock();
        let counts = endpoints
            .iter()
            .map(|e| {
                held.get(*e)
                    .map_or(0, |l| l.values().filter(|u| **u > now).count() as u64)
            })
            .collect();
        drop(held);
        async move { Ok(counts) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(endpoint: &str, max: u32) -> SlotCandidate<'_> {
        SlotCandidate { endpoint, max }
    }

    #[tokio::test]
    async fn local_slots_follow_the_lease_rules() {
        let s = LocalSlots::new();
        let ttl = Duration::from_secs(60);
        let cands = [c("a", 1), c("b", 2)];
        assert_eq!(
            s.acquire(&cands, SlotPick::InOrder, "1", ttl).await,
            Ok(Some(0))
        );
        assert_eq!(
            s.acquire(&cands, SlotPick::InOrder, "2", ttl).await,
            Ok(Some(1))
        );
        assert_eq!(
            s.acquire(&cands, SlotPick::InOrder, "3", ttl).await,
            Ok(Some(1))
        );
        assert_eq!(
            s.acquire(&cands, SlotPick::InOrder, "4", ttl).await,
            Ok(None)
        );
        assert_eq!(s.counts(&["a", "b"]).await, Ok(vec![1, 2]));
        s.release("b", "2").await.unwrap();
        assert_eq!(
            s.acquire(&cands, SlotPick::LeastLoaded, "5", ttl).await,
            Ok(Some(1))
        );
        assert_eq!(s.renew("a", "1", ttl).await, Ok(true));
        assert_eq!(s.renew("a", "nope", ttl).await, Ok(false));
        // An expired lease frees its slot without a release.
        let short = LocalSlots::new();
        short
            .acquire(&[c("a", 1)], SlotPick::InOrder, "x", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(short.counts(&["a"]).await, Ok(vec![0]));
        assert_eq!(
            short
                .acquire(&[c("a", 1)], SlotPick::InOrder, "y", ttl)
                .await,
            Ok(Some(0))
        );
        // Unlimited endpoints never refuse; least-loaded prefers the idle one.
        let u = LocalSlots::new();
        for i in 0..5 {
            u.acquire(&[c("u", 0)], SlotPick::InOrder, &i.to_string(), ttl)
                .await
                .unwrap();
        }
        assert_eq!(
            u.acquire(&[c("u", 0), c("v", 0)], SlotPick::LeastLoaded, "z", ttl)
                .await,
            Ok(Some(1))
        );
    }

    /// The budget rules of the fleet's store, in one process: a spent request line holds
    /// the endpoint until its reset, a token line too small for the call too; each slot
    /// spends from the live lines.
    #[tokio::test]
    async fn local_slots_keep_reported_budgets() {
        use crate::ratelimit::BudgetLine;
        let s = LocalSlots::new();
        let ttl = Duration::from_secs(60);
        let now_ms = unix_ms(std::time::SystemTime::now());
        let cands = [c("a", 0), c("b", 0)];
        assert_eq!(
            s.acquire_with(&cands, SlotPick::InOrder, "1", ttl, 10)
                .await
                .unwrap()
                .chosen,
            Some(0)
        );
        let reported = RateBudget {
            requests: Some(BudgetLine {
                remaining: 1,
                reset_ms: now_ms + 60_000,
            }),
            tokens: Some(BudgetLine {
                remaining: 100,
                reset_ms: now_ms + 120_000,
            }),
        };
        s.settle(
            "a",
            "1",
            SlotOutcome::Answered {
                adapting: false,
                max: 0,
                budget: Some(reported),
            },
        )
        .await
        .unwrap();
        // Too many tokens for "a": held for this call (until the token reset), "b" takes it.
        let g = s
            .acquire_with(&cands, SlotPick::InOrder, "2", ttl, 101)
            .await
            .unwrap();
        assert_eq!(g.chosen, Some(1));
        assert_eq!(g.holds[0], None);
        assert!(
            g.token_waits[0].is_some_and(|d| d > Duration::from_secs(60)),
            "{g:?}"
        );
        // A call that fits spends the last request: "a" is held until the request reset.
        let g = s
            .acquire_with(&cands, SlotPick::InOrder, "3", ttl, 40)
            .await
            .unwrap();
        assert_eq!(g.chosen, Some(0));
        let g = s
            .acquire_with(&cands, SlotPick::InOrder, "4", ttl, 1)
            .await
            .unwrap();
        assert_eq!(g.chosen, Some(1));
        assert!(
            g.holds[0].is_some_and(|d| d <= Duration::from_secs(60)),
            "{g:?}"
        );
    }
}
