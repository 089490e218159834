//! Operator actions and the worker registry: requeueing and purging dead letters (what
//! `gleitzeit-submit dead …` runs), and publishing / removing a worker's registry record
//! (what each worker writes and `gleitzeit-submit fleet` reads).
//!
//! Requeue is one atomic script (`lua/requeue.lua`): the task goes back to its stream, the
//! tasks its failure closed are reopened and the workflow runs again, or nothing changes.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::redis::{self, Value};

use crate::codes::{self, ScriptCode};
use crate::error::QueueError;
use crate::keys::Keys;
use crate::queue::{validate_consumer, Queue};
use crate::reply;

/// What [`Queue::requeue_dead`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequeueOutcome {
    /// The script's verdict: [`ScriptCode::Ok`] (requeued) is the only one that changed
    /// anything; refusals are [`ScriptCode::NotFound`] (no such dead letter),
    /// [`ScriptCode::Expired`], [`ScriptCode::Cancelled`] and [`ScriptCode::NotFailed`].
    pub code: ScriptCode,
    /// The dead letter's workflow, when the dead letter exists.
    pub workflow_id: Option<String>,
    /// The dead letter's task index, when the dead letter exists.
    pub task: Option<u32>,
    /// Tasks (besides the requeued one) reopened because the failure had closed them.
    pub reopened: u32,
    /// Whether the workflow had ended and runs again.
    pub workflow_reopened: bool,
}

/// One worker process as the registry describes it (`{ns}:worker:<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerRecord {
    /// The worker's consumer id (`<host>-<pid>-<random>`).
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Worker version.
    pub version: String,
    /// `running`, or `draining` after shutdown began.
    pub state: String,
    /// When the process started (ms).
    pub started_ms: u64,
    /// When the record was last written (ms).
    pub updated_ms: u64,
    /// When the record expires unless refreshed (ms); set by the writer from the TTL.
    pub expires_ms: u64,
    /// Execution slots.
    pub concurrency: u32,
    /// Tasks executing now.
    pub in_flight: u32,
    /// Capabilities the worker reads.
    pub capabilities: Vec<String>,
    /// The capability patterns it is configured with (`llm:*`): what it will read once such a
    /// capability appears. Empty from workers older than this field.
    pub patterns: Vec<String>,
    /// Tasks completed since start.
    pub completed: u64,
    /// Tasks failed terminally since start.
    pub failed: u64,
    /// Failed attempts scheduled for a retry since start.
    pub retried: u64,
    /// Tasks deferred (no endpoint or instance free) since start.
    pub deferred: u64,
    /// The task layouts the worker runs besides task hashes ([`crate::keys::LAYOUT_PACKED`],
    /// [`crate::keys::LAYOUT_FIELDS`]): a submitter writes a workflow's tasks in a layout
    /// only when every live worker runs it ([`Queue::submit`]). Empty from workers older
    /// than the fields layout, which run task hashes only.
    pub layouts: Vec<String>,
}

impl WorkerRecord {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("host", self.host.clone()),
            ("pid", self.pid.to_string()),
            ("version", self.version.clone()),
            ("state", self.state.clone()),
            ("started_ms", self.started_ms.to_string()),
            ("updated_ms", self.updated_ms.to_string()),
            ("expires_ms", self.expires_ms.to_string()),
            ("concurrency", self.concurrency.to_string()),
            ("in_flight", self.in_flight.to_string()),
            (
                "capabilities",
                serde_json::to_string(&self.capabilities).unwrap_or_else(|_| "[]".to_owned()),
            ),
            (
                "patterns",
                serde_json::to_string(&self.patterns).unwrap_or_else(|_| "[]".to_owned()),
            ),
            ("completed", self.completed.to_string()),
            ("failed", self.failed.to_string()),
            ("retried", self.retried.to_string()),
            ("deferred", self.deferred.to_string()),
            (
                "layouts",
                serde_json::to_string(&self.layouts).unwrap_or_else(|_| "[]".to_owned()),
            ),
        ]
    }

    /// Parses a registry hash; numbers that do not parse read as 0 (the record is advisory).
    pub(crate) fn from_hash(id: &str, mut m: HashMap<String, String>) -> WorkerRecord {
        fn n<T: std::str::FromStr + Default>(m: &mut HashMap<String, String>, f: &str) -> T {
            m.remove(f).and_then(|v| v.parse().ok()).unwrap_or_default()
        }
        WorkerRecord {
            id: id.to_owned(),
            host: m.remove("host").unwrap_or_default(),
            pid: n(&mut m, "pid"),
            version: m.remove("version").unwrap_or_default(),
            state: m.remove("state").unwrap_or_default(),
            started_ms: n(&mut m, "started_ms"),
            updated_ms: n(&mut m, "updated_ms"),
            expires_ms: n(&mut m, "expires_ms"),
            concurrency: n(&mut m, "concurrency"),
            in_flight: n(&mut m, "in_flight"),
            capabilities: m
                .remove("capabilities")
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default(),
            patterns: m
                .remove("patterns")
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default(),
            completed: n(&mut m, "completed"),
            failed: n(&mut m, "failed"),
            retried: n(&mut m, "retried"),
            deferred: n(&mut m, "deferred"),
            layouts: layouts_of(m.remove("layouts")),
        }
    }

    /// Whether the worker runs workflows whose tasks are stored in layout `layout`
    /// ([`crate::keys::LAYOUT_PACKED`], [`crate::keys::LAYOUT_FIELDS`]).
    pub fn runs_layout(&self, layout: &str) -> bool {
        runs(&self.layouts, layout)
    }
}

/// A registry record's `layouts` (JSON list); none when absent (a worker of a version before
/// them runs task hashes only) or unreadable.
fn layouts_of(value: Option<String>) -> Vec<String> {
    value
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default()
}

/// Whether `layouts` (a registry record's) lists `layout`.
pub(crate) fn runs(layouts: &[String], layout: &str) -> bool {
    layouts.iter().any(|l| l == layout)
}

impl Queue {
    /// Requeues the task of dead letter `entry_id` (see `lua/requeue.lua`): ready again with
    /// attempts reset, the tasks its failure skipped or cancelled reopened, the workflow
    /// running again, the dead letter deleted. Refusals change nothing and are reported in
    /// [`RequeueOutcome::code`].
    ///
    /// # Errors
    /// An id that is not a stream entry id, Redis errors, or an unexpected reply.
    pub async fn requeue_dead(
        &self,
        entry_id: &str,
        now_ms: u64,
    ) -> Result<RequeueOutcome, QueueError> {
        const CTX: &str = "requeue";
        let (shard, entry_id) = self.dead_ref(entry_id)?;
        let k = &self.shards()[shard];
        let mut inv = self.inner.scripts.requeue.prepare_invoke();
        inv.key(k.dead())
            .arg(k.prefix())
            .arg(entry_id)
            .arg(now_ms)
            .arg(self.config().events_maxlen);
        let v = self.invoke(&inv).await?;
        let items = reply::array(CTX, &v)?;
        let [code, wf, task, reopened, ended] = items else {
            return Err(QueueError::unexpected(CTX, format!("{items:?}")));
        };
        let code = codes::REQUEUE.parse(reply::int(CTX, code)?)?;
        let wf = reply::string(CTX, wf)?;
        let task = reply::int(CTX, task)?;
        Ok(RequeueOutcome {
            code,
            workflow_id: (!wf.is_empty()).then_some(wf),
            task: u32::try_from(task).ok(),
            reopened: reply::u32_of(CTX, reopened)?,
            workflow_reopened: reply::int(CTX, ended)? == 1,
        })
    }

    /// Deletes these dead letters (and nothing else); returns how many existed.
    ///
    /// # Errors
    /// An id that is not a stream entry id, or Redis errors.
    pub async fn purge_dead(&self, entry_ids: &[String]) -> Result<u64, QueueError> {
        if entry_ids.is_empty() {
            return Ok(0);
        }
        let mut by_shard: Vec<Vec<&str>> = vec![Vec::new(); self.shards().len()];
        for id in entry_ids {
            let (shard, entry) = self.dead_ref(id)?;
            by_shard[shard].push(entry);
        }
        let mut deleted = 0;
        for (k, ids) in self.shards().iter().zip(by_shard) {
            if ids.is_empty() {
                continue;
            }
            let mut cmd = redis::cmd("XDEL");
            cmd.arg(k.dead()).arg(ids);
            deleted += self.query::<u64>(&cmd).await?;
        }
        Ok(deleted)
    }

    /// Deletes every dead letter (the whole `{ns}:dead` stream); returns how many there were.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn purge_all_dead(&self) -> Result<u64, QueueError> {
        let mut total = 0;
        for k in self.shards() {
            let mut pipe = redis::pipe();
            // Atomic: a dead letter written in between is either counted and deleted, or
            // kept.
            pipe.atomic()
                .cmd("XLEN")
                .arg(k.dead())
                .cmd("DEL")
                .arg(k.dead())
                .ignore();
            let (n,): (u64,) = self.query_pipe(&pipe).await?;
            total += n;
        }
        Ok(total)
    }

    /// Writes (or refreshes) a worker's registry record: the hash `{ns}:worker:<id>` and its
    /// member of `{ns}:workers`, both expiring after `ttl`; members that expired earlier are
    /// dropped from the set on the way. `record.updated_ms` is taken as now.
    ///
    /// # Errors
    /// An invalid worker id, a zero TTL, or Redis errors.
    pub async fn publish_worker(
        &self,
        record: &WorkerRecord,
        ttl: Duration,
    ) -> Result<(), QueueError> {
        validate_consumer(&record.id)?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(QueueError::InvalidArgument(
                "worker registry TTL must be positive".to_owned(),
            ));
        }
        let mut record = record.clone();
        record.expires_ms = record.updated_ms.saturating_add(ttl_ms);
        let k = self.spread_keys().await?;
        let hash = k.worker(&record.id);
        let mut index = redis::pipe();
        index
            .atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(k.workers())
            .arg("-inf")
            .arg(format!("({}", record.updated_ms))
            .ignore()
            .cmd("ZADD")
            .arg(k.workers())
            .arg(record.expires_ms)
            .arg(&record.id)
            .ignore();
        let mut own = redis::pipe();
        own.atomic()
            .cmd("HSET")
            .arg(&hash)
            .arg(record.fields())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&hash)
            .arg(ttl_ms)
            .ignore();
        self.index_and_own(k, index, own).await
    }

    /// Removes a worker's registry record (on clean shutdown).
    ///
    /// # Errors
    /// An invalid worker id, or Redis errors.
    pub async fn remove_worker(&self, id: &str) -> Result<(), QueueError> {
        validate_consumer(id)?;
        let k = self.spread_keys().await?;
        let mut index = redis::pipe();
        index.atomic().cmd("ZREM").arg(k.workers()).arg(id).ignore();
        let mut own = redis::pipe();
        own.atomic().cmd("DEL").arg(k.worker(id)).ignore();
        self.index_and_own(k, index, own).await
    }

    /// Writes a registry change: the home index's commands and the record's own, in one
    /// transaction while the record shares the home slot, else one transaction each (the
    /// record first: a reader that finds an id in the index without its record skips it).
    async fn index_and_own(
        &self,
        keys: &Keys,
        index: redis::Pipeline,
        mut own: redis::Pipeline,
    ) -> Result<(), QueueError> {
        if keys.is_spread() {
            let _: () = self.query_pipe(&own).await?;
            let _: () = self.query_pipe(&index).await?;
        } else {
            for c in index.cmd_iter() {
                own.add_command(c.clone()).ignore();
            }
            let _: () = self.query_pipe(&own).await?;
        }
        Ok(())
    }

    /// The task layouts each live worker runs (its record's `layouts`, [`WorkerRecord`]):
    /// what [`Queue::submit`] asks the registry, two fields per worker instead of its
    /// whole record. A record without `layouts` (a worker of a version before them) runs
    /// none; a record that expired between the two reads (no `state` either, which every
    /// version writes) is left out.
    ///
    /// # Errors
    /// Redis errors ([`QueueError::NoPermission`] for a user that may not read the
    /// registry).
    pub(crate) async fn worker_layouts(&self, now_ms: u64) -> Result<Vec<Vec<String>>, QueueError> {
        let ids = self.live_worker_ids(now_ms).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let rows: Vec<(Option<String>, Option<String>)> = self
            .per_name_one(&refs, "worker layouts", |k, id, pipe| {
                pipe.cmd("HMGET")
                    .arg(k.worker(id))
                    .arg("state")
                    .arg("layouts");
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter(|(state, _)| state.is_some())
            .map(|(_, layouts)| layouts_of(layouts))
            .collect())
    }

    /// The ids of the registry's live workers (expiry after `now_ms`), sorted.
    async fn live_worker_ids(&self, now_ms: u64) -> Result<Vec<String>, QueueError> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.keys().workers())
            .arg(format!("({now_ms}"))
            .arg("+inf");
        let mut ids: Vec<String> = self.query(&cmd).await?;
        ids.sort();
        Ok(ids)
    }

    /// The live workers of the registry (expiry after `now_ms`), sorted by id.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn workers(&self, now_ms: u64) -> Result<Vec<WorkerRecord>, QueueError> {
        const CTX: &str = "workers";
        let ids = self.live_worker_ids(now_ms).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let rows = self
            .per_name(&refs, |k, id, pipe| {
                pipe.cmd("HGETALL").arg(k.worker(id));
            })
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, row) in ids.iter().zip(rows) {
            let fields: HashMap<String, String> = match &row {
                Value::Map(pairs) => pairs
                    .iter()
                    .map(|(f, v)| Ok((reply::string(CTX, f)?, reply::string(CTX, v)?)))
                    .collect::<Result<_, QueueError>>()?,
                other => reply::field_pairs(CTX, other)?.into_iter().collect(),
            };
            // The hash expired between the two reads: the worker is gone.
            if fields.is_empty() {
                continue;
            }
            out.push(WorkerRecord::from_hash(id, fields));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{
        test_queue, test_request, test_statuses as statuses, test_task as task, BeginOutcome,
        DeadLetterKind, FailRequest,
    };

    /// fail_fast: A fails while B runs; C (after B) is cancelled; B then completes under the
    /// failed workflow, which releases nothing. Requeueing A must recompute C's pending count
    /// from its dependencies (B completed), so C is ready at once instead of waiting forever.
    #[tokio::test]
    async fn requeue_after_fail_fast_reopens_cancelled_tasks_with_true_pending_counts() {
        let (_redis, q) = test_queue().await;
        let wf = "wf-late";
        let req = test_request(
            wf,
            "fail_fast",
            vec![
                task("A", &[], &[]),
                task("B", &[], &[2]),
                task("C", &[1], &[]),
            ],
        );
        q.submit(&req).await.unwrap();
        let mut c = q.consumer("t").unwrap();
        let streams = q.keys().stream_refs("llm:m");
        let ds = c.read(&streams, 10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(ds.len(), 2);
        for d in &ds {
            assert!(matches!(
                q.begin(d, "t", 2).await.unwrap(),
                BeginOutcome::Run(_)
            ));
        }
        let (a, b) = if ds[0].task == 0 {
            (&ds[0], &ds[1])
        } else {
            (&ds[1], &ds[0])
        };
        let fail = FailRequest {
            error_json: "{}".to_owned(),
            retry_at_ms: None,
            dead_letter: Some(DeadLetterKind::Poison),
            now_ms: 3,
        };
        assert_eq!(q.fail(a, "t", &fail).await.unwrap(), ScriptCode::Failed);
        assert_eq!(statuses(&q, wf).await, ["failed", "running", "cancelled"]);
        assert_eq!(q.complete(b, "t", "{}", 4).await.unwrap(), ScriptCode::Ok);
        assert_eq!(q.workflow(wf).await.unwrap().unwrap().status, "failed");

        let dead = q.dead_letters(10).await.unwrap();
        let out = q.requeue_dead(&dead[0].id, 5).await.unwrap();
        assert_eq!(
            out,
            RequeueOutcome {
                code: ScriptCode::Ok,
                workflow_id: Some(wf.to_owned()),
                task: Some(0),
                reopened: 1,
                workflow_reopened: true,
            }
        );
        assert_eq!(statuses(&q, wf).await, ["ready", "completed", "ready"]);
        let info = q.workflow(wf).await.unwrap().unwrap();
        assert_eq!(
            (
                info.status.as_str(),
                info.open,
                info.failed,
                info.cancelled,
                info.completed
            ),
            ("running", 2, 0, 0, 1)
        );
        // A second requeue of the same letter finds nothing; the dead letter is gone.
        assert_eq!(
            q.requeue_dead(&dead[0].id, 6).await.unwrap().code,
            ScriptCode::NotFound
        );
        assert!(q.dead_letters(10).await.unwrap().is_empty());

        // Both run and the workflow completes.
        let ds = c.read(&streams, 10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(ds.len(), 2);
        for d in &ds {
            assert!(matches!(
                q.begin(d, "t", 7).await.unwrap(),
                BeginOutcome::Run(_)
            ));
            assert_eq!(q.complete(d, "t", "{}", 8).await.unwrap(), ScriptCode::Ok);
        }
        let info = q.workflow(wf).await.unwrap().unwrap();
        assert_eq!((info.status.as_str(), info.completed), ("completed", 3));
        assert_eq!(info.finished_ms, Some(8));
    }

    /// continue: a chain declared against file order (C needs B needs A, A last) is skipped
    /// below A and reopened whole; an unrelated failed task stays failed.
    #[tokio::test]
    async fn requeue_reopens_a_skipped_chain_in_dependency_order() {
        let (_redis, q) = test_queue().await;
        let wf = "wf-chain";
        let req = test_request(
            wf,
            "continue",
            vec![
                task("C", &[1], &[]),
                task("B", &[2], &[0]),
                task("A", &[], &[1]),
                task("Z", &[], &[]),
            ],
        );
        q.submit(&req).await.unwrap();
        let mut c = q.consumer("t").unwrap();
        let streams = q.keys().stream_refs("llm:m");
        let fail = FailRequest {
            error_json: "{}".to_owned(),
            retry_at_ms: None,
            dead_letter: Some(DeadLetterKind::Poison),
            now_ms: 3,
        };
        for d in c.read(&streams, 10, Duration::from_secs(5)).await.unwrap() {
            assert!(matches!(
                q.begin(&d, "t", 2).await.unwrap(),
                BeginOutcome::Run(_)
            ));
            assert_eq!(q.fail(&d, "t", &fail).await.unwrap(), ScriptCode::Failed);
        }
        assert_eq!(
            statuses(&q, wf).await,
            ["skipped", "skipped", "failed", "failed"]
        );
        let closed = q.tasks(wf).await.unwrap();
        assert_eq!(
            closed[0].reason.as_deref(),
            Some(r#"upstream task "A" failed (policy continue)"#)
        );
        assert_eq!(q.workflow(wf).await.unwrap().unwrap().status, "failed");
        let letters = q.dead_letters(10).await.unwrap();
        let a = letters.iter().find(|l| l.name == "A").unwrap();
        let out = q.requeue_dead(&a.id, 4).await.unwrap();
        assert_eq!((out.code, out.reopened), (ScriptCode::Ok, 2));
        assert_eq!(
            statuses(&q, wf).await,
            ["waiting", "waiting", "ready", "failed"]
        );
        let reasons: Vec<Option<String>> = q
            .tasks(wf)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.reason)
            .collect();
        assert_eq!(
            reasons,
            [None, None, None, None],
            "a reopened task no longer says why it was closed"
        );
        let info = q.workflow(wf).await.unwrap().unwrap();
        assert_eq!(
            (info.open, info.failed, info.skipped),
            (3, 1, 0),
            "Z stays failed"
        );
        // Running the chain ends the workflow failed: Z is still failed.
        for _ in 0..3 {
            let ds = c.read(&streams, 10, Duration::from_secs(5)).await.unwrap();
            assert_eq!(ds.len(), 1);
            assert!(matches!(
                q.begin(&ds[0], "t", 5).await.unwrap(),
                BeginOutcome::Run(_)
            ));
            q.complete(&ds[0], "t", "{}", 6).await.unwrap();
        }
        let info = q.workflow(wf).await.unwrap().unwrap();
        assert_eq!((info.status.as_str(), info.completed), ("failed", 3));
    }

    #[test]
    fn worker_records_round_trip_through_their_hash() {
        let rec = WorkerRecord {
            id: "h-1-ab".into(),
            host: "h".into(),
            pid: 7,
            version: "0.1.0".into(),
            state: "running".into(),
            started_ms: 1,
            updated_ms: 2,
            expires_ms: 3,
            concurrency: 8,
            in_flight: 2,
            capabilities: vec!["llm:a".into(), "ext:b,c".into()],
            patterns: vec!["llm:*".into(), "ext:b,c".into()],
            completed: 10,
            failed: 1,
            retried: 2,
            deferred: 3,
            layouts: vec!["packed".into(), "fields".into()],
        };
        let hash: HashMap<String, String> = rec
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(WorkerRecord::from_hash("h-1-ab", hash), rec);
        // Garbage numbers read as zero instead of hiding the worker.
        let odd =
            WorkerRecord::from_hash("x", HashMap::from([("pid".to_owned(), "nope".to_owned())]));
        assert_eq!(odd.pid, 0);
        assert!(odd.capabilities.is_empty());
    }
}
