//! Reaching Redis at start, waiting out outages with backoff.

use std::time::{SystemTime, UNIX_EPOCH};

use gleitzeit_queue::{Queue, QueueConfig, RedisTarget};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::backoff::Backoff;
use crate::error::WorkerError;

/// Milliseconds since the Unix epoch (the scripts take the caller's clock).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Connects to Redis, waiting out outages with backoff. `Ok(None)`: shutdown came first.
pub(super) async fn connect(
    target: &RedisTarget,
    cfg: &QueueConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Queue>, WorkerError> {
    let mut backoff = Backoff::default();
    loop {
        match Queue::connect(target, cfg.clone()).await {
            Ok(q) => return Ok(Some(q)),
            Err(e) if e.is_retryable() => {
                let wait = backoff.next_delay();
                warn!(error = %e, retry_in = ?wait, "cannot reach Redis; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(WorkerError::Queue(e)),
        }
    }
}
