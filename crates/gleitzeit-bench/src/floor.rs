//! The floor of `gleitzeit-bench compare`: the least Redis work that runs the same DAG.
//!
//! Redis CPU per task drifts from machine to machine and minute to minute by tens of
//! percent, so a target in microseconds (issue "≤ 50 µs per task") is only reproducible next
//! to a reference measured in the same run. BullMQ is one such reference; this is the other:
//! the same workflows (same shape, same sequential submitter, one warm-up workflow first)
//! run through one Redis stream and one consumer group with **one Lua script per task and
//! nothing else** — no fencing, retries, deferrals, leases, events, watchers, retention,
//! indexes, counters or dead letters, and no provider call. A workflow is one hash
//! (`open`, each waiting task's count of unfinished dependencies `p<i>`, each result `r<i>`);
//! submitting it is one script call that writes the hash and queues the roots; a task's
//! script acknowledges the entry, records the result, queues each dependant whose count
//! reaches 0 and, for the workflow's last task, counts the workflow done.
//!
//! Workers are tokio tasks of this process, each with its own connection: read up to
//! `concurrency` entries (`XREADGROUP … BLOCK`), run their scripts in one pipeline, repeat.
//! What Gleitzeit spends above this floor is the price of its guarantees and of its real
//! work per task; the floor's own tasks/s is a bound (its tasks do nothing), its µs per task
//! the figure to divide by.
//!
//! `gleitzeit-bench floor` runs it on its own (against a private `redis-server`, or any
//! Redis with `--redis-url`: its keys carry a fresh hash tag per run and are deleted after).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use deadpool_redis::redis::{self, aio::MultiplexedConnection, Value};
use gleitzeit_queue::RedisTarget;

use crate::redis_info::{self, Cost};
use crate::shapes::{Shape, Template};

/// Submits one workflow.
///
/// KEYS[1]  the stream; KEYS[2]  the workflow hash
/// ARGV[1]  workflow id; ARGV[2]  its number of tasks; ARGV[3]  the root task indexes,
///          comma-separated; ARGV[4..] field/value pairs `p<i>`, count of dependencies
/// Returns 1.
const SUBMIT: &str = r"
redis.call('HSET', KEYS[2], 'open', ARGV[2], unpack(ARGV, 4))
for t in string.gmatch(ARGV[3], '[^,]+') do
  redis.call('XADD', KEYS[1], '*', 'w', ARGV[1], 't', t)
end
return 1
";

/// Finishes one task.
///
/// KEYS[1]  the stream; KEYS[2]  the workflow hash; KEYS[3]  the count of workflows done
/// ARGV[1]  consumer group; ARGV[2]  entry id; ARGV[3]  workflow id; ARGV[4]  result field
///          `r<i>`; ARGV[5]  result; ARGV[6..]  the task's dependants (task indexes)
/// Returns 1 when this was the workflow's last open task, else 0.
const DONE: &str = r"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
for k = 6, #ARGV do
  if redis.call('HINCRBY', KEYS[2], 'p' .. ARGV[k], -1) == 0 then
    redis.call('XADD', KEYS[1], '*', 'w', ARGV[3], 't', ARGV[k])
  end
end
if redis.call('HINCRBY', KEYS[2], 'open', -1) == 0 then
  redis.call('INCR', KEYS[3])
  return 1
end
return 0
";

const GROUP: &str = "g";
/// What every task records as its result (Gleitzeit records the simulator's reply).
const RESULT: &str = "ok";
/// How long a worker's read blocks before it looks at the stop flag again.
const BLOCK_MS: u64 = 100;
/// Between two reads of the done count while waiting for the last workflow.
const POLL: Duration = Duration::from_millis(20);

/// The keys of one floor run, all under one hash tag (`{floor-<random>}`), so runs against
/// a shared Redis never mix and every script's keys share a Cluster slot.
#[derive(Clone)]
struct Keys {
    /// `{floor-<tag>}:`
    prefix: String,
    /// The stream every task is queued on.
    stream: String,
    /// The count of workflows done.
    done: String,
}

impl Keys {
    fn fresh() -> Keys {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let prefix = format!("{{floor-{tag}}}:");
        Keys {
            stream: format!("{prefix}q"),
            done: format!("{prefix}done"),
            prefix,
        }
    }

    fn workflow(&self, id: &str) -> String {
        format!("{}w:{id}", self.prefix)
    }
}

/// Settings of `gleitzeit-bench floor`.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// DAG of every workflow.
    #[arg(long, value_enum, default_value_t = Shape::Diamond)]
    pub shape: Shape,
    /// Workflows measured (after one warm-up workflow).
    #[arg(long, default_value_t = 2000)]
    pub workflows: usize,
    /// Worker tasks, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Entries each worker reads and finishes per round trip.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Redis to use (default: start a private redis-server on a free port). Other clients of
    /// that server count in its CPU figures.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Give up when the workflows have not all ended after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `gleitzeit-bench floor`: one run, printed.
pub async fn command(args: FloorArgs) -> anyhow::Result<()> {
    if args.workflows == 0 || args.workers == 0 || args.concurrency == 0 {
        bail!("--workflows, --workers and --concurrency must be at least 1");
    }
    let (_private, redis_url) = crate::redis(args.redis_url.as_deref())?;
    let template = Template::new(&args.shape.workflow()?)?;
    let r = run(FloorRun {
        template: &template,
        workflows: args.workflows,
        workers: args.workers,
        concurrency: args.concurrency,
        redis_url: redis_url.clone(),
        timeout: args.timeout,
    })
    .await?;
    let per = r.cost.per(r.tasks);
    println!("gleitzeit-bench floor");
    println!(
        "  workload    {} workflows of shape {} ({} tasks), one sequential submitter, after one warm-up workflow",
        args.workflows,
        args.shape.name(),
        r.tasks
    );
    println!(
        "  floor       one stream, one Lua script per task and nothing else; {} worker tasks, {} entries per read",
        args.workers, args.concurrency
    );
    println!("  redis       {redis_url}");
    println!("  tasks/s     {:.0}", r.tasks_per_s);
    println!(
        "  redis per task  {:.1} µs CPU, {:.2} scripts, {:.1} commands, {:.2} reads",
        per.cpu_us, per.scripts, per.commands, per.reads
    );
    println!(
        "  workflow latency  p50 {} ms, p99 {} ms",
        r.latency_ms(50.0),
        r.latency_ms(99.0)
    );
    Ok(())
}

/// One floor run's settings.
pub struct FloorRun<'a> {
    pub template: &'a Template,
    pub workflows: usize,
    pub workers: usize,
    pub concurrency: usize,
    pub redis_url: String,
    pub timeout: Duration,
}

/// One floor run's figures.
#[derive(Debug)]
pub struct FloorReport {
    /// Tasks measured (the warm-up not counted).
    pub tasks: usize,
    /// Tasks per second, first submission → last workflow end.
    pub tasks_per_s: f64,
    /// What Redis spent from the first submission to the last end observed.
    pub cost: Cost,
    /// Each workflow's submission → end, ms, sorted.
    pub latencies_ms: Vec<u64>,
}

impl FloorReport {
    /// Workflow latency at percentile `p` (nearest rank), ms; 0 without workflows.
    pub fn latency_ms(&self, p: f64) -> u64 {
        crate::stats::percentile(&self.latencies_ms, p).unwrap_or(0)
    }
}

/// The DAG a task script needs: each task's dependants, and the submission's arguments.
struct Dag {
    tasks: usize,
    /// Root task indexes, comma-separated.
    roots: String,
    /// `p<i>`, count pairs of the tasks with dependencies.
    pending: Vec<String>,
    /// Each task's dependants as text.
    children: Vec<Vec<String>>,
}

impl Dag {
    fn of(template: &Template) -> Dag {
        let shape = template.dag();
        let roots: Vec<String> = shape
            .iter()
            .enumerate()
            .filter(|(_, (deps, _))| *deps == 0)
            .map(|(i, _)| i.to_string())
            .collect();
        let pending = shape
            .iter()
            .enumerate()
            .filter(|(_, (deps, _))| *deps > 0)
            .flat_map(|(i, (deps, _))| [format!("p{i}"), deps.to_string()])
            .collect();
        Dag {
            tasks: shape.len(),
            roots: roots.join(","),
            pending,
            children: shape
                .iter()
                .map(|(_, c)| c.iter().map(ToString::to_string).collect())
                .collect(),
        }
    }
}

/// What the workers share with the submitter: when each workflow was submitted and ended.
#[derive(Default)]
struct Clock {
    submitted: HashMap<String, Instant>,
    ended: Vec<(String, Instant)>,
}

/// Runs `run.workflows` workflows through the floor and measures them.
pub async fn run(run: FloorRun<'_>) -> anyhow::Result<FloorReport> {
    let target = RedisTarget::new(run.redis_url.as_str());
    let client = target.client()?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to the floor's redis")?;
    let submit_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SUBMIT)
        .query_async(&mut conn)
        .await?;
    let done_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(DONE)
        .query_async(&mut conn)
        .await?;
    let keys = Keys::fresh();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await?;
    let dag = Arc::new(Dag::of(run.template));
    let clock = Arc::new(Mutex::new(Clock::default()));
    let stop = Arc::new(AtomicBool::new(false));

    let mut workers = Vec::with_capacity(run.workers);
    for w in 0..run.workers {
        let conn = client.get_multiplexed_async_connection().await?;
        let (dag, clock, stop, sha) = (dag.clone(), clock.clone(), stop.clone(), done_sha.clone());
        let keys = keys.clone();
        let count = run.concurrency;
        workers.push(tokio::spawn(async move {
            let me = Worker {
                name: format!("w{w}"),
                count,
                sha: &sha,
                keys: &keys,
                dag: &dag,
                clock: &clock,
            };
            me.work(conn, &stop).await
        }));
    }

    let deadline = Instant::now() + run.timeout;
    let outcome = async {
        // Warm-up: every worker connected and the scripts ran once before the clock starts.
        submit(&mut conn, &submit_sha, &keys, &dag, &clock).await?;
        wait_done(&mut conn, &keys, 1, deadline, &workers).await?;
        let before = redis_info::snapshot(&target).await?;
        let started = Instant::now();
        let mut ids = Vec::with_capacity(run.workflows);
        for _ in 0..run.workflows {
            ids.push(submit(&mut conn, &submit_sha, &keys, &dag, &clock).await?);
        }
        wait_done(
            &mut conn,
            &keys,
            run.workflows as u64 + 1,
            deadline,
            &workers,
        )
        .await?;
        let after = redis_info::snapshot(&target).await?;
        check_finished(&mut conn, &keys, run.workflows as u64 + 1).await?;
        let clock = clock.lock().expect("floor clock");
        let mut latencies_ms = Vec::with_capacity(ids.len());
        let mut last = started;
        for (id, end) in &clock.ended {
            if let Some(t0) = clock.submitted.get(id).filter(|t0| **t0 >= started) {
                latencies_ms.push(end.duration_since(*t0).as_millis() as u64);
                last = last.max(*end);
            }
        }
        if latencies_ms.len() != ids.len() {
            bail!(
                "{} of {} floor workflows ended",
                latencies_ms.len(),
                ids.len()
            );
        }
        latencies_ms.sort_unstable();
        let tasks = ids.len() * dag.tasks;
        let secs = last.duration_since(started).as_secs_f64().max(1e-6);
        Ok(FloorReport {
            tasks,
            tasks_per_s: tasks as f64 / secs,
            cost: before.until(&after),
            latencies_ms,
        })
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut stopped = Ok(());
    for w in workers {
        if let Err(e) = w.await.context("floor worker").and_then(|r| r) {
            stopped = Err(e);
        }
    }
    // Nothing of the run stays behind in a shared Redis (even after a failed run).
    let mut doomed = vec![keys.stream.clone(), keys.done.clone()];
    doomed.extend(
        clock
            .lock()
            .expect("floor clock")
            .submitted
            .keys()
            .map(|id| keys.workflow(id)),
    );
    let mut cleaned = Ok(());
    for chunk in doomed.chunks(500) {
        if let Err(e) = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await
        {
            cleaned = Err(anyhow::Error::new(e).context("deleting the floor's keys"));
            break;
        }
    }
    // The run's own error first: a worker's or the cleanup's may follow from it.
    let report = outcome?;
    stopped?;
    cleaned?;
    Ok(report)
}

/// Submits one workflow under a fresh id and notes when.
async fn submit(
    conn: &mut MultiplexedConnection,
    sha: &str,
    keys: &Keys,
    dag: &Dag,
    clock: &Mutex<Clock>,
) -> anyhow::Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    clock
        .lock()
        .expect("floor clock")
        .submitted
        .insert(id.clone(), Instant::now());
    let _: i64 = redis::cmd("EVALSHA")
        .arg(sha)
        .arg(2)
        .arg(&keys.stream)
        .arg(keys.workflow(&id))
        .arg(&id)
        .arg(dag.tasks)
        .arg(&dag.roots)
        .arg(&dag.pending)
        .query_async(conn)
        .await
        .context("floor submit")?;
    Ok(id)
}

/// Checks what a run left: exactly `n` workflows counted done (a workflow finished twice
/// would count twice) and no entry still pending.
async fn check_finished(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    n: u64,
) -> anyhow::Result<()> {
    let done: Option<u64> = redis::cmd("GET").arg(&keys.done).query_async(conn).await?;
    if done != Some(n) {
        bail!(
            "the floor counted {} workflows done, {n} expected",
            done.unwrap_or(0)
        );
    }
    let (pending, ..): (u64, Value, Value, Value) = redis::cmd("XPENDING")
        .arg(&keys.stream)
        .arg(GROUP)
        .query_async(conn)
        .await?;
    if pending != 0 {
        bail!("{pending} floor entries still pending after every workflow ended");
    }
    Ok(())
}

/// Waits until `n` workflows are done; a worker that stopped (its error comes with its
/// handle) ends the wait at once rather than at the deadline.
async fn wait_done(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    n: u64,
    deadline: Instant,
    workers: &[tokio::task::JoinHandle<anyhow::Result<()>>],
) -> anyhow::Result<()> {
    loop {
        if workers.iter().any(|w| w.is_finished()) {
            bail!("a floor worker stopped before the workflows ended");
        }
        let done: Option<u64> = redis::cmd("GET").arg(&keys.done).query_async(conn).await?;
        if done.unwrap_or(0) >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} floor workflows had not ended by the deadline",
                n - done.unwrap_or(0)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One worker task and what it shares with the others.
struct Worker<'a> {
    /// Its consumer name.
    name: String,
    /// Entries per read.
    count: usize,
    /// The task script's SHA.
    sha: &'a str,
    keys: &'a Keys,
    dag: &'a Dag,
    clock: &'a Mutex<Clock>,
}

impl Worker<'_> {
    /// Reads, finishes what was read in one pipeline, until stopped.
    async fn work(&self, mut conn: MultiplexedConnection, stop: &AtomicBool) -> anyhow::Result<()> {
        let Worker {
            name,
            count,
            sha,
            keys,
            dag,
            clock,
        } = self;
        while !stop.load(Ordering::Relaxed) {
            let reply: ReadReply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(name)
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(&keys.stream)
                .arg(">")
                .query_async(&mut conn)
                .await
                .context("floor read")?;
            let entries = entries(reply)?;
            if entries.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for (entry, wf, t) in &entries {
                let children = dag
                    .children
                    .get(*t)
                    .with_context(|| format!("floor task index {t} out of range"))?;
                pipe.cmd("EVALSHA")
                    .arg(sha)
                    .arg(3)
                    .arg(&keys.stream)
                    .arg(keys.workflow(wf))
                    .arg(&keys.done)
                    .arg(GROUP)
                    .arg(entry)
                    .arg(wf)
                    .arg(format!("r{t}"))
                    .arg(RESULT)
                    .arg(children);
            }
            let ends: Vec<i64> = pipe.query_async(&mut conn).await.context("floor done")?;
            let now = Instant::now();
            let mut clock = clock.lock().expect("floor clock");
            for ((_, wf, _), end) in entries.iter().zip(ends) {
                if end == 1 {
                    clock.ended.push((wf.clone(), now));
                }
            }
        }
        Ok(())
    }
}

/// An `XREADGROUP` reply of one stream as redis-rs converts it: `None` on a timeout, else
/// (stream, [(entry id, [field, value, …])]).
type ReadReply = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;

/// The (entry id, workflow id, task index) of each entry of `reply`.
fn entries(reply: ReadReply) -> anyhow::Result<Vec<(String, String, usize)>> {
    let mut out = Vec::new();
    for (id, fields) in reply.into_iter().flatten().flat_map(|(_, list)| list) {
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|pair| pair[0] == name)
                .and_then(|pair| pair.get(1))
        };
        match (field("w"), field("t").and_then(|t| t.parse().ok())) {
            (Some(wf), Some(t)) => out.push((id.clone(), wf.clone(), t)),
            _ => bail!("floor entry {id} is not a task reference"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::Shape;

    #[test]
    fn the_diamonds_floor_dag() {
        let t = Template::new(&Shape::Diamond.workflow().unwrap()).unwrap();
        let dag = Dag::of(&t);
        assert_eq!(dag.tasks, 6);
        assert_eq!(dag.roots, "0");
        assert_eq!(
            dag.pending,
            ["p1", "1", "p2", "1", "p3", "1", "p4", "1", "p5", "4"]
        );
        assert_eq!(dag.children[0], ["1", "2", "3", "4"]);
        assert_eq!(dag.children[1], ["5"]);
        assert!(dag.children[5].is_empty());
    }

    /// The floor runs every workflow to its end exactly once, on a real Redis.
    #[tokio::test]
    async fn every_floor_workflow_ends_once() {
        let server = gleitzeit_testkit::redis::RedisServer::start().unwrap();
        let t = Template::new(&Shape::Diamond.workflow().unwrap()).unwrap();
        let report = run(FloorRun {
            template: &t,
            workflows: 50,
            workers: 2,
            concurrency: 4,
            redis_url: server.url(),
            timeout: Duration::from_secs(60),
        })
        .await
        .unwrap();
        assert_eq!(report.tasks, 300);
        assert_eq!(report.latencies_ms.len(), 50);
        // One task script per task (the warm-up's 6 not counted) and one submission per
        // workflow, nothing else.
        assert_eq!(report.cost.scripts, 300 + 50);
        // Socket reads come from the server's INFO stats: at least one per submission (each
        // is awaited before the next is sent), and fewer than one per command (the workers'
        // pipelined completions share reads).
        assert!(report.cost.reads >= 50, "{} reads", report.cost.reads);
        assert!(
            report.cost.reads < report.cost.commands,
            "{:?}",
            report.cost
        );
        // Checked inside the run (done count, nothing pending), then deleted.
        assert_eq!(server.admin(&["DBSIZE"]).unwrap(), "0");
    }

    /// A worker that stopped ends the wait with an error, not at the deadline.
    #[tokio::test]
    async fn a_stopped_worker_ends_the_wait() {
        let server = gleitzeit_testkit::redis::RedisServer::start().unwrap();
        let client = RedisTarget::new(server.url().as_str()).client().unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let failed = tokio::spawn(async { Err::<(), _>(anyhow::anyhow!("lost")) });
        let workers = [failed];
        while !workers[0].is_finished() {
            tokio::task::yield_now().await;
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        let err = wait_done(&mut conn, &Keys::fresh(), 1, deadline, &workers)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("a floor worker stopped"), "{err}");
    }

    /// A run that counted a workflow twice, or left an entry pending, is refused.
    #[tokio::test]
    async fn a_floor_run_with_a_double_count_or_a_pending_entry_fails() {
        let server = gleitzeit_testkit::redis::RedisServer::start().unwrap();
        let client = RedisTarget::new(server.url().as_str()).client().unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys = Keys::fresh();
        server
            .admin(&["XGROUP", "CREATE", &keys.stream, GROUP, "0", "MKSTREAM"])
            .unwrap();
        server.admin(&["SET", &keys.done, "3"]).unwrap();
        check_finished(&mut conn, &keys, 3).await.unwrap();
        let err = check_finished(&mut conn, &keys, 2).await.unwrap_err();
        assert!(
            err.to_string().contains("3 workflows done, 2 expected"),
            "{err}"
        );
        server
            .admin(&["XADD", &keys.stream, "*", "w", "x", "t", "0"])
            .unwrap();
        server
            .admin(&[
                "XREADGROUP",
                "GROUP",
                GROUP,
                "c",
                "STREAMS",
                &keys.stream,
                ">",
            ])
            .unwrap();
        let err = check_finished(&mut conn, &keys, 3).await.unwrap_err();
        assert!(
            err.to_string().contains("1 floor entries still pending"),
            "{err}"
        );
    }
}
