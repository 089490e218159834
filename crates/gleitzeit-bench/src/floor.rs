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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use deadpool_redis::redis::{self, aio::MultiplexedConnection, Value};
use gleitzeit_queue::RedisTarget;

use crate::redis_info::{self, Cost};
use crate::shapes::Template;

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

const STREAM: &str = "{floor}:q";
const DONE_COUNT: &str = "{floor}:done";
const GROUP: &str = "g";
/// What every task records as its result (Gleitzeit records the simulator's reply).
const RESULT: &str = "ok";
/// How long a worker's read blocks before it looks at the stop flag again.
const BLOCK_MS: u64 = 100;
/// Between two reads of the done count while waiting for the last workflow.
const POLL: Duration = Duration::from_millis(20);

fn workflow_key(id: &str) -> String {
    format!("{{floor}}:w:{id}")
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
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
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
        let count = run.concurrency;
        workers.push(tokio::spawn(async move {
            work(conn, format!("w{w}"), count, &sha, &dag, &clock, &stop).await
        }));
    }

    let deadline = Instant::now() + run.timeout;
    let outcome = async {
        // Warm-up: every worker connected and the scripts ran once before the clock starts.
        submit(&mut conn, &submit_sha, &dag, &clock).await?;
        wait_done(&mut conn, 1, deadline).await?;
        let before = redis_info::snapshot(&target).await?;
        let started = Instant::now();
        let mut ids = Vec::with_capacity(run.workflows);
        for _ in 0..run.workflows {
            ids.push(submit(&mut conn, &submit_sha, &dag, &clock).await?);
        }
        wait_done(&mut conn, run.workflows as u64 + 1, deadline).await?;
        let after = redis_info::snapshot(&target).await?;
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
    for w in workers {
        w.await.context("floor worker")??;
    }
    outcome
}

/// Submits one workflow under a fresh id and notes when.
async fn submit(
    conn: &mut MultiplexedConnection,
    sha: &str,
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
        .arg(STREAM)
        .arg(workflow_key(&id))
        .arg(&id)
        .arg(dag.tasks)
        .arg(&dag.roots)
        .arg(&dag.pending)
        .query_async(conn)
        .await
        .context("floor submit")?;
    Ok(id)
}

/// Waits until `n` workflows are done.
async fn wait_done(
    conn: &mut MultiplexedConnection,
    n: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let done: Option<u64> = redis::cmd("GET").arg(DONE_COUNT).query_async(conn).await?;
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

/// One worker: read, finish what was read in one pipeline, until stopped.
async fn work(
    mut conn: MultiplexedConnection,
    name: String,
    count: usize,
    sha: &str,
    dag: &Dag,
    clock: &Mutex<Clock>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&name)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(STREAM)
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
                .arg(STREAM)
                .arg(workflow_key(wf))
                .arg(DONE_COUNT)
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

/// The (entry id, workflow id, task index) of an `XREADGROUP` reply of one stream; none for
/// a timeout.
fn entries(reply: Value) -> anyhow::Result<Vec<(String, String, usize)>> {
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    };
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        other => bail!("unexpected XREADGROUP reply {other:?}"),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            bail!("unexpected XREADGROUP stream {stream:?}");
        };
        let Some(Value::Array(list)) = parts.pop() else {
            bail!("unexpected XREADGROUP entries");
        };
        for e in list {
            let Value::Array(e) = e else {
                bail!("unexpected XREADGROUP entry {e:?}");
            };
            let id = e.first().and_then(text).context("entry without an id")?;
            let Some(Value::Array(fields)) = e.get(1) else {
                bail!("entry {id} without fields");
            };
            let mut wf = None;
            let mut t = None;
            for pair in fields.chunks(2) {
                match (pair.first().and_then(text).as_deref(), pair.get(1)) {
                    (Some("w"), Some(v)) => wf = text(v),
                    (Some("t"), Some(v)) => t = text(v).and_then(|s| s.parse().ok()),
                    _ => {}
                }
            }
            match (wf, t) {
                (Some(wf), Some(t)) => out.push((id, wf, t)),
                _ => bail!("floor entry {id} is not a task reference"),
            }
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
        let done = server.admin(&["GET", DONE_COUNT]).unwrap();
        assert_eq!(done, "51");
        let pending = server.admin(&["XPENDING", STREAM, GROUP]).unwrap();
        assert!(pending.starts_with('0'), "{pending}");
    }
}
