//! Workflow status and results: a workflow's record, its tasks (state, result, error), the
//! recent workflows, progress events and a task's submitted definition.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::redis::{self, Value};
use serde::{Deserialize, Serialize};

use crate::codes::{self, ScriptCode};
use crate::error::QueueError;
use crate::keys::{validate_workflow_id, Keys, LAYOUT_FIELD};
use crate::layout::{TaskLayout, TaskReads};
use crate::queue::{is_digits, Queue};
use crate::reply::{self, entries, num, opt_num};

/// A workflow's state (`{ns}:wf:<wf>`). Serialised as it is (field names and values), which
/// is the workflow document of the CLI's `status --json`, `list --json` and `dead inspect
/// --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Tasks that reached a terminal status.
    pub fn done(&self) -> u32 {
        self.total.saturating_sub(self.open)
    }
}

/// One task's state (its `<i>.<field>` fields of `{ns}:wf:<wf>`, or the hash
/// `{ns}:wf:<wf>:t:<i>` of a workflow written by an earlier version).
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
    /// Why a `skipped` or `cancelled` task never ran (the upstream failure, the failure
    /// policy, a cancel request), written when the task was closed.
    pub reason: Option<String>,
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
    /// A `retrying` that used no attempt: nothing could take the task (endpoints down,
    /// overloaded or rate limited, no service instance), so it waits.
    pub deferred: bool,
}

impl Event {
    /// Whether this event ends the workflow.
    pub fn is_workflow_end(&self) -> bool {
        self.kind == "workflow"
            && matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }
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

const TASK_FIELDS: [&str; 12] = [
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
    "reason",
];

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
        deferred: map.remove("deferred").is_some_and(|v| v == "1"),
    })
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

impl Queue {
    /// A workflow's state; `None` when it does not exist (or expired).
    ///
    /// # Errors
    /// Invalid id, Redis errors, or a malformed hash.
    pub async fn workflow(&self, id: &str) -> Result<Option<WorkflowInfo>, QueueError> {
        validate_workflow_id(id)?;
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.shard_keys(id).workflow(id))
            .arg(&WORKFLOW_FIELDS[..]);
        workflow_from(self.query(&cmd).await?)
    }

    /// Every task's state, in index order; empty when the workflow does not exist.
    ///
    /// # Errors
    /// Invalid id, Redis errors, or a malformed hash.
    pub async fn tasks(&self, id: &str) -> Result<Vec<TaskInfo>, QueueError> {
        const CTX: &str = "tasks";
        validate_workflow_id(id)?;
        let k = self.shard_keys(id);
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(k.workflow(id)).arg("total").arg(LAYOUT_FIELD);
        let (total, layout): (Option<String>, Option<String>) = self.query(&cmd).await?;
        let total: u32 = num(CTX, "total", total)?;
        if total == 0 {
            return Ok(Vec::new());
        }
        let layout = TaskLayout::of(id, layout.as_deref())?;
        let mut pipe = redis::pipe();
        for i in 0..total {
            layout.hmget(&mut pipe, k, id, i, &TASK_FIELDS);
        }
        let rows: Vec<Vec<Option<String>>> = self.query_pipe(&pipe).await?;
        rows.into_iter()
            .zip(0..)
            .map(|(row, index)| {
                let mut it = layout.values(&TASK_FIELDS, row).into_iter();
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
                    reason: next().filter(|r| !r.is_empty()),
                })
            })
            .collect()
    }

    /// Up to `limit` workflows, newest first (over every shard). Index entries of
    /// workflows that expired are removed on the way.
    ///
    /// # Errors
    /// Redis errors or a malformed hash.
    pub async fn list(&self, limit: usize) -> Result<Vec<WorkflowInfo>, QueueError> {
        let mut all = Vec::new();
        for k in self.shards() {
            all.extend(self.list_in(k, limit).await?);
        }
        all.sort_by(|a, b| {
            b.created_ms
                .cmp(&a.created_ms)
                .then_with(|| b.id.cmp(&a.id))
        });
        all.truncate(limit);
        Ok(all)
    }

    /// [`Queue::list`] in one shard.
    async fn list_in(&self, k: &Keys, limit: usize) -> Result<Vec<WorkflowInfo>, QueueError> {
        let mut out = Vec::new();
        let mut start = 0isize;
        let batch = limit.clamp(1, 100) as isize;
        while out.len() < limit {
            let mut cmd = redis::cmd("ZREVRANGE");
            cmd.arg(k.workflows()).arg(start).arg(start + batch - 1);
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
                zrem.arg(k.workflows()).arg(&expired);
                let _: i64 = self.query(&zrem).await?;
            }
            // Removed entries shift the ranks of the rest down.
            start += batch - expired.len() as isize;
        }
        Ok(out)
    }

    /// Asks for every transition of workflow `id` as an event for the next `ttl` (a watcher
    /// renews it while it follows the workflow): without it only the workflow's own events
    /// are written. Call it before reading the workflow's state, so that every
    /// transition after that read is an event. Harmless for an unknown id (the key expires).
    ///
    /// # Errors
    /// Invalid id, Redis errors (a role without write access to workflows is refused).
    pub async fn watch(&self, id: &str, ttl: Duration) -> Result<(), QueueError> {
        validate_workflow_id(id)?;
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let k = self.shard_keys(id);
        let mut inv = self.inner.scripts.watch.prepare_invoke();
        inv.key(k.workflow(id))
            .key(k.watch(id))
            .arg(k.prefix())
            .arg(ms);
        let v = self.invoke(&inv).await?;
        match codes::WATCH.parse(reply::int("watch", &v)?)? {
            // An unknown id is harmless: only its expiring key was set.
            ScriptCode::Ok | ScriptCode::NotFound => Ok(()),
            other => Err(codes::WATCH.unexpected(other)),
        }
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
            cmd.arg("STREAMS")
                .arg(self.shard_keys(id).events(id))
                .arg(after);
            self.query(&cmd).await?
        } else {
            let ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
            cmd.arg("BLOCK")
                .arg(ms)
                .arg("STREAMS")
                .arg(self.shard_keys(id).events(id))
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

    /// A task's definition as submitted (the spec JSON text); `None` when the task does not
    /// exist.
    ///
    /// # Errors
    /// Invalid id or Redis errors.
    pub async fn task_spec(&self, id: &str, index: u32) -> Result<Option<String>, QueueError> {
        validate_workflow_id(id)?;
        // Both layouts in one round trip; only the workflow's own layout can hold the field.
        let mut reads = TaskReads::new(&["spec"]);
        reads.push(self.shard_keys(id), id, index);
        let spec: Vec<(Option<String>,)> = reads.run(self).await?;
        Ok(spec.into_iter().next().and_then(|(spec,)| spec))
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
