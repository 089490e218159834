//! The worker's supervisor and its loops: reader, per-delivery task execution, heartbeat,
//! reclaimer and promoter, and the two-phase shutdown.
//!
//! Ownership of an entry is decided by Redis alone (the consumer group's pending list): every
//! script call is fenced by the entry's consumer and delivery count, so this process keeps only
//! what it needs to heartbeat and abort its own in-flight entries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gleitzeit_core::{FailureKind, RenderContext, Task, TaskFailure, TaskResult};
use gleitzeit_queue::{
    BeginOutcome, CompleteCode, DeadLetterKind, Delivery, FailCode, FailRequest, Queue,
    QueueConfig, QueueError, StreamRef, TaskContext,
};
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::backoff::Backoff;
use crate::config::{ConfigError, Settings, WorkerConfig};
use crate::executor::{ExecContext, ExecFailure, Executor};
use crate::external_executor::{Executors, ExternalExecutor, ResolvedExternal};
use crate::health::{HealthServer, HealthState};
use crate::llm_executor::LlmExecutor;
use crate::metrics::record::{self as metric, TaskEnd};
use gleitzeit_external::ServicePool;

/// Promoter batch size: due retries moved per script call.
const PROMOTE_BATCH: u32 = 256;
/// How much longer than a task's timeout the worker waits for its executor, which bounds
/// its own work by the timeout and says how it ended.
const EXECUTOR_GRACE: Duration = Duration::from_secs(1);
/// In-flight entries refreshed per heartbeat script call.
const HEARTBEAT_BATCH: usize = 500;

/// What a worker did between start and shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Tasks this worker completed.
    pub completed: u64,
    /// Tasks this worker failed terminally (including poison entries).
    pub failed: u64,
    /// Failed attempts this worker scheduled for a retry.
    pub retried: u64,
    /// Tasks re-queued without using an attempt because no endpoint or service instance
    /// could take them.
    pub deferred: u64,
    /// Entries whose result was refused as stale or duplicate, or that another consumer took
    /// over while they ran.
    pub stale: u64,
    /// Entries abandoned at the drain deadline (they stay pending and are reclaimed).
    pub aborted: u64,
}

/// Why the worker could not start. Runtime Redis outages are not errors: the loops wait them out.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is invalid; fix it, retrying does not help.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An LLM endpoint client could not be built from the configuration; retrying does not help.
    #[error("cannot set up LLM endpoint {endpoint}: {message}")]
    Endpoint {
        /// Endpoint name.
        endpoint: String,
        /// Reason (contains no secret).
        message: String,
    },
    /// The queue refused a setting (for example the namespace); retrying does not help.
    #[error("cannot set up the queue")]
    Queue(#[source] QueueError),
    /// The metrics server cannot listen on `metrics_addr` (in use, or not a local address).
    #[error("cannot serve metrics on {addr} (metrics_addr): {source}")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}

/// Validates `config`, builds the LLM executor and runs the worker until `shutdown` is cancelled
/// and in-flight tasks have drained (or the drain deadline passed).
pub async fn run(
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<RunSummary, WorkerError> {
    let settings = config.validate()?;
    // Bound before any work is read: a port in use stops the start, not a running worker.
    let server = match settings.metrics_addr {
        Some(addr) => {
            crate::metrics::install();
            Some(
                HealthServer::bind(addr)
                    .await
                    .map_err(|source| WorkerError::Metrics { addr, source })?,
            )
        }
        None => None,
    };
    // One id for the stream consumer, the registry and the shared endpoint health views.
    let consumer = consumer_name();
    let mut executors: Vec<Arc<dyn Executor>> =
        vec![Arc::new(LlmExecutor::fleet_as(&settings, &consumer)?)];
    if let Some(external) = &settings.external {
        executors.push(Arc::new(external_executor(&settings.redis_url, external)?));
    } else {
        info!("external tasks are not served (no service token; see the `external` section)");
    }
    run_served(
        settings,
        Arc::new(Executors::new(executors)),
        shutdown,
        consumer,
        server,
    )
    .await
}

/// [`run_as`] with the health and metrics server, when one is given: served from the start
/// (liveness answers while Redis is still awaited, readiness does not) until after the drain.
async fn run_served(
    settings: Settings,
    executor: Arc<dyn Executor>,
    shutdown: CancellationToken,
    consumer: String,
    server: Option<HealthServer>,
) -> Result<RunSummary, WorkerError> {
    let health = server.as_ref().map(HealthServer::state);
    if let Some(h) = &health {
        h.set_live(true);
    }
    let server = server.map(HealthServer::serve);
    let result = run_as(settings, executor, shutdown, consumer, health.clone()).await;
    if let Some(h) = &health {
        h.set_live(false);
    }
    if let Some(s) = server {
        s.stop().await;
    }
    result
}

/// The executor of external tasks: a service pool that finds instances registered in Redis
/// (its own small connection pool: discovery reads are rare) and at configured addresses.
fn external_executor(
    redis_url: &str,
    external: &ResolvedExternal,
) -> Result<ExternalExecutor, WorkerError> {
    let redis = deadpool_redis::Config::from_url(redis_url)
        .builder()
        .map(|b| {
            b.max_size(2)
                .runtime(deadpool_redis::Runtime::Tokio1)
                .build()
        })
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|message| WorkerError::Endpoint {
            endpoint: "external services".to_owned(),
            message,
        })?;
    let pool =
        ServicePool::new(&external.config, external.token.clone(), Some(redis)).map_err(|e| {
            WorkerError::Endpoint {
                endpoint: "external services".to_owned(),
                message: e.to_string(),
            }
        })?;
    Ok(ExternalExecutor::new(pool))
}

/// Runs the worker with an executor of the caller's choice (tests, benchmarks). Serves no
/// HTTP endpoints (`settings.metrics_addr` is not bound); metrics are recorded only when a
/// recorder was installed ([`crate::metrics::install`]).
pub async fn run_with_executor(
    settings: Settings,
    executor: Arc<dyn Executor>,
    shutdown: CancellationToken,
) -> Result<RunSummary, WorkerError> {
    run_as(settings, executor, shutdown, consumer_name(), None).await
}

/// [`run_with_executor`] under the consumer id `consumer`, reporting to `health`.
async fn run_as(
    settings: Settings,
    executor: Arc<dyn Executor>,
    shutdown: CancellationToken,
    consumer: String,
    health: Option<Arc<HealthState>>,
) -> Result<RunSummary, WorkerError> {
    let qcfg = QueueConfig {
        namespace: settings.namespace.clone(),
        group: settings.group.clone(),
        retention: settings.retention,
        ..QueueConfig::default()
    };
    info!(
        consumer = %consumer,
        redis = %settings.redis_url_redacted(),
        namespace = %settings.namespace,
        group = %settings.group,
        concurrency = settings.concurrency,
        "worker starting"
    );
    let Some(queue) = connect(&settings.redis_url, &qcfg, &shutdown).await? else {
        info!("shutdown before the queue was reachable");
        return Ok(RunSummary::default());
    };

    // Validates the consumer name (the consumer opens its connection on the first read).
    queue.consumer(&consumer).map_err(WorkerError::Queue)?;
    // Metrics that cost Redis reads (task timings, fleet gauges) only when they are exported.
    let metrics_on = crate::metrics::handle().is_some();
    let observers_stop = CancellationToken::new();
    let mut observers = Vec::new();
    if let Some(h) = &health {
        observers.push(tokio::spawn(crate::health::watch_redis(
            queue.clone(),
            h.clone(),
            observers_stop.clone(),
        )));
    }
    if metrics_on {
        metric::concurrency(settings.concurrency);
        observers.push(tokio::spawn(crate::metrics::fleet::run(
            queue.clone(),
            settings.metrics_fleet_interval,
            observers_stop.clone(),
        )));
    }
    let shared = Arc::new(Shared {
        health,
        metrics_on,
        slots: Arc::new(Semaphore::new(settings.concurrency)),
        settings,
        queue,
        consumer,
        executor,
        inflight: Mutex::new(HashMap::new()),
        served: RwLock::new(Vec::new()),
        stats: Stats::default(),
        tracker: TaskTracker::new(),
        hard_stop: CancellationToken::new(),
    });
    // Worker registry (`fleet`): on the tracker, so the drain waits for its removal.
    shared.tracker.spawn(crate::registry::run(
        shared.queue.clone(),
        shared.consumer.clone(),
        shutdown.clone(),
        {
            let s = shared.clone();
            move || crate::registry::Snapshot {
                in_flight: s.inflight_count(),
                concurrency: s.settings.concurrency,
                capabilities: s.served(),
                summary: s.stats.summary(),
            }
        },
    ));

    // The heartbeat outlives the other loops: it keeps in-flight claims alive while draining.
    let heartbeat_stop = CancellationToken::new();
    let mut loops: Vec<(LoopKind, JoinHandle<()>)> = LoopKind::ALL
        .iter()
        .map(|&kind| (kind, kind.spawn(&shared, &shutdown, &heartbeat_stop)))
        .collect();

    let mut restarts = Backoff::default();
    // Supervision: a loop only ends on shutdown; one that ends earlier (a panic, which is a
    // bug) is logged and started again, so the worker never silently stops taking work.
    loop {
        let ended = tokio::select! {
            _ = shutdown.cancelled() => break,
            (result, index, _) = futures::future::select_all(loops.iter_mut().map(|(_, h)| h)) => {
                (index, result)
            }
        };
        let (index, result) = ended;
        let kind = loops[index].0;
        match result {
            Err(e) => {
                error!(loop_name = kind.name(), error = %e, "worker loop crashed; restarting it")
            }
            Ok(()) => error!(
                loop_name = kind.name(),
                "worker loop ended early; restarting it"
            ),
        }
        // A loop that keeps crashing is restarted with backoff, not in a tight loop.
        let wait = restarts.next_delay();
        if kind != LoopKind::Heartbeat && sleep_or_shutdown(&shutdown, wait).await {
            // Its handle has completed; it must not be awaited again.
            loops.remove(index);
            break;
        }
        loops[index].1 = kind.spawn(&shared, &shutdown, &heartbeat_stop);
    }

    // Readiness fails from here on, so nothing counts on this worker any more.
    if let Some(h) = &shared.health {
        h.set_draining();
    }
    let deadline = Instant::now() + shared.settings.drain_timeout;
    info!(
        in_flight = shared.inflight_count(),
        drain_timeout = %humantime::format_duration(shared.settings.drain_timeout),
        "shutdown: no new work taken, draining in-flight tasks"
    );

    // Phase 1: the loops stop taking work. The reader may be inside a blocking read (at most
    // `read_block`); what it reads is still run and drained below.
    let mut heartbeat = None;
    for (kind, mut handle) in loops {
        if kind == LoopKind::Heartbeat {
            heartbeat = Some(handle);
            continue;
        }
        tokio::select! {
            r = &mut handle => if let Err(e) = r {
                error!(loop_name = kind.name(), error = %e, "worker loop ended abnormally");
            },
            _ = tokio::time::sleep_until(deadline) => {
                handle.abort();
                warn!(loop_name = kind.name(), "worker loop did not stop before the drain deadline");
            }
        }
    }

    // Phase 2: wait for in-flight tasks until the deadline, then abandon the rest (their
    // entries stay pending and other workers reclaim them).
    shared.tracker.close();
    tokio::select! {
        _ = shared.tracker.wait() => {}
        _ = tokio::time::sleep_until(deadline) => {
            warn!(in_flight = shared.inflight_count(), "drain deadline passed: aborting in-flight tasks");
            shared.hard_stop.cancel();
            shared.tracker.wait().await;
        }
    }
    heartbeat_stop.cancel();
    if let Some(Err(e)) = match heartbeat {
        Some(h) => Some(h.await),
        None => None,
    } {
        error!(error = %e, "heartbeat loop ended abnormally");
    }

    observers_stop.cancel();
    for o in observers {
        let _ = o.await;
    }

    let summary = shared.stats.summary();
    info!(
        completed = summary.completed,
        failed = summary.failed,
        retried = summary.retried,
        stale = summary.stale,
        aborted = summary.aborted,
        "worker drained"
    );
    Ok(summary)
}

/// The supervised loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoopKind {
    Reader,
    Reclaimer,
    Promoter,
    Heartbeat,
}

impl LoopKind {
    const ALL: [LoopKind; 4] = [
        LoopKind::Reader,
        LoopKind::Reclaimer,
        LoopKind::Promoter,
        LoopKind::Heartbeat,
    ];

    fn name(self) -> &'static str {
        match self {
            LoopKind::Reader => "reader",
            LoopKind::Reclaimer => "reclaimer",
            LoopKind::Promoter => "promoter",
            LoopKind::Heartbeat => "heartbeat",
        }
    }

    fn spawn(
        self,
        shared: &Arc<Shared>,
        shutdown: &CancellationToken,
        heartbeat_stop: &CancellationToken,
    ) -> JoinHandle<()> {
        let shared = shared.clone();
        match self {
            LoopKind::Reader => tokio::spawn(reader_loop(shared, shutdown.clone())),
            LoopKind::Reclaimer => tokio::spawn(reclaim_loop(shared, shutdown.clone())),
            LoopKind::Promoter => tokio::spawn(promote_loop(shared, shutdown.clone())),
            LoopKind::Heartbeat => tokio::spawn(heartbeat_loop(shared, heartbeat_stop.clone())),
        }
    }
}

/// `<hostname>-<pid>-<8 random hex>`: unique per process even when pids repeat across
/// containers with the same host name.
pub fn consumer_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let host = if host.is_empty() {
        "worker".to_owned()
    } else {
        host
    };
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Milliseconds since the Unix epoch (the scripts take the caller's clock).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Connects to Redis, waiting out outages with backoff. `Ok(None)`: shutdown came first.
async fn connect(
    url: &str,
    cfg: &QueueConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Queue>, WorkerError> {
    let mut backoff = Backoff::default();
    loop {
        match Queue::connect(url, cfg.clone()).await {
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

/// Identity of an entry: stream and entry id (ids are only unique within one stream).
type EntryKey = (String, String);

fn entry_key(d: &Delivery) -> EntryKey {
    (d.stream.clone(), d.entry_id.clone())
}

/// An entry this process is working on.
struct InFlight {
    /// The delivery as last claimed (the delivery count fences every script call).
    delivery: Delivery,
    /// Cancelled when the heartbeat learns another consumer owns the entry now.
    lost: CancellationToken,
}

/// This process's claim on an in-flight entry. Dropping it (also when a task panics) removes
/// the entry from the heartbeat, so an entry whose execution died is reclaimed after
/// `claim_idle` instead of being kept alive forever.
struct Registration {
    shared: Arc<Shared>,
    key: EntryKey,
    /// Cancelled when another consumer owns the entry now.
    lost: CancellationToken,
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
struct Stats {
    completed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    deferred: AtomicU64,
    stale: AtomicU64,
    aborted: AtomicU64,
}

impl Stats {
    fn summary(&self) -> RunSummary {
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

struct Shared {
    /// What `/healthz` and `/readyz` report, when they are served.
    health: Option<Arc<HealthState>>,
    /// Whether metrics are exported (then task timings are read for the histograms).
    metrics_on: bool,
    settings: Settings,
    queue: Queue,
    consumer: String,
    executor: Arc<dyn Executor>,
    /// One permit per task executing; readers wait for a free one before reading.
    slots: Arc<Semaphore>,
    inflight: Mutex<HashMap<EntryKey, InFlight>>,
    /// Capabilities currently served (refreshed by the reader from `{ns}:caps`).
    served: RwLock<Vec<String>>,
    stats: Stats,
    tracker: TaskTracker,
    /// Cancelled at the drain deadline: every task still running is abandoned.
    hard_stop: CancellationToken,
}

impl Shared {
    fn inflight_count(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Registers a delivery; `None` when this process already works on the entry (a reclaim
    /// of one of our own entries: the delivery count is updated so our fencing stays right).
    fn register(self: &Arc<Self>, delivery: &Delivery) -> Option<Registration> {
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
        Some(Registration {
            shared: self.clone(),
            key,
            lost,
        })
    }

    /// The delivery with its current delivery count (see [`Shared::register`]).
    fn current(&self, delivery: &Delivery) -> Delivery {
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&entry_key(delivery))
            .map(|f| f.delivery.clone())
            .unwrap_or_else(|| delivery.clone())
    }

    fn inflight_deliveries(&self) -> Vec<Delivery> {
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|f| f.delivery.clone()).collect()
    }

    /// Aborts the entries another consumer owns now.
    fn mark_lost(&self, lost: &[Delivery]) {
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

    fn served(&self) -> Vec<String> {
        self.served
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Starts working on a delivery in its own task, with the reader's slot permit or (for
    /// reclaimed entries) waiting for one.
    fn spawn_delivery(self: &Arc<Self>, delivery: Delivery, permit: Option<OwnedSemaphorePermit>) {
        let Some(registration) = self.register(&delivery) else {
            debug!(entry = %delivery.entry_id, "entry already in flight here");
            return;
        };
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
                // Executions are bounded by the slots. A reclaimed entry waits here for one,
                // already registered so that the heartbeat keeps its claim.
                let permit = match permit {
                    Some(p) => Some(p),
                    None => tokio::select! {
                        p = shared.slots.clone().acquire_owned() => p.ok(),
                        _ = shared.hard_stop.cancelled() => None,
                    },
                };
                let outcome = match permit {
                    None => Outcome::Aborted,
                    Some(_permit) => {
                        metric::in_flight_inc();
                        let o = tokio::select! {
                            biased;
                            _ = shared.hard_stop.cancelled() => Outcome::Aborted,
                            _ = registration.lost.cancelled() => Outcome::Lost,
                            o = process(&shared, &delivery) => o,
                        };
                        metric::in_flight_dec();
                        o
                    }
                };
                drop(registration);
                shared.count(outcome);
                shared.observe_workflow_end(&delivery, outcome);
            }
            .instrument(span),
        );
    }

    /// After a completion or terminal failure that may have ended the workflow: records its
    /// duration when this worker is the first to see it ended (claimed in Redis, so each
    /// workflow is observed once across the fleet). In the background: the task is done.
    fn observe_workflow_end(self: &Arc<Self>, delivery: &Delivery, outcome: Outcome) {
        if !self.metrics_on || !matches!(outcome, Outcome::Completed | Outcome::Failed) {
            return;
        }
        let queue = self.queue.clone();
        let consumer = self.consumer.clone();
        let wf = delivery.workflow_id.clone();
        tokio::spawn(async move {
            match queue.claim_workflow_end(&wf, &consumer).await {
                Ok(Some(end)) => {
                    metric::workflow_ended(&end.status, Duration::from_millis(end.duration_ms))
                }
                Ok(None) => {}
                Err(e) => debug!(error = %e, "cannot read the workflow end for metrics"),
            }
        });
    }

    /// Records how long the task waited in its stream and, for a task released by its
    /// dependencies, the release latency. `begin` returned when the task became ready, so
    /// this costs no Redis call.
    fn observe_wait(&self, delivery: &Delivery, task: &Task, ctx: &TaskContext) {
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

    fn count(&self, outcome: Outcome) {
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
    }

    /// Runs a queue call, retrying Redis errors with capped backoff so a computed result is not
    /// thrown away because Redis blinked. `None`: the error cannot be retried (logged); the entry
    /// stays pending and is reclaimed later. The caller's select ends the retries at the drain
    /// deadline or when the entry is lost.
    async fn with_retry<T, F, Fut>(&self, what: &str, mut call: F) -> Option<T>
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
enum Outcome {
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

/// begin → decode → render → execute (with timeout) → complete or fail.
async fn process(shared: &Arc<Shared>, delivery: &Delivery) -> Outcome {
    let consumer = shared.consumer.as_str();
    let Some(begun) = shared
        .with_retry("begin", || shared.queue.begin(delivery, consumer, now_ms()))
        .await
    else {
        return Outcome::GaveUp;
    };
    let ctx = match begun {
        BeginOutcome::Run(ctx) => ctx,
        BeginOutcome::NotRunnable { status } => {
            info!(status = %status, "task can no longer run; entry acknowledged");
            return Outcome::NotRunnable;
        }
        BeginOutcome::Stale => {
            info!("entry was reclaimed by another consumer before it began; not running it");
            return Outcome::Stale;
        }
    };
    tracing::Span::current().record("task_name", ctx.name.as_str());

    let task: Task = match serde_json::from_str(&ctx.spec_json) {
        Ok(t) => t,
        Err(e) => {
            let failure = TaskFailure {
                kind: FailureKind::Permanent,
                message: format!("task spec cannot be decoded: {e}"),
                detail: None,
            };
            error!(error = %e, "undecodable task spec: dead-lettering as poison");
            let outcome = finish_failure(
                shared,
                delivery,
                failure,
                None,
                Some(DeadLetterKind::Poison),
            )
            .await;
            if outcome == Outcome::Failed {
                metric::task_failed_unstarted(&delivery.capability, UNKNOWN_TYPE);
                metric::task_dead_lettered(&delivery.capability, UNKNOWN_TYPE);
            }
            return outcome;
        }
    };

    let task_type = task.action.kind().as_str();
    metric::task_started(&delivery.capability, task_type);
    shared.observe_wait(delivery, &task, &ctx);
    let run_started = Instant::now();
    let outcome = run_task(shared, delivery, &ctx, task).await;
    metric::task_ended(
        &delivery.capability,
        task_type,
        task_end(outcome),
        run_started.elapsed(),
    );
    outcome
}

/// The `type` label of a task whose spec could not be read.
const UNKNOWN_TYPE: &str = "unknown";

/// How an outcome counts in the task metrics.
fn task_end(outcome: Outcome) -> TaskEnd {
    match outcome {
        Outcome::Completed => TaskEnd::Completed,
        Outcome::Failed => TaskEnd::Failed,
        Outcome::Retried => TaskEnd::Retried,
        Outcome::Deferred => TaskEnd::Deferred,
        Outcome::Stale
        | Outcome::Lost
        | Outcome::Aborted
        | Outcome::NotRunnable
        | Outcome::GaveUp => TaskEnd::Other,
    }
}

/// render → execute (with timeout) → complete or fail, for a task that has begun.
async fn run_task(
    shared: &Arc<Shared>,
    delivery: &Delivery,
    ctx: &TaskContext,
    task: Task,
) -> Outcome {
    let consumer = shared.consumer.as_str();
    let rendered = match render(&task, ctx) {
        Ok(t) => t,
        Err(message) => {
            warn!(error = %message, "templates cannot be rendered: failing the task");
            let failure = TaskFailure {
                kind: FailureKind::Permanent,
                message,
                detail: None,
            };
            return finish_failure(shared, delivery, failure, None, None).await;
        }
    };

    let exec_ctx = ExecContext {
        workflow_id: delivery.workflow_id.clone(),
        task_index: delivery.task,
        capability: delivery.capability.clone(),
        attempt: ctx.attempts + 1,
    };
    debug!(attempt = exec_ctx.attempt, "executing");
    let started = Instant::now();
    // The executors bound their own work by the task's timeout (the router's slot waits
    // and calls, the service calls) and report how it ended, e.g. a slot wait as a deferral;
    // this outer bound, a little later, only catches an executor that overran.
    let result = match tokio::time::timeout(
        rendered.timeout + EXECUTOR_GRACE,
        shared.executor.execute(&rendered, &exec_ctx),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ExecFailure::timeout(rendered.timeout)),
    };

    match result {
        Ok(result) => {
            let json = match serde_json::to_string(&result) {
                Ok(j) => j,
                Err(e) => {
                    let failure = TaskFailure {
                        kind: FailureKind::Permanent,
                        message: format!("result cannot be serialised: {e}"),
                        detail: None,
                    };
                    return finish_failure(shared, delivery, failure, None, None).await;
                }
            };
            let Some(code) = shared
                .with_retry("complete", || {
                    let d = shared.current(delivery);
                    let json = json.clone();
                    async move { shared.queue.complete(&d, consumer, &json, now_ms()).await }
                })
                .await
            else {
                return Outcome::GaveUp;
            };
            match code {
                CompleteCode::Completed => {
                    info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "task completed"
                    );
                    Outcome::Completed
                }
                CompleteCode::Stale => {
                    info!("completion refused as stale: another consumer owns the entry");
                    Outcome::Stale
                }
                CompleteCode::Duplicate => {
                    warn!("completion refused as a duplicate: the task had already ended");
                    Outcome::Stale
                }
                CompleteCode::Cancelled => {
                    info!("the task was cancelled while it ran; result kept, nothing released");
                    Outcome::NotRunnable
                }
                CompleteCode::NotFound => {
                    info!("the task no longer exists (workflow expired); entry acknowledged");
                    Outcome::NotRunnable
                }
                CompleteCode::NotRunning => {
                    warn!("completion refused: the task is not running");
                    Outcome::Stale
                }
            }
        }
        Err(failure) if failure.deferred => {
            // No capacity reached the task: re-queue it without using an attempt, after the
            // provider's hint or the first retry delay of the task's policy.
            let delay = task
                .retry
                .delay_for(1, rand::random::<f64>())
                .max(failure.min_retry_delay.unwrap_or_default());
            info!(error = %failure.message, retry_in = ?delay, "task deferred: no capacity, attempt not counted");
            finish_deferral(shared, delivery, failure.to_task_failure(), delay).await
        }
        Err(failure) => {
            let failed_attempts = ctx.attempts + 1;
            let (retry_at, dead) = if failure.is_retryable() {
                if task.retry.should_retry(failed_attempts) {
                    let delay = task
                        .retry
                        .delay_for(failed_attempts, rand::random::<f64>())
                        .max(failure.min_retry_delay.unwrap_or_default());
                    (Some(delay), None)
                } else {
                    (None, Some(DeadLetterKind::Exhausted))
                }
            } else {
                (None, None)
            };
            warn!(
                attempt = failed_attempts,
                max_attempts = task.retry.max_attempts,
                kind = ?failure.kind,
                error = %failure.message,
                retry_in = ?retry_at,
                "task attempt failed"
            );
            let outcome =
                finish_failure(shared, delivery, failure.to_task_failure(), retry_at, dead).await;
            if outcome == Outcome::Failed && dead.is_some() {
                metric::task_dead_lettered(&delivery.capability, task.action.kind().as_str());
            }
            outcome
        }
    }
}

/// Records a deferral: the task waits `delay` in the retry set with its attempts unchanged.
async fn finish_deferral(
    shared: &Arc<Shared>,
    delivery: &Delivery,
    failure: TaskFailure,
    delay: Duration,
) -> Outcome {
    let error_json = serde_json::to_string(&failure).unwrap_or_else(|_| {
        serde_json::json!({ "kind": failure.kind.as_str(), "message": failure.message }).to_string()
    });
    let consumer = shared.consumer.as_str();
    let Some(code) = shared
        .with_retry("defer", || {
            let d = shared.current(delivery);
            let now = now_ms();
            let req = FailRequest {
                error_json: error_json.clone(),
                retry_at_ms: Some(now + delay.as_millis() as u64),
                dead_letter: None,
                now_ms: now,
            };
            async move { shared.queue.defer(&d, consumer, &req).await }
        })
        .await
    else {
        return Outcome::GaveUp;
    };
    match code {
        FailCode::RetryScheduled => Outcome::Deferred,
        // The workflow stopped running meanwhile: the script recorded a plain failure.
        other => fail_code_outcome(other, &failure),
    }
}

/// Records a failure: a retry after `retry_in`, or terminal (with an optional dead letter).
async fn finish_failure(
    shared: &Arc<Shared>,
    delivery: &Delivery,
    failure: TaskFailure,
    retry_in: Option<Duration>,
    dead_letter: Option<DeadLetterKind>,
) -> Outcome {
    // A `TaskFailure` always serialises; the fallback keeps the message if that ever changed.
    let error_json = serde_json::to_string(&failure).unwrap_or_else(|_| {
        serde_json::json!({ "kind": failure.kind.as_str(), "message": failure.message }).to_string()
    });
    let consumer = shared.consumer.as_str();
    let Some(code) = shared
        .with_retry("fail", || {
            let d = shared.current(delivery);
            let now = now_ms();
            let req = FailRequest {
                error_json: error_json.clone(),
                retry_at_ms: retry_in.map(|r| now + r.as_millis() as u64),
                dead_letter,
                now_ms: now,
            };
            async move { shared.queue.fail(&d, consumer, &req).await }
        })
        .await
    else {
        return Outcome::GaveUp;
    };
    fail_code_outcome(code, &failure)
}

/// What a `fail.lua` reply means for this delivery.
fn fail_code_outcome(code: FailCode, failure: &TaskFailure) -> Outcome {
    match code {
        FailCode::RetryScheduled => Outcome::Retried,
        FailCode::Failed => {
            info!(kind = failure.kind.as_str(), "task failed");
            Outcome::Failed
        }
        FailCode::Stale => {
            info!("failure refused as stale: another consumer owns the entry");
            Outcome::Stale
        }
        FailCode::Duplicate => {
            warn!("failure refused as a duplicate: the task had already ended");
            Outcome::Stale
        }
        FailCode::Cancelled => {
            info!("the task was cancelled while it ran; error kept");
            Outcome::NotRunnable
        }
        FailCode::NotFound => {
            info!("the task no longer exists (workflow expired); entry acknowledged");
            Outcome::NotRunnable
        }
        FailCode::NotRunning => {
            warn!("failure refused: the task is neither ready nor running");
            Outcome::Stale
        }
    }
}

/// Renders the task's templates with the workflow input and the referenced results.
fn render(task: &Task, ctx: &TaskContext) -> Result<Task, String> {
    let input: Map<String, Value> = if ctx.input_json.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(&ctx.input_json) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => Map::new(),
            Ok(_) => return Err("workflow input is not a JSON object".to_owned()),
            Err(e) => return Err(format!("workflow input is not valid JSON: {e}")),
        }
    };
    let mut results = HashMap::new();
    for (name, json) in &ctx.refs {
        // Results are stored as `TaskResult` (value + meta); templates see the value.
        let value = match serde_json::from_str::<TaskResult>(json) {
            Ok(r) => r.value,
            Err(_) => serde_json::from_str::<Value>(json)
                .map_err(|e| format!("result of {name:?} is not valid JSON: {e}"))?,
        };
        results.insert(name.clone(), value);
    }
    let rctx = RenderContext {
        input: &input,
        results: &results,
    };
    task.render(&rctx)
        .map_err(|e| format!("template error: {e}"))
}

/// Recomputes the served capabilities from `{ns}:caps`.
async fn refresh_served(shared: &Shared) -> Result<Vec<String>, QueueError> {
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
    }
    Ok(caps)
}

/// Every stream (high, normal, low priority) of each capability.
fn stream_refs(queue: &Queue, caps: &[String]) -> Vec<StreamRef> {
    caps.iter()
        .flat_map(|c| queue.keys().stream_refs(c))
        .collect()
}

/// How soon the reader looks again when every served stream is saturated.
const SATURATED_RECHECK: Duration = Duration::from_millis(50);

async fn reader_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
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
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if Instant::now() >= caps_due {
            match refresh_served(&shared).await {
                Ok(caps) => {
                    streams = stream_refs(&shared.queue, &caps);
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
        if streams.is_empty() {
            if sleep_or_shutdown(&shutdown, shared.settings.caps_refresh).await {
                break;
            }
            continue;
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
        match consumer.read_prioritised(&open, free, block).await {
            Ok(deliveries) => {
                backoff.reset();
                for d in deliveries {
                    // `read_prioritised` returns at most `free` entries.
                    shared.spawn_delivery(d, permits.pop());
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

async fn reclaim_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
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
                // Counted against entries in flight, not free permits: the reader holds the
                // free permits during its blocking read, which would starve reclaim.
                let free = shared
                    .settings
                    .concurrency
                    .saturating_sub(shared.inflight_count());
                if free == 0 {
                    break 'caps;
                }
                let idle = shared.settings.claim_idle_for(&cap);
                match shared
                    .queue
                    .reclaim(&shared.consumer, &stream, idle, free)
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

fn handle_reclaimed(shared: &Arc<Shared>, d: Delivery) {
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
                shared2.observe_workflow_end(&d, outcome);
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
        shared.spawn_delivery(d, None);
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
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

async fn promote_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
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
                if p.moved > 0 {
                    debug!(moved = p.moved, "promoted due retries");
                }
                if p.moved >= PROMOTE_BATCH {
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

/// Sleeps for `d`; `true` when `token` was cancelled first.
async fn sleep_or_shutdown(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
