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
use serde_json::{json, Value};

use crate::stats;

/// Calls made before the measured ones of a zero-latency pass (connections, model sizes).
const WARM_CALLS: usize = 20;
/// Seed of the model sequence: every strategy and every run sees the same calls.
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Benchmark the endpoint router's strategies on simulated endpoints of unequal speed.
#[derive(Debug, clap::Args)]
pub struct RoutingArgs {
    /// Calls per strategy.
    #[arg(long, default_value_t = 2000)]
    pub calls: usize,
    /// Calls in flight at once (below the endpoints' total slots, so the strategy's choice
    /// of endpoint shows in the throughput).
    #[arg(long, default_value_t = 12)]
    pub concurrency: usize,
    /// Latency of each simulated endpoint, comma-separated (one endpoint per value).
    #[arg(long, value_delimiter = ',', default_value = "20ms,40ms,80ms,160ms",
          value_parser = humantime::parse_duration)]
    pub latencies: Vec<Duration>,
    /// `max_concurrent` of each endpoint, in the same order.
    #[arg(long, value_delimiter = ',', default_value = "8,4,4,2")]
    pub max_concurrent: Vec<u32>,
    /// Models of the workload, comma-separated; the first is asked most often (weights n, n-1,
    /// …, 1).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "llama3.2:3b,qwen2.5:7b,mistral:7b,gemma2:2b"
    )]
    pub models: Vec<String>,
    /// Models each simulator keeps loaded (least recently used evicted; 0 = no limit).
    #[arg(long, default_value_t = 2)]
    pub max_loaded: usize,
    /// Delay a simulator pays every time it loads a model.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub load_delay: Duration,
    /// Strategies to measure, comma-separated (default: every strategy).
    #[arg(long, value_delimiter = ',', value_parser = parse_strategy)]
    pub strategies: Vec<Strategy>,
    /// Sequential calls of the zero-latency pass per strategy (0 skips the pass).
    #[arg(long, default_value_t = 300)]
    pub overhead_calls: usize,
    /// Redis to use (default: start a private redis-server on a free port).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Bound of every single call (waiting for a slot included).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
}

/// One simulated endpoint of the setup.
#[derive(Debug, Clone)]
struct Endpoint {
    name: String,
    latency: Duration,
    max_concurrent: u32,
}

/// What one strategy achieved.
#[derive(Debug)]
struct StrategyResult {
    strategy: Strategy,
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    elapsed: Duration,
    loads: u64,
    per_endpoint: Vec<u64>,
    max_in_flight: Vec<u64>,
    /// Sorted, µs.
    overhead_us: Vec<u64>,
    /// Sorted, µs; empty when the zero-latency pass is skipped.
    zero_routed_us: Vec<u64>,
}

impl StrategyResult {
    fn calls_per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

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
        redis: format!(
            "{} {}",
            if args.redis_url.is_some() {
                "given"
            } else {
                "private redis-server"
            },
            redis_version
        ),
        results: &results,
        direct_us: &direct_us,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        report.print();
    }

    for r in &results {
        for (ep, &seen) in endpoints.iter().zip(&r.max_in_flight) {
            if seen > u64::from(ep.max_concurrent) {
                bail!(
                    "{}: endpoint {} had {seen} calls in flight, above its max_concurrent {}",
                    r.strategy,
                    ep.name,
                    ep.max_concurrent
                );
            }
        }
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
                stream: true,
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
        stream: true,
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

/// Calls per second with every slot busy all the time: `Σ max_concurrent / latency`.
fn ideal(endpoints: &[Endpoint]) -> f64 {
    endpoints
        .iter()
        .map(|e| f64::from(e.max_concurrent) / e.latency.as_secs_f64())
        .sum()
}

/// Calls per second with `concurrency` calls in flight on the fastest free slots.
fn best_at(endpoints: &[Endpoint], concurrency: usize) -> f64 {
    let mut by_speed: Vec<&Endpoint> = endpoints.iter().collect();
    by_speed.sort_by_key(|e| e.latency);
    let mut left = concurrency as f64;
    let mut rate = 0.0;
    for e in by_speed {
        let used = left.min(f64::from(e.max_concurrent));
        rate += used / e.latency.as_secs_f64();
        left -= used;
    }
    rate
}

fn ms(us: Option<u64>) -> f64 {
    us.unwrap_or(0) as f64 / 1000.0
}

/// Everything the report shows.
struct Report<'a> {
    args: &'a RoutingArgs,
    endpoints: &'a [Endpoint],
    models: &'a [String],
    redis: String,
    results: &'a [StrategyResult],
    direct_us: &'a [u64],
}

/// How the overhead figures are obtained (printed with them).
const OVERHEAD_METHOD: &str =
    "overhead = wall time of Router::call_with minus the simulator's configured \
service time (latency, plus load_delay when the response reports a load): lease script, \
strategy, HTTP exchange, simulator request handling and timer granularity (<1 ms), and any \
wait for a slot. router cost = sequential calls through the router to 0 ms simulators, next \
to the same calls made directly with a Provider (no router, no lease).";

impl Report<'_> {
    fn weights(&self) -> Vec<(String, f64)> {
        let n = self.models.len();
        let total = (n * (n + 1) / 2) as f64;
        self.models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), (n - i) as f64 / total))
            .collect()
    }

    fn json(&self) -> Value {
        let ideal = ideal(self.endpoints);
        let best = best_at(self.endpoints, self.args.concurrency);
        json!({
            "setup": {
                "endpoints": self.endpoints.iter().enumerate().map(|(i, e)| json!({
                    "name": e.name,
                    "kind": "ollama (simulator in this process)",
                    "latency_ms": e.latency.as_secs_f64() * 1000.0,
                    "max_concurrent": e.max_concurrent,
                    "priority": i,
                })).collect::<Vec<_>>(),
                "models": self.weights().into_iter().map(|(m, w)| json!({"model": m, "share": w})).collect::<Vec<_>>(),
                "max_loaded": self.args.max_loaded,
                "load_delay_ms": self.args.load_delay.as_secs_f64() * 1000.0,
                "calls": self.args.calls,
                "concurrency": self.args.concurrency,
                "overhead_calls": self.args.overhead_calls,
                "slots": "Redis leases (gleitzeit-worker's router, LlmExecutor::fleet)",
                "redis": self.redis,
                "cpus": crate::available_cpus(),
                "ideal_calls_per_s": ideal,
                "best_at_concurrency_calls_per_s": best,
                "overhead_method": OVERHEAD_METHOD,
            },
            "strategies": self.results.iter().map(|r| json!({
                "strategy": r.strategy.to_string(),
                "calls": r.ok,
                "failed": r.failed,
                "seconds": r.elapsed.as_secs_f64(),
                "calls_per_s": r.calls_per_s(),
                "percent_of_ideal": 100.0 * r.calls_per_s() / ideal,
                "percent_of_best_at_concurrency": 100.0 * r.calls_per_s() / best,
                "model_loads": r.loads,
                "calls_per_endpoint": self.endpoints.iter().zip(&r.per_endpoint)
                    .map(|(e, n)| (e.name.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "max_in_flight": self.endpoints.iter().zip(&r.max_in_flight)
                    .map(|(e, n)| (e.name.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "overhead_ms": {
                    "p50": ms(stats::percentile(&r.overhead_us, 50.0)),
                    "p99": ms(stats::percentile(&r.overhead_us, 99.0)),
                    "max": ms(r.overhead_us.last().copied()),
                },
                "zero_latency_routed_ms": if r.zero_routed_us.is_empty() { Value::Null } else { json!({
                    "p50": ms(stats::percentile(&r.zero_routed_us, 50.0)),
                    "p99": ms(stats::percentile(&r.zero_routed_us, 99.0)),
                    "router_cost_p50": ms(stats::percentile(&r.zero_routed_us, 50.0))
                        - ms(stats::percentile(self.direct_us, 50.0)),
                })},
            })).collect::<Vec<_>>(),
            "direct_zero_latency_ms": if self.direct_us.is_empty() { Value::Null } else { json!({
                "p50": ms(stats::percentile(self.direct_us, 50.0)),
                "p99": ms(stats::percentile(self.direct_us, 99.0)),
            })},
        })
    }

    fn print(&self) {
        let ideal = ideal(self.endpoints);
        let best = best_at(self.endpoints, self.args.concurrency);
        println!("gleitzeit-bench routing");
        println!(
            "  endpoints          {} (Ollama simulators in this process; priority in this order)",
            self.endpoints
                .iter()
                .map(|e| format!(
                    "{} {} max_concurrent {}",
                    e.name,
                    humantime::format_duration(e.latency),
                    e.max_concurrent
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  models             {}",
            self.weights()
                .iter()
                .map(|(m, w)| format!("{m} {:.0}%", w * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  model loading      {} loaded per simulator (LRU eviction), {} per load",
            if self.args.max_loaded == 0 {
                "any number".to_owned()
            } else {
                self.args.max_loaded.to_string()
            },
            humantime::format_duration(self.args.load_delay)
        );
        println!(
            "  workload           {} calls per strategy, {} at a time, the same model sequence for every strategy (generate, streamed)",
            self.args.calls, self.args.concurrency
        );
        println!(
            "  slots              Redis leases, router built as gleitzeit-worker builds it; {}",
            self.redis
        );
        println!(
            "  ideal              {ideal:.1} calls/s (Σ max_concurrent / latency); {best:.1} calls/s at concurrency {} (fastest slots first); model loads not counted",
            self.args.concurrency
        );
        println!(
            "  machine            {} CPUs available",
            crate::available_cpus()
        );
        println!("  method             {OVERHEAD_METHOD}");
        println!("results");
        println!(
            "  {:<15} {:>8} {:>7} {:>7} {:>6}  {:<22} {:<14} {:>17} {:>24}",
            "strategy",
            "calls/s",
            "%ideal",
            "%best",
            "loads",
            "calls per endpoint",
            "max in flight",
            "overhead p50/p99",
            "0 ms routed p50/p99"
        );
        for r in self.results {
            let zero = if r.zero_routed_us.is_empty() {
                "-".to_owned()
            } else {
                format!(
                    "{:.2}/{:.2} ms",
                    ms(stats::percentile(&r.zero_routed_us, 50.0)),
                    ms(stats::percentile(&r.zero_routed_us, 99.0))
                )
            };
            println!(
                "  {:<15} {:>8.1} {:>6.1}% {:>6.1}% {:>6}  {:<22} {:<14} {:>17} {:>24}",
                r.strategy.to_string(),
                r.calls_per_s(),
                100.0 * r.calls_per_s() / ideal,
                100.0 * r.calls_per_s() / best,
                r.loads,
                join(&r.per_endpoint),
                join(&r.max_in_flight),
                format!(
                    "{:.2}/{:.2} ms",
                    ms(stats::percentile(&r.overhead_us, 50.0)),
                    ms(stats::percentile(&r.overhead_us, 99.0))
                ),
                zero
            );
        }
        if !self.direct_us.is_empty() {
            println!(
                "  direct call (0 ms simulator, no router): p50 {:.2} ms, p99 {:.2} ms",
                ms(stats::percentile(self.direct_us, 50.0)),
                ms(stats::percentile(self.direct_us, 99.0))
            );
        }
        for r in self.results {
            if r.failed > 0 {
                println!(
                    "  {}: {} calls failed (first: {})",
                    r.strategy,
                    r.failed,
                    r.first_error.as_deref().unwrap_or("?")
                );
            }
        }
    }
}

fn join(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps() -> Vec<Endpoint> {
        [(20, 8), (40, 4), (80, 4), (160, 2)]
            .into_iter()
            .enumerate()
            .map(|(i, (ms, max))| Endpoint {
                name: format!("e{i}"),
                latency: Duration::from_millis(ms),
                max_concurrent: max,
            })
            .collect()
    }

    #[test]
    fn ideal_is_every_slot_busy() {
        assert!((ideal(&eps()) - 562.5).abs() < 1e-9);
    }

    #[test]
    fn best_at_concurrency_fills_the_fastest_slots() {
        assert!((best_at(&eps(), 12) - 500.0).abs() < 1e-9);
        assert!((best_at(&eps(), 4) - 200.0).abs() < 1e-9);
        assert!((best_at(&eps(), 100) - 562.5).abs() < 1e-9);
    }

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
