//! `gleitzeit-bench compare`: Gleitzeit and BullMQ on the same DAG workload, side by side in
//! one command, with the ratios, and the floor of the same workload ([`crate::floor`]).
//!
//! For every worker count and run, each system gets a fresh private `redis-server` and a
//! fresh simulator: Gleitzeit runs the workflow benchmark ([`crate::run_workflows`]) with
//! `gleitzeit-worker` processes, BullMQ runs `bench/bullmq/diamond.mjs` (node) with as many
//! node worker processes, the floor as many worker tasks of this process. Which system goes
//! first rotates from run to run and from one worker count to the next, so a drift of the
//! machine's load does not favour one side.
//! Every system reads `INFO cpu commandstats stats` just before its first submission and
//! just after the last workflow's end was seen, parsed by [`crate::redis_info`].
//!
//! On a shared machine absolute numbers drift from run to run; the ratios of runs made next
//! to each other are the figures to read.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use gleitzeit_testkit::llm::{MockOpenAi, SimConfig};
use gleitzeit_testkit::redis::RedisServer;
use serde_json::Value;
use tokio::process::Command;

use crate::redis_info::{Cost, PerTask, Snapshot};
use crate::shapes::{Shape, Template};
use crate::{workers, Args, ProcessRun};

/// Tasks per workflow in both shapes (`diamond.mjs` has the same constant).
const TASKS_PER_WORKFLOW: usize = 6;

/// What to install when the BullMQ side is missing.
const INSTALL: &str = "npm ci --prefix bench/bullmq";

/// Settings of `gleitzeit-bench compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// DAG of every workflow.
    #[arg(long, value_enum, default_value_t = Shape::Diamond)]
    pub shape: Shape,
    /// Workflows per run.
    #[arg(long, default_value_t = 2000)]
    pub workflows: usize,
    /// Worker process counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Runs of each system per worker count.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Tasks each worker process runs at the same time (BullMQ: the Worker's concurrency).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Simulator latency before each response.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// BullMQ tasks do nothing instead of calling the simulator (Gleitzeit always calls it).
    #[arg(long)]
    pub bullmq_noop: bool,
    /// The BullMQ project (default: `bench/bullmq` here, else in the source tree).
    #[arg(long)]
    pub bullmq_dir: Option<PathBuf>,
    /// The node executable.
    #[arg(long, default_value = "node")]
    pub node: PathBuf,
    /// The Gleitzeit worker binary (default: next to this executable).
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// Give up on a run after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The Gleitzeit workers' `routing.lease_linger` (default: the worker's); `0s` returns
    /// every slot lease at once, as before lease reuse.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lease_linger: Option<Duration>,
    /// The Gleitzeit workers' `read_linger` (default: the worker's); `0s` makes an idle
    /// reader wait in the group after every read, as before the linger.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub read_linger: Option<Duration>,
    /// Whether the Gleitzeit workers export metrics, as deployed workers do (each on a free
    /// port); `false` measures the queue without the Redis work some metrics cost.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub worker_metrics: bool,
    /// Whether the floor runs too: the same workflows through one stream with one Lua script
    /// per task and nothing else, the reference Redis µs per task are divided by.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub floor: bool,
}

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Gleitzeit,
    BullMq,
    /// The least Redis work for the same workflows ([`crate::floor`]).
    Floor,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Gleitzeit => "gleitzeit",
            System::BullMq => "bullmq",
            System::Floor => "floor",
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Row {
    system: System,
    workers: usize,
    run: usize,
    tasks_per_s: f64,
    /// Redis CPU µs, scripts, commands and reads per task.
    redis: Option<PerTask>,
    p50_ms: u64,
    p99_ms: u64,
    /// 1-minute load average when the run ended.
    load: f64,
    /// Empty when every check passed (all tasks ran once, every workflow completed).
    problems: String,
}

/// Runs the comparison and prints every run and the summary.
pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    if args.workflows == 0 || args.runs == 0 || args.concurrency == 0 {
        bail!("--workflows, --runs and --concurrency must be at least 1");
    }
    if args.workers.is_empty() || args.workers.contains(&0) {
        bail!("--workers must list worker counts of at least 1");
    }
    // Everything that can be missing is checked before the first run.
    let bullmq_dir = bullmq_dir(args.bullmq_dir.as_deref())?;
    let node_version = node_version(&args.node).await?;
    let bullmq_version = bullmq_version(&bullmq_dir)?;
    let worker_bin = match &args.worker_bin {
        Some(b) => b.clone(),
        None => workers::default_worker_bin()?,
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: a debug build; build with `cargo build --release -p gleitzeit-bench -p gleitzeit-worker --bins` for figures worth comparing"
        );
    }

    println!("gleitzeit-bench compare");
    println!(
        "  workload    {} workflows of shape {} ({} tasks), one sequential submitter, after one warm-up workflow",
        args.workflows,
        args.shape.name(),
        args.workflows * TASKS_PER_WORKFLOW
    );
    println!(
        "  gleitzeit   {} processes ({}), concurrency {} each, one simulator call per task",
        worker_bin
            .file_name()
            .map_or("".into(), |n| n.to_string_lossy()),
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        },
        args.concurrency
    );
    println!(
        "  bullmq      {bullmq_version} on node {node_version}, node processes, concurrency {} each, {}",
        args.concurrency,
        if args.bullmq_noop {
            "no-op tasks"
        } else {
            "one simulator call per task"
        }
    );
    if args.floor {
        println!(
            "  floor       one stream, one Lua script per task and nothing else (no fencing, retries, leases,\n              events, retention; no provider call), worker tasks of this process, concurrency {} each",
            args.concurrency
        );
    }
    println!(
        "  simulator   OpenAI-compatible, in this process, latency {}",
        humantime::format_duration(args.latency)
    );
    println!(
        "  redis       a fresh private redis-server per run; machine {} CPUs, load average {}",
        crate::available_cpus(),
        load_average_text()
    );
    println!();
    println!("{}", header());

    let mut rows = Vec::new();
    for (wi, &n) in args.workers.iter().enumerate() {
        for run in 0..args.runs {
            for system in order(run + wi, args.floor) {
                let row = match system {
                    System::Gleitzeit => gleitzeit(&args, n, run, &worker_bin).await,
                    System::BullMq => bullmq(&args, n, run, &bullmq_dir).await,
                    System::Floor => floor(&args, n, run).await,
                }
                .with_context(|| format!("{} with {n} workers, run {}", system.name(), run + 1))?;
                println!("{}", line(&row));
                rows.push(row);
            }
        }
    }

    println!();
    println!("summary (medians over the runs; ratio = gleitzeit / bullmq)");
    println!(
        "  {:>7}  {:>9} {:>9} {:>6}  {:>9} {:>9} {:>6}  {:>13} {:>13}",
        "workers",
        "G tasks/s",
        "B tasks/s",
        "ratio",
        "G µs/task",
        "B µs/task",
        "ratio",
        "G p50/p99 ms",
        "B p50/p99 ms"
    );
    for &n in &args.workers {
        let g = runs_of(&rows, System::Gleitzeit, n);
        let b = runs_of(&rows, System::BullMq, n);
        let (gt, bt, gc, bc) = (tps(&g), tps(&b), cpu(&g), cpu(&b));
        println!(
            "  {n:>7}  {:>9} {:>9} {:>6}  {:>9} {:>9} {:>6}  {:>13} {:>13}",
            num(gt, 0),
            num(bt, 0),
            ratio(gt, bt),
            num(gc, 0),
            num(bc, 0),
            ratio(gc, bc),
            latency(&g),
            latency(&b)
        );
    }
    if args.floor {
        println!();
        println!(
            "floor (medians; the Redis µs per task of each system divided by the floor's, in the same run)"
        );
        println!(
            "  {:>7}  {:>9} {:>9}  {:>13}  {:>9} {:>9}",
            "workers", "F tasks/s", "F µs/task", "F p50/p99 ms", "G µs / F", "B µs / F"
        );
        for &n in &args.workers {
            let f = runs_of(&rows, System::Floor, n);
            let fc = cpu(&f);
            println!(
                "  {n:>7}  {:>9} {:>9}  {:>13}  {:>9} {:>9}",
                num(tps(&f), 0),
                num(fc, 0),
                latency(&f),
                ratio(cpu(&runs_of(&rows, System::Gleitzeit, n)), fc),
                ratio(cpu(&runs_of(&rows, System::BullMq, n)), fc),
            );
        }
    }
    println!("  load average at the end: {}", load_average_text());
    let bad: Vec<&Row> = rows.iter().filter(|r| !r.problems.is_empty()).collect();
    if !bad.is_empty() {
        for r in &bad {
            eprintln!(
                "{} with {} workers, run {}: {}",
                r.system.name(),
                r.workers,
                r.run + 1,
                r.problems
            );
        }
        bail!("{} runs failed their checks", bad.len());
    }
    Ok(())
}

/// One Gleitzeit run: the workflow benchmark with `n` worker processes on a fresh Redis.
async fn gleitzeit(
    args: &CompareArgs,
    n: usize,
    run: usize,
    worker_bin: &Path,
) -> anyhow::Result<Row> {
    let server = RedisServer::start().context("starting a private redis-server")?;
    let bench = Args::processes(ProcessRun {
        shape: args.shape,
        workflows: args.workflows,
        workers: n,
        concurrency: args.concurrency,
        latency: args.latency,
        redis_url: server.url(),
        worker_bin,
        timeout: args.timeout,
        lease_linger: args.lease_linger,
        read_linger: args.read_linger,
        worker_metrics: args.worker_metrics,
    });
    let report = crate::run_workflows(&bench).await?;
    let mut problems = report.problems();
    // The submissions (this process) and the worker processes each load the script library
    // they were built with; two means the run measured two versions of the scripts.
    let libraries = gleitzeit_libraries(&server.url()).await?;
    if libraries.len() > 1 {
        problems.push(format!(
            "the workers and this benchmark loaded different script libraries ({}): rebuild them together (cargo build --release -p gleitzeit-bench -p gleitzeit-worker)",
            libraries.join(", ")
        ));
    }
    drop(server);
    Ok(Row {
        system: System::Gleitzeit,
        workers: n,
        run,
        tasks_per_s: report.tasks_per_s,
        redis: report.redis_cost.map(|c| c.per(report.tasks)),
        p50_ms: report.latency_ms(50.0),
        p99_ms: report.latency_ms(99.0),
        load: load_average(),
        problems: problems.join("; "),
    })
}

/// The names of the Gleitzeit script libraries (`gleitzeit_<hash>`) loaded on `url`.
async fn gleitzeit_libraries(url: &str) -> anyhow::Result<Vec<String>> {
    use deadpool_redis::redis::{self, Value};
    let client = gleitzeit_queue::RedisTarget::new(url).client()?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    // One array of field/value pairs per library, `library_name` among them.
    let libraries: Vec<Vec<Value>> = redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("LIBRARYNAME")
        .arg("gleitzeit_*")
        .query_async(&mut conn)
        .await?;
    let mut names = Vec::new();
    for fields in libraries {
        for pair in fields.chunks(2) {
            if let [key, value] = pair {
                if redis::from_redis_value::<String>(key.clone())? == "library_name" {
                    names.push(redis::from_redis_value::<String>(value.clone())?);
                }
            }
        }
    }
    names.sort();
    Ok(names)
}

/// The systems of one run in the order they run: rotated by `turn` (run + worker-count
/// index), so each goes first as often as the others; the floor only when asked.
fn order(turn: usize, floor: bool) -> Vec<System> {
    let mut all = vec![System::Gleitzeit, System::BullMq];
    if floor {
        all.push(System::Floor);
    }
    let k = turn % all.len();
    all.rotate_left(k);
    all
}

/// One floor run ([`crate::floor`]): `n` worker tasks on a fresh Redis.
async fn floor(args: &CompareArgs, n: usize, run: usize) -> anyhow::Result<Row> {
    let server = RedisServer::start().context("starting a private redis-server")?;
    let template = Template::new(&args.shape.workflow()?)?;
    let report = crate::floor::run(crate::floor::FloorRun {
        template: &template,
        workflows: args.workflows,
        workers: n,
        concurrency: args.concurrency,
        redis_url: server.url(),
        timeout: args.timeout,
    })
    .await?;
    drop(server);
    Ok(Row {
        system: System::Floor,
        workers: n,
        run,
        tasks_per_s: report.tasks_per_s,
        redis: Some(report.cost.per(report.tasks)),
        p50_ms: report.latency_ms(50.0),
        p99_ms: report.latency_ms(99.0),
        load: load_average(),
        problems: String::new(),
    })
}

/// One BullMQ run: `diamond.mjs` with `n` worker processes on a fresh Redis.
async fn bullmq(args: &CompareArgs, n: usize, run: usize, dir: &Path) -> anyhow::Result<Row> {
    let server = RedisServer::start().context("starting a private redis-server")?;
    let sim = MockOpenAi::start(SimConfig::default().with_latency(args.latency))
        .await
        .context("starting the simulator")?;
    let mut cmd = Command::new(&args.node);
    cmd.arg(dir.join("diamond.mjs"))
        .arg("--redis")
        .arg(server.url())
        .args(["--workflows", &args.workflows.to_string()])
        .args(["--shape", args.shape.name()])
        .args(["--workers", &n.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(["--timeout-s", &args.timeout.as_secs().max(1).to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if !args.bullmq_noop {
        cmd.arg("--sim-url").arg(sim.url());
    }
    let out = cmd
        .output()
        .await
        .with_context(|| format!("running {}", args.node.display()))?;
    if !out.status.success() {
        bail!("diamond.mjs exited with {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("no JSON report from diamond.mjs in {stdout:?}"))?;
    let tasks = args.workflows * TASKS_PER_WORKFLOW;
    let cost = bullmq_cost(&report);
    let mut problems = Vec::new();
    // Every job of the measured workflows and of the warm-up one completed, none failed.
    let jobs = (args.workflows + 1) * TASKS_PER_WORKFLOW;
    let completed = report["jobs"]["completed"].as_u64().unwrap_or(0);
    let failed = report["jobs"]["failed"].as_u64().unwrap_or(0);
    if completed != jobs as u64 || failed != 0 {
        problems.push(format!(
            "{completed} jobs completed and {failed} failed of {jobs}"
        ));
    }
    if !args.bullmq_noop && sim.counters().received != jobs as u64 {
        problems.push(format!(
            "{} provider calls for {jobs} jobs",
            sim.counters().received
        ));
    }
    Ok(Row {
        system: System::BullMq,
        workers: n,
        run,
        tasks_per_s: report["tasks_per_s"].as_f64().unwrap_or(0.0),
        redis: cost.map(|c| c.per(tasks)),
        p50_ms: report["latency_ms"]["p50"].as_u64().unwrap_or(0),
        p99_ms: report["latency_ms"]["p99"].as_u64().unwrap_or(0),
        load: load_average(),
        problems: problems.join("; "),
    })
}

/// Redis' cost from the INFO texts `diamond.mjs` read around its measured run.
fn bullmq_cost(report: &Value) -> Option<Cost> {
    let before = Snapshot::parse(report["redis_info_before"].as_str()?);
    let after = Snapshot::parse(report["redis_info_after"].as_str()?);
    Some(before.until(&after))
}

/// The BullMQ project with its node_modules, or an error saying how to install it.
fn bullmq_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match given {
        Some(dir) => vec![dir.to_owned()],
        None => vec![
            PathBuf::from("bench/bullmq"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/bullmq"),
        ],
    };
    let Some(dir) = candidates.iter().find(|d| d.join("diamond.mjs").is_file()) else {
        bail!(
            "bench/bullmq/diamond.mjs not found (looked in {}): run from the repository's root or pass --bullmq-dir",
            candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if !dir.join("node_modules/bullmq/package.json").is_file() {
        bail!(
            "BullMQ is not installed in {}: run `{INSTALL}` from the repository's root (needs node and npm)",
            dir.display()
        );
    }
    Ok(dir.clone())
}

/// `node --version`, or an error saying what to install.
async fn node_version(node: &Path) -> anyhow::Result<String> {
    let out = Command::new(node)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    match out {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        _ => bail!(
            "`{} --version` failed: install Node.js 20 or newer with npm (Debian: `apt-get install nodejs npm`), then `{INSTALL}`",
            node.display()
        ),
    }
}

/// The installed BullMQ's version, `bullmq 6.7.0`.
fn bullmq_version(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("node_modules/bullmq/package.json");
    let pkg: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    Ok(format!(
        "bullmq {}",
        pkg["version"].as_str().unwrap_or("(version unknown)")
    ))
}

fn header() -> String {
    format!(
        "{:<9} {:>7} {:>3}  {:>8}  {:>9} {:>12} {:>10} {:>8}  {:>7} {:>7}  {:>5}",
        "system",
        "workers",
        "run",
        "tasks/s",
        "redis µs",
        "scripts",
        "commands",
        "reads",
        "p50 ms",
        "p99 ms",
        "load"
    ) + "\n"
        + &format!(
            "{:<9} {:>7} {:>3}  {:>8}  {:>9} {:>12} {:>10} {:>8}",
            "", "", "", "", "per task", "per task", "per task", "per task"
        )
}

fn line(r: &Row) -> String {
    let (cpu, scripts, commands, reads) = match r.redis {
        Some(p) => (
            num(Some(p.cpu_us), 0),
            num(Some(p.scripts), 2),
            num(Some(p.commands), 1),
            num(Some(p.reads), 2),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    format!(
        "{:<9} {:>7} {:>3}  {:>8.0}  {:>9} {:>12} {:>10} {:>8}  {:>7} {:>7}  {:>5.2}{}",
        r.system.name(),
        r.workers,
        r.run + 1,
        r.tasks_per_s,
        cpu,
        scripts,
        commands,
        reads,
        r.p50_ms,
        r.p99_ms,
        r.load,
        if r.problems.is_empty() {
            String::new()
        } else {
            format!("  FAILED: {}", r.problems)
        }
    )
}

/// The runs of `system` with `n` workers.
fn runs_of(rows: &[Row], system: System, n: usize) -> Vec<&Row> {
    rows.iter()
        .filter(|r| r.workers == n && r.system == system)
        .collect()
}

/// The median tasks/s of `runs`.
fn tps(runs: &[&Row]) -> Option<f64> {
    median(runs.iter().map(|r| r.tasks_per_s).collect())
}

/// The median Redis CPU µs per task of `runs` (runs without the figure left out).
fn cpu(runs: &[&Row]) -> Option<f64> {
    median(
        runs.iter()
            .filter_map(|r| r.redis.map(|x| x.cpu_us))
            .collect(),
    )
}

/// The median p50/p99 workflow latency of `runs`, `p50/p99` in ms.
fn latency(runs: &[&Row]) -> String {
    format!(
        "{:.0}/{:.0}",
        median(runs.iter().map(|r| r.p50_ms as f64).collect()).unwrap_or(0.0),
        median(runs.iter().map(|r| r.p99_ms as f64).collect()).unwrap_or(0.0)
    )
}

/// The median (mean of the middle two for an even count); `None` for no values.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    }
}

/// The 1-minute load average (0 when unknown).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The 1-, 5- and 15-minute load averages as `/proc/loadavg` gives them.
fn load_average_text() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(ratio(Some(3000.0), Some(4000.0)), "0.75");
        assert_eq!(ratio(Some(1.0), None), "-");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "-");
    }

    #[test]
    fn summaries_take_each_systems_runs_of_one_worker_count() {
        let row = |system, workers, cpu: Option<f64>, p50| Row {
            system,
            workers,
            run: 0,
            tasks_per_s: 1000.0 * workers as f64,
            redis: cpu.map(|c| PerTask {
                cpu_us: c,
                scripts: 1.0,
                commands: 7.0,
                reads: 0.5,
            }),
            p50_ms: p50,
            p99_ms: 2 * p50,
            load: 0.0,
            problems: String::new(),
        };
        let rows = vec![
            row(System::Floor, 1, Some(20.0), 1),
            row(System::Floor, 1, Some(30.0), 3),
            row(System::Gleitzeit, 1, Some(80.0), 10),
            row(System::Floor, 2, None, 5),
        ];
        let f1 = runs_of(&rows, System::Floor, 1);
        assert_eq!(f1.len(), 2);
        assert_eq!(cpu(&f1), Some(25.0));
        assert_eq!(tps(&f1), Some(1000.0));
        assert_eq!(latency(&f1), "2/4");
        assert_eq!(
            ratio(cpu(&runs_of(&rows, System::Gleitzeit, 1)), cpu(&f1)),
            "3.20"
        );
        // A run without Redis figures has no CPU median; nothing for a system not run.
        assert_eq!(cpu(&runs_of(&rows, System::Floor, 2)), None);
        assert!(runs_of(&rows, System::BullMq, 1).is_empty());
    }

    /// Two script libraries on the server (a stale worker binary) are seen, one is not.
    #[tokio::test]
    async fn script_libraries_of_two_builds_are_seen() {
        let server = RedisServer::start().unwrap();
        let lib = |name: &str| {
            format!(
                "#!lua name={name}\nredis.register_function('{name}_f', function() return 1 end)"
            )
        };
        server
            .admin(&["FUNCTION", "LOAD", &lib("gleitzeit_aaa")])
            .unwrap();
        server.admin(&["FUNCTION", "LOAD", &lib("other")]).unwrap();
        assert_eq!(
            gleitzeit_libraries(&server.url()).await.unwrap(),
            ["gleitzeit_aaa"]
        );
        server
            .admin(&["FUNCTION", "LOAD", &lib("gleitzeit_bbb")])
            .unwrap();
        assert_eq!(
            gleitzeit_libraries(&server.url()).await.unwrap(),
            ["gleitzeit_aaa", "gleitzeit_bbb"]
        );
    }

    #[test]
    fn each_system_goes_first_in_turn() {
        use System::*;
        assert_eq!(order(0, false), [Gleitzeit, BullMq]);
        assert_eq!(order(1, false), [BullMq, Gleitzeit]);
        assert_eq!(order(2, false), [Gleitzeit, BullMq]);
        assert_eq!(order(0, true), [Gleitzeit, BullMq, Floor]);
        assert_eq!(order(1, true), [BullMq, Floor, Gleitzeit]);
        assert_eq!(order(2, true), [Floor, Gleitzeit, BullMq]);
    }

    #[test]
    fn bullmq_report_costs() {
        let report = serde_json::json!({
            "redis_info_before": "used_cpu_sys:1.0\r\nused_cpu_user:1.0\r\ncmdstat_evalsha:calls=10,usec=1\r\ntotal_reads_processed:5",
            "redis_info_after": "used_cpu_sys:1.5\r\nused_cpu_user:1.5\r\ncmdstat_evalsha:calls=40,usec=1\r\ncmdstat_xadd:calls=8,usec=1\r\ntotal_reads_processed:25",
        });
        let cost = bullmq_cost(&report).unwrap();
        assert_eq!((cost.scripts, cost.commands), (30, 38));
        assert_eq!(cost.reads, 20);
        assert!((cost.cpu_us - 1_000_000.0).abs() < 1e-3);
        assert!(bullmq_cost(&serde_json::json!({})).is_none());
    }

    #[test]
    fn a_missing_bullmq_install_names_the_command() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("diamond.mjs"), "").unwrap();
        let err = bullmq_dir(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("npm ci --prefix bench/bullmq"), "{err}");
        let err = bullmq_dir(Some(&dir.path().join("nowhere")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
