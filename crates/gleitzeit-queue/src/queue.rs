//! [`Queue`]: the pooled handle every operation goes through, and the per-task path —
//! submit, begin, complete, fail/defer and cancel, each one atomic script call. The
//! background loops' operations (promote, heartbeat, reclaim) are in `upkeep.rs`.

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{Metrics, Object, Pool, RecycleResult};
use deadpool_redis::redis::{
    self, aio::MultiplexedConnection, AsyncConnectionConfig, Cmd, FromRedisValue, RedisError,
    ScriptInvocation, Value,
};
use deadpool_redis::{Manager, Runtime};
use serde::Serialize;

use crate::codes::{self, ScriptCode};
use crate::connection::{ConnectionError, RedisTarget};
use crate::error::QueueError;
use crate::keys::{validate_workflow_id, Keys};
use crate::reply;
use crate::scripts::Scripts;
use crate::types::{
    BeginOutcome, Delivery, FailRequest, QueueConfig, SubmitOutcome, SubmitRequest, TaskContext,
    WaitLimit,
};

/// Handle to one deployment's queue in one Redis. Cheap to clone (shares the pool).
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool<LeanManager>,
    pub(crate) client: redis::Client,
    pub(crate) keys: Keys,
    pub(crate) cfg: QueueConfig,
    pub(crate) scripts: Scripts,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: only the namespace and group are shown.
        f.debug_struct("Queue")
            .field("namespace", &self.inner.cfg.namespace)
            .field("group", &self.inner.cfg.group)
            .finish_non_exhaustive()
    }
}

/// Task entry as `submit.lua` decodes it (short field names keep 1000-task ARGVs small).
#[derive(Serialize)]
struct WireTask<'a> {
    n: &'a str,
    c: &'a str,
    p: &'a str,
    s: &'a str,
    d: usize,
    ch: String,
    r: String,
    m: u32,
    f: &'a str,
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Stream entry ids are `<ms>-<seq>`; anything else would make a script error out.
pub(crate) fn validate_entry_id(id: &str) -> Result<(), QueueError> {
    let ok = id
        .split_once('-')
        .is_some_and(|(a, b)| is_digits(a) && is_digits(b));
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidArgument(format!(
            "{id:?} is not a stream entry id"
        )))
    }
}

/// 1 to 20 ASCII digits: one part of a stream id.
pub(crate) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn validate_consumer(name: &str) -> Result<(), QueueError> {
    // `|` separates a lease's owner from its id (`lease_member`).
    if name.is_empty()
        || name.len() > 256
        || name
            .chars()
            .any(|c| c.is_control() || c == crate::keys::LEASE_OWNER_SEP)
    {
        return Err(QueueError::InvalidArgument(format!(
            "consumer name {name:?} must be 1-256 bytes without control characters or '|'"
        )));
    }
    Ok(())
}

/// A bad URL stays the [`QueueError::InvalidArgument`] it has always been; TLS settings get
/// their own variant, which names the setting.
fn connection_error(err: ConnectionError) -> QueueError {
    match err {
        ConnectionError::Url(e) => QueueError::InvalidArgument(format!("redis url: {e}")),
        other => QueueError::Connection(other),
    }
}

impl Queue {
    /// Builds the handle without touching the network (the first operation connects).
    /// `target` is a URL (`&str`/`String`) or a [`RedisTarget`] with TLS files.
    ///
    /// # Errors
    /// [`QueueError::InvalidNamespace`] / [`QueueError::InvalidArgument`] for a bad
    /// configuration or URL; [`QueueError::Connection`] for a bad TLS setting.
    pub fn new(target: impl Into<RedisTarget>, cfg: QueueConfig) -> Result<Queue, QueueError> {
        let target = target.into();
        cfg.validate()?;
        let keys = Keys::new(&cfg.namespace)?;
        let client = target.client().map_err(connection_error)?;
        let conn_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cfg.response_timeout))
            .set_response_timeout(Some(cfg.response_timeout));
        let manager = target.manager(conn_cfg).map_err(connection_error)?;
        let manager = LeanManager {
            inner: manager,
            check_after_idle: IDLE_BEFORE_CHECK,
        };
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(cfg.response_timeout))
            .create_timeout(Some(cfg.response_timeout))
            .recycle_timeout(Some(cfg.response_timeout))
            .build()
            .map_err(|e| QueueError::InvalidArgument(format!("connection pool: {e}")))?;
        Ok(Queue {
            inner: Arc::new(Inner {
                pool,
                client,
                keys,
                cfg,
                scripts: Scripts::new(),
            }),
        })
    }

    /// [`Queue::new`], then a `PING` so an unreachable Redis is reported at once.
    ///
    /// # Errors
    /// As [`Queue::new`], plus connection errors (retryable), and [`QueueError::Tls`] when
    /// the TLS handshake fails (not retryable).
    pub async fn connect(
        target: impl Into<RedisTarget>,
        cfg: QueueConfig,
    ) -> Result<Queue, QueueError> {
        let queue = Queue::new(target, cfg)?;
        queue.ping().await.map_err(QueueError::classify_tls)?;
        Ok(queue)
    }

    /// Round trip to Redis.
    ///
    /// # Errors
    /// Connection errors (retryable).
    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// The key names of this deployment.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The configuration the handle was built with.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.cfg
    }

    pub(crate) async fn pooled(&self) -> Result<Object<LeanManager>, QueueError> {
        Ok(self.inner.pool.get().await?)
    }

    /// Runs one command on a pooled connection; a connection an error left unusable is
    /// detached from the pool rather than handed to the next caller.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, QueueError> {
        let mut conn = self.pooled().await?;
        let res = cmd
            .query_async::<T>(&mut *conn)
            .await
            .map_err(QueueError::from);
        discard_if_broken(conn, &res);
        res
    }

    /// Runs a pipeline on a pooled connection (same discard rule as [`Queue::query`]).
    pub(crate) async fn query_pipe<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, QueueError> {
        let mut conn = self.pooled().await?;
        let res = pipe
            .query_async::<T>(&mut *conn)
            .await
            .map_err(QueueError::from);
        discard_if_broken(conn, &res);
        res
    }

    /// The start shared by the fenced scripts (begin, complete, fail): KEYS task hash,
    /// workflow hash, stream; ARGV prefix, group, entry id, consumer, delivery count. Each
    /// script then adds its own arguments and [`Queue::fenced_tail`].
    fn fenced<'s>(
        &self,
        script: &'s redis::Script,
        d: &Delivery,
        consumer: &str,
    ) -> Result<ScriptInvocation<'s>, QueueError> {
        self.check_delivery(d, consumer)?;
        let k = &self.inner.keys;
        let mut inv = script.prepare_invoke();
        inv.key(k.task(&d.workflow_id, d.task))
            .key(k.workflow(&d.workflow_id))
            .key(&d.stream)
            .arg(k.prefix())
            .arg(&self.inner.cfg.group)
            .arg(&d.entry_id)
            .arg(consumer)
            .arg(d.deliveries);
        Ok(inv)
    }

    /// The ARGV the fenced scripts share after their own: now, events MAXLEN, workflow id,
    /// task index.
    fn fenced_tail(&self, inv: &mut ScriptInvocation<'_>, d: &Delivery, now_ms: u64) {
        inv.arg(now_ms)
            .arg(self.inner.cfg.events_maxlen)
            .arg(&d.workflow_id)
            .arg(d.task);
    }

    pub(crate) async fn invoke(&self, inv: &ScriptInvocation<'_>) -> Result<Value, QueueError> {
        let mut conn = self.pooled().await?;
        let res = inv
            .invoke_async::<Value>(&mut *conn)
            .await
            .map_err(|e| self.name_script(QueueError::from(e)));
        discard_if_broken(conn, &res);
        res
    }

    /// A refusal inside a script names the script by its SHA1; this puts its file name there.
    pub(crate) fn name_script(&self, err: QueueError) -> QueueError {
        match err {
            QueueError::NoPermission(mut d) => {
                if let Some(name) = d
                    .script
                    .as_deref()
                    .and_then(|s| self.inner.scripts.name_of(s))
                {
                    d.script = Some(name.to_owned());
                }
                QueueError::NoPermission(d)
            }
            other => other,
        }
    }

    /// A fresh connection without a response timeout, for blocking commands (the caller
    /// bounds them with its own timeout and drops the connection afterwards).
    pub(crate) async fn dedicated(&self) -> Result<MultiplexedConnection, QueueError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.cfg.response_timeout))
            .set_response_timeout(None);
        Ok(self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?)
    }

    pub(crate) fn check_delivery(&self, d: &Delivery, consumer: &str) -> Result<(), QueueError> {
        validate_consumer(consumer)?;
        validate_workflow_id(&d.workflow_id)?;
        validate_entry_id(&d.entry_id)?;
        if d.stream != self.inner.keys.stream(&d.capability, d.priority) {
            return Err(QueueError::InvalidArgument(format!(
                "delivery stream {:?} is not the {} stream of {:?} in this namespace",
                d.stream, d.priority, d.capability
            )));
        }
        Ok(())
    }

    /// Writes a whole workflow and queues its root tasks, in one script call. Nothing is
    /// written unless the outcome is [`SubmitOutcome::Created`].
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] when the request is inconsistent (see
    /// [`SubmitRequest::validate`]); [`QueueError::WorkflowExists`] when the id is taken;
    /// Redis errors.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<SubmitOutcome, QueueError> {
        const CTX: &str = "submit";
        req.validate()?;
        let wire: Vec<WireTask<'_>> = req
            .tasks
            .iter()
            .map(|t| WireTask {
                n: &t.name,
                c: &t.capability,
                p: t.priority.as_str(),
                s: &t.spec_json,
                d: t.dependencies.len(),
                ch: join(&t.children),
                r: join(&t.refs),
                m: t.max_attempts,
                f: t.on_failure.as_deref().unwrap_or(""),
            })
            .collect();
        let tasks_json = serde_json::to_string(&wire)
            .map_err(|e| QueueError::InvalidArgument(format!("tasks do not serialise: {e}")))?;
        let k = &self.inner.keys;
        let cfg = &self.inner.cfg;
        let mut inv = self.inner.scripts.submit.prepare_invoke();
        inv.key(k.workflow(&req.workflow_id))
            .arg(k.prefix())
            .arg(&cfg.group)
            .arg(&req.workflow_id)
            .arg(&req.name)
            .arg(req.idempotency_key.as_deref().unwrap_or(""))
            .arg(&req.digest)
            .arg(&req.policy)
            .arg(&req.input_json)
            .arg(req.now_ms)
            .arg(
                req.retention
                    .map_or_else(|| cfg.retention_secs(), crate::types::whole_secs),
            )
            .arg(cfg.events_maxlen)
            .arg(tasks_json);
        let v = self.invoke(&inv).await?;
        let items = reply::array(CTX, &v)?;
        let (code, id) = match items {
            [code, id] => (reply::int(CTX, code)?, reply::string(CTX, id)?),
            _ => return Err(QueueError::unexpected(CTX, format!("{items:?}"))),
        };
        match codes::SUBMIT.parse(code)? {
            ScriptCode::Ok => Ok(SubmitOutcome::Created { id }),
            ScriptCode::Existing => Ok(SubmitOutcome::Existing { id }),
            ScriptCode::Conflict => Ok(SubmitOutcome::Conflict { existing_id: id }),
            ScriptCode::IdExists => Err(QueueError::WorkflowExists(id)),
            other => Err(codes::SUBMIT.unexpected(other)),
        }
    }

    /// Starts a delivered task: it becomes `running` and its spec, inputs and referenced
    /// results are returned. A task that can no longer run has its entry acknowledged and
    /// deleted ([`BeginOutcome::NotRunnable`]); an entry another consumer reclaimed is left
    /// alone ([`BeginOutcome::Stale`]).
    ///
    /// # Errors
    /// Invalid delivery, Redis errors, or an unexpected script reply.
    pub async fn begin(
        &self,
        d: &Delivery,
        consumer: &str,
        now_ms: u64,
    ) -> Result<BeginOutcome, QueueError> {
        const CTX: &str = "begin";
        let mut inv = self.fenced(&self.inner.scripts.begin, d, consumer)?;
        self.fenced_tail(&mut inv, d, now_ms);
        let v = self.invoke(&inv).await?;
        let items = reply::array(CTX, &v)?;
        let code = items
            .first()
            .ok_or_else(|| QueueError::unexpected(CTX, "empty reply"))?;
        match codes::BEGIN.parse(reply::int(CTX, code)?)? {
            ScriptCode::Ok => {
                // Fixed fields, then (name, result) pairs of the referenced tasks.
                const FIXED: usize = 8;
                if items.len() < FIXED || !(items.len() - FIXED).is_multiple_of(2) {
                    return Err(QueueError::unexpected(CTX, format!("{items:?}")));
                }
                let mut refs = Vec::with_capacity((items.len() - FIXED) / 2);
                for pair in items[FIXED..].chunks(2) {
                    let name = reply::string(CTX, &pair[0])?;
                    let result = reply::opt_string(CTX, &pair[1])?.ok_or_else(|| {
                        QueueError::unexpected(
                            CTX,
                            format!("referenced task {name:?} has no result"),
                        )
                    })?;
                    refs.push((name, result));
                }
                Ok(BeginOutcome::Run(TaskContext {
                    name: reply::string(CTX, &items[1])?,
                    spec_json: reply::string(CTX, &items[2])?,
                    attempts: reply::u32_of(CTX, &items[3])?,
                    max_attempts: reply::u32_of(CTX, &items[4])?,
                    input_json: reply::string(CTX, &items[5])?,
                    refs,
                    ready_ms: reply::string(CTX, &items[6])?.parse().ok(),
                    deferrals: reply::u32_of(CTX, &items[7])?,
                }))
            }
            ScriptCode::NotRunnable => Ok(BeginOutcome::NotRunnable {
                status: reply::string(
                    CTX,
                    items
                        .get(1)
                        .ok_or_else(|| QueueError::unexpected(CTX, "status missing"))?,
                )?,
            }),
            ScriptCode::Stale => Ok(BeginOutcome::Stale),
            other => Err(codes::BEGIN.unexpected(other)),
        }
    }

    /// Records a task's result once and releases its ready dependents. Fenced: only the
    /// current delivery records anything. Returns [`ScriptCode::Ok`] (recorded), or why
    /// nothing was released: [`ScriptCode::Stale`], [`ScriptCode::Duplicate`],
    /// [`ScriptCode::Cancelled`], [`ScriptCode::NotRunning`] or [`ScriptCode::NotFound`]
    /// (see `lua/complete.lua`).
    ///
    /// # Errors
    /// Invalid delivery, Redis errors, or an unexpected script reply.
    pub async fn complete(
        &self,
        d: &Delivery,
        consumer: &str,
        result_json: &str,
        now_ms: u64,
    ) -> Result<ScriptCode, QueueError> {
        const CTX: &str = "complete";
        let mut inv = self.fenced(&self.inner.scripts.complete, d, consumer)?;
        inv.arg(result_json);
        self.fenced_tail(&mut inv, d, now_ms);
        codes::COMPLETE.parse(reply::int(CTX, &self.invoke(&inv).await?)?)
    }

    /// Records a failed attempt: schedules a retry or fails the task for good, applying the
    /// failure policy (fenced like [`Queue::complete`]). Returns
    /// [`ScriptCode::RetryScheduled`] or [`ScriptCode::Failed`], or why nothing was recorded,
    /// with the codes of [`Queue::complete`] (see `lua/fail.lua`).
    ///
    /// # Errors
    /// Invalid delivery, Redis errors, or an unexpected script reply.
    pub async fn fail(
        &self,
        d: &Delivery,
        consumer: &str,
        req: &FailRequest,
    ) -> Result<ScriptCode, QueueError> {
        self.fail_script(d, consumer, req, None).await
    }

    /// Re-queues a task whose attempt never reached the work (no endpoint could take the
    /// call, no service instance was live) at `req.retry_at_ms` **without using an attempt**:
    /// waiting for capacity is backpressure, not failure. The task hash counts `deferrals`.
    /// `req.retry_at_ms` must be set; `req.dead_letter` is ignored. When the workflow no
    /// longer runs, this records a failure like [`Queue::fail`].
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] without a due time; as [`Queue::fail`] otherwise.
    pub async fn defer(
        &self,
        d: &Delivery,
        consumer: &str,
        req: &FailRequest,
    ) -> Result<ScriptCode, QueueError> {
        self.defer_within(d, consumer, req, None).await
    }

    /// [`Queue::defer`] bounded by a wait limit: when the task has been waiting (deferred
    /// since its last real attempt) for `limit.limit_ms` or longer, it fails terminally
    /// instead, with `limit.give_up_error_json` as its error and an `exhausted` dead letter,
    /// its attempts unchanged ([`ScriptCode::Failed`]).
    ///
    /// # Errors
    /// As [`Queue::defer`].
    pub async fn defer_within(
        &self,
        d: &Delivery,
        consumer: &str,
        req: &FailRequest,
        limit: Option<&WaitLimit>,
    ) -> Result<ScriptCode, QueueError> {
        if req.retry_at_ms.is_none() {
            return Err(QueueError::InvalidArgument(
                "a deferral needs a due time (retry_at_ms)".to_owned(),
            ));
        }
        self.fail_script(d, consumer, req, Some(limit)).await
    }

    async fn fail_script(
        &self,
        d: &Delivery,
        consumer: &str,
        req: &FailRequest,
        deferral: Option<Option<&WaitLimit>>,
    ) -> Result<ScriptCode, QueueError> {
        const CTX: &str = "fail";
        let mut inv = self.fenced(&self.inner.scripts.fail, d, consumer)?;
        inv.arg(&req.error_json)
            .arg(req.retry_at_ms.map(|t| t.to_string()).unwrap_or_default())
            .arg(req.dead_letter.map(|k| k.as_str()).unwrap_or(""));
        self.fenced_tail(&mut inv, d, req.now_ms);
        let limit = deferral.flatten();
        inv.arg(self.inner.cfg.dead_maxlen)
            .arg(if deferral.is_some() { "1" } else { "" })
            .arg(limit.map(|l| l.limit_ms.to_string()).unwrap_or_default())
            .arg(limit.map(|l| l.give_up_error_json.as_str()).unwrap_or(""));
        codes::FAIL.parse(reply::int(CTX, &self.invoke(&inv).await?)?)
    }

    /// Cancels a running workflow (every unfinished task becomes cancelled): returns
    /// [`ScriptCode::Ok`], [`ScriptCode::AlreadyFinished`] or [`ScriptCode::NotFound`].
    ///
    /// # Errors
    /// Invalid id, Redis errors, or an unexpected script reply.
    pub async fn cancel(&self, workflow_id: &str, now_ms: u64) -> Result<ScriptCode, QueueError> {
        const CTX: &str = "cancel";
        validate_workflow_id(workflow_id)?;
        let k = &self.inner.keys;
        let mut inv = self.inner.scripts.cancel.prepare_invoke();
        inv.key(k.workflow(workflow_id))
            .arg(k.prefix())
            .arg(now_ms)
            .arg(self.inner.cfg.events_maxlen)
            .arg(workflow_id);
        codes::CANCEL.parse(reply::int(CTX, &self.invoke(&inv).await?)?)
    }
}

/// Takes a pooled connection out of the pool when the error it produced may have left it
/// closed or out of step with its replies.
fn discard_if_broken<T>(conn: Object<LeanManager>, res: &Result<T, QueueError>) {
    if let Err(err) = res {
        if err.breaks_connection() {
            drop(Object::take(conn));
        }
    }
}

/// How long a pooled connection may sit unused before it is checked (a `PING`) on its way
/// out of the pool.
const IDLE_BEFORE_CHECK: Duration = Duration::from_secs(1);

/// deadpool-redis's manager, minus its check on every checkout: that one costs a round trip
/// (`UNWATCH` + `PING`) each time a connection leaves the pool — several per task on the hot
/// path. Every command here goes through [`Queue::query`], [`Queue::query_pipe`] or
/// [`Queue::invoke`], which detach a connection an error broke, so a busy connection is known
/// good; only one that sat idle (its peer may have gone away unseen) is checked.
///
/// The price: after Redis restarts, the first command on each connection that was used
/// within the last second fails once with a retryable error (the connection is then
/// detached). Callers retry retryable errors — the worker's loops do.
pub(crate) struct LeanManager {
    inner: Manager,
    check_after_idle: Duration,
}

impl deadpool::managed::Manager for LeanManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.inner.create().await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() < self.check_after_idle {
            return Ok(());
        }
        self.inner.recycle(conn, metrics).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_id_validation() {
        assert!(validate_entry_id("1700000000000-0").is_ok());
        for bad in ["", "1", "-1", "1-", "a-1", "1-1-1", "1 -1", "$", ">"] {
            assert!(validate_entry_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn consumer_validation() {
        assert!(validate_consumer("host-1234-abcdef01").is_ok());
        assert!(validate_consumer("").is_err());
        assert!(validate_consumer("a\nb").is_err());
    }

    #[test]
    fn new_validates_config_without_network() {
        let cfg = QueueConfig {
            namespace: "bad ns".into(),
            ..QueueConfig::default()
        };
        assert!(matches!(
            Queue::new("redis://127.0.0.1:1/", cfg),
            Err(QueueError::InvalidNamespace { .. })
        ));
        let cfg = QueueConfig {
            retention: Duration::ZERO,
            ..QueueConfig::default()
        };
        assert!(matches!(
            Queue::new("redis://127.0.0.1:1/", cfg),
            Err(QueueError::InvalidArgument(_))
        ));
        assert!(matches!(
            Queue::new("not a url", QueueConfig::default()),
            Err(QueueError::InvalidArgument(_))
        ));
    }

    #[test]
    fn retention_rounds_up_to_seconds() {
        let mut cfg = QueueConfig::default();
        assert_eq!(cfg.retention_secs(), 86_400);
        cfg.retention = Duration::from_millis(1500);
        assert_eq!(cfg.retention_secs(), 2);
        cfg.retention = Duration::from_millis(1);
        assert_eq!(cfg.retention_secs(), 1);
    }

    #[test]
    fn join_ids() {
        assert_eq!(join(&[]), "");
        assert_eq!(join(&[3, 10, 2]), "3,10,2");
    }

    /// Calls of one command so far, from `INFO commandstats` (0 when never called).
    async fn calls(queue: &Queue, command: &str) -> u64 {
        let info: String = queue
            .query(redis::cmd("INFO").arg("commandstats"))
            .await
            .unwrap();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    #[tokio::test]
    async fn busy_connections_leave_the_pool_unchecked_idle_ones_are_pinged() {
        let redis = gleitzeit_testkit::redis::RedisServer::start().unwrap();
        let queue = Queue::connect(&redis.url(), QueueConfig::default())
            .await
            .unwrap();
        let before = calls(&queue, "ping").await;
        for _ in 0..50 {
            queue.ping().await.unwrap();
        }
        // The 50 PINGs asked for, and none added by checkouts of a connection in use.
        assert_eq!(calls(&queue, "ping").await - before, 50);

        // A connection idle longer than the check interval is pinged once on its way out.
        let lean = LeanManager {
            inner: Manager::new(redis.url()).unwrap(),
            check_after_idle: Duration::ZERO,
        };
        let pool: Pool<LeanManager> = Pool::builder(lean).max_size(1).build().unwrap();
        drop(pool.get().await.unwrap());
        let before = calls(&queue, "ping").await;
        drop(pool.get().await.unwrap());
        assert_eq!(calls(&queue, "ping").await - before, 1);
    }
}
