//! Read-only queries for operators and the CLI: workflow and task state, recent
//! workflows, progress events, dead letters, capabilities and stream statistics.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::redis::{self, Value};

use crate::error::QueueError;
use crate::keys::{validate_workflow_id, StreamRef};
use crate::queue::Queue;
use crate::reply;

/// A workflow's state (`{ns}:wf:<wf>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowInfo {
    /// Workflow id.
    pub id: String,
    /// Workflow name.
    pub name: String,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// `fail_fast` or `continue`.
    pub policy: String,
    /// Number of tasks.
    pub total: u32,
    /// Tasks not yet in a terminal status.
    pub open: u32,
    /// Tasks completed.
    pub completed: u32,
    /// Tasks failed.
    pub failed: u32,
    /// Tasks skipped (an ancestor failed under `continue`).
    pub skipped: u32,
    /// Tasks cancelled.
    pub cancelled: u32,
    /// Submission time (ms).
    pub created_ms: u64,
    /// End time (ms), once ended.
    pub finished_ms: Option<u64>,
}

impl WorkflowInfo {
    /// Whether the workflow has ended.
    pub fn is_finished(&self) -> bool {
        self.status != "running"
    }
}

/// One task's state (`{ns}:wf:<wf>:t:<i>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Task index.
    pub index: u32,
    /// Task name.
    pub name: String,
    /// Capability (stream) it is queued on.
    pub capability: String,
    /// `waiting`, `ready`, `running`, `retrying`, `completed`, `failed`, `skipped`,
    /// `cancelled`.
    pub status: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Total attempts allowed.
    pub max_attempts: u32,
    /// The result (JSON text), once completed.
    pub result_json: Option<String>,
    /// The last error (JSON text), after a failed attempt.
    pub error_json: Option<String>,
    /// When it last became ready (ms).
    pub ready_ms: Option<u64>,
    /// When it last began (ms).
    pub started_ms: Option<u64>,
    /// When it reached a terminal status (ms).
    pub finished_ms: Option<u64>,
    /// Times it was re-queued without using an attempt because nothing could take it
    /// (every endpoint busy or rate limited, no live service instance).
    pub deferrals: u32,
}

/// One progress event of a workflow (`{ns}:wf:<wf>:events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Stream entry id; pass the last one seen as `after` to continue.
    pub id: String,
    /// `task` or `workflow`.
    pub kind: String,
    /// Task name (task events).
    pub task: Option<String>,
    /// Task index (task events).
    pub index: Option<u32>,
    /// The new status. Task events: a task status. Workflow events: `submitted`, then the
    /// final `completed`, `failed` or `cancelled`; `running` again after a requeued dead
    /// letter reopened an ended workflow (followed later by a new final status).
    pub status: String,
    /// The attempt the event belongs to (1-based), where it applies.
    pub attempt: Option<u32>,
    /// When it happened (ms).
    pub at_ms: Option<u64>,
}

impl Event {
    /// Whether this event ends the workflow.
    pub fn is_workflow_end(&self) -> bool {
        self.kind == "workflow"
            && matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }
}

/// One dead letter (`{ns}:dead`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Stream entry id.
    pub id: String,
    /// Workflow id.
    pub workflow_id: String,
    /// Task index.
    pub task: u32,
    /// Task name.
    pub name: String,
    /// Capability.
    pub capability: String,
    /// `exhausted` or `poison`.
    pub kind: String,
    /// The error (JSON text) the task failed with.
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// When (ms).
    pub at_ms: u64,
}

/// Counters of one ready stream and its consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// The stream key.
    pub key: String,
    /// Entries in the stream (ready + pending: finished entries are deleted).
    pub length: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Age of the oldest entry not yet delivered, if any (by the Redis clock).
    pub oldest_ready_age_ms: Option<u64>,
    /// Consumers known to the group.
    pub consumers: u64,
}

const WORKFLOW_FIELDS: [&str; 12] = [
    "id",
    "name",
    "status",
    "policy",
    "total",
    "open",
    "completed",
    "failed",
    "skipped",
    "cancelled",
    "created_ms",
    "finished_ms",
];

const TASK_FIELDS: [&str; 11] = [
    "name",
    "cap",
    "status",
    "attempts",
    "max_attempts",
    "result",
    "error",
    "ready_ms",
    "started_ms",
    "finished_ms",
    "deferrals",
];

fn opt_num<T: std::str::FromStr>(
    ctx: reply::Ctx,
    field: &str,
    v: Option<String>,
) -> Result<Option<T>, QueueError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => reply::parse_num(ctx, field, &s).map(Some),
    }
}

fn num<T: std::str::FromStr + Default>(
    ctx: reply::Ctx,
    field: &str,
    v: Option<String>,
) -> Result<T, QueueError> {
    Ok(opt_num(ctx, field, v)?.unwrap_or_default())
}

fn workflow_from(values: Vec<Option<String>>) -> Result<Option<WorkflowInfo>, QueueError> {
    const CTX: &str = "workflow";
    let mut it = values.into_iter();
    let mut next = || it.next().flatten();
    let id = next();
    let Some(id) = id else {
        return Ok(None);
    };
    Ok(Some(WorkflowInfo {
        id,
        name: next().unwrap_or_default(),
        status: next().unwrap_or_default(),
        policy: next().unwrap_or_default(),
        total: num(CTX, "total", next())?,
        open: num(CTX, "open", next())?,
        completed: num(CTX, "completed", next())?,
        failed: num(CTX, "failed", next())?,
        skipped: num(CTX, "skipped", next())?,
        cancelled: num(CTX, "cancelled", next())?,
        created_ms: num(CTX, "created_ms", next())?,
        finished_ms: opt_num(CTX, "finished_ms", next())?,
    }))
}

fn event_from(id: String, fields: Vec<(String, String)>) -> Result<Event, QueueError> {
    const CTX: &str = "events";
    let mut map: HashMap<String, String> = fields.into_iter().collect();
    Ok(Event {
        id,
        kind: map.remove("kind").unwrap_or_default(),
        task: map.remove("task"),
        index: opt_num(CTX, "i", map.remove("i"))?,
        status: map.remove("status").unwrap_or_default(),
        attempt: opt_num(CTX, "attempt", map.remove("attempt"))?,
        at_ms: opt_num(CTX, "ms", map.remove("ms"))?,
    })
}

/// `[[id, [field, value, ...]], ...]` as parsed entries.
fn entries(ctx: reply::Ctx, v: &Value) -> Result<Vec<(String, reply::Fields)>, QueueError> {
    reply::array_or_nil(ctx, v)?
        .iter()
        .map(|e| match reply::array(ctx, e)? {
            [id, fields] => Ok((reply::string(ctx, id)?, reply::field_pairs(ctx, fields)?)),
            items => Err(QueueError::unexpected(ctx, format!("{items:?}"))),
        })
        .collect()
}

fn validate_stream_id(id: &str) -> Result<(), QueueError> {
    let ok = id == "$"
        || match id.split_once('-') {
            Some((a, b)) => is_digits(a) && is_digits(b),
            None => is_digits(id),
        };
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidArgument(format!(
            "{id:?} is not a stream id (use \"0\" to read from the start)"
        )))
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

impl Queue {
    /// A workflow's state; `None` when it does not exist (or expired).
    ///
    /// # Errors
    /// Invalid id, Redis errors, or a malformed hash.
    pub async fn workflow(&self, id: &str) -> Result<Option<WorkflowInfo>, QueueError> {
        validate_workflow_id(id)?;
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys().workflow(id)).arg(&WORKFLOW_FIELDS[..]);
        workflow_from(self.query(&cmd).await?)
    }

    /// Every task's state, in index order; empty when the workflow does not exist.
    ///
    /// # Errors
    /// Invalid id, Redis errors, or a malformed hash.
    pub async fn tasks(&self, id: &str) -> Result<Vec<TaskInfo>, QueueError> {
        const CTX: &str = "tasks";
        validate_workflow_id(id)?;
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.keys().workflow(id)).arg("total");
        let total: Option<String> = self.query(&cmd).await?;
        let total: u32 = num(CTX, "total", total)?;
        if total == 0 {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for i in 0..total {
            pipe.cmd("HMGET")
                .arg(self.keys().task(id, i))
                .arg(&TASK_FIELDS[..]);
        }
        let rows: Vec<Vec<Option<String>>> = self.query_pipe(&pipe).await?;
        rows.into_iter()
            .zip(0..)
            .map(|(row, index)| {
                let mut it = row.into_iter();
                let mut next = || it.next().flatten();
                Ok(TaskInfo {
                    index,
                    name: next().unwrap_or_default(),
                    capability: next().unwrap_or_default(),
                    status: next().unwrap_or_default(),
                    attempts: num(CTX, "attempts", next())?,
                    max_attempts: num(CTX, "max_attempts", next())?,
                    result_json: next(),
                    error_json: next(),
                    ready_ms: opt_num(CTX, "ready_ms", next())?,
                    started_ms: opt_num(CTX, "started_ms", next())?,
                    finished_ms: opt_num(CTX, "finished_ms", next())?,
                    deferrals: opt_num(CTX, "deferrals", next())?.unwrap_or(0),
                })
            })
            .collect()
    }

    /// Up to `limit` workflows, newest first. Index entries of workflows that expired are
    /// removed on the way.
    ///
    /// # Errors
    /// Redis errors or a malformed hash.
    pub async fn list(&self, limit: usize) -> Result<Vec<WorkflowInfo>, QueueError> {
        let mut out = Vec::new();
        let mut start = 0isize;
        let batch = limit.clamp(1, 100) as isize;
        while out.len() < limit {
            let mut cmd = redis::cmd("ZREVRANGE");
            cmd.arg(self.keys().workflows())
                .arg(start)
                .arg(start + batch - 1);
            let ids: Vec<String> = self.query(&cmd).await?;
            if ids.is_empty() {
                break;
            }
            let mut expired = Vec::new();
            for id in &ids {
                // Ids in the index were written by submit; skip anything else.
                let info = match validate_workflow_id(id) {
                    Ok(()) => self.workflow(id).await?,
                    Err(_) => None,
                };
                match info {
                    Some(info) if out.len() < limit => out.push(info),
                    Some(_) => {}
                    None => expired.push(id.clone()),
                }
            }
            if !expired.is_empty() {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(self.keys().workflows()).arg(&expired);
                let _: i64 = self.query(&zrem).await?;
            }
            // Removed entries shift the ranks of the rest down.
            start += batch - expired.len() as isize;
        }
        Ok(out)
    }

    /// Progress events after stream id `after` (`"0"` for all), at most 1000. With a
    /// non-zero `block` it waits up to that long for the first event (blocking XREAD on a
    /// connection of its own) and returns an empty list on timeout.
    ///
    /// # Errors
    /// Invalid id, Redis errors, or a malformed reply.
    pub async fn events(
        &self,
        id: &str,
        after: &str,
        block: Duration,
    ) -> Result<Vec<Event>, QueueError> {
        const CTX: &str = "events";
        validate_workflow_id(id)?;
        validate_stream_id(after)?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(1000);
        let v: Value = if block.is_zero() {
            cmd.arg("STREAMS").arg(self.keys().events(id)).arg(after);
            self.query(&cmd).await?
        } else {
            let ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
            cmd.arg("BLOCK")
                .arg(ms)
                .arg("STREAMS")
                .arg(self.keys().events(id))
                .arg(after);
            let mut conn = self.dedicated().await?;
            let budget = block + self.config().response_timeout;
            match tokio::time::timeout(budget, cmd.query_async::<Value>(&mut conn)).await {
                Ok(res) => res?,
                Err(_) => return Err(QueueError::Timeout(budget)),
            }
        };
        let streams: Vec<&Value> = match &v {
            Value::Nil => Vec::new(),
            Value::Map(pairs) => pairs.iter().map(|(_, v)| v).collect(),
            other => reply::array(CTX, other)?
                .iter()
                .map(|s| match reply::array(CTX, s)? {
                    [_, v] => Ok(v),
                    items => Err(QueueError::unexpected(CTX, format!("{items:?}"))),
                })
                .collect::<Result<_, _>>()?,
        };
        let mut out = Vec::new();
        for s in streams {
            for (eid, fields) in entries(CTX, s)? {
                out.push(event_from(eid, fields)?);
            }
        }
        Ok(out)
    }

    /// The newest `limit` dead letters, newest first.
    ///
    /// # Errors
    /// Redis errors or a malformed entry.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        const CTX: &str = "dead_letters";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(self.keys().dead())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit);
        let v: Value = self.query(&cmd).await?;
        entries(CTX, &v)?
            .into_iter()
            .map(|(id, fields)| dead_letter_from(id, fields))
            .collect()
    }

    /// Every capability that has had a stream, sorted.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn capabilities(&self) -> Result<Vec<String>, QueueError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.keys().caps());
        let mut caps: Vec<String> = self.query(&cmd).await?;
        caps.sort();
        Ok(caps)
    }

    /// Length, pending count, age of the oldest undelivered entry and consumer count of
    /// one stream (zeros for a stream or group that does not exist yet).
    ///
    /// # Errors
    /// Redis errors or a malformed reply.
    pub async fn stream_stats(&self, stream: &StreamRef) -> Result<StreamStats, QueueError> {
        const CTX: &str = "stream_stats";
        let group = &self.config().group;
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(&stream.key);
        pipe.cmd("TIME");
        let (length, time): (u64, (u64, u64)) = self.query_pipe(&pipe).await?;
        let now_ms = time.0 * 1000 + time.1 / 1000;

        let mut info = redis::cmd("XINFO");
        info.arg("GROUPS").arg(&stream.key);
        let groups: Value = match self.query(&info).await {
            Ok(v) => v,
            // "no such key": the stream does not exist yet.
            Err(QueueError::Redis(err))
                if err.kind()
                    == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                Value::Nil
            }
            Err(err) => return Err(err),
        };
        let mut pending = 0;
        let mut consumers = 0;
        let mut last_delivered = None;
        for g in reply::array_or_nil(CTX, &groups)? {
            let fields: HashMap<String, Value> = match g {
                Value::Map(pairs) => pairs
                    .iter()
                    .map(|(k, v)| Ok((reply::string(CTX, k)?, v.clone())))
                    .collect::<Result<_, QueueError>>()?,
                other => reply::array(CTX, other)?
                    .chunks(2)
                    .filter(|kv| kv.len() == 2)
                    .map(|kv| Ok((reply::string(CTX, &kv[0])?, kv[1].clone())))
                    .collect::<Result<_, QueueError>>()?,
            };
            let name = fields
                .get("name")
                .map(|v| reply::string(CTX, v))
                .transpose()?;
            if name.as_deref() == Some(group.as_str()) {
                pending = fields
                    .get("pending")
                    .map(|v| reply::u64_of(CTX, v))
                    .transpose()?
                    .unwrap_or(0);
                consumers = fields
                    .get("consumers")
                    .map(|v| reply::u64_of(CTX, v))
                    .transpose()?
                    .unwrap_or(0);
                last_delivered = fields
                    .get("last-delivered-id")
                    .map(|v| reply::string(CTX, v))
                    .transpose()?;
            }
        }
        // The oldest entry after the group's last delivered id has not been delivered yet.
        let mut first = redis::cmd("XRANGE");
        first
            .arg(&stream.key)
            .arg(match &last_delivered {
                Some(id) => format!("({id}"),
                None => "-".to_owned(),
            })
            .arg("+")
            .arg("COUNT")
            .arg(1);
        let v: Value = self.query(&first).await?;
        let oldest_ready_age_ms = match entries(CTX, &v)?.first() {
            Some((id, _)) => {
                let ms: u64 =
                    reply::parse_num(CTX, "entry id", id.split('-').next().unwrap_or(""))?;
                Some(now_ms.saturating_sub(ms))
            }
            None => None,
        };
        Ok(StreamStats {
            key: stream.key.clone(),
            length,
            pending,
            oldest_ready_age_ms,
            consumers,
        })
    }
}

/// What the fleet publishes about one LLM endpoint (see [`Queue::endpoint_states`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointState {
    /// The endpoint's configured name.
    pub name: String,
    /// `(worker id, JSON view)` of `{ns}:ep:<name>:health`, sorted by worker id.
    pub health: Vec<(String, String)>,
    /// The fields of `{ns}:ep:<name>:models` (`loaded`, `pulled`, `updated_ms`, …).
    pub models: HashMap<String, String>,
    /// In-flight calls across the fleet: live members of `{ns}:ep:<name>:leases`.
    pub live_leases: u64,
}

/// Per-capability counts of the retry set and the dead letters (see
/// [`Queue::backlog_by_capability`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilityBacklog {
    /// Tasks waiting in `{ns}:delayed` for their next attempt.
    pub delayed: u64,
    /// Dead letters.
    pub dead: u64,
}

fn dead_letter_from(id: String, fields: reply::Fields) -> Result<DeadLetter, QueueError> {
    const CTX: &str = "dead_letters";
    let mut m: HashMap<String, String> = fields.into_iter().collect();
    Ok(DeadLetter {
        id,
        workflow_id: m.remove("wf").unwrap_or_default(),
        task: num(CTX, "task", m.remove("task"))?,
        name: m.remove("name").unwrap_or_default(),
        capability: m.remove("cap").unwrap_or_default(),
        kind: m.remove("kind").unwrap_or_default(),
        reason: m.remove("reason").unwrap_or_default(),
        attempts: num(CTX, "attempts", m.remove("attempts"))?,
        at_ms: num(CTX, "at_ms", m.remove("at_ms"))?,
    })
}

// Operations from the command line: single dead letters, counts, paging.
impl Queue {
    /// One dead letter by its entry id; `None` when there is none.
    ///
    /// # Errors
    /// An id that is not a stream entry id, Redis errors, or a malformed entry.
    pub async fn dead_letter(&self, entry_id: &str) -> Result<Option<DeadLetter>, QueueError> {
        const CTX: &str = "dead_letter";
        crate::queue::validate_entry_id(entry_id)?;
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.keys().dead()).arg(entry_id).arg(entry_id);
        let v: Value = self.query(&cmd).await?;
        entries(CTX, &v)?
            .into_iter()
            .next()
            .map(|(id, fields)| dead_letter_from(id, fields))
            .transpose()
    }

    /// Up to `count` dead letters after entry id `after` (exclusive; `None` from the
    /// start), oldest first: pages through every dead letter.
    ///
    /// # Errors
    /// An invalid id, Redis errors, or a malformed entry.
    pub async fn dead_letters_after(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        const CTX: &str = "dead_letters";
        if count == 0 {
            return Ok(Vec::new());
        }
        let start = match after {
            Some(id) => {
                crate::queue::validate_entry_id(id)?;
                format!("({id}")
            }
            None => "-".to_owned(),
        };
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.keys().dead())
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count);
        let v: Value = self.query(&cmd).await?;
        entries(CTX, &v)?
            .into_iter()
            .map(|(id, fields)| dead_letter_from(id, fields))
            .collect()
    }

    /// A task's definition as submitted (the spec JSON text); `None` when the task does not
    /// exist.
    ///
    /// # Errors
    /// Invalid id or Redis errors.
    pub async fn task_spec(&self, id: &str, index: u32) -> Result<Option<String>, QueueError> {
        validate_workflow_id(id)?;
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.keys().task(id, index)).arg("spec");
        self.query(&cmd).await
    }

    /// What the fleet publishes about every LLM endpoint (docs/routing.md, "Shared endpoint
    /// state"), raw: the per-worker health views (JSON text, opaque here), the `models` hash
    /// and the number of live leases (score after `now_ms`). Sorted by name.
    ///
    /// # Errors
    /// Redis errors or a malformed reply.
    pub async fn endpoint_states(&self, now_ms: u64) -> Result<Vec<EndpointState>, QueueError> {
        const CTX: &str = "endpoint_states";
        let k = self.keys();
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(k.endpoints());
        let mut names: Vec<String> = self.query(&cmd).await?;
        names.sort();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HGETALL").arg(k.endpoint_health(name));
            pipe.cmd("HGETALL").arg(k.endpoint_models(name));
            pipe.cmd("ZCOUNT")
                .arg(k.endpoint_leases(name))
                .arg(format!("({now_ms}"))
                .arg("+inf");
        }
        let rows: Vec<Value> = self.query_pipe(&pipe).await?;
        let hash = |v: &Value| -> Result<Vec<(String, String)>, QueueError> {
            match v {
                Value::Map(pairs) => pairs
                    .iter()
                    .map(|(f, v)| Ok((reply::string(CTX, f)?, reply::string(CTX, v)?)))
                    .collect(),
                other => reply::field_pairs(CTX, other),
            }
        };
        names
            .into_iter()
            .zip(rows.chunks(3))
            .map(|(name, row)| {
                let [health, models, leases] = row else {
                    return Err(QueueError::unexpected(CTX, format!("{row:?}")));
                };
                let mut health = hash(health)?;
                health.sort();
                Ok(EndpointState {
                    name,
                    health,
                    models: hash(models)?.into_iter().collect(),
                    live_leases: reply::u64_of(CTX, leases)?,
                })
            })
            .collect()
    }

    /// Number of dead letters and number of tasks waiting for a retry.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn dead_and_delayed_counts(&self) -> Result<(u64, u64), QueueError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(self.keys().dead());
        pipe.cmd("ZCARD").arg(self.keys().delayed());
        self.query_pipe(&pipe).await
    }

    /// Retry-set and dead-letter counts per capability. Reads every member of
    /// `{ns}:delayed` (with its task's capability) and every dead letter, in pages: meant for
    /// an operator's occasional look, not for a hot path.
    ///
    /// # Errors
    /// Redis errors or a malformed entry.
    pub async fn backlog_by_capability(
        &self,
    ) -> Result<HashMap<String, CapabilityBacklog>, QueueError> {
        const PAGE: usize = 1000;
        let mut out: HashMap<String, CapabilityBacklog> = HashMap::new();
        let mut after = None;
        loop {
            let page = self.dead_letters_after(after.as_deref(), PAGE).await?;
            for d in &page {
                out.entry(d.capability.clone()).or_default().dead += 1;
            }
            if page.len() < PAGE {
                break;
            }
            after = page.last().map(|d| d.id.clone());
        }
        let mut start = 0usize;
        loop {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(self.keys().delayed())
                .arg(start)
                .arg(start + PAGE - 1);
            let members: Vec<String> = self.query(&cmd).await?;
            let refs: Vec<(&str, u32)> = members
                .iter()
                .filter_map(|m| m.rsplit_once('|'))
                .filter(|(wf, _)| validate_workflow_id(wf).is_ok())
                .filter_map(|(wf, i)| Some((wf, i.parse::<u32>().ok()?)))
                .collect();
            if !refs.is_empty() {
                let mut pipe = redis::pipe();
                for (wf, i) in &refs {
                    pipe.cmd("HGET").arg(self.keys().task(wf, *i)).arg("cap");
                }
                let caps: Vec<Option<String>> = self.query_pipe(&pipe).await?;
                for cap in caps.into_iter().flatten() {
                    out.entry(cap).or_default().delayed += 1;
                }
            }
            if members.len() < PAGE {
                break;
            }
            start += PAGE;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_validation() {
        for ok in ["0", "0-0", "$", "1700000000000-5"] {
            assert!(validate_stream_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-", "abc", "1-", "+", ">"] {
            assert!(validate_stream_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workflow_parsing() {
        let row = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_owned)).collect::<Vec<_>>();
        assert_eq!(workflow_from(row(&[None; 12])).unwrap(), None);
        let info = workflow_from(row(&[
            Some("w"),
            Some("n"),
            Some("running"),
            Some("continue"),
            Some("3"),
            Some("2"),
            Some("1"),
            Some("0"),
            Some("0"),
            Some("0"),
            Some("5"),
            None,
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(info.total, 3);
        assert_eq!(info.open, 2);
        assert_eq!(info.finished_ms, None);
        assert!(!info.is_finished());
        assert!(workflow_from(row(&[
            Some("w"),
            None,
            None,
            None,
            Some("x"),
            None,
            None,
            None,
            None,
            None,
            None,
            None
        ]))
        .is_err());
    }

    #[test]
    fn event_parsing() {
        let e = event_from(
            "1-0".into(),
            vec![
                ("kind".into(), "workflow".into()),
                ("status".into(), "failed".into()),
                ("ms".into(), "9".into()),
            ],
        )
        .unwrap();
        assert!(e.is_workflow_end());
        assert_eq!(e.at_ms, Some(9));
        assert_eq!(e.task, None);
        let e = event_from(
            "1-1".into(),
            vec![
                ("kind".into(), "task".into()),
                ("task".into(), "A".into()),
                ("i".into(), "0".into()),
                ("status".into(), "completed".into()),
                ("attempt".into(), "2".into()),
            ],
        )
        .unwrap();
        assert!(!e.is_workflow_end());
        assert_eq!(e.attempt, Some(2));
        assert_eq!(e.index, Some(0));
    }
}
