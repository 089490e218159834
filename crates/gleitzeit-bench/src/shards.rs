//! `gleitzeit-bench shards`: one namespace on a Redis Cluster, unsharded and spread over
//! shards, side by side: tasks per second and what each primary spent (Redis CPU and
//! script calls per task), so the spread of the load — and where it stops — can be read.
//!
//! Every run starts a fresh cluster of `--primaries` primaries without replicas (replicas
//! would add their own CPU on this machine without changing the primaries' figures) and
//! runs the workflow benchmark ([`crate::run_workflows`]) with `gleitzeit-worker` processes
//! configured for the shard count. The shard counts alternate their order from run to run,
//! so a drift of the machine's load does not favour one of them. Each primary's `INFO cpu`
//! and `INFO commandstats` are read just before the first submission and just after the
//! last workflow's end was seen.
//!
//! The figure that bounds a fleet is the busiest primary's Redis CPU per task: Redis runs
//! each primary's commands on one thread, so `1 / (busiest µs per task)` is the most tasks
//! per second the cluster carries, however many workers run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use gleitzeit_testkit::cluster::RedisCluster;

use crate::redis_info::Cost;
use crate::shapes::Shape;
use crate::{Args, ProcessRun};

/// Settings of `gleitzeit-bench shards`.
#[derive(Debug, clap::Args)]
pub struct ShardsArgs {
    /// Shard counts to measure, comma-separated (1 = the whole namespace on one primary).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub shards: Vec<u16>,
    /// Primaries of the cluster (equal slot ranges, as `redis-cli --cluster create` makes).
    #[arg(long, default_value_t = 3)]
    pub primaries: usize,
    /// DAG of every workflow.
    #[arg(long, value_enum, default_value_t = Shape::Diamond)]
    pub shape: Shape,
    /// Workflows per run.
    #[arg(long, default_value_t = 2000)]
    pub workflows: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// LLM endpoints the workers route over (least loaded), all on the one simulator: over
    /// several shards each endpoint's leases are in a slot of its own.
    #[arg(long, default_value_t = 1)]
    pub endpoints: usize,
    /// Tasks each worker process runs at the same time.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Runs of each shard count.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Simulator latency before each response.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// The Gleitzeit worker binary (default: next to this executable).
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// Give up on a run after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// One measured run.
struct Row {
    shards: u16,
    run: usize,
    tasks_per_s: f64,
    /// Per primary: (CPU µs per task, script calls per task).
    primaries: Vec<Option<(f64, f64)>>,
    problems: String,
}

impl Row {
    /// The busiest primary's CPU µs per task.
    fn busiest_us(&self) -> Option<f64> {
        self.primaries
            .iter()
            .flatten()
            .map(|p| p.0)
            .reduce(f64::max)
    }

    /// Every primary's CPU µs per task, summed.
    fn total_us(&self) -> Option<f64> {
        let all: Vec<f64> = self.primaries.iter().flatten().map(|p| p.0).collect();
        (all.len() == self.primaries.len()).then(|| all.iter().sum())
    }
}

/// Runs the measurement and prints one line per run and a summary.
pub async fn run(args: ShardsArgs) -> anyhow::Result<()> {
    if args.shards.is_empty() || args.runs == 0 || args.primaries == 0 {
        bail!("--shards, --runs and --primaries must not be empty or zero");
    }
    let worker_bin = match &args.worker_bin {
        Some(b) => b.clone(),
        None => crate::workers::default_worker_bin()?,
    };
    println!("gleitzeit-bench shards");
    println!(
        "  workload    {} workflows of shape {} per run, one sequential submitter",
        args.workflows,
        args.shape.name()
    );
    println!(
        "  workers     {} gleitzeit-worker processes (release build), concurrency {} each",
        args.workers, args.concurrency
    );
    println!(
        "  endpoints   {} (least loaded), all on one OpenAI-compatible simulator",
        args.endpoints.max(1)
    );
    println!(
        "  redis       a fresh Redis Cluster per run: {} primaries, no replicas; machine {} CPUs",
        args.primaries,
        crate::available_cpus()
    );
    println!();
    let mut header = format!("{:>6} {:>3} {:>9}", "shards", "run", "tasks/s");
    for p in 0..args.primaries {
        header.push_str(&format!("  {:>16}", format!("primary {p} µs|fc")));
    }
    header.push_str(&format!("  {:>10} {:>10}", "busiest µs", "total µs"));
    println!("{header}");

    let mut rows: Vec<Row> = Vec::new();
    for run in 0..args.runs {
        let mut order = args.shards.clone();
        if run % 2 == 1 {
            order.reverse();
        }
        for &shards in &order {
            let row = one(&args, shards, run + 1, &worker_bin).await?;
            let mut line = format!("{:>6} {:>3} {:>9.0}", row.shards, row.run, row.tasks_per_s);
            for p in &row.primaries {
                line.push_str(&format!(
                    "  {:>16}",
                    match p {
                        Some((us, fc)) => format!("{us:.0} | {fc:.2}"),
                        None => "-".to_owned(),
                    }
                ));
            }
            line.push_str(&format!(
                "  {:>10} {:>10}",
                fmt(row.busiest_us()),
                fmt(row.total_us())
            ));
            if !row.problems.is_empty() {
                line.push_str(&format!("  PROBLEM: {}", row.problems));
            }
            println!("{line}");
            rows.push(row);
        }
    }

    println!();
    println!("summary (medians over the runs; µs = Redis CPU per task; fc = FCALL per task)");
    println!(
        "{:>6} {:>9} {:>11} {:>10} {:>13}",
        "shards", "tasks/s", "busiest µs", "total µs", "ceiling t/s"
    );
    for &shards in &args.shards {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.shards == shards).collect();
        let tps = median(mine.iter().map(|r| r.tasks_per_s).collect());
        let busiest = median(mine.iter().filter_map(|r| r.busiest_us()).collect());
        let total = median(mine.iter().filter_map(|r| r.total_us()).collect());
        println!(
            "{:>6} {:>9} {:>11} {:>10} {:>13}",
            shards,
            fmt(tps),
            fmt(busiest),
            fmt(total),
            // One thread per primary: the busiest one caps the cluster.
            fmt(busiest.map(|us| 1e6 / us.max(1e-9)))
        );
    }
    let bad: Vec<&Row> = rows.iter().filter(|r| !r.problems.is_empty()).collect();
    if !bad.is_empty() {
        bail!("{} runs failed their checks", bad.len());
    }
    Ok(())
}

/// One run with `shards` shards on a fresh cluster.
async fn one(
    args: &ShardsArgs,
    shards: u16,
    run: usize,
    worker_bin: &std::path::Path,
) -> anyhow::Result<Row> {
    let primaries = args.primaries;
    let cluster = tokio::task::spawn_blocking(move || RedisCluster::start(primaries, 0))
        .await?
        .context("starting a Redis Cluster (redis-server and redis-cli are needed)")?;
    let bench = Args {
        shards: Some(shards),
        measure_nodes: cluster.nodes().iter().map(|n| n.url()).collect(),
        endpoints: args.endpoints,
        ..Args::processes(ProcessRun {
            shape: args.shape,
            workflows: args.workflows,
            workers: args.workers,
            concurrency: args.concurrency,
            latency: args.latency,
            redis_url: cluster.url(),
            worker_bin,
            timeout: args.timeout,
            lease_linger: None,
            read_linger: None,
            worker_metrics: true,
        })
    };
    let report = crate::run_workflows(&bench).await?;
    drop(cluster);
    let per = |c: &Option<Cost>| {
        c.map(|c| {
            let per = c.per(report.tasks);
            (per.cpu_us, per.scripts)
        })
    };
    Ok(Row {
        shards,
        run,
        tasks_per_s: report.tasks_per_s,
        primaries: report.node_costs.iter().map(per).collect(),
        problems: report.problems().join("; "),
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}
