//! `gleitzeit-bench routing`: how well each routing strategy uses a set of unequal endpoints,
//! and what the router itself costs per call.
//!
//! The setup is fixed and printed with the figures: Ollama simulators in this process with
//! different latencies and concurrency limits (by default 20/40/80/160 ms and 8/4/4/2 slots),
//! each keeping a limited number of models loaded (least recently used evicted, a delay paid
//! on every load), and a private `redis-server` for the fleet-wide slot leases and the shared
//! model state. The router is built exactly as a worker builds it
//! (`gleitzeit_worker::LlmExecutor::fleet` from a worker configuration), so the figures
//! include the Redis lease script of every call.
//!
//! For every strategy, on fresh simulators and a fresh namespace, the same sequence of calls
//! (a deterministic mix of models) is issued with bounded concurrency through
//! `Router::call_with`. Reported per strategy:
//!
//! - *calls/s* achieved, against the *ideal* `Σ max_concurrent / latency` (every slot of every
//!   endpoint busy all the time, no model loads) and against the best possible at the
//!   benchmark's concurrency (the fastest slots filled first);
//! - *model loads* (the simulators' load counters);
//! - *overhead per call* in that run: the wall time of `call_with` minus the time the
//!   simulator was told to spend (its latency, plus the load delay when the response reports
//!   a load). It holds everything else: the lease script before and the release after, the
//!   strategy, the HTTP exchange, the simulator's own request handling and its timer
//!   granularity (under 1 ms), and any wait for a free slot;
//! - *router cost* at zero latency: sequential calls through the router to simulators that
//!   answer at once, next to the same calls made directly with a `Provider` (no router, no
//!   lease): the difference is what routing adds to a call.
//!
//! One file per concern: [`args`] (the command line), [`figures`] (what is measured and the
//! bounds), [`report`] (printing); this file sets up the simulators and the router and drives
//! the calls.

mod args;
mod figures;
pub mod placement;
mod report;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gleitzeit_llm::{
    CallOptions, EndpointConfig, LlmRequest, Provider, ProviderKind, Router, Strategy,
};
use gleitzeit_testkit::llm::{MockOllama, SimConfig};
use gleitzeit_worker::{LlmExecutor, WorkerConfig};
use serde_json::json;

use figures::{Endpoint, StrategyResult};
use report::Report;

pub use args::RoutingArgs;

/// Calls made before the measured ones of a zero-latency pass (connections, model sizes).
const WARM_CALLS: usize = 20;
/// Seed of the model sequence: every strategy and every run sees the same calls.
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// A call's timing as measured by the benchmark.
struct Sample {
    endpoint: usize,
    wall_us: u64,
    /// Time the simulator was configured to spend on it (latency, plus a load).
    served_us: u64,
}

/// Runs the routing benchmark and prints its report.
pub async fn run(args: RoutingArgs) -> anyhow::Result<()> {
    if args.calls == 0 || args.concurrency == 0 {
        bail!("--calls and --concurrency must be at least 1");
    }
    if args.latencies.is_empty() || args.latencies.len() != args.max_concurrent.len() {
        bail!("--latencies and --max-concurrent must name the same number of endpoints (at least one)");
    }
    if args.max_concurrent.contains(&0) || args.latencies.iter().any(Duration::is_zero) {
        bail!("every endpoint needs a latency above 0 and max_concurrent of at least 1");
    }
    let models: Vec<String> = args
        .models
        .iter()
        .filter(|m| !m.is_empty())
        .cloned()
        .collect();
    if models.is_empty() {
        bail!("--models must name at least one model");
    }
    let strategies: Vec<Strategy> = if args.strategies.is_empty() {
        Strategy::ALL.to_vec()
    } else {
        args.strategies.clone()
    };
    let endpoints: Vec<Endpoint> = args
        .latencies
        .iter()
        .zip(&args.max_concurrent)
        .enumerate()
        .map(|(i, (&latency, &max_concurrent))| Endpoint {
            name: format!("e{i}"),
            latency,
            max_concurrent,
        })
        .collect();

    let (_private_redis, redis_url) = crate::redis(args.redis_url.as_deref())?;
    let redis_version = crate::redis_version(&redis_url.as_str().into()).await?;
    let plan = Arc::new(model_sequence(&models, args.calls));
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let mut results = Vec::with_capacity(strategies.len());
    for &strategy in &strategies {
        let namespace = format!("bench-routing-{run_id}-{strategy}");
        let sims = start_sims(&endpoints, &models, args.max_loaded, args.load_delay, false).await?;
        let router = fleet_router(
            &redis_url, &namespace, strategy, &endpoints, &sims, &models, &args,
        )?;
        let started = Instant::now();
        let samples = drive(
            &router,
            &plan,
            args.concurrency,
            args.call_timeout,
            &endpoints,
            args.load_delay,
        )
        .await;
        let elapsed = started.elapsed();
        let mut ok = 0;
        let mut failed = 0;
        let mut first_error = None;
        let mut per_endpoint = vec![0u64; endpoints.len()];
        let mut overhead_us = Vec::with_capacity(samples.len());
        for s in samples {
            match s {
                Ok(s) => {
                    ok += 1;
                    per_endpoint[s.endpoint] += 1;
                    overhead_us.push(s.wall_us.saturating_sub(s.served_us));
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        overhead_us.sort_unstable();
        let loads = sims.iter().map(|s| s.loads()).sum();
        let max_in_flight = sims.iter().map(|s| s.counters().max_in_flight).collect();
        drop(router);
        for sim in sims {
            sim.shutdown().await;
        }

        let zero_routed_us = if args.overhead_calls > 0 {
            let namespace = format!("{namespace}-zero");
            let sims = start_sims(&endpoints, &models, 0, Duration::ZERO, true).await?;
            let router = fleet_router(
                &redis_url, &namespace, strategy, &endpoints, &sims, &models, &args,
            )?;
            let r = router.router().clone();
            let measured = sequential(
                args.overhead_calls,
                &models,
                args.call_timeout,
                |req, opts| {
                    let r = r.clone();
                    async move {
                        r.call_with(&req, &opts, None)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                },
            )
            .await?;
            drop(router);
            for sim in sims {
                sim.shutdown().await;
            }
            measured
        } else {
            Vec::new()
        };

        results.push(StrategyResult {
            strategy,
            ok,
            failed,
            first_error,
            elapsed,
            loads,
            per_endpoint,
            max_in_flight,
            overhead_us,
            zero_routed_us,
        });
    }

    // The baseline of the zero-latency pass: the same calls without the router.
    let direct_us = if args.overhead_calls > 0 {
        let sim = MockOllama::start(SimConfig::default().with_models(models.clone()))
            .await
            .context("starting a simulator")?;
        let provider = Arc::new(
            Provider::new(EndpointConfig::new(
                "direct",
                sim.url(),
                ProviderKind::Ollama,
            ))
            .context("building the direct provider")?,
        );
        let measured = sequential(
            args.overhead_calls,
            &models,
            args.call_timeout,
            |req, opts| {
                let p = provider.clone();
                async move {
                    p.call(&req, &opts)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            },
        )
        .await?;
        sim.shutdown().await;
        measured
    } else {
        Vec::new()
    };

    let report = Report {
        args: &args,
        endpoints: &endpoints,
        models: &models,
        redis: redis_label(args.redis_url.is_some(), &redis_version),
        results: &results,
        direct_us: &direct_us,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        report.print();
    }

    for r in &results {
        within_limits(
            r.strategy,
            endpoints
                .iter()
                .map(|e| (e.name.as_str(), e.max_concurrent)),
            &r.max_in_flight,
        )?;
        if r.failed > 0 {
            bail!(
                "{}: {} calls failed (first: {})",
                r.strategy,
                r.failed,
                r.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// How a report names the Redis it ran on.
pub(crate) fn redis_label(given: bool, version: &str) -> String {
    let whose = if given {
        "given"
    } else {
        "private redis-server"
    };
    format!("{whose} {version}")
}

/// Fails when an endpoint (name, `max_concurrent`) saw more calls in flight than its limit.
pub(crate) fn within_limits<'a>(
    strategy: Strategy,
    endpoints: impl Iterator<Item = (&'a str, u32)>,
    max_in_flight: &[u64],
) -> anyhow::Result<()> {
    for ((name, max), &seen) in endpoints.zip(max_in_flight) {
        if seen > u64::from(max) {
            bail!("{strategy}: endpoint {name} had {seen} calls in flight, above its max_concurrent {max}");
        }
    }
    Ok(())
}

/// The model of every call: a fixed pseudo-random sequence (xorshift, constant seed) with
/// weights n, n-1, …, 1 for the n models in the order given.
fn model_sequence(models: &[String], calls: usize) -> Vec<String> {
    let n = models.len() as u64;
    let total = n * (n + 1) / 2;
    let mut x = SEED;
    (0..calls)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut pick = x % total;
            let mut i = 0;
            while pick >= n - i as u64 {
                pick -= n - i as u64;
                i += 1;
            }
            models[i].clone()
        })
        .collect()
}

/// Starts one Ollama simulator per endpoint (`zero`: without latency).
async fn start_sims(
    endpoints: &[Endpoint],
    models: &[String],
    max_loaded: usize,
    load_delay: Duration,
    zero: bool,
) -> anyhow::Result<Vec<MockOllama>> {
    let mut sims = Vec::with_capacity(endpoints.len());
    for ep in endpoints {
        let cfg = SimConfig {
            load_delay,
            max_loaded,
            ..SimConfig::default()
                .with_models(models.iter().cloned())
                .with_latency(if zero { Duration::ZERO } else { ep.latency })
        };
        sims.push(
            MockOllama::start(cfg)
                .await
                .context("starting a simulator")?,
        );
    }
    Ok(sims)
}

/// The router a `gleitzeit-worker` would build for these endpoints: the worker's own
/// configuration types and `LlmExecutor::fleet` (slot leases and model state in Redis).
fn fleet_router(
    redis_url: &str,
    namespace: &str,
    strategy: Strategy,
    endpoints: &[Endpoint],
    sims: &[MockOllama],
    models: &[String],
    args: &RoutingArgs,
) -> anyhow::Result<LlmExecutor> {
    let mut routing = serde_json::Map::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let mut r = json!({"priority": i, "max_concurrent": ep.max_concurrent});
        if args.max_loaded > 0 {
            r["max_loaded"] = json!(args.max_loaded);
        }
        routing.insert(ep.name.clone(), r);
    }
    let config = json!({
        "redis_url": redis_url,
        "namespace": namespace,
        "endpoints": endpoints.iter().zip(sims).map(|(ep, sim)| json!({
            "name": ep.name,
            "kind": "ollama",
            "url": sim.url(),
            "models": models,
            "timeout": humantime::format_duration(args.call_timeout).to_string(),
        })).collect::<Vec<_>>(),
        "routing": {"strategy": strategy.to_string(), "endpoints": routing},
    });
    let settings = WorkerConfig::from_yaml(&config.to_string(), "routing benchmark")
        .and_then(|c| c.validate())
        .map_err(|e| anyhow::anyhow!("routing benchmark configuration: {e}"))?;
    LlmExecutor::fleet(&settings).map_err(|e| anyhow::anyhow!("building the router: {e}"))
}

/// Issues every call of `plan` through the router, `concurrency` at a time.
async fn drive(
    executor: &LlmExecutor,
    plan: &Arc<Vec<String>>,
    concurrency: usize,
    timeout: Duration,
    endpoints: &[Endpoint],
    load_delay: Duration,
) -> Vec<Result<Sample, String>> {
    let router: Arc<Router> = executor.router().clone();
    let next = Arc::new(AtomicUsize::new(0));
    let names: Arc<BTreeMap<String, (usize, Duration)>> = Arc::new(
        endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| (ep.name.clone(), (i, ep.latency)))
            .collect(),
    );
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let router = router.clone();
        let plan = plan.clone();
        let next = next.clone();
        let names = names.clone();
        tasks.push(tokio::spawn(async move {
            let opts = CallOptions {
                timeout: Some(timeout),
                ..CallOptions::default()
            };
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(model) = plan.get(i) else {
                    return out;
                };
                let req = LlmRequest::generate(model.clone(), format!("call {i}"));
                let t0 = Instant::now();
                let result = router.call_with(&req, &opts, None).await;
                let wall = t0.elapsed();
                out.push(match result {
                    Ok(resp) => match names.get(&resp.endpoint) {
                        Some(&(endpoint, latency)) => {
                            let loaded = resp.load_ms.is_some_and(|ms| ms > 0);
                            let served = latency + if loaded { load_delay } else { Duration::ZERO };
                            Ok(Sample {
                                endpoint,
                                wall_us: micros(wall),
                                served_us: micros(served),
                            })
                        }
                        None => Err(format!("answer from unknown endpoint {:?}", resp.endpoint)),
                    },
                    Err(e) => Err(e.to_string()),
                });
            }
        }));
    }
    let mut all = Vec::with_capacity(plan.len());
    for t in tasks {
        match t.await {
            Ok(samples) => all.extend(samples),
            Err(e) => all.push(Err(format!("call task failed: {e}"))),
        }
    }
    all
}

/// `n` sequential calls (after [`WARM_CALLS`] unmeasured ones) over the models in turn; the
/// sorted wall times in µs.
async fn sequential<F, Fut>(
    n: usize,
    models: &[String],
    timeout: Duration,
    mut call: F,
) -> anyhow::Result<Vec<u64>>
where
    F: FnMut(LlmRequest, CallOptions) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let opts = CallOptions {
        timeout: Some(timeout),
        ..CallOptions::default()
    };
    let mut times = Vec::with_capacity(n);
    for i in 0..WARM_CALLS + n {
        let req = LlmRequest::generate(models[i % models.len()].clone(), format!("call {i}"));
        let t0 = Instant::now();
        call(req, opts.clone())
            .await
            .map_err(|e| anyhow::anyhow!("zero-latency call failed: {e}"))?;
        if i >= WARM_CALLS {
            times.push(micros(t0.elapsed()));
        }
    }
    times.sort_unstable();
    Ok(times)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_sequence_is_fixed_and_weighted() {
        let models: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let seq = model_sequence(&models, 10_000);
        assert_eq!(
            seq,
            model_sequence(&models, 10_000),
            "same sequence every run"
        );
        let count = |m: &str| seq.iter().filter(|s| *s == m).count();
        // Weights 4:3:2:1 of 10,000 calls: 4000/3000/2000/1000, within a few percent.
        for (m, expected) in [("a", 4000), ("b", 3000), ("c", 2000), ("d", 1000)] {
            let n = count(m);
            assert!(n.abs_diff(expected) < 300, "{m}: {n} of 10000");
        }
        assert_eq!(model_sequence(&models[..1], 5), vec!["a"; 5]);
    }
}
