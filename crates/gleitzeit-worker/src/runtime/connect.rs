//! Reaching Redis at start, waiting out outages with backoff; refused credentials or missing
//! permissions of the worker role stop the start with a clear error instead.

use std::time::{SystemTime, UNIX_EPOCH};

use gleitzeit_queue::{Queue, QueueConfig, QueueError, RedisTarget, Role};
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

/// Connects to Redis, waiting out outages with backoff, and checks that the user holds the
/// worker role (every command and key the loops use) before any work is read. `Ok(None)`:
/// shutdown came first.
///
/// # Errors
/// [`WorkerError::Auth`] for refused credentials, [`WorkerError::Permission`] naming the
/// missing commands, [`WorkerError::Queue`] for other errors that retrying cannot fix.
pub(super) async fn connect(
    target: &RedisTarget,
    cfg: &QueueConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Queue>, WorkerError> {
    let mut backoff = Backoff::default();
    loop {
        let attempt = match Queue::connect(target, cfg.clone()).await {
            // The worker reads with the count it connected with: recorded now, a later
            // process with another count is refused instead of writing where nobody reads.
            Ok(q) => match q.check_role(Role::Worker).await {
                Ok(()) => q.record_shard_count().await.map(|()| q),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match attempt {
            Ok(q) => return Ok(Some(q)),
            Err(e @ QueueError::Auth(_)) => return Err(WorkerError::Auth(e)),
            Err(e @ QueueError::NoPermission(_)) => return Err(WorkerError::Permission(e)),
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
