//! Guards that keep a call's bookkeeping right however the call ends: the waiting count,
//! the half-open probe, and the slot lease.

use std::sync::Arc;
use std::time::Instant;

use super::core::{Member, Router};
use super::slots::{SlotOutcome, Slots};

/// Counts a call waiting for a slot under its model (what [`Router::saturated`] reads).
pub(super) struct WaitGuard<'a> {
    pub(super) router: &'a Router,
    pub(super) model: String,
}

impl<'a> WaitGuard<'a> {
    pub(super) fn new(router: &'a Router, model: &str) -> WaitGuard<'a> {
        *router.waiting_map().entry(model.to_owned()).or_insert(0) += 1;
        WaitGuard {
            router,
            model: model.to_owned(),
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.router.waiting_map();
        if let Some(n) = map.get_mut(&self.model) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.model);
            }
        }
    }
}

/// Marks the half-open probe; a probe abandoned mid-call (the caller gave up) counts as a
/// failure so the breaker does not stay half-open with a probe that never reports.
pub(super) struct ProbeGuard<'a> {
    pub(super) router: &'a Router,
    pub(super) member: &'a Member,
    pub(super) done: bool,
}

impl<'a> ProbeGuard<'a> {
    pub(super) fn start(router: &'a Router, member: &'a Member) -> ProbeGuard<'a> {
        member.health().start_probe();
        router.observe_health(member);
        ProbeGuard {
            router,
            member,
            done: false,
        }
    }

    pub(super) fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let cfg = &self.router.cfg;
            self.member
                .health()
                .trip(Instant::now(), cfg.cooldown, cfg.max_cooldown);
            self.router.observe_health(self.member);
        }
    }
}

/// Returns a slot; if the call is abandoned before it could, the release still happens in
/// the background (and failing that, the lease expires).
pub(super) struct LeaseGuard {
    pub(super) slots: Arc<dyn Slots>,
    pub(super) endpoint: String,
    pub(super) id: String,
    pub(super) done: bool,
}

impl LeaseGuard {
    pub(super) async fn settle(mut self, outcome: SlotOutcome) {
        self.done = true;
        if let Err(e) = self.slots.settle(&self.endpoint, &self.id, outcome).await {
            tracing::warn!(endpoint = %self.endpoint, error = %e, "cannot release slot lease; it will expire");
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let slots = self.slots.clone();
            let endpoint = std::mem::take(&mut self.endpoint);
            let id = std::mem::take(&mut self.id);
            rt.spawn(async move {
                let _ = slots.release(&endpoint, &id).await;
            });
        }
    }
}
