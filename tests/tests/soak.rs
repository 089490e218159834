//! Memory under a steady stream of work (part of the fault suite): real worker processes, a
//! real Redis and the Ollama simulator.
//!
//! - `memory_returns_to_the_baseline_once_retention_passed`: diamonds submitted at a steady
//!   rate with a short retention; every workflow completes once, and when the retention has
//!   passed no workflow key is left, the workflow index is empty and the data in Redis is back
//!   near where it started.
//! - `a_full_redis_refuses_new_work_while_accepted_work_completes`: Redis at `maxmemory` with
//!   `noeviction` a little above its idle use; a submitter that keeps going is refused
//!   (`QueueError::OutOfMemory`) while every accepted workflow completes exactly once, and
//!   is accepted again as retention frees memory.
//!
//! `GLEITZEIT_FAULT_FULL=1` runs the long versions (docs/reliability.md).

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_redis::redis;
use gleitzeit_e2e::faults::fleet::{ollama_sims, spec, until, workers, LATENCY};
use gleitzeit_e2e::faults::workload::Workload;
use gleitzeit_e2e::faults::{seed, sized};
use gleitzeit_e2e::store::Store;
use gleitzeit_e2e::workflows::{new_id, submit_request};
use gleitzeit_e2e::{within, Deployment};
use gleitzeit_queue::{Queue, QueueError};

/// A field of Redis's `INFO memory` (bytes).
async fn memory_field(store: &Store, field: &str) -> u64 {
    let info: String = store.query(redis::cmd("INFO").arg("memory")).await;
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO memory has no {field}"))
}

/// Everything Redis holds (`used_memory`), what `maxmemory` is compared with.
async fn used_memory(store: &Store) -> u64 {
    memory_field(store, "used_memory").await
}

/// The data alone (`used_memory_dataset`: without client buffers, script caches and the
/// server's own overhead, which vary with connections, not with work).
async fn dataset(store: &Store) -> u64 {
    memory_field(store, "used_memory_dataset").await
}

/// Visits every key once, so keys whose TTL has passed are deleted now (Redis frees expired
/// keys lazily on access, or a few at a time in the background).
async fn purge_expired(store: &Store) {
    let mut cursor = 0u64;
    loop {
        let (next, _): (u64, Vec<String>) = store
            .query(redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000))
            .await;
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

/// The fleet-wide workflow counters (`{ns}:stats`).
async fn stats(store: &Store) -> BTreeMap<String, u64> {
    store
        .hash(&store.keys().stats())
        .await
        .into_iter()
        .filter_map(|(k, v)| v.parse().ok().map(|n| (k, n)))
        .collect()
}

async fn counter(store: &Store, name: &str) -> u64 {
    stats(store).await.get(name).copied().unwrap_or(0)
}

/// How many workflow keys (`{ns}:wf:*`) exist.
async fn workflow_keys(store: &Store) -> usize {
    let pattern = format!("{}wf:*", store.keys().prefix());
    let keys: Vec<String> = store.query(redis::cmd("KEYS").arg(&pattern)).await;
    keys.len()
}

async fn zcard(store: &Store, key: &str) -> u64 {
    store.query(redis::cmd("ZCARD").arg(key)).await
}

/// Submits the workload's workflows with this retention; refused ones (Redis full) are
/// counted, not retried. Returns (accepted, refused).
async fn submit_with_retention(
    queue: &Queue,
    workload: &Workload,
    retention: Duration,
) -> (usize, usize) {
    let (mut accepted, mut refused) = (0, 0);
    for wf in workload.parsed() {
        let mut req = submit_request(&wf, &new_id());
        req.retention = Some(retention);
        match queue.submit(&req).await {
            Ok(_) => accepted += 1,
            Err(QueueError::OutOfMemory) => refused += 1,
            Err(e) => panic!("submit failed: {e}"),
        }
    }
    (accepted, refused)
}

/// What one phase of the soak left behind.
struct Phase {
    /// `used_memory_dataset` at the busiest moment of the phase.
    peak: u64,
    /// `used_memory_dataset` once every workflow of the phase had expired.
    end: u64,
}

/// One phase: `rounds` rounds of `per_round` diamonds, one round a second, then waits until
/// every workflow completed exactly once and expired out of Redis and its index.
async fn soak_phase(
    dep: &Deployment,
    queue: &Queue,
    sims: &[gleitzeit_testkit::llm::MockOllama],
    phase: usize,
    rounds: usize,
    per_round: usize,
    retention: Duration,
) -> Phase {
    let store = &dep.store;
    let seed = seed();
    let completed_before = counter(store, "workflows_completed").await;
    let calls_before = sims[0].counters().received;
    let (mut submitted, mut tasks) = (0u64, 0u64);
    let mut peak = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for round in 0..rounds {
        // The pace of the load: one round a second (its rate, not a wait for an event).
        tick.tick().await;
        let label = format!("soak{phase}-{round}");
        let workload = Workload::diamonds(&label, seed + round as u64, per_round);
        let (accepted, refused) = submit_with_retention(queue, &workload, retention).await;
        assert_eq!(refused, 0, "Redis has no maxmemory here");
        submitted += accepted as u64;
        tasks += workload.task_count() as u64;
        peak = peak.max(dataset(store).await);
    }
    until("every workflow of the phase to complete", || async {
        counter(store, "workflows_completed").await >= completed_before + submitted
    })
    .await;
    let s = stats(store).await;
    assert_eq!(
        s.get("workflows_completed"),
        Some(&(completed_before + submitted)),
        "{s:?}"
    );
    assert_eq!(s.get("workflows_failed"), None, "{s:?}");
    // One call per task: nothing lost, nothing run twice.
    assert_eq!(sims[0].counters().received - calls_before, tasks);
    until(
        "every finished workflow to expire and leave the index",
        || async {
            workflow_keys(store).await == 0
                && zcard(store, &store.keys().workflows()).await == 0
                && zcard(store, &store.keys().expiring()).await == 0
        },
    )
    .await;
    purge_expired(store).await;
    let end = dataset(store).await;
    eprintln!(
        "soak phase {phase}: {submitted} workflows, {tasks} tasks; used_memory_dataset peak \
         {peak} B, after retention {end} B (used_memory {} B), {} keys",
        used_memory(store).await,
        store.dbsize().await
    );
    Phase { peak, end }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_the_baseline_once_retention_passed() {
    let phases = sized(3, 9);
    let rounds = sized(6, 60);
    let per_round = 10;
    let retention = Duration::from_secs(sized(2, 10));
    let dep = Deployment::start().await;
    let sims = ollama_sims(1, LATENCY).await;
    let _fleet = workers(2, &spec(&dep, &[sims[0].url()], 8, "5s")).await;
    let queue = dep.queue().await;
    eprintln!(
        "soak: {phases} phases of {rounds} rounds of {per_round} diamonds, one round a second, \
         retention {retention:?}; idle used_memory {} B",
        used_memory(&dep.store).await
    );
    // The first phase warms up what does not belong to any workflow (connection pools, script
    // caches, allocator classes); measured, the data settles during the second one (+25-50 KB
    // from the first to the second phase end, then within 5 KB for four more phases). Every
    // later phase must end where the second ended.
    soak_phase(&dep, &queue, &sims, 0, rounds, per_round, retention).await;
    let first = soak_phase(&dep, &queue, &sims, 1, rounds, per_round, retention).await;
    for phase in 2..phases {
        let p = soak_phase(&dep, &queue, &sims, phase, rounds, per_round, retention).await;
        let growth = p.end.saturating_sub(first.end);
        let load = p.peak.saturating_sub(p.end).max(1);
        assert!(
            growth * 4 < load,
            "memory grew by {growth} B from phase 1 to phase {phase} (a phase's own load: {load} B)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_new_work_while_accepted_work_completes() {
    let target = sized(240, 2400);
    let retention = Duration::from_secs(3);
    let dep = Deployment::start().await;
    let sims = ollama_sims(1, LATENCY).await;
    let _fleet = workers(2, &spec(&dep, &[sims[0].url()], 8, "5s")).await;
    let queue = dep.queue().await;
    let store = &dep.store;
    // Warm up what does not belong to any workflow (connection pools, scripts), so the limit
    // below is measured from a fleet that has worked.
    soak_phase(&dep, &queue, &sims, 0, 1, 10, Duration::from_secs(1)).await;
    let idle = used_memory(store).await;
    // Room for about a hundred diamonds above what the warm, idle fleet uses.
    let limit = idle + 2 * 1024 * 1024;
    let _: () = store
        .query(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(limit))
        .await;

    let seed = seed();
    let (mut accepted, mut refused, mut batches) = (0usize, 0usize, 0u64);
    let mut tasks = 0u64;
    within("the submitter to place every workflow", async {
        while accepted < target {
            let workload = Workload::diamonds(&format!("full{batches}"), seed + batches, 10);
            batches += 1;
            let (a, r) = submit_with_retention(&queue, &workload, retention).await;
            accepted += a;
            refused += r;
            // Only accepted workflows run; the workload's tasks are all alike (diamonds).
            tasks += (a * 6) as u64;
            if r > 0 {
                // A client backing off while Redis is full.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    })
    .await;
    eprintln!(
        "full redis: maxmemory {limit} B (idle {idle} B): {accepted} workflows accepted, \
         {refused} submissions refused"
    );
    assert!(refused > 0, "Redis never filled up: raise the load");

    // The warm-up's 10 workflows (60 calls) are counted too.
    let expected = accepted as u64 + 10;
    until("every accepted workflow to complete", || async {
        counter(store, "workflows_completed").await >= expected
    })
    .await;
    let s = stats(store).await;
    assert_eq!(s.get("workflows_completed"), Some(&expected), "{s:?}");
    assert_eq!(s.get("workflows_failed"), None, "{s:?}");
    assert_eq!(
        sims[0].counters().received,
        tasks + 60,
        "one call per accepted task"
    );
    assert!(store.dead_letters().await.is_empty());
}
