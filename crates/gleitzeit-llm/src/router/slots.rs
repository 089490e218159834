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
}

/// Slots of one process, in memory. Right for a single worker and for tests; a fleet needs
/// a shared store so that limits hold across processes.
#[derive(Debug, Default)]
pub struct LocalSlots {
    held: Mutex<HashMap<String, HashMap<String, Instant>>>,
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

    fn acquire_now(
        &self,
        candidates: &[SlotCandidate<'_>],
        pick: SlotPick,
        lease_id: &str,
        ttl: Duration,
    ) -> Option<usize> {
        let now = Instant::now();
        let mut held = self.lock();
        let mut chosen: Option<(usize, f64)> = None;
        for (i, c) in candidates.iter().enumerate() {
            let leases = held.entry(c.endpoint.to_owned()).or_default();
            leases.retain(|_, until| *until > now);
            let n = leases.len() as u64;
            if c.max != 0 && n >= u64::from(c.max) {
                continue;
            }
            let load = if c.max == 0 {
                n as f64 / 1e6
            } else {
                n as f64 / f64::from(c.max)
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
        let (i, _) = chosen?;
        held.entry(candidates[i].endpoint.to_owned())
            .or_default()
            .insert(lease_id.to_owned(), now + ttl);
        Some(i)
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
        let r = self.acquire_now(candidates, pick, lease_id, ttl);
        async move { Ok(r) }.boxed()
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
}
