//! The promoter loop: moves due retries and deferrals from the delayed set into their streams,
//! drops expired workflows from the workflow index, and trims finished entries from the
//! streams.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::connect::now_ms;
use super::inflight::Shared;
use super::sleep::sleep_or_shutdown;
use crate::backoff::Backoff;

/// Promoter batch size: due retries moved per script call.
const PROMOTE_BATCH: u32 = 256;

/// How often the fleet trims the finished entries from the streams (`Queue::trim_streams`):
/// each worker tries when this much time has passed since its last try, and a fleet-wide lock
/// of the same length lets only one of them do it. Finished entries cost only memory (a few
/// dozen bytes each) until then.
const TRIM_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn promote_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let max = shared.settings.promote_interval_max;
    let mut backoff = Backoff::default();
    let mut trimmed_at: Option<Instant> = None;
    loop {
        if trimmed_at.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
            trimmed_at = Some(Instant::now());
            match shared.queue.trim_streams(Some(TRIM_EVERY)).await {
                Ok(Some(n)) if n > 0 => debug!(removed = n, "trimmed finished stream entries"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "trimming the streams failed"),
            }
        }
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
