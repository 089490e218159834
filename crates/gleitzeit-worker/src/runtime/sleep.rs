//! Interruptible sleeps of the loops: every wait ends early at shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sleeps for `d`; `true` when `token` was cancelled first.
pub(super) async fn sleep_or_shutdown(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
