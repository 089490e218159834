//! The heartbeat loop: keeps this process's in-flight claims alive and abandons entries
//! another consumer took over.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::inflight::Shared;
use super::sleep::sleep_or_shutdown;
use crate::backoff::Backoff;

/// In-flight entries refreshed per heartbeat script call.
const HEARTBEAT_BATCH: usize = 500;

pub(super) async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let interval = shared.settings.heartbeat_interval;
    let mut backoff = Backoff::default();
    let mut wait = interval;
    loop {
        if sleep_or_shutdown(&stop, wait).await {
            break;
        }
        wait = interval;
        let deliveries = shared.inflight_deliveries();
        if deliveries.is_empty() {
            continue;
        }
        // Bounded batches keep each script call short however many tasks are in flight.
        let mut failed = false;
        for batch in deliveries.chunks(HEARTBEAT_BATCH) {
            match shared.queue.heartbeat(&shared.consumer, batch).await {
                Ok(lost) => {
                    if !lost.is_empty() {
                        shared.mark_lost(&lost);
                    }
                }
                Err(e) => {
                    // Retry sooner than the interval: the claims are ageing.
                    wait = backoff.next_delay().min(interval);
                    warn!(error = %e, retry_in = ?wait, "heartbeat failed");
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            backoff.reset();
        }
    }
    debug!("heartbeat stopped");
}
