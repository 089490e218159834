//! Failover scenarios for high-availability Redis (Sentinel, Cluster): a workload on worker
//! processes and a submitter that reach Redis through `redis_url`, one failover once a third
//! of the calls arrived, then the checker on the server that holds the namespace afterwards.

use gleitzeit_queue::{Queue, QueueConfig};

use crate::faults::check::{check, Report};
use crate::faults::fleet::{ollama_sims, servers, spec_at, submit_to, workers, LATENCY};
use crate::faults::seed;
use crate::faults::workload::Workload;
use crate::store::Store;
use crate::{within, NAMESPACE};

/// How the server holding the namespace goes away mid-run.
#[derive(Clone, Copy, Debug)]
pub enum Failover {
    /// A coordinated failover (`SENTINEL FAILOVER`, `CLUSTER FAILOVER`), as an operator runs
    /// before maintenance.
    Requested,
    /// The primary is killed with SIGKILL and its replica is elected.
    Crash,
}

/// Runs 20 diamonds on two workers (concurrency 8, `claim_idle` 2 s) at `redis_url`,
/// submitted with `replica_acks`; after a third of the calls runs `failover` (off the async
/// threads: harnesses wait synchronously), which returns the URL of the one server that
/// holds the namespace afterwards, where the checker reads, and the deployment's handle,
/// kept until the check is done. The workers and the submitter are configured with
/// `shards` (`None`: unsharded). Prints and returns the report.
pub async fn run_with_failover<F, G>(
    scenario: &str,
    redis_url: &str,
    shards: Option<u16>,
    replica_acks: u32,
    failover: F,
) -> Report
where
    F: FnOnce() -> (String, G) + Send + 'static,
    G: Send + 'static,
{
    let workload = Workload::diamonds(scenario, seed(), 20);
    eprintln!(
        "scenario {scenario} starting: seed={} {} (GLEITZEIT_FAULT_SEED={} repeats it)",
        workload.seed,
        workload.summary(),
        workload.seed
    );
    let sims = ollama_sims(1, LATENCY).await;
    let mut spec = spec_at(redis_url, &[sims[0].url()], 8, "2s");
    if let Some(n) = shards {
        spec = spec.set("shards", n);
    }
    let _fleet = workers(2, &spec).await;
    let queue = Queue::connect(
        redis_url,
        QueueConfig {
            namespace: NAMESPACE.to_owned(),
            replica_acks,
            shards,
            ..QueueConfig::default()
        },
    )
    .await
    .expect("a queue on the deployment");
    let ids = submit_to(&queue, &workload).await;

    let third = workload.task_count() as u64 / 3;
    within("a third of the calls", sims[0].wait_received(third)).await;
    let (holder, _deployment) = tokio::task::spawn_blocking(failover)
        .await
        .expect("the failover");
    eprintln!("scenario {scenario}: the namespace is now at {holder}");

    let store = Store::connect(&holder, NAMESPACE).await;
    let report = check(scenario, &store, &workload, &ids, &servers(&sims)).await;
    report.print();
    report
}
