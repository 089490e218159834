//! The promoter loop: moves due retries and deferrals from the delayed set into their streams,
//! and drops expired workflows from the workflow index.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::connect::now_ms;
use super::inflight::Shared;
use super::sleep::sleep_or_shutdown;
use crate::backoff::Backoff;

/// Promoter batch size: due retries moved per script call.
const PROMOTE_BATCH: u32 = 256;

pub(super) async fn promote_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let max = shared.settings.promote_interval_max;
    let mut backoff = Backoff::default();
    loop {
        let wait = match shared.queue.promote(now_ms(), PROMOTE_BATCH).await {
            Ok(p) => {
                backoff.reset();
                // A script ran: the queue's scripts are loaded (readiness).
                if let Some(h) = &shared.health {
                    h.set_scripts_loaded();
                }
                if p.moved > 0 || p.trimmed > 0 {
                    debug!(
                        moved = p.moved,
                        trimmed = p.trimmed,
                        "promoted due retries, trimmed the workflow index"
                    );
                }
                if p.moved >= PROMOTE_BATCH || p.trimmed >= PROMOTE_BATCH {
                    // More may be due right now.
                    Duration::ZERO
                } else {
                    match p.next_due_ms {
                        Some(due) => Duration::from_millis(due.saturating_sub(now_ms())).min(max),
                        None => max,
                    }
                }
            }
            Err(e) => {
                let wait = backoff.next_delay();
                warn!(error = %e, retry_in = ?wait, "promote failed");
                wait
            }
        };
        if shutdown.is_cancelled() || sleep_or_shutdown(&shutdown, wait).await {
            break;
        }
    }
    debug!("promoter stopped");
}
