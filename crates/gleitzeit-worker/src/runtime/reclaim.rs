//! The reclaimer loop: takes over entries idle longer than `claim_idle` (their worker died or
//! stalled) and dead-letters those delivered too often as poison.

use std::sync::Arc;

use gleitzeit_core::{FailureKind, TaskFailure};
use gleitzeit_queue::{DeadLetterKind, Delivery};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::inflight::{Outcome, Shared};
use super::pipeline::{finish_failure, UNKNOWN_TYPE};
use super::reader::stream_refs;
use super::sleep::sleep_or_shutdown;
use crate::backoff::Backoff;
use crate::metrics::record::{self as metric};

pub(super) async fn reclaim_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = Backoff::default();
    let mut wait = shared.settings.reclaim_interval;
    loop {
        if sleep_or_shutdown(&shutdown, wait).await {
            break;
        }
        wait = shared.settings.reclaim_interval;
        let mut failed = false;
        'caps: for cap in shared.served() {
            for stream in stream_refs(&shared.queue, std::slice::from_ref(&cap)) {
                if shutdown.is_cancelled() {
                    break 'caps;
                }
                // Claimed whether or not a slot is free: reclaimed entries wait here for the
                // next slot ahead of new work (see `Shared::reclaimed`). At most one
                // concurrency's worth waits, so a worker never hoards orphans that another
                // worker with free slots could run.
                let room = shared
                    .settings
                    .concurrency
                    .saturating_sub(shared.reclaimed_waiting());
                if room == 0 {
                    break 'caps;
                }
                let idle = shared.settings.claim_idle_for(&cap);
                match shared
                    .queue
                    .reclaim(&shared.consumer, &stream, idle, room)
                    .await
                {
                    Ok(deliveries) => {
                        for d in deliveries {
                            handle_reclaimed(&shared, d);
                        }
                    }
                    Err(e) => {
                        warn!(capability = %cap, error = %e, "reclaim failed");
                        failed = true;
                        break 'caps;
                    }
                }
            }
        }
        if failed {
            wait = backoff.next_delay().min(shared.settings.reclaim_interval);
        } else {
            backoff.reset();
        }
    }
    debug!("reclaimer stopped");
}

pub(super) fn handle_reclaimed(shared: &Arc<Shared>, d: Delivery) {
    if d.deliveries > shared.settings.max_deliveries {
        let span = info_span!(
            "task",
            wf = %d.workflow_id,
            task = d.task,
            capability = %d.capability,
            entry = %d.entry_id,
        );
        let Some(registration) = shared.register(&d) else {
            return;
        };
        let max = shared.settings.max_deliveries;
        let shared2 = shared.clone();
        shared.tracker.spawn(
            async move {
                warn!(
                    deliveries = d.deliveries,
                    max_deliveries = max,
                    "entry delivered too often: dead-lettering it as poison"
                );
                let failure = TaskFailure {
                    kind: FailureKind::Poison,
                    message: format!(
                        "delivered {} times (max_deliveries {max}): every worker that took it died or stalled",
                        d.deliveries
                    ),
                    detail: None,
                };
                let outcome = tokio::select! {
                    biased;
                    _ = shared2.hard_stop.cancelled() => Outcome::Aborted,
                    _ = registration.lost.cancelled() => Outcome::Lost,
                    o = finish_failure(&shared2, &d, failure, None, Some(DeadLetterKind::Poison)) => o,
                };
                drop(registration);
                if outcome == Outcome::Failed {
                    metric::task_failed_unstarted(&d.capability, UNKNOWN_TYPE);
                    metric::task_dead_lettered(&d.capability, UNKNOWN_TYPE);
                }
                shared2.count(outcome);
            }
            .instrument(span),
        );
    } else {
        info!(
            wf = %d.workflow_id,
            task = d.task,
            capability = %d.capability,
            entry = %d.entry_id,
            deliveries = d.deliveries,
            "reclaimed an idle entry"
        );
        shared.queue_reclaimed(d);
    }
}
