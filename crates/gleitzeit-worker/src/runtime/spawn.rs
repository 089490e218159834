//! Starting deliveries: each one in its own task holding its slot permit until it ends, and
//! reclaimed deliveries queued for the next free slot ahead of new work.

use std::collections::VecDeque;
use std::sync::Arc;

use gleitzeit_queue::{BeginOutcome, Delivery};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info_span, Instrument};

use super::inflight::{Outcome, Registration, Shared};
use super::pipeline::process;
use crate::metrics::record::{self as metric};

impl Shared {
    /// Starts working on a freshly read delivery in its own task, with the reader's slot
    /// permit. `begun` is what beginning it decided when the read began it too.
    pub(super) fn spawn_delivery(
        self: &Arc<Self>,
        delivery: Delivery,
        begun: Option<BeginOutcome>,
        permit: OwnedSemaphorePermit,
    ) {
        let Some(registration) = self.register(&delivery) else {
            debug!(entry = %delivery.entry_id, "entry already in flight here");
            return;
        };
        self.spawn_registered(delivery, begun, registration, permit);
    }

    /// Queues a reclaimed delivery for the next free slot (see [`Shared::reclaimed`]).
    pub(super) fn queue_reclaimed(self: &Arc<Self>, delivery: Delivery) {
        let Some(registration) = self.register(&delivery) else {
            debug!(entry = %delivery.entry_id, "entry already in flight here");
            return;
        };
        self.reclaimed_queue().push_back((delivery, registration));
    }

    /// Reclaimed deliveries waiting for a slot.
    pub(super) fn reclaimed_waiting(&self) -> usize {
        self.reclaimed_queue().len()
    }

    /// Gives slot permits to waiting reclaimed deliveries, oldest first; returns the permits
    /// left over for new work.
    pub(super) fn start_reclaimed(
        self: &Arc<Self>,
        mut permits: Vec<OwnedSemaphorePermit>,
    ) -> Vec<OwnedSemaphorePermit> {
        while let Some(permit) = permits.pop() {
            let next = self.reclaimed_queue().pop_front();
            let Some((delivery, registration)) = next else {
                permits.push(permit);
                break;
            };
            self.spawn_registered(delivery, None, registration, permit);
        }
        permits
    }

    /// Drops the reclaimed deliveries that never started (at shutdown): their entries stay
    /// pending and are reclaimed again elsewhere.
    pub(super) fn forget_reclaimed(&self) {
        self.reclaimed_queue().clear();
    }

    fn reclaimed_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<(Delivery, Registration)>> {
        self.reclaimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a registered delivery in its own task, holding `permit` until it ends.
    fn spawn_registered(
        self: &Arc<Self>,
        delivery: Delivery,
        begun: Option<BeginOutcome>,
        registration: Registration,
        permit: OwnedSemaphorePermit,
    ) {
        let span = info_span!(
            "task",
            wf = %delivery.workflow_id,
            task = delivery.task,
            task_name = tracing::field::Empty,
            capability = %delivery.capability,
            entry = %delivery.entry_id,
            // Set by the LLM executor once an endpoint answered (or failed).
            endpoint = tracing::field::Empty,
        );
        let shared = self.clone();
        self.tracker.spawn(
            async move {
                // Executions are bounded by the slots: the permit is held until the end.
                let _permit = permit;
                metric::in_flight_inc();
                let outcome = tokio::select! {
                    biased;
                    _ = shared.hard_stop.cancelled() => Outcome::Aborted,
                    _ = registration.lost.cancelled() => Outcome::Lost,
                    o = process(&shared, &delivery, begun) => o,
                };
                metric::in_flight_dec();
                drop(registration);
                shared.count(outcome);
            }
            .instrument(span),
        );
    }
}
