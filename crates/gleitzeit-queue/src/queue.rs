//! [`Queue`]: the shared handle every operation goes through, and the per-task path —
//! submit, begin, complete, fail/defer and cancel, each one atomic script call. The
//! background loops' operations (promote, heartbeat, reclaim) are in `upkeep.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use deadpool_redis::redis::{self, Value};

use crate::codes::{self, Returns, ScriptCode};
use crate::commit::{Commits, Completion, Reply};
use crate::connection::{ConnectionError, Connector, RedisTarget, Timeouts};
use crate::error::QueueError;
use crate::keys::{
    pack_children, pack_definition, parse_definition, shard_of, validate_workflow_id, Keys,
    Priority, LAYOUT_FIELDS, LAYOUT_PACKED,
};
use crate::link::Link;
use crate::ops::runs;
use crate::reply;
use crate::scripts::{Call, Function, Scripts};
use crate::types::{
    chains_below, BeginOutcome, Delivery, FailRequest, QueueConfig, Recorded, SubmitOutcome,
    SubmitRequest, TaskContext, WaitLimit, WorkflowEnd,
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
    /// The namespace's home keys: fleet-wide state (and, with one shard, everything).
    pub(crate) keys: Keys,
    /// The keys of each shard (one entry, equal to `keys`, for an unsharded namespace).
    pub(crate) shards: Vec<Keys>,
    pub(crate) cfg: QueueConfig,
    pub(crate) scripts: Scripts,
    /// Whether the namespace is known to record this handle's shard count (checked or
    /// written by [`Queue::connect`], or by the first submission of a handle that adopted
    /// an unrecorded count).
    pub(crate) shards_recorded: AtomicBool,
    /// For a handle made without a shard count (`cfg.shards` unset, never connected): the
    /// layout the namespace records, once it records one ([`Queue::spread_keys`]).
    pub(crate) adopted_keys: OnceLock<Keys>,
    /// Whether every live worker was seen to run the packed layout: from then on this handle
    /// submits in it without asking again ([`Queue::submit`]).
    pub(crate) fleet_runs_packed: AtomicBool,
    /// Completions waiting to be sent together (commit.rs).
    pub(crate) commits: Commits,
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
        let n = cfg.shards.unwrap_or(1);
        let shards = (0..n).map(|k| keys.shard(k, n)).collect();
        let keys = keys.with_spread(n > 1);
        Ok(Queue {
            inner: Arc::new(Inner {
                link: Link::new(connector.clone(), timeouts),
                connector,
                keys,
                shards,
                cfg,
                scripts: Scripts::new(),
                shards_recorded: AtomicBool::new(false),
                fleet_runs_packed: AtomicBool::new(false),
                adopted_keys: OnceLock::new(),
                commits: Commits::default(),
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
        let recorded = queue.recorded_shards().await?;
        let queue = match (queue.inner.cfg.shards, recorded) {
            (Some(n), Some(r)) if n != r => {
                return Err(QueueError::ShardCount {
                    namespace: queue.inner.cfg.namespace.clone(),
                    configured: n,
                    recorded: r,
                })
            }
            (Some(_), None) => {
                queue.record_shard_count().await?;
                queue
            }
            // Adopting: a count other than one means another layout.
            (None, Some(r)) if r != 1 => queue.with_shard_count(r)?,
            _ => queue,
        };
        if recorded.is_some() {
            queue.inner.shards_recorded.store(true, Ordering::Relaxed);
        }
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

    /// The namespace's home keys: fleet-wide state, and everything when the namespace has
    /// one shard. Per-workflow keys are under [`Queue::shard_keys`].
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The configuration the handle was built with.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.cfg
    }

    /// The start shared by the fenced scripts (begin, complete, fail): KEYS workflow hash
    /// (which holds the task's fields), stream; ARGV prefix, group, entry id, consumer,
    /// delivery count. Each script then adds its own arguments and [`Queue::fenced_tail`].
    fn fenced(&self, script: &Function, d: &Delivery, consumer: &str) -> Result<Call, QueueError> {
        self.check_delivery(d, consumer)?;
        Ok(self.fenced_call(script, d, consumer))
    }

    /// [`Queue::fenced`] of a delivery already checked.
    fn fenced_call(&self, script: &Function, d: &Delivery, consumer: &str) -> Call {
        let k = self.shard_keys(&d.workflow_id);
        let mut inv = script.prepare_invoke();
        inv.key(k.workflow(&d.workflow_id))
            .key(&d.stream)
            .arg(k.prefix())
            .arg(&self.inner.cfg.group)
            .arg(&d.entry_id)
            .arg(consumer)
            .arg(d.deliveries);
        inv
    }

    /// complete.lua's call for a checked delivery (alone, or its lane's only completion).
    pub(crate) fn complete_call(
        &self,
        d: &Delivery,
        consumer: &str,
        result_json: &str,
        now_ms: u64,
    ) -> Call {
        let mut inv = self.fenced_call(&self.inner.scripts.complete, d, consumer);
        inv.arg(result_json);
        self.fenced_tail(&mut inv, d, now_ms);
        inv
    }

    /// The ARGV the fenced scripts share after their own: now, events MAXLEN, workflow id,
    /// task index.
    fn fenced_tail(&self, inv: &mut Call, d: &Delivery, now_ms: u64) {
        inv.arg(now_ms)
            .arg(self.inner.cfg.events_maxlen)
            .arg(&d.workflow_id)
            .arg(d.task);
    }

    pub(crate) fn check_delivery(&self, d: &Delivery, consumer: &str) -> Result<(), QueueError> {
        validate_consumer(consumer)?;
        validate_workflow_id(&d.workflow_id)?;
        validate_entry_id(&d.entry_id)?;
        if d.stream
            != self
                .shard_keys(&d.workflow_id)
                .stream(&d.capability, d.priority)
        {
            return Err(QueueError::InvalidArgument(format!(
                "delivery stream {:?} is not the {} stream of {:?} in the workflow's shard",
                d.stream, d.priority, d.capability
            )));
        }
        Ok(())
    }

    /// Writes a whole workflow and queues its root tasks, in one script call. Nothing is
    /// written unless the outcome is [`SubmitOutcome::Created`].
    ///
    /// The tasks are written as fields of the workflow hash (keys.rs, the fields layout)
    /// once every live worker of the registry runs that layout; while a worker of an earlier
    /// version is live (a rolling upgrade), as task hashes, which both versions run: a worker
    /// of an earlier version finds no task hash for a workflow in the fields layout and drops
    /// its tasks. The handle asks the registry until the whole fleet runs the fields layout,
    /// then never again.
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
        let n = self.shard_count();
        if let Some(key) = req.idempotency_key.as_deref() {
            if shard_of(key, n) != shard_of(&req.workflow_id, n) {
                return Err(QueueError::InvalidArgument(format!(
                    "workflow id {:?} is not in the shard of its idempotency key {key:?} \
                     ({n} shards): draw ids with Queue::workflow_id_for",
                    req.workflow_id
                )));
            }
        }
        // A handle that adopted an unrecorded count records it with its first workflow.
        self.record_shard_count().await?;
        let layout = self.submit_layout(req.now_ms).await?;
        let k = self.shard_keys(&req.workflow_id);
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
            .arg(if req.watch { "1" } else { "" })
            .arg(layout);
        if layout == LAYOUT_PACKED {
            // Five arguments per task, in submit.lua's order: the definition and the
            // children packed here (Redis's CPU is the fleet's ceiling, the submitter's is
            // not), counts as decimal text.
            for (t, b) in req.tasks.iter().zip(below) {
                let refs: Vec<(u32, &str)> = t
                    .refs
                    .iter()
                    .map(|&r| (r, req.tasks[r as usize].name.as_str()))
                    .collect();
                let children: Vec<(u32, &str, Priority)> = t
                    .children
                    .iter()
                    .map(|&c| {
                        let child = &req.tasks[c as usize];
                        (c, child.capability.as_str(), child.priority)
                    })
                    .collect();
                inv.arg(pack_definition(
                    &t.name,
                    t.max_attempts,
                    t.on_failure.as_deref(),
                    b,
                    &refs,
                    &t.spec_json,
                ))
                .arg(pack_children(&children))
                .arg(t.dependencies.len())
                .arg(&t.capability)
                .arg(t.priority.as_str());
            }
        } else {
            // Ten arguments per task, in submit.lua's order; counts as decimal text
            // (submit.lua writes them to the task's fields as they come: lib.lua's dec()).
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

    /// The layout to write a workflow's tasks in ([`Queue::submit`]): the newest that every
    /// live worker runs — `"packed"` ([`LAYOUT_PACKED`]), else `"fields"`
    /// ([`LAYOUT_FIELDS`]), else `""` (task hashes). A Redis user that may not read the
    /// registry (an ACL older than the registry) cannot tell and gets the packed layout: the
    /// upgrade notes ask for the new ACL lines before the rollout. Once the whole fleet runs
    /// the packed layout the handle does not ask again.
    async fn submit_layout(&self, now_ms: u64) -> Result<&'static str, QueueError> {
        if self.inner.fleet_runs_packed.load(Ordering::Relaxed) {
            return Ok(LAYOUT_PACKED);
        }
        let workers = match self.worker_layouts(now_ms).await {
            Ok(workers) => workers,
            Err(QueueError::NoPermission(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let layout = [LAYOUT_PACKED, LAYOUT_FIELDS]
            .into_iter()
            .find(|l| workers.iter().all(|layouts| runs(layouts, l)))
            .unwrap_or("");
        if layout == LAYOUT_PACKED {
            self.inner.fleet_runs_packed.store(true, Ordering::Relaxed);
        }
        Ok(layout)
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
        Ok(self
            .complete_recorded(d, consumer, result_json, now_ms)
            .await?
            .code)
    }

    /// [`Queue::complete`], also returning the workflow's end when this completion ended it
    /// (the worker records the workflow's duration from it, with no read of its own).
    ///
    /// # Errors
    /// As [`Queue::complete`].
    pub async fn complete_recorded(
        &self,
        d: &Delivery,
        consumer: &str,
        result_json: &str,
        now_ms: u64,
    ) -> Result<Recorded, QueueError> {
        self.check_delivery(d, consumer)?;
        let completion = Completion {
            delivery: d.clone(),
            result_json: result_json.to_owned(),
            now_ms,
        };
        // Group commit (commit.rs): sent with whatever else completes meanwhile.
        let (v, returns, call_size) = match self.commit(consumer, completion).await {
            Ok(Reply::Value(v, returns, call_size)) => (v, returns, call_size),
            Ok(Reply::Error(e)) => return Err(e),
            // The call carrying it could not say how it went, or its sender stopped.
            Ok(Reply::Alone) | Err(_) => {
                let call = self.complete_call(d, consumer, result_json, now_ms);
                (self.invoke(&call).await?, codes::COMPLETE, Some(1))
            }
        };
        Ok(Recorded {
            call_size,
            ..recorded(returns, &v)?
        })
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
        Ok(self.fail_script(d, consumer, req, None).await?.code)
    }

    /// [`Queue::fail`], also returning the workflow's end when this failure ended it (see
    /// [`Queue::complete_recorded`]).
    ///
    /// # Errors
    /// As [`Queue::fail`].
    pub async fn fail_recorded(
        &self,
        d: &Delivery,
        consumer: &str,
        req: &FailRequest,
    ) -> Result<Recorded, QueueError> {
        self.fail_script(d, consumer, req, None).await
    }

    /// Re-queues a task whose attempt never reached the work (no endpoint could take the
    /// call, no service instance was live) at `req.retry_at_ms` **without using an attempt**:
    /// waiting for capacity is backpressure, not failure. The task counts `deferrals`.
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
        Ok(self
            .defer_within_recorded(d, consumer, req, limit)
            .await?
            .code)
    }

    /// [`Queue::defer_within`], also returning the workflow's end when a deferral past its
    /// wait limit failed the task and ended the workflow (see [`Queue::complete_recorded`]).
    ///
    /// # Errors
    /// As [`Queue::defer`].
    pub async fn defer_within_recorded(
        &self,
        d: &Delivery,
        consumer: &str,
        req: &FailRequest,
        limit: Option<&WaitLimit>,
    ) -> Result<Recorded, QueueError> {
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
    ) -> Result<Recorded, QueueError> {
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
        recorded(codes::FAIL, &self.invoke(&inv).await?)
    }

    /// Cancels a running workflow (every unfinished task becomes cancelled): returns
    /// [`ScriptCode::Ok`], [`ScriptCode::AlreadyFinished`] or [`ScriptCode::NotFound`].
    ///
    /// # Errors
    /// Invalid id, Redis errors, or an unexpected script reply.
    pub async fn cancel(&self, workflow_id: &str, now_ms: u64) -> Result<ScriptCode, QueueError> {
        const CTX: &str = "cancel";
        validate_workflow_id(workflow_id)?;
        let k = self.shard_keys(workflow_id);
        let mut inv = self.inner.scripts.cancel.prepare_invoke();
        inv.key(k.workflow(workflow_id))
            .arg(k.prefix())
            .arg(now_ms)
            .arg(self.inner.cfg.events_maxlen)
            .arg(workflow_id);
        codes::CANCEL.parse(reply::int(CTX, &self.invoke(&inv).await?)?)
    }
}

/// Decodes the reply of `complete.lua` or `fail.lua`: a code, or {code, final status,
/// duration ms} from the call that ended the workflow.
fn recorded(returns: Returns, v: &Value) -> Result<Recorded, QueueError> {
    let ctx = returns.script;
    let Value::Array(items) = v else {
        return Ok(Recorded {
            code: returns.parse(reply::int(ctx, v)?)?,
            ended: None,
            call_size: None,
        });
    };
    let [code, status, duration] = items.as_slice() else {
        return Err(QueueError::unexpected(
            ctx,
            format!(
                "expected {{code, status, duration}}, got {} elements",
                items.len()
            ),
        ));
    };
    let duration = reply::int(ctx, duration)?;
    Ok(Recorded {
        code: returns.parse(reply::int(ctx, code)?)?,
        ended: Some(WorkflowEnd {
            status: reply::string(ctx, status)?,
            duration_ms: u64::try_from(duration).map_err(|_| {
                QueueError::unexpected(ctx, format!("negative duration {duration}"))
            })?,
        }),
        call_size: None,
    })
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
            // Fixed fields (the packed definition whole, keys.rs), then the referenced
            // tasks' results in the definition's order.
            const FIXED: usize = 6;
            if items.len() < FIXED {
                return Err(QueueError::unexpected(ctx, format!("{items:?}")));
            }
            let d = reply::string(ctx, &items[1])?;
            let def = parse_definition(&d).ok_or_else(|| {
                QueueError::unexpected(ctx, format!("malformed task definition {d:?}"))
            })?;
            if items.len() - FIXED != def.refs.len() {
                return Err(QueueError::unexpected(
                    ctx,
                    format!(
                        "{} results for {} referenced tasks",
                        items.len() - FIXED,
                        def.refs.len()
                    ),
                ));
            }
            let mut refs = Vec::with_capacity(def.refs.len());
            for ((_, name), result) in def.refs.iter().zip(&items[FIXED..]) {
                let result = reply::opt_string(ctx, result)?.ok_or_else(|| {
                    QueueError::unexpected(ctx, format!("referenced task {name:?} has no result"))
                })?;
                refs.push(((*name).to_owned(), result));
            }
            let count = |what: &str, v: &str| {
                v.parse::<u32>().map_err(|_| {
                    QueueError::unexpected(ctx, format!("{what} {v:?} in task definition"))
                })
            };
            Ok(BeginOutcome::Run(TaskContext {
                name: def.name.to_owned(),
                spec_json: def.spec.to_owned(),
                attempts: reply::u32_of(ctx, &items[2])?,
                max_attempts: count("max_attempts", def.max_attempts)?,
                input_json: reply::string(ctx, &items[3])?,
                refs,
                ready_ms: reply::string(ctx, &items[4])?.parse().ok(),
                deferrals: reply::u32_of(ctx, &items[5])?,
                // 0 for a task submitted before it was recorded.
                chain_below: if def.below.is_empty() {
                    0
                } else {
                    count("below", def.below)?
                },
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
}
