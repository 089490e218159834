//! The fault suite's fleet: provider simulators, worker processes with the suite's settings,
//! submission of a workload, and polling with a deadline. Shared by the fault scenarios
//! (`tests/tests/faults.rs`) and the memory soak (`tests/tests/soak.rs`).

use std::time::Duration;

use gleitzeit_testkit::llm::{MockOllama, Reply, SimConfig, SimServer};
use serde_json::json;

use crate::faults::workload::Workload;
use crate::worker::{WorkerProcess, WorkerSpec};
use crate::workflows::submit_request;
use crate::{within, Deployment, NAMESPACE};

/// How often a polled condition is checked (polling with a deadline, never a fixed sleep).
pub const POLL: Duration = Duration::from_millis(20);

/// Simulated inference time: calls overlap, so faults meet calls in flight.
pub const LATENCY: Duration = Duration::from_millis(20);

/// `n` Ollama simulators answering `"{model}: {prompt}"` untruncated after `latency`.
pub async fn ollama_sims(n: usize, latency: Duration) -> Vec<MockOllama> {
    let mut sims = Vec::with_capacity(n);
    for _ in 0..n {
        let cfg = SimConfig::default()
            .with_latency(latency)
            .with_reply(Reply::Echo {
                max_chars: 1_000_000,
            });
        sims.push(
            MockOllama::start(cfg)
                .await
                .expect("starting an Ollama simulator"),
        );
    }
    sims
}

/// The simulators as the checker takes them.
pub fn servers(sims: &[MockOllama]) -> Vec<&SimServer> {
    sims.iter().map(|s| &**s).collect()
}

/// A worker configuration with Ollama endpoints `ep0…` at `urls`, no `max_concurrent`.
pub fn spec(dep: &Deployment, urls: &[String], concurrency: usize, claim_idle: &str) -> WorkerSpec {
    spec_at(&dep.url(), urls, concurrency, claim_idle)
}

/// [`spec`] for workers on the Redis at `redis_url` (a `redis+sentinel://` URL, say).
pub fn spec_at(
    redis_url: &str,
    urls: &[String],
    concurrency: usize,
    claim_idle: &str,
) -> WorkerSpec {
    let endpoints: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            json!({
                "name": format!("ep{i}"),
                "kind": "ollama",
                "url": url,
                "models": ["*"],
                "timeout": "60s",
            })
        })
        .collect();
    WorkerSpec::openai(redis_url, NAMESPACE, "http://unused.invalid")
        .set("endpoints", endpoints)
        .set("routing", json!({"strategy": "least_loaded"}))
        .concurrency(concurrency)
        .claim_idle(claim_idle)
}

/// Starts `n` workers and waits until each has started.
pub async fn workers(n: usize, spec: &WorkerSpec) -> Vec<WorkerProcess> {
    let workers: Vec<WorkerProcess> = (0..n)
        .map(|i| WorkerProcess::spawn(&format!("w{i}"), spec))
        .collect();
    for w in &workers {
        w.consumer().await;
    }
    workers
}

/// Submits every workflow of the workload (one submit script call each, as the CLI does);
/// their ids in workload order.
pub async fn submit(dep: &Deployment, workload: &Workload) -> Vec<String> {
    submit_to(&dep.queue().await, workload).await
}

/// [`submit`] through a queue handle of the caller's.
pub async fn submit_to(queue: &gleitzeit_queue::Queue, workload: &Workload) -> Vec<String> {
    let mut ids = Vec::with_capacity(workload.workflows.len());
    for wf in workload.parsed() {
        let id = crate::workflows::new_id();
        let mut req = submit_request(&wf, &id);
        // Watched, as with `submit --events`: the scenarios time re-runs from the tasks'
        // `running` events.
        req.watch = true;
        queue.submit(&req).await.expect("submitting a workflow");
        ids.push(id);
    }
    ids
}

/// Polls `cond` until it holds (bounded by the hang guard).
pub async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        while !cond().await {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
}
