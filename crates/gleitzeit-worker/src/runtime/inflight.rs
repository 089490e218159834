//! What this process holds while it works: the in-flight table (entries to heartbeat and
//! abort), each delivery's registration, the run counters, and the state the loops share.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gleitzeit_core::Task;
use gleitzeit_queue::{Delivery, Queue, QueueError, TaskContext};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::connect::now_ms;
use crate::backoff::Backoff;
use crate::config::Settings;
use crate::error::RunSummary;
use crate::executor::Executor;
use crate::health::HealthState;
use crate::metrics::record::{self as metric};

/// Identity of an entry: stream and entry id (ids are only unique within one stream).
pub(super) type EntryKey = (String, String);

pub(super) fn entry_key(d: &Delivery) -> EntryKey {
    (d.stream.clone(), d.entry_id.clone())
}

/// An entry this process is working on.
pub(super) struct InFlight {
    /// The delivery as last claimed (the delivery count fences every script call).
    pub(super) delivery: Delivery,
    /// Cancelled when the heartbeat learns another consumer owns the entry now.
    pub(super) lost: CancellationToken,
}

/// This process's claim on an in-flight entry. Dropping it (also when a task panics) removes
/// the entry from the heartbeat, so an entry whose execution died is reclaimed after
/// `claim_idle` instead of being kept alive forever.
pub(super) struct Registration {
    pub(super) shared: Arc<Shared>,
    pub(super) key: EntryKey,
    /// Cancelled when another consumer owns the entry now.
    pub(super) lost: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
    }
}

#[derive(Default)]
pub(super) struct Stats {
    pub(super) completed: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) deferred: AtomicU64,
    pub(super) stale: AtomicU64,
    pub(super) aborted: AtomicU64,
}

impl Stats {
    pub(super) fn summary(&self) -> RunSummary {
        RunSummary {
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            deferred: self.deferred.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            aborted: self.aborted.load(Ordering::Relaxed),
        }
    }
}

pub(super) struct Shared {
    /// What `/healthz` and `/readyz` report, when they are served.
    pub(super) health: Option<Arc<HealthState>>,
    /// Whether metrics are exported (then task timings are read for the histograms).
    pub(super) metrics_on: bool,
    pub(super) settings: Settings,
    pub(super) queue: Queue,
    pub(super) consumer: String,
    pub(super) executor: Arc<dyn Executor>,
    /// One permit per task executing; readers wait for a free one before reading.
    pub(super) slots: Arc<Semaphore>,
    pub(super) inflight: Mutex<HashMap<EntryKey, InFlight>>,
    /// Capabilities currently served (refreshed by the reader from `{ns}:caps`).
    pub(super) served: RwLock<Vec<String>>,
    pub(super) stats: Stats,
    /// Signalled when a task starts or ends, so the worker registry record follows at once.
    pub(super) changed: Arc<tokio::sync::Notify>,
    pub(super) tracker: TaskTracker,
    /// Cancelled at the drain deadline: every task still running is abandoned.
    pub(super) hard_stop: CancellationToken,
    /// Reclaimed entries waiting for a slot, already registered (the heartbeat keeps their
    /// claims). The reader gives every free slot to these before it reads new work, so an
    /// orphan never waits behind a backlog.
    pub(super) reclaimed: Mutex<VecDeque<(Delivery, Registration)>>,
}

impl Shared {
    pub(super) fn inflight_count(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Registers a delivery; `None` when this process already works on the entry (a reclaim
    /// of one of our own entries: the delivery count is updated so our fencing stays right).
    pub(super) fn register(self: &Arc<Self>, delivery: &Delivery) -> Option<Registration> {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let key = entry_key(delivery);
        if let Some(existing) = map.get_mut(&key) {
            existing.delivery.deliveries = delivery.deliveries;
            return None;
        }
        let lost = CancellationToken::new();
        map.insert(
            key.clone(),
            InFlight {
                delivery: delivery.clone(),
                lost: lost.clone(),
            },
        );
        drop(map);
        self.changed.notify_one();
        Some(Registration {
            shared: self.clone(),
            key,
            lost,
        })
    }

    /// The delivery with its current delivery count (see [`Shared::register`]).
    pub(super) fn current(&self, delivery: &Delivery) -> Delivery {
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&entry_key(delivery))
            .map(|f| f.delivery.clone())
            .unwrap_or_else(|| delivery.clone())
    }

    pub(super) fn inflight_deliveries(&self) -> Vec<Delivery> {
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|f| f.delivery.clone()).collect()
    }

    /// Aborts the entries another consumer owns now.
    pub(super) fn mark_lost(&self, lost: &[Delivery]) {
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        for d in lost {
            if let Some(f) = map.get(&entry_key(d)) {
                warn!(
                    wf = %d.workflow_id,
                    task = d.task,
                    capability = %d.capability,
                    entry = %d.entry_id,
                    "entry was taken over by another consumer: abandoning it"
                );
                f.lost.cancel();
            }
        }
    }

    pub(super) fn served(&self) -> Vec<String> {
        self.served
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Records how long the task waited in its stream and, for a task released by its
    /// dependencies, the release latency. `begin` returned when the task became ready, so
    /// this costs no Redis call.
    pub(super) fn observe_wait(&self, delivery: &Delivery, task: &Task, ctx: &TaskContext) {
        // Only the first delivery of a first attempt: a redelivery's `ready_ms` is older than
        // its previous run, and a retry's was set by the promoter, not by a dependency.
        if !self.metrics_on || delivery.deliveries != 1 {
            return;
        }
        let Some(ready) = ctx.ready_ms else {
            return;
        };
        let wait = Duration::from_millis(now_ms().saturating_sub(ready));
        metric::queue_wait(&delivery.capability, wait);
        // `complete.lua` makes a dependent ready in the step that records its last
        // dependency's `finished_ms`, so `ready_ms` is that moment (unless a deferral
        // re-queued the task since).
        if !task.dependencies.is_empty() && ctx.attempts == 0 && ctx.deferrals == 0 {
            metric::dependency_release(&delivery.capability, wait);
        }
    }

    pub(super) fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Completed => &self.stats.completed,
            Outcome::Failed => &self.stats.failed,
            Outcome::Retried => &self.stats.retried,
            Outcome::Deferred => &self.stats.deferred,
            Outcome::Stale | Outcome::Lost => &self.stats.stale,
            Outcome::Aborted => {
                info!("abandoned at the drain deadline; the entry stays pending");
                &self.stats.aborted
            }
            Outcome::NotRunnable | Outcome::GaveUp => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Runs a queue call, retrying Redis errors with capped backoff so a computed result is not
    /// thrown away because Redis blinked. `None`: the error cannot be retried (logged); the entry
    /// stays pending and is reclaimed later. The caller's select ends the retries at the drain
    /// deadline or when the entry is lost.
    pub(super) async fn with_retry<T, F, Fut>(&self, what: &str, mut call: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, QueueError>>,
    {
        let mut backoff = Backoff::default();
        loop {
            match call().await {
                Ok(v) => return Some(v),
                Err(e) if e.is_retryable() => {
                    let wait = backoff.next_delay();
                    warn!(op = what, error = %e, retry_in = ?wait, "Redis call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    error!(op = what, error = %e, "Redis call failed and cannot be retried; the entry stays pending");
                    return None;
                }
            }
        }
    }
}

/// How one delivery ended, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Completed,
    Failed,
    Retried,
    /// Re-queued without using an attempt (no capacity to run it).
    Deferred,
    Stale,
    Lost,
    Aborted,
    NotRunnable,
    GaveUp,
}
