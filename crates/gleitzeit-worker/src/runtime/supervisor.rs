//! The worker's start (configuration, executors, metrics server, Redis), the supervision of
//! its loops, and the two-phase drain on shutdown.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use gleitzeit_queue::{QueueConfig, RedisTarget};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::connect::connect;
use super::heartbeat::heartbeat_loop;
use super::inflight::{Shared, Stats};
use super::promote::promote_loop;
use super::reader::reader_loop;
use super::reclaim::reclaim_loop;
use super::sleep::sleep_or_shutdown;
use crate::backoff::Backoff;
use crate::config::{Settings, WorkerConfig};
use crate::error::{RunSummary, WorkerError};
use crate::executor::Executor;
use crate::external_executor::{Executors, ExternalExecutor, ResolvedExternal};
use crate::health::{HealthServer, HealthState};
use crate::identity::consumer_name;
use crate::llm_executor::LlmExecutor;
use crate::metrics::record::{self as metric};
use gleitzeit_external::ServicePool;

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
    let llm = Arc::new(LlmExecutor::fleet_as(&settings, &consumer)?);
    // Follows the endpoints published in Redis (or says once that they are not adopted).
    llm.start_published(settings.published_endpoints);
    let mut executors: Vec<Arc<dyn Executor>> = vec![llm];
    if let Some(external) = &settings.external {
        executors.push(Arc::new(external_executor(
            &settings.redis_target(),
            external,
        )?));
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
pub(super) async fn run_served(
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

/// Bound on one discovery read (connecting included).
const DISCOVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The executor of external tasks: a service pool that finds instances registered in Redis
/// (its own shared connection: discovery reads are rare) and at configured addresses.
pub(super) fn external_executor(
    redis: &RedisTarget,
    external: &ResolvedExternal,
) -> Result<ExternalExecutor, WorkerError> {
    let redis = redis
        .shared(DISCOVERY_TIMEOUT)
        .map_err(|e| WorkerError::Endpoint {
            endpoint: "external services".to_owned(),
            message: e.to_string(),
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
pub(super) async fn run_as(
    settings: Settings,
    executor: Arc<dyn Executor>,
    shutdown: CancellationToken,
    consumer: String,
    health: Option<Arc<HealthState>>,
) -> Result<RunSummary, WorkerError> {
    let qcfg = QueueConfig {
        namespace: settings.namespace.clone(),
        group: settings.group.clone(),
        shards: settings.shards,
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
    let Some(queue) = connect(&settings.redis_target(), &qcfg, &shutdown).await? else {
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
        changed: Arc::new(tokio::sync::Notify::new()),
        tracker: TaskTracker::new(),
        hard_stop: CancellationToken::new(),
        reclaimed: Mutex::new(VecDeque::new()),
    });
    // Worker registry (`fleet`): on the tracker, so the drain waits for its removal.
    shared.tracker.spawn(crate::registry::run(
        shared.queue.clone(),
        shared.consumer.clone(),
        shutdown.clone(),
        shared.changed.clone(),
        {
            let s = shared.clone();
            move || crate::registry::Snapshot {
                in_flight: s.inflight_count(),
                concurrency: s.settings.concurrency,
                capabilities: s.served(),
                patterns: s
                    .settings
                    .capabilities
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
                summary: s.stats.summary(),
            }
        },
    ));

    // The heartbeat outlives the other loops: it keeps in-flight claims alive while draining.
    let heartbeat_stop = CancellationToken::new();
    let mut loops: Vec<(LoopKind, JoinHandle<()>)> =
        LoopKind::all(usize::from(shared.queue.shard_count()))
            .into_iter()
            .map(|kind| (kind, kind.spawn(&shared, &shutdown, &heartbeat_stop)))
            .collect();

    let mut restarts = Backoff::default();
    // Supervision: a loop only ends on shutdown; one that ends earlier (a panic, which is a
    // bug) is logged and started again, so the worker never silently stops taking work.
    loop {
        // Biased: loops end on their own once shutdown is cancelled, and that end must be
        // seen as the shutdown it is, not as a loop that stopped early.
        let ended = tokio::select! {
            biased;
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

    // Reclaimed entries that never got a slot are not this worker's any more.
    shared.forget_reclaimed();

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
    // No task runs any more: slots parked for a next call go back to the fleet now rather
    // than after their linger (or, were the process gone, their lease's lifetime).
    shared.executor.drained().await;
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

    // Every worker process is a new consumer: leave the groups where nothing is pending, so
    // restarts do not pile up consumers (entries abandoned at the deadline keep theirs).
    if let Err(e) = shared
        .queue
        .leave_groups(&shared.consumer, &shared.served())
        .await
    {
        info!(error = %e, "cannot leave the consumer groups; `gleitzeit-submit prune` removes the consumer later");
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
pub(super) enum LoopKind {
    /// The reader of one shard's streams.
    Reader(usize),
    Reclaimer,
    Promoter,
    Heartbeat,
}

impl LoopKind {
    /// Every loop of a worker on a namespace of `shards` shards: a reader per shard.
    fn all(shards: usize) -> Vec<LoopKind> {
        (0..shards)
            .map(LoopKind::Reader)
            .chain([LoopKind::Reclaimer, LoopKind::Promoter, LoopKind::Heartbeat])
            .collect()
    }

    fn name(self) -> &'static str {
        match self {
            LoopKind::Reader(_) => "reader",
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
            LoopKind::Reader(shard) => tokio::spawn(reader_loop(shared, shard, shutdown.clone())),
            LoopKind::Reclaimer => tokio::spawn(reclaim_loop(shared, shutdown.clone())),
            LoopKind::Promoter => tokio::spawn(promote_loop(shared, shutdown.clone())),
            LoopKind::Heartbeat => tokio::spawn(heartbeat_loop(shared, heartbeat_stop.clone())),
        }
    }
}
