//! The worker registry: every worker process publishes who it is and how loaded it is, so
//! operators can see the fleet (`gleitzeit-submit fleet`) without access to the hosts.
//!
//! At start the worker writes `{ns}:worker:<id>` (host, pid, version, state, concurrency,
//! in-flight tasks, capabilities served, counters since start) and its member of
//! `{ns}:workers`, both expiring after [`TTL`]: a worker that dies silently disappears by
//! itself. The runtime signals every task start and end (and a change of the capabilities
//! served); the record is written again at once, or, when the last write was less than
//! [`FRESH_INTERVAL`] ago, when that interval has passed, so `fleet` is current after a
//! change on a quiet worker and at most [`FRESH_INTERVAL`] behind on a busy one. Without
//! changes it is written every [`PUBLISH_INTERVAL`] to keep it alive. An idle worker writes nothing but the
//! keep-alive; a busy one at most a few small transactions a second. On shutdown the record
//! says `draining` while tasks are still in flight, and is removed once they are done. The
//! counters are the runtime's own ([`crate::RunSummary`]); this module only reads them
//! through a snapshot closure (a local read, no Redis call).

use std::sync::Arc;
use std::time::Duration;

use gleitzeit_core::now_ms;
use gleitzeit_queue::{Queue, QueueError, WorkerRecord};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::error::RunSummary;

/// How often a worker refreshes its record when nothing changed (keep-alive).
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(5);
/// How long a record lives without a refresh: three missed refreshes mean the worker is gone.
pub const TTL: Duration = Duration::from_secs(15);
/// The least time between two writes of the record: the most a changed record can lag
/// behind a busy worker.
pub const FRESH_INTERVAL: Duration = Duration::from_millis(500);
/// While draining, how often the in-flight count is checked (a local read, no Redis call).
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// What the runtime reports about itself at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Tasks executing now.
    pub in_flight: usize,
    /// Execution slots.
    pub concurrency: usize,
    /// Capabilities the reader serves.
    pub capabilities: Vec<String>,
    /// The configured capability patterns.
    pub patterns: Vec<String>,
    /// Counters since start.
    pub summary: RunSummary,
}

fn record(id: &str, started_ms: u64, state: &str, s: &Snapshot) -> WorkerRecord {
    WorkerRecord {
        id: id.to_owned(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        state: state.to_owned(),
        started_ms,
        updated_ms: now_ms(),
        expires_ms: 0,
        concurrency: u32::try_from(s.concurrency).unwrap_or(u32::MAX),
        in_flight: u32::try_from(s.in_flight).unwrap_or(u32::MAX),
        capabilities: s.capabilities.clone(),
        patterns: s.patterns.clone(),
        completed: s.summary.completed,
        failed: s.summary.failed,
        retried: s.summary.retried,
        deferred: s.summary.deferred,
        // What this version's scripts run: submitters use the fields layout once every live
        // worker says so (Queue::submit).
        layouts: vec![
            gleitzeit_queue::keys::LAYOUT_PACKED.to_owned(),
            gleitzeit_queue::keys::LAYOUT_FIELDS.to_owned(),
        ],
    }
}

/// How the last publication went, so a lasting refusal is logged once, not every interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Published {
    #[default]
    Ok,
    /// The Redis user may not write the registry (ACL).
    Refused,
}

async fn publish(queue: &Queue, rec: &WorkerRecord, last: &mut Published) {
    // The registry is advisory: a failed write is logged and retried at the next interval,
    // it never disturbs the work.
    match queue.publish_worker(rec, TTL).await {
        Ok(()) => {
            if *last == Published::Refused {
                info!("the worker registry record is published again");
            }
            *last = Published::Ok;
        }
        // A refused permission does not pass by itself: an error, once, until it works again.
        Err(e @ QueueError::NoPermission(_)) => {
            if *last != Published::Refused {
                error!(
                    error = %e,
                    role = "worker",
                    "cannot publish the worker registry record: the Redis user lacks a permission of role worker (`gleitzeit-submit acl --role worker`); `fleet` will not list this worker"
                );
            } else {
                debug!(error = %e, "worker registry record still refused");
            }
            *last = Published::Refused;
        }
        Err(e) => {
            warn!(error = %e, "cannot publish the worker registry record");
            *last = Published::Ok;
        }
    }
}

/// Whether the record must be written again: what it says changed (checked when the runtime
/// signals a change, at most every [`FRESH_INTERVAL`]), or the keep-alive is due.
fn due(written: &Snapshot, now: &Snapshot, since_written: Duration) -> bool {
    written != now || since_written >= PUBLISH_INTERVAL
}

/// Publishes the worker's record until `shutdown`, then as `draining` until nothing is in
/// flight, then removes it. The runtime runs this on its task tracker, so the drain waits for
/// the removal.
pub async fn run<F>(
    queue: Queue,
    id: String,
    shutdown: CancellationToken,
    changed: Arc<Notify>,
    snapshot: F,
) where
    F: Fn() -> Snapshot + Send + 'static,
{
    let started_ms = now_ms();
    let mut last = Published::default();
    let mut written = snapshot();
    publish(
        &queue,
        &record(&id, started_ms, "running", &written),
        &mut last,
    )
    .await;
    let mut written_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(PUBLISH_INTERVAL) => {}
        }
        // A busy worker changes all the time: one write per interval at most.
        if let Some(rest) = FRESH_INTERVAL.checked_sub(written_at.elapsed()) {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(rest) => {}
            }
        }
        let now = snapshot();
        if due(&written, &now, written_at.elapsed()) {
            publish(&queue, &record(&id, started_ms, "running", &now), &mut last).await;
            written = now;
            written_at = tokio::time::Instant::now();
        }
    }
    let mut published_at = None::<tokio::time::Instant>;
    loop {
        let s = snapshot();
        if s.in_flight == 0 {
            break;
        }
        if published_at.is_none_or(|t| t.elapsed() >= PUBLISH_INTERVAL) {
            publish(&queue, &record(&id, started_ms, "draining", &s), &mut last).await;
            published_at = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    match queue.remove_worker(&id).await {
        Ok(()) => debug!("removed from the worker registry"),
        // It expires by itself after the TTL; a refusal was reported when publishing.
        Err(e @ QueueError::NoPermission(_)) if last == Published::Refused => {
            debug!(error = %e, "cannot remove the worker registry record")
        }
        Err(e @ QueueError::NoPermission(_)) => error!(
            error = %e,
            role = "worker",
            "cannot remove the worker registry record: the Redis user lacks a permission of role worker"
        ),
        Err(e) => warn!(error = %e, "cannot remove the worker registry record"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use gleitzeit_queue::QueueConfig;
    use gleitzeit_testkit::redis::RedisServer;

    use super::*;

    /// Polls `check` until it holds; the deadline only bounds a broken run.
    async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !check().await {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn a_changed_record_is_written_at_the_next_check_and_an_unchanged_one_only_to_stay_alive() {
        let idle = Snapshot {
            concurrency: 4,
            capabilities: vec!["llm:smollm2".to_owned()],
            ..Snapshot::default()
        };
        let mut busy = idle.clone();
        busy.in_flight = 1;
        let mut done = idle.clone();
        done.summary.completed = 1;
        assert!(due(&idle, &busy, FRESH_INTERVAL), "a task started");
        assert!(due(&busy, &done, FRESH_INTERVAL), "a task completed");
        let mut served = idle.clone();
        served.capabilities.push("llm:mistral".to_owned());
        assert!(due(&idle, &served, FRESH_INTERVAL), "a capability appeared");
        assert!(
            !due(&idle, &idle, PUBLISH_INTERVAL - FRESH_INTERVAL),
            "nothing changed: no write"
        );
        assert!(due(&idle, &idle, PUBLISH_INTERVAL), "the keep-alive");
        const { assert!(FRESH_INTERVAL.as_millis() * 3 < TTL.as_millis()) };
    }

    #[tokio::test]
    async fn a_worker_is_listed_while_it_runs_drains_then_leaves() {
        let redis = RedisServer::start().expect("redis-server");
        let queue = Queue::connect(&redis.url(), QueueConfig::default())
            .await
            .unwrap();
        let in_flight = Arc::new(AtomicUsize::new(2));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            queue.clone(),
            "host-1-abcdef01".to_owned(),
            shutdown.clone(),
            Arc::new(Notify::new()),
            {
                let in_flight = in_flight.clone();
                move || Snapshot {
                    in_flight: in_flight.load(Ordering::SeqCst),
                    concurrency: 4,
                    capabilities: vec!["llm:smollm2".to_owned()],
                    patterns: vec!["llm:*".to_owned()],
                    summary: RunSummary {
                        completed: 5,
                        failed: 1,
                        ..RunSummary::default()
                    },
                }
            },
        ));
        let listed = |state: &'static str| {
            let queue = queue.clone();
            move || {
                let queue = queue.clone();
                async move {
                    let workers = queue.workers(now_ms()).await.unwrap();
                    workers.len() == 1 && workers[0].state == state
                }
            }
        };
        eventually("listed as running", listed("running")).await;
        let w = queue.workers(now_ms()).await.unwrap().remove(0);
        assert_eq!(w.id, "host-1-abcdef01");
        assert_eq!(w.pid, std::process::id());
        assert_eq!((w.in_flight, w.concurrency), (2, 4));
        assert_eq!((w.completed, w.failed), (5, 1));
        assert_eq!(w.capabilities, vec!["llm:smollm2"]);
        assert_eq!(w.version, env!("CARGO_PKG_VERSION"));
        // It runs workflows whose tasks are fields of the workflow hash: submitters use that
        // layout once every live worker says so (Queue::submit).
        assert!(
            w.runs_layout(gleitzeit_queue::keys::LAYOUT_PACKED)
                && w.runs_layout(gleitzeit_queue::keys::LAYOUT_FIELDS),
            "layouts {:?}",
            w.layouts
        );
        assert!(w.expires_ms > w.updated_ms);
        let key = queue.keys().worker("host-1-abcdef01");
        let client = deadpool_redis::redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let ttl: i64 = deadpool_redis::redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "the record expires by itself ({ttl})");

        // Shutdown with tasks in flight: still listed, as draining.
        shutdown.cancel();
        eventually("listed as draining", listed("draining")).await;
        assert!(!task.is_finished());
        // The last task ends: the record goes.
        in_flight.store(0, Ordering::SeqCst);
        task.await.unwrap();
        assert!(queue.workers(now_ms()).await.unwrap().is_empty());
        let exists: i64 = deadpool_redis::redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0);
    }

    #[tokio::test]
    async fn a_refused_registry_write_is_told_apart_and_recovers() {
        let redis = RedisServer::start().expect("redis-server");
        let keys = gleitzeit_queue::Keys::new("gleitzeit").unwrap();
        // The worker role without PEXPIRE: the registry's transaction is refused (EXECABORT
        // naming the command). A refused MULTI itself is not tried here: the client library's
        // connection does not survive it, which is why the worker checks its role at start.
        let set_user = |without: &str| {
            let mut args = vec![
                "ACL".to_owned(),
                "SETUSER".to_owned(),
                "w".to_owned(),
                "reset".to_owned(),
                "on".to_owned(),
                ">pw".to_owned(),
            ];
            args.extend(
                gleitzeit_queue::Role::Worker
                    .rules(&keys)
                    .into_iter()
                    .filter(|r| r != without),
            );
            redis.admin(&args).unwrap();
        };
        set_user("+pexpire");
        let queue = Queue::connect(&redis.url_as("w", "pw"), QueueConfig::default())
            .await
            .unwrap();
        let rec = record("host-1-abcdef01", now_ms(), "running", &Snapshot::default());
        let mut last = Published::default();
        publish(&queue, &rec, &mut last).await;
        assert_eq!(last, Published::Refused);
        publish(&queue, &rec, &mut last).await;
        assert_eq!(
            last,
            Published::Refused,
            "still refused: logged at debug only"
        );
        // Granted again: published, and the state says so.
        set_user("");
        publish(&queue, &rec, &mut last).await;
        assert_eq!(last, Published::Ok);
        assert_eq!(queue.workers(now_ms()).await.unwrap().len(), 1);
    }
}
