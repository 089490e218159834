//! Fleet and operations queries: dead letters (newest, one by id, paged), capabilities and
//! their streams' statistics, the retry and dead-letter backlog per capability, and the
//! shared state of the LLM endpoints.

use std::collections::HashMap;

use deadpool_redis::redis::{self, Value};

use crate::error::QueueError;
use crate::keys::{validate_workflow_id, StreamRef};
use crate::layout::TaskReads;
use crate::queue::Queue;
use crate::reply::{self, entries, num};

/// A stream entry id `<ms>-<seq>` as numbers, for ordering entries of several streams
/// (a malformed id sorts first).
fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
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

/// Most entries [`Queue::count_after`] reads to count the ready entries of a stream whose
/// group `lag` Redis cannot tell (rare: after a cancellation deleted a ready entry in a
/// backlog, until the group has read past the end once); beyond it the count is this.
pub(crate) const COUNT_AFTER_MAX: u64 = 10_000;

/// A group's `lag` (entries not yet delivered to it) from its `XINFO GROUPS` fields; `None`
/// when Redis cannot tell (it answers nil after a deletion ahead of the group).
pub(crate) fn group_lag(
    ctx: &'static str,
    fields: &HashMap<String, Value>,
) -> Result<Option<u64>, QueueError> {
    match fields.get("lag") {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => reply::u64_of(ctx, v).map(Some),
    }
}

/// Where the queue's consumer group stands in one stream ([`Queue::group_position`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GroupPosition {
    /// Entries not delivered to the group yet.
    pub(crate) ready: u64,
    /// Entries delivered and not acknowledged.
    pub(crate) pending: u64,
    /// Consumers of the group.
    pub(crate) consumers: u64,
    /// The last entry delivered to the group (`None` without the group).
    pub(crate) last_delivered: Option<String>,
}

/// Counters of one ready stream and its consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// The stream key.
    pub key: String,
    /// Entries in the stream: ready, pending, and finished ones the next trim removes
    /// (`trim.lua`).
    pub length: u64,
    /// Entries not yet delivered to the group (its `lag`).
    pub ready: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Age of the oldest entry not yet delivered, if any (by the Redis clock).
    pub oldest_ready_age_ms: Option<u64>,
    /// Consumers known to the group.
    pub consumers: u64,
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

impl Queue {
    /// The newest `limit` dead letters, newest first (over every shard).
    ///
    /// # Errors
    /// Redis errors or a malformed entry.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        const CTX: &str = "dead_letters";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut all = Vec::new();
        for (shard, k) in self.shards().iter().enumerate() {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(k.dead()).arg("+").arg("-").arg("COUNT").arg(limit);
            let v: Value = self.query(&cmd).await?;
            for (id, fields) in entries(CTX, &v)? {
                let order = entry_order(&id);
                all.push((order, dead_letter_from(self.dead_id(shard, &id), fields)?));
            }
        }
        all.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        all.truncate(limit);
        Ok(all.into_iter().map(|(_, d)| d).collect())
    }

    /// A dead letter's id as callers see it: its entry id, prefixed with `<shard>/` when
    /// the namespace has several shards (each shard has its own dead-letter stream, and
    /// entry ids are only unique within one).
    pub(crate) fn dead_id(&self, shard: usize, entry_id: &str) -> String {
        if self.shard_count() > 1 {
            format!("{shard}/{entry_id}")
        } else {
            entry_id.to_owned()
        }
    }

    /// The shard and entry id of a dead letter's id ([`Queue::dead_id`]).
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] for an id that names no shard of the namespace or
    /// whose entry id is malformed.
    pub(crate) fn dead_ref<'a>(&self, id: &'a str) -> Result<(usize, &'a str), QueueError> {
        let n = self.shard_count();
        let (shard, entry) = match id.split_once('/') {
            Some((s, e)) => {
                let shard = s.parse::<u16>().ok().filter(|k| *k < n).ok_or_else(|| {
                    QueueError::InvalidArgument(format!(
                        "dead letter id {id:?}: {s:?} is not a shard of this namespace (0-{})",
                        n - 1
                    ))
                })?;
                (shard, e)
            }
            None if n > 1 => {
                return Err(QueueError::InvalidArgument(format!(
                    "dead letter id {id:?} names no shard: in a namespace of {n} shards ids are \
                     <shard>/<entry id>, as `dead list` shows them"
                )))
            }
            None => (0, id),
        };
        crate::queue::validate_entry_id(entry)?;
        Ok((usize::from(shard), entry))
    }

    /// Every capability that has had a stream, sorted.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn capabilities(&self) -> Result<Vec<String>, QueueError> {
        let mut caps: Vec<String> = Vec::new();
        for k in self.shards() {
            let mut cmd = redis::cmd("SMEMBERS");
            cmd.arg(k.caps());
            caps.extend(self.query::<Vec<String>>(&cmd).await?);
        }
        caps.sort();
        caps.dedup();
        Ok(caps)
    }

    /// Where this queue's consumer group stands in `stream`, which holds `length` entries:
    /// zeros for a stream that does not exist, every entry ready when the group does not
    /// exist yet (nothing is trimmed before every group has had it).
    pub(crate) async fn group_position(
        &self,
        stream: &str,
        length: u64,
    ) -> Result<GroupPosition, QueueError> {
        let mut info = redis::cmd("XINFO");
        info.arg("GROUPS").arg(stream);
        let groups: Value = match self.query(&info).await {
            Ok(v) => v,
            // The stream does not exist yet.
            Err(err) if err.is_missing_stream() => Value::Nil,
            Err(err) => return Err(err),
        };
        self.position_from(stream, length, &groups).await
    }

    /// [`Queue::group_position`] from the stream's `XINFO GROUPS` reply (read by the caller,
    /// perhaps in a pipeline with other streams'); reads the stream only when Redis cannot
    /// tell the group's `lag`.
    pub(crate) async fn position_from(
        &self,
        stream: &str,
        length: u64,
        groups: &Value,
    ) -> Result<GroupPosition, QueueError> {
        const CTX: &str = "group_position";
        let group = &self.config().group;
        for g in reply::array_or_nil(CTX, groups)? {
            let fields = reply::value_map(CTX, g)?;
            let name = fields
                .get("name")
                .map(|v| reply::string(CTX, v))
                .transpose()?;
            if name.as_deref() != Some(group.as_str()) {
                continue;
            }
            let count = |f: &str| {
                fields
                    .get(f)
                    .map(|v| reply::u64_of(CTX, v))
                    .transpose()
                    .map(Option::unwrap_or_default)
            };
            let last_delivered = fields
                .get("last-delivered-id")
                .map(|v| reply::string(CTX, v))
                .transpose()?;
            let ready = match group_lag(CTX, &fields)? {
                Some(lag) => lag,
                None => self.count_after(stream, last_delivered.as_deref()).await?,
            };
            return Ok(GroupPosition {
                ready,
                pending: count("pending")?,
                consumers: count("consumers")?,
                last_delivered,
            });
        }
        Ok(GroupPosition {
            ready: length,
            ..GroupPosition::default()
        })
    }

    /// The entries of `stream` after id `after` (all with `None`), counted up to
    /// [`COUNT_AFTER_MAX`]: the ready entries when Redis cannot tell a group's `lag` (a
    /// ready entry was deleted ahead of the group, by a cancellation).
    pub(crate) async fn count_after(
        &self,
        stream: &str,
        after: Option<&str>,
    ) -> Result<u64, QueueError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(stream)
            .arg(match after {
                Some(id) => format!("({id}"),
                None => "-".to_owned(),
            })
            .arg("+")
            .arg("COUNT")
            .arg(COUNT_AFTER_MAX);
        let v: Value = self.query(&cmd).await?;
        Ok(entries("count_after", &v)?.len() as u64)
    }

    /// Length, ready and pending counts, age of the oldest undelivered entry and consumer
    /// count of one stream (zeros for a stream or group that does not exist yet).
    ///
    /// # Errors
    /// Redis errors or a malformed reply.
    pub async fn stream_stats(&self, stream: &StreamRef) -> Result<StreamStats, QueueError> {
        const CTX: &str = "stream_stats";
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(&stream.key);
        pipe.cmd("TIME");
        let (length, time): (u64, (u64, u64)) = self.query_pipe(&pipe).await?;
        let now_ms = time.0 * 1000 + time.1 / 1000;
        let GroupPosition {
            ready,
            pending,
            consumers,
            last_delivered,
        } = self.group_position(&stream.key, length).await?;
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
            ready,
            pending,
            oldest_ready_age_ms,
            consumers,
        })
    }

    /// One dead letter by its id ([`DeadLetter::id`]); `None` when there is none.
    ///
    /// # Errors
    /// An id that names no dead letter's place, Redis errors, or a malformed entry.
    pub async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, QueueError> {
        const CTX: &str = "dead_letter";
        let (shard, entry_id) = self.dead_ref(id)?;
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.shards()[shard].dead())
            .arg(entry_id)
            .arg(entry_id);
        let v: Value = self.query(&cmd).await?;
        entries(CTX, &v)?
            .into_iter()
            .next()
            .map(|(entry, fields)| dead_letter_from(self.dead_id(shard, &entry), fields))
            .transpose()
    }

    /// Up to `count` dead letters after id `after` (exclusive; `None` from the start):
    /// pages through every dead letter, shard by shard, oldest first within a shard.
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
        let (first_shard, mut start) = match after {
            Some(id) => {
                let (shard, entry) = self.dead_ref(id)?;
                (shard, format!("({entry}"))
            }
            None => (0, "-".to_owned()),
        };
        let mut out = Vec::new();
        for (shard, k) in self.shards().iter().enumerate().skip(first_shard) {
            let left = count - out.len();
            if left == 0 {
                break;
            }
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(k.dead())
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(left);
            let v: Value = self.query(&cmd).await?;
            for (id, fields) in entries(CTX, &v)? {
                out.push(dead_letter_from(self.dead_id(shard, &id), fields)?);
            }
            start = "-".to_owned();
        }
        Ok(out)
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
        let after = format!("({now_ms}");
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let rows = self
            .per_name(&refs, |k, name, pipe| {
                pipe.cmd("HGETALL").arg(k.endpoint_health(name));
                pipe.cmd("HGETALL").arg(k.endpoint_models(name));
                pipe.cmd("ZCOUNT")
                    .arg(k.endpoint_leases(name))
                    .arg(&after)
                    .arg("+inf");
            })
            .await?;
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
        let (mut dead, mut delayed) = (0, 0);
        for k in self.shards() {
            let mut pipe = redis::pipe();
            pipe.cmd("XLEN").arg(k.dead());
            pipe.cmd("ZCARD").arg(k.delayed());
            let (d, r): (u64, u64) = self.query_pipe(&pipe).await?;
            dead += d;
            delayed += r;
        }
        Ok((dead, delayed))
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
        for k in self.shards() {
            let mut start = 0usize;
            loop {
                let mut cmd = redis::cmd("ZRANGE");
                cmd.arg(k.delayed()).arg(start).arg(start + PAGE - 1);
                let members: Vec<String> = self.query(&cmd).await?;
                let refs: Vec<(&str, u32)> = members
                    .iter()
                    .filter_map(|m| m.rsplit_once('|'))
                    .filter(|(wf, _)| validate_workflow_id(wf).is_ok())
                    .filter_map(|(wf, i)| Some((wf, i.parse::<u32>().ok()?)))
                    .collect();
                let mut reads = TaskReads::new(&["cap"]);
                for (wf, i) in &refs {
                    reads.push(k, wf, *i);
                }
                let caps: Vec<(Option<String>,)> = reads.run(self).await?;
                for cap in caps.into_iter().filter_map(|(cap,)| cap) {
                    out.entry(cap).or_default().delayed += 1;
                }
                if members.len() < PAGE {
                    break;
                }
                start += PAGE;
            }
        }
        Ok(out)
    }
}
