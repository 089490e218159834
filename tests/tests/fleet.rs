//! A fleet of three `gleitzeit-worker` processes sharing LLM endpoints through Redis slot
//! leases: every endpoint's `max_concurrent` holds across the processes (the simulators
//! count the calls they actually had in flight), a dead endpoint's calls move elsewhere, and
//! when every endpoint is full the tasks wait for a slot instead of failing.

use std::time::Duration;

use gleitzeit_e2e::faults::fleet::until;
use gleitzeit_e2e::worker::{WorkerProcess, WorkerSpec};
use gleitzeit_e2e::workflows::{capability, diamond, new_id, parse, submit_request};
use gleitzeit_e2e::{within, Deployment};
use gleitzeit_testkit::llm::{MockOllama, SimConfig};
use serde_json::json;

/// Workflows per test; each diamond has 6 tasks, so 120 LLM tasks.
const WORKFLOWS: usize = 20;
/// Tasks each worker process runs at once: far more than all endpoints' slots together.
const CONCURRENCY: usize = 16;
/// `max_concurrent` of the three endpoints.
const LIMITS: [u64; 3] = [2, 3, 1];

/// Three Ollama simulators whose calls take 30 ms, so calls overlap and the limits are tested.
async fn endpoints() -> Vec<MockOllama> {
    let mut sims = Vec::new();
    for _ in LIMITS {
        sims.push(
            MockOllama::start(SimConfig::default().with_latency(Duration::from_millis(30)))
                .await
                .expect("starting an Ollama simulator"),
        );
    }
    sims
}

/// The worker configuration: the simulators as endpoints `ep0..ep2` with [`LIMITS`] under
/// `routing.endpoints`, strategy `least_loaded`, concurrency [`CONCURRENCY`].
fn spec(dep: &Deployment, sims: &[MockOllama]) -> WorkerSpec {
    let endpoints: Vec<_> = sims
        .iter()
        .enumerate()
        .map(|(i, sim)| {
            json!({
                "name": format!("ep{i}"),
                "kind": "ollama",
                "url": sim.url(),
                "models": ["*"],
                "timeout": "60s",
            })
        })
        .collect();
    let limits: serde_json::Map<_, _> = LIMITS
        .iter()
        .enumerate()
        .map(|(i, max)| (format!("ep{i}"), json!({"max_concurrent": max})))
        .collect();
    // A short first cool-down: the endpoint stopped in one test is asked again soon, which
    // changes nothing about what is asserted.
    dep.worker("http://unused.invalid")
        .set("endpoints", endpoints)
        .set(
            "routing",
            json!({"strategy": "least_loaded", "cooldown": "1s", "endpoints": limits}),
        )
        .concurrency(CONCURRENCY)
        // Three processes on one host: none may claim the default metrics port.
        .set("metrics_addr", "off")
}

/// Starts three worker processes and waits until each has started.
async fn fleet(spec: &WorkerSpec) -> Vec<WorkerProcess> {
    let workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::spawn(&format!("w{i}"), spec))
        .collect();
    for w in &workers {
        w.consumer().await;
    }
    workers
}

/// Submits [`WORKFLOWS`] diamonds through the queue (one script call each); their ids.
async fn submit_all(dep: &Deployment, test: &str) -> Vec<String> {
    let queue = dep.queue().await;
    let mut ids = Vec::with_capacity(WORKFLOWS);
    for n in 0..WORKFLOWS {
        let wf = parse(&diamond(&format!("{test} {n}")));
        let id = new_id();
        queue
            .submit(&submit_request(&wf, &id))
            .await
            .expect("submitting a workflow");
        ids.push(id);
    }
    ids
}

/// Whether [`assert_all_completed`] accepts failed attempts on the way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attempts {
    /// Not a single attempt may have failed.
    NoneFailed,
    /// A task whose call was cut off by a dying endpoint may have been retried.
    RetriesAllowed,
}

/// Waits for every workflow to end and checks that each completed with every task completed
/// exactly once (and, with [`Attempts::NoneFailed`], not a single failed attempt).
async fn assert_all_completed(dep: &Deployment, ids: &[String], attempts: Attempts) {
    for id in ids {
        assert_eq!(
            dep.store.wait_finished(id).await,
            "completed",
            "workflow {id}"
        );
        let completions = dep.store.completions(id).await;
        assert_eq!(completions.len(), 6, "{id}: {completions:?}");
        assert!(completions.values().all(|&n| n == 1), "{completions:?}");
        for task in dep.store.tasks(id).await {
            assert_eq!(task["status"], "completed", "{task:?}");
            if attempts == Attempts::NoneFailed {
                assert_eq!(task["attempts"], "0", "no attempt failed: {task:?}");
            }
        }
    }
    assert!(dep.store.dead_letters().await.is_empty());
    assert_eq!(dep.store.stream_len(&capability()).await, 0);
}

/// Checks each simulator's highest number of calls in flight against its limit.
fn assert_limits_held(sims: &[MockOllama]) {
    for (i, (sim, limit)) in sims.iter().zip(LIMITS).enumerate() {
        let c = sim.counters();
        assert!(
            c.max_in_flight <= limit,
            "ep{i}: {} calls in flight at once, max_concurrent is {limit} ({c:?})",
            c.max_in_flight
        );
    }
}

/// Which worker process (by consumer name) completed how many tasks.
async fn tasks_per_consumer(dep: &Deployment, ids: &[String]) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for id in ids {
        for task in dep.store.tasks(id).await {
            *counts.entry(task["consumer"].clone()).or_default() += 1;
        }
    }
    counts.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_share_endpoint_limits() {
    let dep = Deployment::start().await;
    let sims = endpoints().await;
    let workers = fleet(&spec(&dep, &sims)).await;

    let ids = submit_all(&dep, "Fleet").await;
    assert_all_completed(&dep, &ids, Attempts::NoneFailed).await;

    assert_limits_held(&sims);
    let received: Vec<u64> = sims.iter().map(|s| s.counters().received).collect();
    assert!(
        received.iter().all(|&n| n > 0),
        "every endpoint served calls: {received:?}"
    );
    assert_eq!(
        received.iter().sum::<u64>(),
        6 * WORKFLOWS as u64,
        "no call was made twice"
    );
    let per_consumer = tasks_per_consumer(&dep, &ids).await;
    assert!(
        per_consumer.len() == 3,
        "every worker process took part: {per_consumer:?}"
    );
    eprintln!("calls per endpoint {received:?}, tasks per worker {per_consumer:?}");
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_dying_mid_run_loses_no_task() {
    let dep = Deployment::start().await;
    let sims = endpoints().await;
    let workers = fleet(&spec(&dep, &sims)).await;

    let ids = submit_all(&dep, "Dying").await;
    // The endpoint with the most slots dies once it has served some calls, with calls on it.
    let doomed = &sims[1];
    within("ep1 to receive 10 calls", doomed.wait_received(10)).await;
    doomed.stop().await;
    // The calls it had in flight were cut off with its connections.
    within("the stopped endpoint's calls to end", doomed.wait_idle()).await;
    let at_stop: Vec<u64> = sims.iter().map(|s| s.counters().received).collect();

    // A call cut off by the dying endpoint may have been retried; what counts is that every
    // task completed exactly once.
    assert_all_completed(&dep, &ids, Attempts::RetriesAllowed).await;

    assert_limits_held(&sims);
    let after: Vec<u64> = sims.iter().map(|s| s.counters().received).collect();
    // The stopped endpoint answered at most the calls it had received when it died; the
    // other two served every remaining task, and calls reached them after the stop.
    let total = 6 * WORKFLOWS as u64;
    assert!(
        after[0] + after[2] >= total - at_stop[1],
        "the others took the rest: {at_stop:?} → {after:?}"
    );
    assert!(
        after[0] + after[2] > at_stop[0] + at_stop[2],
        "{at_stop:?} → {after:?}"
    );
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_full_means_waiting_not_failing() {
    let dep = Deployment::start().await;
    let sims = endpoints().await;
    for sim in &sims {
        sim.hold();
    }
    let workers = fleet(&spec(&dep, &sims)).await;

    let ids = submit_all(&dep, "Full").await;
    // Every slot of every endpoint is taken by a call held at its simulator …
    for (sim, limit) in sims.iter().zip(LIMITS) {
        within("the endpoint to fill up", sim.wait_held(limit)).await;
    }
    // … and the workers have begun more tasks than there are slots: those calls wait.
    let slots = LIMITS.iter().sum::<u64>() as usize;
    until("tasks beyond the slots to be taken", || async {
        dep.store.pending(&capability()).await.len() > slots
    })
    .await;
    let held: Vec<u64> = sims.iter().map(|s| s.counters().held).collect();
    assert_eq!(held, LIMITS, "no endpoint got more calls than its slots");

    for sim in &sims {
        sim.open_gate();
    }
    assert_all_completed(&dep, &ids, Attempts::NoneFailed).await;
    assert_limits_held(&sims);
    let received: u64 = sims.iter().map(|s| s.counters().received).sum();
    assert_eq!(received, 6 * WORKFLOWS as u64, "no call was made twice");
    drop(workers);
}
