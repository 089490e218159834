//! `gleitzeit-bench placement`: where the fleet loads models, measured end to end on a DAG
//! workload with several models.
//!
//! Every run starts Ollama simulators in this process (one per endpoint: its own generation
//! speed, concurrency limit, number of models kept loaded, least recently used evicted, and a
//! delay paid on every load), a private `redis-server` (or `--redis-url`), and N
//! `gleitzeit_worker::run` instances configured with those endpoints and one routing
//! strategy. Once every worker has registered, W workflows A → (B, C) → D are submitted at
//! once through the queue's submit script, each task naming a model drawn by weight from a
//! fixed sequence (the same for every strategy and run), and the run ends when every workflow
//! has ended. Reported per strategy and run:
//!
//! - *makespan*: first submission → last task end (task records);
//! - *loads* (the simulators' load counters) and *duplicate loads*: loads that began while the
//!   same model was being loaded on another endpoint (the simulators' load logs);
//! - task latency p50/p95: ready → end of each task (task records);
//! - max calls in flight per endpoint (the run fails if one exceeded its `max_concurrent`);
//! - calls of a GPU-only model (over 16 GB) that reached a CPU endpoint;
//! - against the lower bound of the makespan ([`workload::Bound`]).
//!
//! One file per concern: [`args`] (the command line), [`workload`] (endpoints, workflows,
//! bounds), [`report`] (printing); this file runs the fleet and collects the figures.

mod args;
mod report;
mod workload;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gleitzeit_core::now_ms;
use gleitzeit_llm::Strategy;
use gleitzeit_queue::{Queue, QueueConfig, RedisTarget, SubmitOutcome};
use gleitzeit_testkit::llm::{LoadEvent, MockOllama, Reply, SimConfig};
use gleitzeit_worker::WorkerConfig;
use serde_json::json;

use crate::workers::Fleet;
use report::{Report, RunResult};
use workload::{Bound, Endpoint};

pub use args::PlacementArgs;

/// How often the run checks whether the workers have registered.
const POLL: Duration = Duration::from_millis(20);

/// Runs the placement benchmark and prints its report.
pub async fn run(args: PlacementArgs) -> anyhow::Result<()> {
    let n = args.rates.len();
    if n == 0 || args.max_loaded.len() != n || args.max_concurrent.len() != n || args.gpu.len() != n
    {
        bail!("--rates, --max-loaded, --max-concurrent and --gpu must name the same endpoints (at least one)");
    }
    if args.models.is_empty() || args.models.len() != args.weights.len() {
        bail!("--models and --weights must have the same length (at least one)");
    }
    if args.workflows == 0 || args.workers == 0 || args.concurrency == 0 || args.runs == 0 {
        bail!("--workflows, --workers, --concurrency and --runs must be at least 1");
    }
    if args.rates.contains(&0) || args.max_concurrent.contains(&0) || args.tokens == 0 {
        bail!("every endpoint needs a rate and max_concurrent above 0, and --tokens above 0");
    }
    let endpoints: Vec<Endpoint> = (0..n)
        .map(|i| Endpoint {
            name: format!("e{i}"),
            tokens_per_s: args.rates[i],
            max_loaded: args.max_loaded[i],
            max_concurrent: args.max_concurrent[i],
            gpu: args.gpu[i],
        })
        .collect();
    let strategies: Vec<Strategy> = if args.strategies.is_empty() {
        Strategy::ALL.to_vec()
    } else {
        args.strategies.clone()
    };
    let draws = workload::draws(&args.models, &args.weights, args.workflows);
    let workflows = draws
        .iter()
        .enumerate()
        .map(|(i, m)| workload::workflow(i, m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bound = Bound::new(
        &endpoints,
        workflows.len() * workload::TASKS.len(),
        args.tokens,
        args.load_delay,
    );

    let (_private_redis, redis_url) = crate::redis(args.redis_url.as_deref())?;
    let redis_version = crate::redis_version(&redis_url.as_str().into()).await?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let mut results = Vec::new();
    for round in 0..args.runs {
        for &strategy in &strategies {
            let namespace = format!("bench-placement-{run_id}-{strategy}-{round}");
            let r = one_run(
                &args, &endpoints, &workflows, &redis_url, &namespace, strategy,
            )
            .await
            .with_context(|| format!("{strategy}, run {}", round + 1))?;
            if !args.json {
                eprintln!(
                    "{strategy} run {}: makespan {:.1} s, {} loads",
                    round + 1,
                    r.makespan_ms as f64 / 1000.0,
                    r.loads
                );
            }
            results.push(r);
        }
    }

    let report = Report {
        args: &args,
        endpoints: &endpoints,
        redis: super::redis_label(args.redis_url.is_some(), &redis_version),
        bound,
        results: &results,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        report.print();
    }
    for r in &results {
        super::within_limits(
            r.strategy,
            endpoints
                .iter()
                .map(|e| (e.name.as_str(), e.max_concurrent)),
            &r.max_in_flight,
        )?;
        if r.not_completed > 0 {
            bail!(
                "{}: {} workflows did not complete",
                r.strategy,
                r.not_completed
            );
        }
    }
    Ok(())
}

/// One run of one strategy on fresh simulators and a fresh namespace.
async fn one_run(
    args: &PlacementArgs,
    endpoints: &[Endpoint],
    workflows: &[gleitzeit_core::Workflow],
    redis_url: &str,
    namespace: &str,
    strategy: Strategy,
) -> anyhow::Result<RunResult> {
    let mut sims = Vec::with_capacity(endpoints.len());
    let reply = "token ".repeat(args.tokens as usize);
    for ep in endpoints {
        let text = reply.clone();
        let cfg = SimConfig {
            load_delay: args.load_delay,
            max_loaded: ep.max_loaded,
            ..SimConfig::default()
                .with_models(args.models.iter().cloned())
                .with_token_delay(ep.token_delay())
                .with_reply(Reply::func(move |_| text.clone()))
        };
        sims.push(
            MockOllama::start(cfg)
                .await
                .context("starting a simulator")?,
        );
    }
    let config = worker_config(args, endpoints, &sims, redis_url, namespace, strategy)?;
    let queue = Queue::connect(
        &RedisTarget::new(redis_url),
        QueueConfig {
            namespace: namespace.to_owned(),
            ..QueueConfig::default()
        },
    )
    .await
    .context("connecting to Redis")?;
    let mut fleet = Fleet::in_process_configs(vec![config; args.workers]);
    let deadline = Instant::now() + args.timeout;
    // The workers' start (Redis, registry) is not part of the measured run.
    while queue.workers(now_ms()).await?.len() < args.workers {
        if fleet.any_finished() {
            bail!("a worker stopped before the run began");
        }
        if Instant::now() > deadline {
            bail!("the workers did not register");
        }
        tokio::time::sleep(POLL).await;
    }

    let start_ms = now_ms();
    let mut ids = Vec::with_capacity(workflows.len());
    for wf in workflows {
        let id = uuid::Uuid::now_v7().to_string();
        match queue
            .submit(&workload::request(wf, id.clone(), now_ms())?)
            .await?
        {
            SubmitOutcome::Created { id } => ids.push(id),
            other => bail!("unexpected submit outcome {other:?}"),
        }
    }
    crate::wait_all(&queue, &ids, deadline, &mut fleet).await?;

    let mut end_ms = start_ms;
    let mut latencies = Vec::new();
    let mut not_completed = 0;
    for id in &ids {
        let info = queue
            .workflow(id)
            .await?
            .with_context(|| format!("workflow {id} disappeared"))?;
        if info.status != "completed" {
            not_completed += 1;
        }
        for t in queue.tasks(id).await? {
            if let (Some(ready), Some(done)) = (t.ready_ms, t.finished_ms) {
                latencies.push(done.saturating_sub(ready));
                end_ms = end_ms.max(done);
            }
        }
    }
    latencies.sort_unstable();
    let summaries = fleet.stop().await?;

    let logs: Vec<Vec<LoadEvent>> = sims.iter().map(|s| s.load_log()).collect();
    let gpu_only_on_cpu = endpoints
        .iter()
        .zip(&sims)
        .filter(|(ep, _)| !ep.gpu)
        .map(|(_, sim)| {
            sim.requests()
                .iter()
                .filter(|r| {
                    is_inference(r) && r.json("model").as_str().is_some_and(workload::gpu_only)
                })
                .count()
        })
        .sum();
    let result = RunResult {
        strategy,
        makespan_ms: end_ms.saturating_sub(start_ms),
        loads: sims.iter().map(|s| s.loads()).sum(),
        loads_per_endpoint: logs.iter().map(|l| l.len() as u64).collect(),
        load_log: logs
            .iter()
            .map(|l| {
                l.iter()
                    .map(|e| (e.model.clone(), e.started_ms.saturating_sub(start_ms)))
                    .collect()
            })
            .collect(),
        duplicate_loads: duplicate_loads(&logs),
        latencies_ms: latencies,
        max_in_flight: sims.iter().map(|s| s.counters().max_in_flight).collect(),
        calls_per_endpoint: sims.iter().map(|s| s.counters().received).collect(),
        gpu_only_on_cpu,
        not_completed,
        summaries,
    };
    for sim in sims {
        sim.shutdown().await;
    }
    Ok(result)
}

/// A generate or chat request that asks for tokens (not an explicit load or unload).
fn is_inference(r: &gleitzeit_testkit::llm::RecordedRequest) -> bool {
    match r.path.as_str() {
        "/api/chat" => true,
        "/api/generate" => r.json("prompt").as_str().is_some_and(|p| !p.is_empty()),
        _ => false,
    }
}

/// Loads that began while the same model was being loaded on another endpoint.
fn duplicate_loads(logs: &[Vec<LoadEvent>]) -> u64 {
    let mut n = 0;
    for (i, log) in logs.iter().enumerate() {
        for load in log {
            let overlaps = logs.iter().enumerate().any(|(j, other)| {
                j != i
                    && other.iter().any(|o| {
                        o.model == load.model
                            && o.started_ms <= load.started_ms
                            && load.started_ms < o.done_ms()
                    })
            });
            n += u64::from(overlaps);
        }
    }
    n
}

/// The configuration every worker of a run gets: the simulators as Ollama endpoints serving
/// the workload's models, their limits and the strategy.
fn worker_config(
    args: &PlacementArgs,
    endpoints: &[Endpoint],
    sims: &[MockOllama],
    redis_url: &str,
    namespace: &str,
    strategy: Strategy,
) -> anyhow::Result<WorkerConfig> {
    let mut routing = serde_json::Map::new();
    for (i, ep) in endpoints.iter().enumerate() {
        routing.insert(
            ep.name.clone(),
            json!({
                "priority": i,
                "max_concurrent": ep.max_concurrent,
                "max_loaded": ep.max_loaded,
                "gpu": ep.gpu,
            }),
        );
    }
    let config = json!({
        "redis_url": redis_url,
        "namespace": namespace,
        "concurrency": args.concurrency,
        // Several workers share this process: none may claim the metrics port.
        "metrics_addr": "off",
        "endpoints": endpoints.iter().zip(sims).map(|(ep, sim)| json!({
            "name": ep.name,
            "kind": "ollama",
            "url": sim.url(),
            "models": args.models,
            "timeout": humantime::format_duration(args.timeout).to_string(),
        })).collect::<Vec<_>>(),
        "routing": {"strategy": strategy.to_string(), "endpoints": routing},
    });
    WorkerConfig::from_yaml(&config.to_string(), "placement benchmark")
        .map_err(|e| anyhow::anyhow!("placement benchmark configuration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(model: &str, started_ms: u64) -> LoadEvent {
        LoadEvent {
            model: model.to_owned(),
            started_ms,
            duration: Duration::from_millis(100),
        }
    }

    #[test]
    fn a_duplicate_load_begins_during_another_endpoints_load() {
        let logs = vec![
            // "b" at 450 begins during e1's load of "b" (400–500): a duplicate.
            vec![load("a", 0), load("b", 450)],
            // "a" at 50 during e0's load of "a" (0–100): a duplicate; "b" at 400 began
            // first, "a" at 300 after e0's load ended: not.
            vec![load("a", 50), load("b", 400), load("a", 300)],
            // Same model on the same endpoint never counts.
            vec![load("c", 0), load("c", 10)],
        ];
        assert_eq!(duplicate_loads(&logs), 2);
    }
}
