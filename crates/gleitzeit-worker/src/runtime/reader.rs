//! The reader loop: refreshes the served capabilities and reads new entries, bounded by the
//! free slots (backpressure).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gleitzeit_queue::{Queue, QueueError, StreamRef, WaitSlots};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::connect::now_ms;
use super::inflight::Shared;
use super::linger::Linger;
use super::sleep::sleep_or_shutdown;
use crate::backoff::Backoff;

/// Recomputes the served capabilities from `{ns}:caps`.
pub(super) async fn refresh_served(shared: &Shared) -> Result<Vec<String>, QueueError> {
    let mut caps: Vec<String> = shared
        .queue
        .capabilities()
        .await?
        .into_iter()
        .filter(|c| shared.settings.allows_capability(c) && shared.executor.serves(c))
        .collect();
    caps.sort();
    caps.dedup();
    let mut served = shared.served.write().unwrap_or_else(|p| p.into_inner());
    if *served != caps {
        info!(capabilities = ?caps, "served capabilities changed");
        *served = caps.clone();
        shared.changed.notify_one();
    }
    Ok(caps)
}

/// Every stream (high, normal, low priority) of each capability, in every shard.
pub(super) fn stream_refs(queue: &Queue, caps: &[String]) -> Vec<StreamRef> {
    caps.iter().flat_map(|c| queue.stream_refs(c)).collect()
}

/// The streams of each capability in one shard.
fn shard_stream_refs(queue: &Queue, shard: usize, caps: &[String]) -> Vec<StreamRef> {
    let keys = &queue.shards()[shard];
    caps.iter().flat_map(|c| keys.stream_refs(c)).collect()
}

/// The slots a shard's reader holds while it reads: before a wait it keeps one (one per
/// stream for a wait in the consumer group, where each stream may deliver an entry, when
/// that is within its share) and gives the rest back to the other shards' readers; when
/// work arrives it takes those free then.
struct ReaderSlots<'a> {
    held: Mutex<Vec<OwnedSemaphorePermit>>,
    pool: &'a Arc<Semaphore>,
    /// The most slots this reader keeps while it waits ([`wait_share`]).
    share: usize,
}

/// The most slots one shard's reader keeps while it waits: the idle readers of every shard
/// together keep at most half of the process's `concurrency` slots, so a busy shard's
/// reader always has the other half (a reader that would need more for a wait in the
/// consumer group, one per stream, keeps one and waits with `XREAD`).
fn wait_share(concurrency: usize, shards: u16) -> usize {
    (concurrency / (2 * usize::from(shards.max(1)))).max(1)
}

impl WaitSlots for ReaderSlots<'_> {
    fn share(&self) -> usize {
        self.share
    }

    fn release(&self, keep: usize) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .truncate(keep.max(1));
    }

    fn regain(&self) -> usize {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(p) = self.pool.clone().try_acquire_owned() {
            held.push(p);
        }
        held.len()
    }
}

/// How soon the reader looks again when every served stream is saturated.
pub(super) const SATURATED_RECHECK: Duration = Duration::from_millis(50);

/// Reads the streams of one shard (`shard`; a worker runs one reader per shard of the
/// namespace, all drawing on the same slots).
pub(super) async fn reader_loop(shared: Arc<Shared>, shard: usize, shutdown: CancellationToken) {
    // With several shards, a reader whose shard is empty waits holding one slot, not all
    // the free ones: the other shards' readers get the rest.
    let sharded = shared.queue.shard_count() > 1;
    let mut consumer = match shared.queue.consumer(&shared.consumer) {
        Ok(c) => c,
        Err(e) => {
            // The name was validated at start; this cannot fail unless that check changed.
            error!(error = %e, "cannot create the stream consumer");
            return;
        }
    };
    let mut backoff = Backoff::default();
    let mut caps_due = Instant::now();
    let mut streams: Vec<StreamRef> = Vec::new();
    let mut linger = Linger::new(shared.settings.read_linger, Instant::now());
    let mut pause = Duration::ZERO;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if Instant::now() >= caps_due {
            // The first shard's reader reads the capabilities of every shard; the others
            // use what it found (one refresh per worker, not one per shard).
            let refreshed = if shard == 0 {
                refresh_served(&shared).await
            } else {
                Ok(shared.served())
            };
            match refreshed {
                Ok(caps) => {
                    streams = shard_stream_refs(&shared.queue, shard, &caps);
                    caps_due = Instant::now() + shared.settings.caps_refresh;
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!(error = %e, retry_in = ?wait, "cannot read capabilities");
                    if sleep_or_shutdown(&shutdown, wait).await {
                        break;
                    }
                    continue;
                }
            }
        }
        // Orphans first: while reclaimed entries wait, every slot that frees goes to them,
        // whatever new work is queued, saturated or absent.
        if shared.reclaimed_waiting() > 0 {
            let permits = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = shared.slots.clone().acquire_owned() => match p {
                    Ok(permit) => vec![permit],
                    Err(_) => break,
                },
            };
            drop(shared.start_reclaimed(permits));
            continue;
        }
        if streams.is_empty() {
            if sleep_or_shutdown(&shutdown, shared.settings.caps_refresh).await {
                break;
            }
            continue;
        }

        // Busy and the last read emptied the streams: let entries gather for a moment, then
        // read them together instead of being woken for each (`linger`).
        if !pause.is_zero() {
            if sleep_or_shutdown(&shutdown, std::mem::take(&mut pause)).await {
                break;
            }
            consumer.expect_entries();
        }
        // Backpressure: read nothing while every slot is taken, and never more entries than
        // slots reserved. The permits are held across the read (at most `read_block`) and
        // handed to the tasks, so a slot is never promised twice.
        let mut permits = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = shared.slots.clone().acquire_owned() => match p {
                Ok(permit) => vec![permit],
                Err(_) => break,
            },
        };
        while let Ok(p) = shared.slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        // Entries reclaimed while this loop waited for a slot go first.
        let mut permits = shared.start_reclaimed(permits);
        if permits.is_empty() {
            continue;
        }
        let free = permits.len();

        // Never block past the next capability refresh, so new streams are served promptly.
        let block = shared
            .settings
            .read_block
            .min(caps_due.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        // The read is not raced against shutdown: dropping it mid-command could lose entries
        // Redis already handed to this consumer. It ends within `block`. After a connection
        // error the consumer opens a new connection on its next read.
        // Backpressure per model: streams whose tasks would only wait for an endpoint slot
        // are left unread until a slot frees.
        let open: Vec<StreamRef> = streams
            .iter()
            .filter(|s| !shared.executor.saturated(&s.capability))
            .cloned()
            .collect();
        if open.is_empty() {
            drop(permits);
            if sleep_or_shutdown(&shutdown, SATURATED_RECHECK.min(block)).await {
                break;
            }
            continue;
        }
        // Each entry is begun as it is read (one script call for the batch).
        let taken = if sharded {
            let slots = ReaderSlots {
                held: Mutex::new(std::mem::take(&mut permits)),
                pool: &shared.slots,
                share: wait_share(shared.settings.concurrency, shared.queue.shard_count()),
            };
            let taken = consumer
                .take_or_wait_with(&open, free, block, now_ms, &slots)
                .await;
            permits = slots.held.into_inner().unwrap_or_else(|p| p.into_inner());
            taken
        } else {
            consumer.take(&open, free, block, now_ms).await
        };
        match taken {
            Ok(taken) => {
                backoff.reset();
                pause = linger.after_take(Instant::now(), taken.len(), free);
                for t in taken {
                    // `take` returns at most `free` entries.
                    if let Some(permit) = permits.pop() {
                        shared.spawn_delivery(t.delivery, Some(t.begun), permit);
                    }
                }
                drop(permits);
            }
            Err(e) => {
                drop(permits);
                let wait = backoff.next_delay();
                warn!(error = %e, retry_in = ?wait, "read failed");
                if sleep_or_shutdown(&shutdown, wait).await {
                    break;
                }
            }
        }
    }
    debug!("reader stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_readers_keep_at_most_half_of_the_slots() {
        // 32 slots over 3 shards: each may keep 5 (one capability's 3 streams fit).
        assert_eq!(wait_share(32, 3), 5);
        assert_eq!(wait_share(18, 3), 3);
        // Fewer slots than the readers need for a group wait: one each, never none.
        assert_eq!(wait_share(4, 3), 1);
        assert_eq!(wait_share(1, 8), 1);
    }

    #[test]
    fn a_waiting_reader_keeps_what_it_is_told_and_regains_the_free_slots() {
        let pool = Arc::new(Semaphore::new(6));
        let held: Vec<_> = (0..5)
            .map(|_| pool.clone().try_acquire_owned().unwrap())
            .collect();
        let slots = ReaderSlots {
            held: Mutex::new(held),
            pool: &pool,
            share: 3,
        };
        assert_eq!(slots.share(), 3);
        slots.release(3);
        assert_eq!(pool.available_permits(), 3, "two of five given back");
        slots.release(0);
        assert_eq!(pool.available_permits(), 5, "one slot is always kept");
        assert_eq!(slots.regain(), 6, "the free slots and the one kept");
        assert_eq!(pool.available_permits(), 0);
    }
}
