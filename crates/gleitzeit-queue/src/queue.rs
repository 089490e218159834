//! [`Queue`]: the shared handle every operation goes through, and the per-task path —
//! submit, begin, complete, fail/defer and cancel, each one atomic script call. The
//! background loops' operations (promote, heartbeat, reclaim) are in `upkeep.rs`.

use std::sync::Arc;

use deadpool_redis::redis::{self, Cmd, FromRedisValue, ScriptInvocation, Value};

use crate::codes::{self, Returns, ScriptCode};
use crate::connection::{Conn, ConnectionError, Connector, RedisTarget, Timeouts};
use crate::error::QueueError;
use crate::keys::{validate_workflow_id, Keys};
use crate::link::Link;
use crate::reply;
use crate::scripts::{Call, Function, Scripts};
use crate::types::{
    chains_below, BeginOutcome, Delivery, FailRequest, QueueConfig, SubmitOutcome, SubmitRequest,
    TaskContext, WaitLimit,
};

/// Handle to one deployment's queue in one Redis. Cheap to clone (shares the connection).
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Every non-blocking command: one multiplexed connection (see `link.rs` for why).
    pub(crate) link: Link,
    pub(crate) connector: Connector,
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
        let connector = target
            .connector(cfg.response_timeout)
            .map_err(connection_error)?;
        if target.is_cluster() && cfg.replica_acks > 0 {
            // WAIT counts the replicas of the node a connection talks to; a cluster
            // connection talks to many.
            return Err(QueueError::InvalidArgument(
                "replica_acks is not supported with redis+cluster:// URLs".to_owned(),
            ));
        }
        let timeouts = Timeouts {
            connect: cfg.response_timeout,
            response: Some(cfg.response_timeout),
        };
        Ok(Queue {
            inner: Arc::new(Inner {
                link: Link::new(connector.clone(), timeouts),
                connector,
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

    /// Sends a request on the shared connection: `send` gets a handle on it; a connection
    /// the request's error may have broken is replaced before the next call. Every
    /// non-blocking request of the handle goes through here.
    async fn on_link<T, F, Fut>(&self, send: F) -> Result<T, QueueError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, QueueError>>,
    {
        let lease = self.inner.link.get().await?;
        let res = send(lease.conn.clone()).await;
        self.inner.link.settle(lease, &res);
        res
    }

    /// Runs one command on the shared connection ([`Queue::on_link`]).
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, QueueError> {
        self.on_link(|mut conn| async move { Ok(cmd.query_async::<T>(&mut conn).await?) })
            .await
    }

    /// Runs a pipeline on the shared connection ([`Queue::on_link`]).
    pub(crate) async fn query_pipe<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, QueueError> {
        self.on_link(|mut conn| async move { Ok(pipe.query_async::<T>(&mut conn).await?) })
            .await
    }

    /// The start shared by the fenced scripts (begin, complete, fail): KEYS task hash,
    /// workflow hash, stream; ARGV prefix, group, entry id, consumer, delivery count. Each
    /// script then adds its own arguments and [`Queue::fenced_tail`].
    fn fenced(&self, script: &Function, d: &Delivery, consumer: &str) -> Result<Call, QueueError> {
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
    fn fenced_tail(&self, inv: &mut Call, d: &Delivery, now_ms: u64) {
        inv.arg(now_ms)
            .arg(self.inner.cfg.events_maxlen)
            .arg(&d.workflow_id)
            .arg(d.task);
    }

    /// Calls a function of the library. When Redis does not know it (a new server, a
    /// restart without persistence, `FUNCTION FLUSH`), the library is loaded and the call
    /// made once more.
    pub(crate) async fn invoke(&self, call: &Call) -> Result<Value, QueueError> {
        match self.fcall(call).await {
            Err(QueueError::Redis(e)) if is_missing_function(&e) => {
                self.load_library().await?;
                self.fcall(call).await
            }
            other => other,
        }
    }

    async fn fcall(&self, call: &Call) -> Result<Value, QueueError> {
        self.query(&call.command())
            .await
            .map_err(|e| self.name_script(e))
    }

    /// [`Queue::invoke`] followed by `WAIT replica_acks replica_ack_timeout` in the same
    /// write on the same connection (`WAIT` counts the replicas that have this connection's
    /// writes, so it must not go out on another one): the function's reply and the count.
    async fn invoke_replicated(&self, call: &Call) -> Result<(Value, u64), QueueError> {
        let cfg = &self.inner.cfg;
        let mut pipe = redis::pipe();
        pipe.add_command(call.command())
            .cmd("WAIT")
            .arg(cfg.replica_acks)
            .arg(cfg.replica_ack_timeout.as_millis() as u64);
        let run = || async {
            self.query_pipe::<(Value, u64)>(&pipe)
                .await
                .map_err(|e| self.name_script(e))
        };
        match run().await {
            Err(QueueError::Redis(e)) if is_missing_function(&e) => {
                self.load_library().await?;
                run().await
            }
            other => other,
        }
    }

    /// `FUNCTION LOAD` of this version's library; one already loaded (by another process
    /// of the same version) is fine.
    async fn load_library(&self) -> Result<(), QueueError> {
        tracing::info!(library = %self.inner.scripts.library_name, "loading the function library");
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg(&self.inner.scripts.library);
        match self.query::<Value>(&cmd).await {
            Ok(_) => Ok(()),
            Err(QueueError::Redis(e)) if e.to_string().contains("already exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs an `EVAL` script (the permission probe, which must run before anything else).
    pub(crate) async fn invoke_script(
        &self,
        inv: &ScriptInvocation<'_>,
    ) -> Result<Value, QueueError> {
        self.on_link(|mut conn| async move { Ok(inv.invoke_async::<Value>(&mut conn).await?) })
            .await
    }

    /// A refusal inside a function names the function; this puts its script's file name
    /// there.
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
    pub(crate) async fn dedicated(&self) -> Result<Conn, QueueError> {
        let timeouts = Timeouts {
            connect: self.inner.cfg.response_timeout,
            response: None,
        };
        Ok(self.inner.connector.connect(timeouts).await?)
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
        let children: Vec<&[u32]> = req.tasks.iter().map(|t| t.children.as_slice()).collect();
        let below = chains_below(&children);
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
            .arg(req.tasks.len())
            .arg(if req.watch { "1" } else { "" });
        // Ten arguments per task, in submit.lua's order; counts as decimal text (submit.lua
        // writes them to the task hash as they come: lib.lua's dec()).
        for (t, b) in req.tasks.iter().zip(below) {
            inv.arg(&t.name)
                .arg(&t.capability)
                .arg(t.priority.as_str())
                .arg(&t.spec_json)
                .arg(t.dependencies.len())
                .arg(join(&t.children))
                .arg(join(&t.refs))
                .arg(t.max_attempts)
                .arg(t.on_failure.as_deref().unwrap_or(""))
                .arg(b);
        }
        let (v, acked) = if cfg.replica_acks == 0 {
            (self.invoke(&inv).await?, 0)
        } else {
            self.invoke_replicated(&inv).await?
        };
        let items = reply::array(CTX, &v)?;
        let (code, id) = match items {
            [code, id] => (reply::int(CTX, code)?, reply::string(CTX, id)?),
            _ => return Err(QueueError::unexpected(CTX, format!("{items:?}"))),
        };
        match codes::SUBMIT.parse(code)? {
            ScriptCode::Ok if acked < u64::from(cfg.replica_acks) => {
                Err(QueueError::NotReplicated {
                    workflow_id: id,
                    acked,
                    wanted: cfg.replica_acks,
                    timeout_ms: cfg.replica_ack_timeout.as_millis() as u64,
                })
            }
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
        begin_outcome(codes::BEGIN, reply::array(CTX, &v)?)
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

/// Redis does not know the function called (`ERR Function not found`).
fn is_missing_function(err: &redis::RedisError) -> bool {
    err.to_string().contains("Function not found")
}

/// Decodes a begin reply (`begin.lua`'s, or one of those `read.lua` returns with the
/// entries it began): the code of `returns`, then the task's context or its status.
pub(crate) fn begin_outcome(returns: Returns, items: &[Value]) -> Result<BeginOutcome, QueueError> {
    let ctx = returns.script;
    let code = items
        .first()
        .ok_or_else(|| QueueError::unexpected(ctx, "empty reply"))?;
    match returns.parse(reply::int(ctx, code)?)? {
        ScriptCode::Ok => {
            // Fixed fields, then (name, result) pairs of the referenced tasks.
            const FIXED: usize = 9;
            if items.len() < FIXED || !(items.len() - FIXED).is_multiple_of(2) {
                return Err(QueueError::unexpected(ctx, format!("{items:?}")));
            }
            let mut refs = Vec::with_capacity((items.len() - FIXED) / 2);
            for pair in items[FIXED..].chunks(2) {
                let name = reply::string(ctx, &pair[0])?;
                let result = reply::opt_string(ctx, &pair[1])?.ok_or_else(|| {
                    QueueError::unexpected(ctx, format!("referenced task {name:?} has no result"))
                })?;
                refs.push((name, result));
            }
            Ok(BeginOutcome::Run(TaskContext {
                name: reply::string(ctx, &items[1])?,
                spec_json: reply::string(ctx, &items[2])?,
                attempts: reply::u32_of(ctx, &items[3])?,
                max_attempts: reply::u32_of(ctx, &items[4])?,
                input_json: reply::string(ctx, &items[5])?,
                refs,
                ready_ms: reply::string(ctx, &items[6])?.parse().ok(),
                deferrals: reply::u32_of(ctx, &items[7])?,
                chain_below: reply::u32_of(ctx, &items[8])?,
            }))
        }
        ScriptCode::NotRunnable => Ok(BeginOutcome::NotRunnable {
            status: reply::string(
                ctx,
                items
                    .get(1)
                    .ok_or_else(|| QueueError::unexpected(ctx, "status missing"))?,
            )?,
        }),
        ScriptCode::Stale => Ok(BeginOutcome::Stale),
        other => Err(returns.unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    /// The names of the function libraries loaded in Redis.
    async fn libraries(queue: &Queue) -> Vec<String> {
        let v: Value = queue
            .query(redis::cmd("FUNCTION").arg("LIST"))
            .await
            .unwrap();
        let Value::Array(libs) = v else {
            panic!("{v:?}")
        };
        let mut names = Vec::new();
        for lib in libs {
            let fields: Vec<(String, Value)> = match lib {
                Value::Array(items) => items
                    .chunks(2)
                    .map(|c| {
                        (
                            String::from_redis_value(c[0].clone()).unwrap(),
                            c[1].clone(),
                        )
                    })
                    .collect(),
                Value::Map(pairs) => pairs
                    .into_iter()
                    .map(|(k, v)| (String::from_redis_value(k).unwrap(), v))
                    .collect(),
                other => panic!("{other:?}"),
            };
            for (k, v) in fields {
                if k == "library_name" {
                    names.push(String::from_redis_value(v).unwrap());
                }
            }
        }
        names.sort();
        names
    }

    #[tokio::test]
    async fn the_library_is_loaded_when_redis_lacks_it_beside_other_versions() {
        let redis = gleitzeit_testkit::redis::RedisServer::start().unwrap();
        let queue = Queue::connect(&redis.url(), QueueConfig::default())
            .await
            .unwrap();
        // Another version's library is already there; it stays.
        let other = "#!lua name=gleitzeit_000000000000\n\
            redis.register_function('gleitzeit_000000000000_cancel', function() return 6 end)";
        let _: Value = queue
            .query(redis::cmd("FUNCTION").arg("LOAD").arg(other))
            .await
            .unwrap();
        assert_eq!(libraries(&queue).await, ["gleitzeit_000000000000"]);
        // The first call loads this version's library.
        assert_eq!(
            queue.cancel("no-such-workflow", 1).await.unwrap(),
            ScriptCode::NotFound
        );
        let ours = queue.inner.scripts.library_name.clone();
        let mut both = vec!["gleitzeit_000000000000".to_owned(), ours.clone()];
        both.sort();
        assert_eq!(libraries(&queue).await, both);
        // After FUNCTION FLUSH (or a restart without persistence) it is loaded again.
        let _: Value = queue
            .query(redis::cmd("FUNCTION").arg("FLUSH"))
            .await
            .unwrap();
        assert_eq!(
            queue.cancel("no-such-workflow", 1).await.unwrap(),
            ScriptCode::NotFound
        );
        assert_eq!(libraries(&queue).await, [ours]);
    }

    /// `connected_clients` from `INFO clients`, read over a separate connection.
    async fn connected_clients(redis: &gleitzeit_testkit::redis::RedisServer) -> u64 {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .map(|n| n.trim().parse().unwrap())
            .unwrap()
    }

    /// A server that accepts connections and never answers (a black-holed Redis): callers
    /// that queue up behind one attempt to connect share its failure instead of each
    /// waiting out a connect timeout of their own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_waiting_for_a_failing_connect_share_its_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(sock);
            }
        });
        let cfg = QueueConfig {
            response_timeout: std::time::Duration::from_secs(2),
            ..QueueConfig::default()
        };
        let queue = Queue::new(format!("redis://127.0.0.1:{port}/"), cfg).unwrap();
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let q = queue.clone();
                tokio::spawn(async move { q.ping().await })
            })
            .collect();
        for c in callers {
            let err = c.await.unwrap().unwrap_err();
            assert!(err.is_retryable(), "{err}");
        }
        let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..8).contains(&n), "{n} connections for 8 callers");
        server.abort();
    }

    #[tokio::test]
    async fn concurrent_calls_share_one_connection_and_a_killed_one_is_replaced() {
        let redis = gleitzeit_testkit::redis::RedisServer::start().unwrap();
        let queue = Queue::connect(&redis.url(), QueueConfig::default())
            .await
            .unwrap();
        let pings: Vec<_> = (0..64)
            .map(|_| {
                let q = queue.clone();
                tokio::spawn(async move { q.ping().await })
            })
            .collect();
        for p in pings {
            p.await.unwrap().unwrap();
        }
        // The queue's one connection, and the one reading INFO.
        assert_eq!(connected_clients(&redis).await, 2);

        // The server drops every normal connection: the next call may fail once, with a
        // retryable error, and the one after it runs on a new connection.
        let client = redis::Client::open(redis.url()).unwrap();
        let mut admin = client.get_multiplexed_async_connection().await.unwrap();
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("SKIPME")
            .arg("yes")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut admin)
            .await
            .unwrap();
        if let Err(e) = queue.ping().await {
            assert!(e.is_retryable(), "{e}");
            queue.ping().await.unwrap();
        }
        queue.ping().await.unwrap();
    }
}
