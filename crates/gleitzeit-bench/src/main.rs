//! `gleitzeit-bench`: end-to-end throughput and workflow latency of a Gleitzeit deployment.
//!
//! It starts a fast OpenAI-compatible simulator in this process, N workers (in-process
//! `gleitzeit_worker::run` instances, or `gleitzeit-worker` processes with `--spawn`), submits
//! W workflows of trivial tasks through `gleitzeit-queue` from S concurrent submitters and waits
//! until all have ended. It reports tasks per second end to end (from the first submission to
//! the last workflow's end), the submission time, and the workflows' latency percentiles
//! (created → finished, as recorded in each workflow's hash), with the configuration.
//!
//! One warm-up workflow runs to completion before the clock starts, so the workers have found
//! the model's stream and opened their connections.
//!
//! ```text
//! gleitzeit-bench --shape diamond --workflows 2000 --workers 2 --concurrency 32
//! ```
//!
//! `gleitzeit-bench routing` measures the endpoint router instead: the strategies' throughput
//! over simulated endpoints of unequal speed, model loads and the router's cost per call
//! (see [`routing`]); `gleitzeit-bench placement` runs DAG workflows over several models
//! through the queue and the workers and reports where the models were loaded (see
//! [`routing::placement`]). `gleitzeit-bench compare` runs Gleitzeit and BullMQ (`bench/bullmq`)
//! on the same workload side by side and prints the ratios (see [`compare`]).

mod compare;
mod floor;
mod redis_info;
mod routing;
mod shapes;
mod shards;
mod stats;
mod workers;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use gleitzeit_core::{now_ms, redact_url};
use gleitzeit_queue::{Queue, QueueConfig, RedisTarget, SubmitOutcome, TlsFiles};
use gleitzeit_testkit::llm::{MockOpenAi, SimConfig};
use gleitzeit_testkit::redis::RedisServer;
use tracing_subscriber::EnvFilter;

use crate::shapes::{Shape, Template};
use crate::workers::{Fleet, FleetConfig};

/// How often the benchmark checks whether the workflows have ended. Only the observation of
/// the end is delayed by it; the figures come from the workflow hashes.
const POLL: Duration = Duration::from_millis(50);
/// Longest wait for every worker to join the stream before the measured run.
const JOIN_WAIT: Duration = Duration::from_secs(30);
/// Workflows checked per poll (oldest unfinished first), to keep the checks' own load small.
const POLL_BATCH: usize = 64;

/// Measure Gleitzeit end to end: submit workflows, let workers run them, report. The
/// `routing` subcommand measures the endpoint router instead.
#[derive(Debug, Parser)]
#[command(
    name = "gleitzeit-bench",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    workflows: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Routing strategies over simulated endpoints of unequal speed and capacity.
    Routing(routing::RoutingArgs),
    /// Model placement: DAG workflows over several models through the queue and the workers,
    /// on simulated Ollama endpoints that load and evict models.
    Placement(routing::placement::PlacementArgs),
    /// Gleitzeit and BullMQ on the same DAG workload, side by side, with the ratios.
    Compare(compare::CompareArgs),
    /// One namespace on a Redis Cluster, unsharded and spread over shards: tasks/s and each
    /// primary's Redis CPU per task.
    Shards(shards::ShardsArgs),
    /// The floor of the workflow benchmark: the same workflows through one stream with one
    /// Lua script per task and nothing else (the reference `compare` divides by).
    Floor(floor::FloorArgs),
}

/// The workflow benchmark's settings (the command line without a subcommand).
#[derive(Debug, Parser)]
#[command(name = "gleitzeit-bench", version)]
struct Args {
    /// DAG of every workflow.
    #[arg(long, value_enum, default_value_t = Shape::Diamond)]
    shape: Shape,
    /// Number of workflows submitted.
    #[arg(long, default_value_t = 2000)]
    workflows: usize,
    /// Number of workers.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Tasks each worker runs at the same time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Redis to use (default: start a private redis-server on a free port).
    #[arg(long)]
    redis_url: Option<String>,
    /// PEM file of CA certificates to trust for a rediss:// --redis-url (instead of the
    /// system store); passed on to the workers.
    #[arg(long, env = "GLEITZEIT_REDIS_TLS_CA", value_name = "PEM")]
    redis_tls_ca: Option<PathBuf>,
    /// PEM client certificate for a Redis that requires one (with --redis-tls-key).
    #[arg(long, env = "GLEITZEIT_REDIS_TLS_CERT", value_name = "PEM")]
    redis_tls_cert: Option<PathBuf>,
    /// PEM private key of --redis-tls-cert.
    #[arg(long, env = "GLEITZEIT_REDIS_TLS_KEY", value_name = "PEM")]
    redis_tls_key: Option<PathBuf>,
    /// Simulator latency before each response.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 1)]
    submitters: usize,
    /// Run the workers as `gleitzeit-worker` processes instead of inside this process.
    #[arg(long)]
    spawn: bool,
    /// The worker binary for `--spawn` (default: next to this executable).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Key namespace (default: a fresh `bench-<random>`, so runs never mix).
    #[arg(long)]
    namespace: Option<String>,
    /// Give up when the workflows have not all ended after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Shards the namespace's workflows are spread over (default: one).
    #[arg(long)]
    shards: Option<u16>,
    /// The workers' `routing.lease_linger` (default: the worker's); `0s` returns every slot
    /// lease at once, as before lease reuse.
    #[arg(long, value_parser = humantime::parse_duration)]
    lease_linger: Option<Duration>,
    /// The workers' `read_linger` (default: the worker's); `0s` makes an idle reader wait
    /// in the group after every read, as before the linger.
    #[arg(long, value_parser = humantime::parse_duration)]
    read_linger: Option<Duration>,
    /// Whether the workers export metrics, as deployed workers do (each on a free port):
    /// some metrics cost Redis work per task. `false` measures the queue without them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    worker_metrics: bool,
    /// Servers whose `INFO` is read per server before and after the measured run (the
    /// primaries of a cluster; `gleitzeit-bench shards` sets it).
    #[arg(skip)]
    measure_nodes: Vec<String>,
    /// Endpoints the workers route over, all on the one simulator (`gleitzeit-bench shards`
    /// sets it: over several shards each endpoint's state has a slot of its own).
    #[arg(skip = 1usize)]
    endpoints: usize,
}

/// What a side-by-side command varies in the workflow benchmark it runs.
struct ProcessRun<'a> {
    shape: Shape,
    workflows: usize,
    workers: usize,
    concurrency: usize,
    latency: Duration,
    redis_url: String,
    worker_bin: &'a std::path::Path,
    timeout: Duration,
    lease_linger: Option<Duration>,
    read_linger: Option<Duration>,
    worker_metrics: bool,
}

impl Args {
    /// The workflow benchmark with `gleitzeit-worker` processes, one submitter and a fresh
    /// namespace, as `compare` and `shards` run it.
    fn processes(run: ProcessRun<'_>) -> Args {
        Args {
            shape: run.shape,
            workflows: run.workflows,
            workers: run.workers,
            concurrency: run.concurrency,
            redis_url: Some(run.redis_url),
            redis_tls_ca: None,
            redis_tls_cert: None,
            redis_tls_key: None,
            latency: run.latency,
            submitters: 1,
            spawn: true,
            worker_bin: Some(run.worker_bin.to_owned()),
            namespace: None,
            timeout: run.timeout,
            shards: None,
            lease_linger: run.lease_linger,
            read_linger: run.read_linger,
            worker_metrics: run.worker_metrics,
            measure_nodes: Vec::new(),
            endpoints: 1,
        }
    }
}

/// The Redis to run against: `url` when given, else a private `redis-server` (returned too:
/// it is stopped when dropped, so the caller keeps it until the run is over).
fn redis(url: Option<&str>) -> anyhow::Result<(Option<RedisServer>, String)> {
    Ok(match url {
        Some(url) => (None, url.to_owned()),
        None => {
            let server = RedisServer::start().context("starting a private redis-server")?;
            let url = server.url();
            (Some(server), url)
        }
    })
}

/// CPUs this process may use (0 when unknown), reported with every run's setup because the
/// figures depend on it.
fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Some(Command::Routing(args)) => routing::run(args).await,
        Some(Command::Placement(args)) => routing::placement::run(args).await,
        Some(Command::Compare(args)) => compare::run(args).await,
        Some(Command::Shards(args)) => shards::run(args).await,
        Some(Command::Floor(args)) => floor::command(args).await,
        None => workflow_bench(cli.workflows).await,
    }
}

/// The workflow benchmark: submit, run, report.
async fn workflow_bench(args: Args) -> anyhow::Result<()> {
    let report = run_workflows(&args).await?;
    report.print(&args);
    if report.not_completed > 0 {
        bail!("{} workflows did not complete", report.not_completed);
    }
    Ok(())
}

/// The figures of one measured run of the workflow benchmark.
struct Report {
    /// The Redis URL used (a private server's, or `--redis-url`).
    redis_url: String,
    /// `v7.0.15` or the like.
    redis_version: String,
    /// Tasks per workflow.
    tasks_per_workflow: usize,
    /// Workflows measured (the warm-up not counted).
    workflows: usize,
    /// Tasks measured.
    tasks: usize,
    /// Tasks per second, first submission → last workflow end.
    tasks_per_s: f64,
    /// First submission → last workflow end, from the workflow hashes.
    elapsed_ms: u64,
    /// First submission → the benchmark saw the last end.
    observed: Duration,
    /// Until the last submit call returned.
    submit_total: Duration,
    /// Each submit call's time, µs, sorted.
    submit_calls_us: Vec<u64>,
    /// Each workflow's created → finished, ms, sorted.
    latencies: Vec<u64>,
    /// Requests the simulator received in the measured run.
    provider_calls: u64,
    /// Workflows that ended otherwise than completed.
    not_completed: usize,
    /// How each worker ended.
    summaries: Vec<String>,
    /// What Redis spent from the first submission to the last end observed (`None` when
    /// the server refused `INFO`, and for a cluster URL: see `node_costs`).
    redis_cost: Option<redis_info::Cost>,
    /// What each server of `Args::measure_nodes` spent, in that order.
    node_costs: Vec<Option<redis_info::Cost>>,
}

/// Submits `args.workflows` workflows, lets the workers run them and measures.
async fn run_workflows(args: &Args) -> anyhow::Result<Report> {
    if args.workflows == 0 || args.workers == 0 || args.submitters == 0 || args.concurrency == 0 {
        bail!("--workflows, --workers, --submitters and --concurrency must be at least 1");
    }
    // A private Redis unless one is given; it lives until the report is printed.
    let (_private_redis, redis_url) = redis(args.redis_url.as_deref())?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let sim = MockOpenAi::start(SimConfig::default().with_latency(args.latency))
        .await
        .context("starting the simulator")?;
    let tls = TlsFiles {
        ca: args.redis_tls_ca.clone(),
        cert: args.redis_tls_cert.clone(),
        key: args.redis_tls_key.clone(),
    };
    let target = RedisTarget::new(redis_url.as_str()).with_tls(tls.clone());
    let queue = Queue::connect(
        &target,
        QueueConfig {
            namespace: namespace.clone(),
            shards: args.shards,
            ..QueueConfig::default()
        },
    )
    .await
    .context("connecting to Redis")?;
    let redis_version = redis_version(&target).await?;

    let template = Template::new(&args.shape.workflow()?)?;
    let fleet_cfg = FleetConfig {
        redis_url: redis_url.clone(),
        redis_tls: tls,
        namespace: namespace.clone(),
        concurrency: args.concurrency,
        endpoint_url: sim.url(),
        endpoints: args.endpoints,
        shards: args.shards,
        lease_linger: args.lease_linger,
        read_linger: args.read_linger,
        metrics: args.worker_metrics,
    };
    let mut fleet = if args.spawn {
        let bin = match &args.worker_bin {
            Some(b) => b.clone(),
            None => workers::default_worker_bin()?,
        };
        Fleet::spawn(args.workers, &fleet_cfg, &bin)?
    } else {
        Fleet::in_process(args.workers, &fleet_cfg)
    };

    let deadline = Instant::now() + args.timeout;
    // Warm-up: the workers discover the stream and connect before the clock starts.
    let warm_id = submit_one(&queue, &template).await?;
    wait_all(&queue, std::slice::from_ref(&warm_id), deadline, &mut fleet).await?;
    wait_consumers(&target, &queue, &template, args.workers).await?;
    let warm_requests = sim.counters().received;

    // Measured run. Its end is seen in the namespace's workflow counters (one read per
    // poll), not per workflow: the benchmark's own reads would count as the system's work.
    let ended_before = ended(&queue).await?;
    let redis_before = redis_snapshot(&target).await;
    let nodes: Vec<RedisTarget> = args.measure_nodes.iter().map(RedisTarget::new).collect();
    let mut nodes_before = Vec::with_capacity(nodes.len());
    for node in &nodes {
        nodes_before.push(redis_snapshot(node).await);
    }
    let start_ms = now_ms();
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut submitters = Vec::with_capacity(args.submitters);
    for _ in 0..args.submitters {
        let queue = queue.clone();
        let template = template.clone();
        let next = next.clone();
        let total = args.workflows;
        submitters.push(tokio::spawn(async move {
            let mut done: Vec<(usize, String, u64)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(done);
                }
                let t0 = Instant::now();
                let id = submit_one(&queue, &template).await?;
                done.push((i, id, t0.elapsed().as_micros() as u64));
            }
        }));
    }
    let mut submitted: Vec<(usize, String, u64)> = Vec::with_capacity(args.workflows);
    for s in submitters {
        submitted.extend(s.await.context("submitter task")??);
    }
    let submit_total = started.elapsed();
    submitted.sort_by_key(|(i, _, _)| *i);
    let ids: Vec<String> = submitted.iter().map(|(_, id, _)| id.clone()).collect();
    let submit_calls_us: Vec<u64> = submitted.iter().map(|(_, _, us)| *us).collect();

    wait_ended(
        &queue,
        ended_before + ids.len() as u64,
        deadline,
        &mut fleet,
    )
    .await?;
    let observed = started.elapsed();
    let redis_after = redis_snapshot(&target).await;
    let redis_cost = redis_before.zip(redis_after).map(|(b, a)| b.until(&a));
    let mut node_costs = Vec::with_capacity(nodes.len());
    for (node, before) in nodes.iter().zip(nodes_before) {
        let after = redis_snapshot(node).await;
        node_costs.push(before.zip(after).map(|(b, a)| b.until(&a)));
    }

    // Figures from the workflow hashes. The counters count every workflow of the namespace:
    // in a namespace shared with other work one of these may still run; it is waited for
    // (after the measurement).
    let mut latencies = Vec::with_capacity(ids.len());
    let mut last_finished = start_ms;
    let mut not_completed = 0usize;
    for id in &ids {
        let info = loop {
            let info = queue
                .workflow(id)
                .await?
                .with_context(|| format!("workflow {id} disappeared"))?;
            if info.is_finished() {
                break info;
            }
            wait_all(&queue, std::slice::from_ref(id), deadline, &mut fleet).await?;
        };
        if info.status != "completed" {
            not_completed += 1;
        }
        let finished = info.finished_ms.unwrap_or(info.created_ms);
        last_finished = last_finished.max(finished);
        latencies.push(finished.saturating_sub(info.created_ms));
    }
    latencies.sort_unstable();
    let tasks = ids.len() * template.tasks();
    let elapsed_ms = last_finished.saturating_sub(start_ms).max(1);
    let tasks_per_s = tasks as f64 / (elapsed_ms as f64 / 1000.0);
    let provider_calls = sim.counters().received - warm_requests;

    let summaries = fleet.stop().await?;

    Ok(Report {
        redis_url,
        redis_version,
        tasks_per_workflow: template.tasks(),
        workflows: ids.len(),
        tasks,
        tasks_per_s,
        elapsed_ms,
        observed,
        submit_total,
        submit_calls_us: {
            let mut s = submit_calls_us;
            s.sort_unstable();
            s
        },
        latencies,
        provider_calls,
        not_completed,
        summaries,
        redis_cost,
        node_costs,
    })
}

/// `INFO cpu` and `commandstats` of the benchmark's Redis, or `None` with a warning.
async fn redis_snapshot(target: &RedisTarget) -> Option<redis_info::Snapshot> {
    if target.is_cluster() {
        // INFO of a cluster is per server: see `Args::measure_nodes`.
        return None;
    }
    match redis_info::snapshot(target).await {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("warning: no Redis CPU figures: INFO failed: {e:#}");
            None
        }
    }
}

impl Report {
    /// What makes the run unusable for a comparison (empty when nothing): a provider call
    /// count other than one per task, workflows that did not complete.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.provider_calls != self.tasks as u64 {
            problems.push(format!(
                "{} provider calls for {} tasks",
                self.provider_calls, self.tasks
            ));
        }
        if self.not_completed > 0 {
            problems.push(format!("{} workflows not completed", self.not_completed));
        }
        problems
    }

    /// Prints the setup and the figures.
    fn print(&self, args: &Args) {
        let mode = if args.spawn {
            "processes"
        } else {
            "in-process"
        };
        println!("gleitzeit-bench");
        println!(
            "  shape              {} ({} tasks per workflow)",
            args.shape.name(),
            self.tasks_per_workflow
        );
        println!(
            "  workflows          {} ({} tasks)",
            self.workflows, self.tasks
        );
        println!(
            "  workers            {} {mode}, concurrency {} each",
            args.workers, args.concurrency
        );
        println!("  submitters         {}", args.submitters);
        println!(
            "  provider           OpenAI-compatible simulator, latency {}",
            humantime::format_duration(args.latency)
        );
        println!(
            "  redis              {} {} ({})",
            if args.redis_url.is_some() {
                "given"
            } else {
                "private redis-server"
            },
            self.redis_version,
            redact_url(&self.redis_url)
        );
        println!("  machine            {} CPUs available", available_cpus());
        println!("results");
        println!(
            "  tasks/s            {:.0} (end to end: first submission → last workflow end)",
            self.tasks_per_s
        );
        println!(
            "  run time           {:.3} s (observed {:.3} s)",
            self.elapsed_ms as f64 / 1000.0,
            self.observed.as_secs_f64()
        );
        println!(
            "  submit total       {:.3} s ({:.3} ms per workflow; one submit call mean {:.3} ms, p99 {:.3} ms)",
            self.submit_total.as_secs_f64(),
            self.submit_total.as_secs_f64() * 1000.0 / self.workflows.max(1) as f64,
            stats::mean(&self.submit_calls_us).unwrap_or(0.0) / 1000.0,
            stats::percentile(&self.submit_calls_us, 99.0).unwrap_or(0) as f64 / 1000.0
        );
        println!(
            "  workflow latency   p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (created → finished)",
            self.latency_ms(50.0),
            self.latency_ms(90.0),
            self.latency_ms(99.0),
            self.latencies.last().copied().unwrap_or(0),
        );
        if let Some(cost) = self.redis_cost {
            let per = cost.per(self.tasks);
            println!(
                "  redis per task     {:.0} µs CPU, {:.2} script calls, {:.1} commands, {:.2} reads \
                 (first submission → last end observed{})",
                per.cpu_us,
                per.scripts,
                per.commands,
                per.reads,
                if args.redis_url.is_some() {
                    "; a shared server's other clients count too"
                } else {
                    ""
                }
            );
        }
        println!("  provider calls     {}", self.provider_calls);
        println!("  not completed      {}", self.not_completed);
        for (i, s) in self.summaries.iter().enumerate() {
            println!("  worker {i}           {s}");
        }
    }

    /// Workflow latency at percentile `p`, ms (0 without workflows).
    fn latency_ms(&self, p: f64) -> u64 {
        stats::percentile(&self.latencies, p).unwrap_or(0)
    }
}

async fn submit_one(queue: &Queue, template: &Template) -> anyhow::Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    match queue
        .submit(&template.request(id.clone(), now_ms()))
        .await?
    {
        SubmitOutcome::Created { id } => Ok(id),
        other => bail!("unexpected submit outcome {other:?}"),
    }
}

/// Workflows of the namespace that have ended (completed, failed or cancelled), from its
/// counters (`{ns}:stats`).
async fn ended(queue: &Queue) -> anyhow::Result<u64> {
    let t = queue.workflow_totals().await?;
    Ok(t.completed + t.failed + t.cancelled)
}

/// Waits until `target` workflows of the namespace have ended, reading its counters every
/// [`POLL`].
async fn wait_ended(
    queue: &Queue,
    target: u64,
    deadline: Instant,
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    loop {
        let n = ended(queue).await?;
        if n >= target {
            return Ok(());
        }
        if fleet.any_finished() {
            bail!("a worker stopped before the workflows ended");
        }
        if Instant::now() > deadline {
            bail!("{} workflows had not ended by the deadline", target - n);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until every workflow in `ids` has ended, checking the oldest unfinished ones first
/// (a workflow is only looked at again while it is among the oldest unfinished).
async fn wait_all(
    queue: &Queue,
    ids: &[String],
    deadline: Instant,
    fleet: &mut Fleet,
) -> anyhow::Result<()> {
    let mut cursor = 0;
    while cursor < ids.len() {
        let end = (cursor + POLL_BATCH).min(ids.len());
        let mut advanced = false;
        for id in &ids[cursor..end] {
            let finished = queue
                .workflow(id)
                .await?
                .map(|w| w.is_finished())
                .unwrap_or(false);
            if !finished {
                break;
            }
            cursor += 1;
            advanced = true;
        }
        if cursor == ids.len() {
            break;
        }
        if fleet.any_finished() {
            bail!("a worker stopped before the workflows ended");
        }
        if Instant::now() > deadline {
            bail!(
                "{} workflows had not ended by the deadline",
                ids.len() - cursor
            );
        }
        if !advanced {
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// Waits until `n` workers serve the benchmark's stream (each worker joins when its periodic
/// capability refresh finds the stream), so that every worker takes part from the first
/// measured submission: `n` consumers have read the stream, or `n` live workers list its
/// capability in the worker registry (a worker whose reads found the stream empty is no
/// consumer yet: Redis adds a consumer only when it is delivered an entry). Gives up with a
/// warning after [`JOIN_WAIT`].
async fn wait_consumers(
    target: &RedisTarget,
    queue: &Queue,
    template: &Template,
    n: usize,
) -> anyhow::Result<()> {
    // The first shard's stream (the workers read every shard's).
    let stream =
        queue.shards()[0].stream(&template.capability(), gleitzeit_queue::Priority::Normal);
    let mut conn = connection(target).await?;
    let until = Instant::now() + JOIN_WAIT;
    loop {
        let consumers: Vec<deadpool_redis::redis::Value> = deadpool_redis::redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&stream)
            .arg(&queue.config().group)
            .query_async(&mut conn)
            .await
            // The stream or group does not exist until the first shard is used.
            .unwrap_or_default();
        let capability = template.capability();
        let serving = queue
            .workers(now_ms())
            .await?
            .iter()
            .filter(|w| w.capabilities.contains(&capability))
            .count();
        if consumers.len() >= n || serving >= n {
            return Ok(());
        }
        if Instant::now() > until {
            eprintln!(
                "warning: only {} of {n} workers serve the stream after {JOIN_WAIT:?}; measuring anyway",
                consumers.len().max(serving)
            );
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A connection to `target` (one server, or a cluster).
async fn connection(target: &RedisTarget) -> anyhow::Result<gleitzeit_queue::Conn> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    Ok(target
        .connector(TIMEOUT)?
        .connect(gleitzeit_queue::Timeouts {
            connect: TIMEOUT,
            response: Some(TIMEOUT),
        })
        .await?)
}

async fn redis_version(target: &RedisTarget) -> anyhow::Result<String> {
    use deadpool_redis::redis::{FromRedisValue, Value};
    let mut conn = connection(target).await?;
    let reply: Value = deadpool_redis::redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    // A cluster answers with every primary's INFO (node → text); all run the same version.
    let info = match reply {
        Value::Map(nodes) => match nodes.into_iter().next() {
            Some((_, text)) => String::from_redis_value(text)?,
            None => String::new(),
        },
        other => String::from_redis_value(other)?,
    };
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(|v| format!("v{}", v.trim()))
        .unwrap_or_else(|| "(version unknown)".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn routing_is_a_subcommand_and_the_workflow_flags_stay() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["gleitzeit-bench", "--workflows", "7", "--spawn"]).unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.workflows.workflows, 7);
        assert!(c.workflows.spawn);
        let c = Cli::try_parse_from([
            "gleitzeit-bench",
            "routing",
            "--calls",
            "40",
            "--strategies",
            "priority,round_robin",
            "--json",
        ])
        .unwrap();
        let Some(Command::Routing(r)) = c.command else {
            panic!("routing subcommand expected");
        };
        assert_eq!(r.calls, 40);
        assert!(r.json);
        assert_eq!(
            r.strategies,
            [
                gleitzeit_llm::Strategy::Priority,
                gleitzeit_llm::Strategy::RoundRobin
            ]
        );
        assert_eq!(r.latencies, [20, 40, 80, 160].map(Duration::from_millis));
        assert_eq!(r.max_concurrent, [8, 4, 4, 2]);
        assert_eq!(r.models.len(), 4);
        assert!(Cli::try_parse_from([
            "gleitzeit-bench",
            "routing",
            "--strategies",
            "fastest_ever"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["gleitzeit-bench", "--workflows", "3", "routing"]).is_err());
    }

    #[test]
    fn compare_is_a_subcommand() {
        let c = Cli::try_parse_from([
            "gleitzeit-bench",
            "compare",
            "--workflows",
            "50",
            "--workers",
            "1,2,4",
            "--runs",
            "2",
        ])
        .unwrap();
        let Some(Command::Compare(a)) = c.command else {
            panic!("compare subcommand expected");
        };
        assert_eq!((a.workflows, a.runs, a.concurrency), (50, 2, 32));
        assert_eq!(a.workers, [1, 2, 4]);
        assert_eq!(a.shape, Shape::Diamond);
        assert!(!a.bullmq_noop);
        // The floor runs unless turned off.
        assert!(a.floor);
        let c = Cli::try_parse_from(["gleitzeit-bench", "compare", "--floor", "false"]).unwrap();
        let Some(Command::Compare(a)) = c.command else {
            panic!("compare subcommand expected");
        };
        assert!(!a.floor);
    }

    #[test]
    fn arguments_are_consistent() {
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "gleitzeit-bench",
            "--shape",
            "chain",
            "--workflows",
            "10",
            "--workers",
            "2",
            "--latency",
            "5ms",
            "--spawn",
        ])
        .unwrap();
        assert_eq!(a.shape, Shape::Chain);
        assert_eq!(a.workflows, 10);
        assert_eq!(a.latency, Duration::from_millis(5));
        assert!(a.spawn);
        assert_eq!(a.submitters, 1);
    }
}
