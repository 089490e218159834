//! Shared helpers for the queue tests: a real redis-server per test, workflow builders,
//! and raw Redis access for asserting what the scripts wrote.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_redis::redis::{self, aio::MultiplexedConnection, FromRedisValue};
use gleitzeit_queue::keys::{
    task_field, unpacked_task_fields, CHILDREN_FIELD, DEFINITION_FIELD, DEFINITION_PARTS,
    LAYOUT_FIELD, LAYOUT_PACKED, STATE_FIELD, STATE_PARTS,
};
use gleitzeit_queue::QueueError;
use gleitzeit_queue::{
    BeginOutcome, Consumer, Delivery, Priority, Queue, QueueConfig, StreamRef, SubmitOutcome,
    SubmitRequest, Taken, TaskRecord,
};
use gleitzeit_testkit::redis::RedisServer;

pub const NOW: u64 = 1_700_000_000_000;
pub const CAP: &str = "llm:smollm2";

pub struct Env {
    pub server: RedisServer,
    pub queue: Queue,
    pub raw: MultiplexedConnection,
}

pub async fn env() -> Env {
    env_with(QueueConfig::default()).await
}

/// A fresh environment holding the workflow `req` (submitted, not yet read), and consumer `w1`.
pub async fn with_workflow(req: &SubmitRequest) -> (Env, String, Consumer) {
    let env = env().await;
    let id = env.submit(req).await;
    let c = env.consumer("w1").await;
    (env, id, c)
}

pub async fn env_with(cfg: QueueConfig) -> Env {
    env_on_with(RedisServer::start().expect("redis-server starts"), cfg).await
}

/// An environment on a server the test started itself (append-only, say).
pub async fn env_on(server: RedisServer) -> Env {
    env_on_with(server, QueueConfig::default()).await
}

async fn env_on_with(server: RedisServer, cfg: QueueConfig) -> Env {
    let queue = Queue::connect(&server.url(), cfg).await.expect("connect");
    let raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    Env { server, queue, raw }
}

/// Two consumers (`w1`, `w2`) each make one waiting call, `wait`, on `streams`; once both
/// are blocked in Redis, `req` is submitted. Returns its id, what the call that returned
/// first got, and the other call, still running.
pub async fn one_entry_for_two_waiters<T, F, Fut>(
    env: &Env,
    streams: &[StreamRef],
    req: &SubmitRequest,
    wait: F,
) -> (String, Vec<T>, tokio::task::JoinHandle<Vec<T>>)
where
    T: Send + 'static,
    F: Fn(Consumer, Vec<StreamRef>) -> Fut,
    Fut: std::future::Future<Output = Vec<T>> + Send + 'static,
{
    let mut a = tokio::spawn(wait(env.consumer("w1").await, streams.to_vec()));
    let mut b = tokio::spawn(wait(env.consumer("w2").await, streams.to_vec()));
    env.until_blocked(2).await;
    let id = env.submit(req).await;
    let (got, other) = tokio::select! {
        got = &mut a => (got.unwrap(), b),
        got = &mut b => (got.unwrap(), a),
    };
    (id, got, other)
}

/// `got` is one entry of workflow `id`, begun.
pub fn assert_took_begun(got: &[Taken], id: &str) {
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].delivery.workflow_id, id);
    assert!(matches!(got[0].begun, BeginOutcome::Run(_)));
}

/// The other call of [`one_entry_for_two_waiters`] still waits, in the same call; `req`,
/// submitted now, reaches it, begun. Returns its id.
pub async fn the_other_waiter_takes(
    env: &Env,
    other: tokio::task::JoinHandle<Vec<Taken>>,
    req: &SubmitRequest,
) -> String {
    env.until_blocked(1).await;
    assert!(!other.is_finished());
    let id = env.submit(req).await;
    assert_took_begun(&other.await.unwrap(), &id);
    id
}

/// Nobody waited with `XREAD` nor read the streams' tails for such a wait.
pub async fn assert_no_xread_wait(env: &Env) {
    let stats: String = env.cmd(&["INFO", "commandstats"]).await;
    let calls = gleitzeit_testkit::redis::command_calls(&stats);
    assert_eq!(calls.get("xread"), None, "{stats}");
    assert_eq!(calls.get("xrevrange"), None, "{stats}");
}

impl Env {
    pub async fn cmd<T: FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        let mut conn = self.raw.clone();
        c.query_async(&mut conn).await.unwrap()
    }

    /// Zeroes the server's command statistics (`CONFIG RESETSTAT`).
    pub async fn reset_stats(&self) {
        let _: () = self.cmd(&["CONFIG", "RESETSTAT"]).await;
    }

    /// Calls per command since the last [`Env::reset_stats`] (scripts' commands included),
    /// with the `INFO commandstats` text they come from, for assertion messages.
    pub async fn command_calls(&self) -> (std::collections::BTreeMap<String, u64>, String) {
        let stats: String = self.cmd(&["INFO", "commandstats"]).await;
        (gleitzeit_testkit::redis::command_calls(&stats), stats)
    }

    /// Returns once `n` clients are blocked in a command (a blocking read waits), as
    /// `INFO clients` reports it: Redis offers no event for it, so this asks until it is so.
    pub async fn until_blocked(&self, n: u64) {
        loop {
            let info: String = self.cmd(&["INFO", "clients"]).await;
            let blocked = info
                .lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            if blocked == Some(n) {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    pub async fn hget(&self, key: &str, field: &str) -> Option<String> {
        self.cmd(&["HGET", key, field]).await
    }

    /// Field `field` of task `i` as stored: `<i>.<field>` of the workflow hash, where every
    /// workflow submitted now keeps its tasks, or a part of the packed field that holds it
    /// (the state; in the packed layout the definition and the children). An empty part of
    /// the state is a field not set; a packed task without children has children `""`.
    pub async fn task_field(&self, wf: &str, i: u32, field: &str) -> Option<String> {
        let key = self.queue.keys().workflow(wf);
        let packed = self.hget(&key, LAYOUT_FIELD).await.as_deref() == Some(LAYOUT_PACKED);
        let stored = if STATE_PARTS.contains(&field) {
            STATE_FIELD
        } else if packed && DEFINITION_PARTS.contains(&field) {
            DEFINITION_FIELD
        } else if packed && field == "children" {
            CHILDREN_FIELD
        } else {
            return self.hget(&key, &task_field(i, field)).await;
        };
        let Some(value) = self.hget(&key, &task_field(i, stored)).await else {
            let exists = self.hget(&key, &task_field(i, STATE_FIELD)).await.is_some();
            return (stored == CHILDREN_FIELD && exists).then(String::new);
        };
        unpacked_task_fields(stored, &value)
            .expect("a packed field of its parts")
            .into_iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v)
    }

    pub async fn status(&self, wf: &str, i: u32) -> String {
        self.task_field(wf, i, "status").await.unwrap_or_default()
    }

    pub async fn wf_field(&self, wf: &str, field: &str) -> Option<String> {
        self.hget(&self.queue.keys().workflow(wf), field).await
    }

    /// (open, completed, failed, skipped, cancelled) as stored.
    pub async fn counters(&self, wf: &str) -> (u32, u32, u32, u32, u32) {
        let info = self
            .queue
            .workflow(wf)
            .await
            .unwrap()
            .expect("workflow exists");
        (
            info.open,
            info.completed,
            info.failed,
            info.skipped,
            info.cancelled,
        )
    }

    /// Entries `key` holds once the finished ones are trimmed (`trim.lua`, as the workers'
    /// promoter does every second): for a ready stream, its ready and pending entries.
    pub async fn xlen(&self, key: &str) -> u64 {
        self.queue.trim_streams(None).await.unwrap();
        self.cmd(&["XLEN", key]).await
    }

    /// Entries `key` holds as it is, finished ones included.
    pub async fn raw_xlen(&self, key: &str) -> u64 {
        self.cmd(&["XLEN", key]).await
    }

    /// Number of entries pending in the group on `key`.
    pub async fn pending(&self, key: &str) -> u64 {
        let v: redis::Value = self.cmd(&["XPENDING", key, "workers"]).await;
        match v {
            redis::Value::Array(items) => match &items[0] {
                redis::Value::Int(n) => *n as u64,
                _ => 0,
            },
            _ => 0,
        }
    }

    /// Makes an entry look idle for `ms` (XCLAIM ... IDLE), so reclaim tests need no waiting.
    pub async fn age_entry(&self, d: &Delivery, owner: &str, ms: u64) {
        let ms = ms.to_string();
        let _: redis::Value = self
            .cmd(&[
                "XCLAIM",
                &d.stream,
                "workers",
                owner,
                "0",
                &d.entry_id,
                "IDLE",
                &ms,
                "JUSTID",
            ])
            .await;
    }

    pub async fn consumer(&self, name: &str) -> Consumer {
        self.queue.consumer(name).unwrap()
    }

    /// Reads everything currently ready on the normal stream of `cap` for `consumer`.
    pub async fn read_all(&self, c: &mut Consumer, cap: &str) -> Vec<Delivery> {
        let streams = self.queue.keys().stream_refs(cap);
        c.read_prioritised(&streams, 1000, std::time::Duration::ZERO)
            .await
            .unwrap()
    }

    pub async fn submit(&self, req: &SubmitRequest) -> String {
        match self.queue.submit(req).await.unwrap() {
            SubmitOutcome::Created { id } => id,
            other => panic!("expected Created, got {other:?}"),
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(1);

pub fn new_id() -> String {
    format!(
        "wf-{:06}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

/// A task spec: `(name, dependencies by index)`.
pub struct T<'a> {
    pub name: &'a str,
    pub deps: &'a [u32],
    pub cap: &'a str,
    pub priority: Priority,
    pub max_attempts: u32,
    pub on_failure: Option<&'a str>,
    pub refs: &'a [u32],
}

pub fn t<'a>(name: &'a str, deps: &'a [u32]) -> T<'a> {
    T {
        name,
        deps,
        cap: CAP,
        priority: Priority::Normal,
        max_attempts: 3,
        on_failure: None,
        refs: &[],
    }
}

/// Builds a consistent request: children are derived from the dependencies.
pub fn request(policy: &str, tasks: &[T<'_>]) -> SubmitRequest {
    let mut children = vec![Vec::new(); tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        for &d in t.deps {
            children[d as usize].push(i as u32);
        }
    }
    SubmitRequest {
        watch: true,
        workflow_id: new_id(),
        retention: None,
        name: "test workflow".into(),
        idempotency_key: None,
        digest: "digest-1".into(),
        policy: policy.into(),
        input_json: r#"{"text":"hello"}"#.into(),
        now_ms: NOW,
        tasks: tasks
            .iter()
            .enumerate()
            .map(|(i, t)| TaskRecord {
                name: t.name.into(),
                capability: t.cap.into(),
                priority: t.priority,
                spec_json: format!(r#"{{"name":"{}"}}"#, t.name),
                dependencies: t.deps.to_vec(),
                children: children[i].clone(),
                refs: t.refs.to_vec(),
                max_attempts: t.max_attempts,
                on_failure: t.on_failure.map(str::to_owned),
            })
            .collect(),
    }
}

/// root → A, B, C, D → join
pub fn diamond(policy: &str) -> SubmitRequest {
    request(
        policy,
        &[
            t("root", &[]),
            t("A", &[0]),
            t("B", &[0]),
            t("C", &[0]),
            t("D", &[0]),
            t("join", &[1, 2, 3, 4]),
        ],
    )
}

/// A retryable failure at [`NOW`]: a retry at `retry_at_ms` (or none), and a dead letter.
pub fn failure(
    retry_at_ms: Option<u64>,
    dead_letter: Option<gleitzeit_queue::DeadLetterKind>,
) -> gleitzeit_queue::FailRequest {
    gleitzeit_queue::FailRequest {
        error_json: r#"{"kind":"retryable","message":"503 from endpoint"}"#.into(),
        retry_at_ms,
        dead_letter,
        now_ms: NOW,
    }
}

/// Begins one delivery as `consumer`, asserting that it may run.
pub async fn begin_ok(env: &Env, d: &Delivery, consumer: &str) {
    match env.queue.begin(d, consumer, NOW).await.unwrap() {
        gleitzeit_queue::BeginOutcome::Run(_) => {}
        other => panic!("begin: {other:?}"),
    }
}

/// Begins and completes one delivery, asserting each step went through.
pub async fn run_ok(env: &Env, d: &Delivery, consumer: &str, result: &str) {
    begin_ok(env, d, consumer).await;
    assert_eq!(
        env.queue.complete(d, consumer, result, NOW).await.unwrap(),
        gleitzeit_queue::ScriptCode::Ok
    );
}

/// Retries a call while it fails retryably, as the worker's loops do: the first calls after
/// a failover meet the connection the failover closed.
pub async fn retried<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    for _ in 0..100 {
        match call().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what}: still failing after 100 retries");
}

/// [`retried`] for a consumer's read (which borrows the consumer mutably).
pub async fn read_retried(
    c: &mut Consumer,
    streams: &[gleitzeit_queue::StreamRef],
) -> Vec<Delivery> {
    for _ in 0..100 {
        match c
            .read_prioritised(streams, 10, std::time::Duration::ZERO)
            .await
        {
            Ok(got) => return got,
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("reading: {e}"),
        }
    }
    panic!("reading: still failing after 100 retries");
}

/// The flow both high-availability tests run on `queue`: a chain A → B is submitted, A is
/// read, begun and completed, then `failover` runs (given the workflow's key; off the async
/// threads, since the harnesses wait synchronously) and the same consumer and handle read,
/// begin and complete B — released by A's completion before the failover — on the new
/// primary. Asserts the workflow completed; returns its id and what `failover` returned.
pub async fn chain_across_failover<R>(
    queue: &Queue,
    failover: impl FnOnce(&str) -> R,
) -> (String, R) {
    let req = request("fail_fast", &[t("A", &[]), t("B", &[0])]);
    let id = req.workflow_id.clone();
    queue.submit(&req).await.expect("submitting the chain");
    let mut c = queue.consumer("w1").unwrap();
    let streams = queue.keys().stream_refs(CAP);
    let a = c
        .read_prioritised(&streams, 10, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    queue.begin(&a[0], "w1", NOW).await.unwrap();
    assert_eq!(
        queue.complete(&a[0], "w1", "\"a\"", NOW).await.unwrap(),
        gleitzeit_queue::ScriptCode::Ok
    );

    let wf_key = queue.keys().workflow(&id);
    let after = tokio::task::block_in_place(|| failover(&wf_key));

    let b = read_retried(&mut c, &streams).await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].workflow_id, id);
    retried("beginning B", || queue.begin(&b[0], "w1", NOW)).await;
    let code = retried("completing B", || queue.complete(&b[0], "w1", "\"b\"", NOW)).await;
    assert_eq!(code, gleitzeit_queue::ScriptCode::Ok);
    let wf = retried("reading the workflow", || queue.workflow(&id))
        .await
        .unwrap();
    assert_eq!(wf.status, "completed");
    (id, after)
}
