//! Stale state and its removal (`gleitzeit-submit prune`).
//!
//! A long-running fleet leaves things behind that nothing else removes: every worker process
//! is a new consumer in the group of every stream it read, so restarts pile up consumers of
//! workers long gone; an endpoint no worker is configured with any more stays named in
//! `{ns}:endpoints` with its lease, hold, limit and budget keys; a capability nobody serves
//! and nothing queues keeps its streams and its place in `{ns}:caps`, which every reader
//! lists. [`Queue::prune`] finds them by age (idle for at least `older_than`) and, when
//! asked, removes them; what could still hold work is checked atomically in `prune.lua`
//! (a consumer only where it holds nothing pending, a capability only while its streams are
//! empty), so pruning never loses a task. A task released later on a pruned capability
//! registers it again (`make_ready` in `lua/lib.lua`).

use std::collections::BTreeSet;
use std::time::Duration;

use deadpool_redis::redis::{self, Value};

use crate::error::QueueError;
use crate::keys::{Keys, StreamRef};
use crate::queue::Queue;
use crate::reply;

/// A consumer of a gone worker in one stream's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleConsumer {
    /// The stream key.
    pub stream: String,
    /// The consumer (worker) id.
    pub consumer: String,
    /// How long since it last read or claimed (ms).
    pub idle_ms: u64,
}

/// One worker's view of an endpoint's health, left by a worker gone for long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleHealth {
    /// The endpoint's name.
    pub endpoint: String,
    /// The worker that wrote it.
    pub worker: String,
    /// When it wrote it last (ms); `None` when the view cannot be read.
    pub updated_ms: Option<u64>,
}

/// What [`Queue::prune`] found (and removed, when applied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Consumers without pending entries, idle for long, that are no live worker.
    pub consumers: Vec<StaleConsumer>,
    /// Health views of workers gone for long.
    pub health: Vec<StaleHealth>,
    /// Endpoints no live worker reports on and no call holds a lease of.
    pub endpoints: Vec<String>,
    /// Capabilities with empty streams, no live worker serving them and no entry added for
    /// long.
    pub capabilities: Vec<String>,
    /// Candidates `prune.lua` kept because work arrived meanwhile (applied runs only).
    pub kept: Vec<String>,
}

impl PruneReport {
    /// Whether nothing stale was found.
    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
            && self.health.is_empty()
            && self.endpoints.is_empty()
            && self.capabilities.is_empty()
    }
}

/// The millisecond part of a stream id (`<ms>-<seq>`).
fn id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

impl Queue {
    /// Finds the state left behind for at least `older_than` (see the module docs) and, when
    /// `apply`, removes it. Live workers are those of the registry at `now_ms`.
    ///
    /// # Errors
    /// Redis errors (a refused permission is [`QueueError::NoPermission`]: the operator role
    /// may prune) or malformed replies.
    pub async fn prune(
        &self,
        older_than: Duration,
        now_ms: u64,
        apply: bool,
    ) -> Result<PruneReport, QueueError> {
        // Idle at least this long (ms) is stale; so is state last touched before `cutoff`.
        let min_idle = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms.saturating_sub(min_idle);
        let workers = self.workers(now_ms).await?;
        let live: BTreeSet<&str> = workers.iter().map(|w| w.id.as_str()).collect();
        let served: BTreeSet<&str> = workers
            .iter()
            .flat_map(|w| w.capabilities.iter().map(String::as_str))
            .collect();
        let mut report = PruneReport::default();

        // Shard by shard: each has its own streams and capability set.
        for k in self.shards() {
            let mut cmd = redis::cmd("SMEMBERS");
            cmd.arg(k.caps());
            let mut caps: Vec<String> = self.query(&cmd).await?;
            caps.sort();
            for cap in caps {
                let streams = k.stream_refs(&cap);
                let mut pairs: Vec<(usize, String)> = Vec::new();
                let mut empty = !served.contains(cap.as_str());
                for (slot, s) in streams.iter().enumerate() {
                    for (consumer, pending, idle_ms) in self.stream_consumers(s).await? {
                        if pending == 0 && idle_ms >= min_idle && !live.contains(consumer.as_str())
                        {
                            pairs.push((slot + 2, consumer.clone()));
                            report.consumers.push(StaleConsumer {
                                stream: s.key.clone(),
                                consumer,
                                idle_ms,
                            });
                        }
                    }
                    if empty {
                        empty = self.stream_idle_since(s, cutoff).await?;
                    }
                }
                if empty {
                    report.capabilities.push(cap.clone());
                }
                if apply && (empty || !pairs.is_empty()) {
                    let removed = self
                        .prune_capability(k, &cap, &streams, empty, &pairs)
                        .await?;
                    if empty && !removed {
                        report.capabilities.retain(|c| c != &cap);
                        report.kept.push(cap.clone());
                    }
                }
            }
        }
        // A capability removed (or kept) in several shards is reported once.
        report.capabilities.sort();
        report.capabilities.dedup();
        report.kept.sort();
        report.kept.dedup();

        self.prune_endpoints(cutoff, now_ms, apply, &mut report)
            .await?;
        Ok(report)
    }

    /// Takes `consumer` out of the group of every stream of `capabilities` where it holds no
    /// pending entry (a stream it never read is left as it is). For a worker at the end of its drain:
    /// each worker process is a new consumer, so without this every restart leaves one
    /// behind. Not atomic, and need not be: once the worker's reader and reclaimer have
    /// stopped, nothing can deliver to this consumer any more (other workers claim entries
    /// for themselves), so an empty pending list stays empty; entries abandoned at the drain
    /// deadline keep theirs until another worker reclaims them.
    ///
    /// # Errors
    /// Redis errors (a missing stream or group is skipped).
    pub async fn leave_groups(
        &self,
        consumer: &str,
        capabilities: &[String],
    ) -> Result<(), QueueError> {
        let group = &self.config().group;
        for cap in capabilities {
            for s in self.stream_refs(cap) {
                let mut pending = redis::cmd("XPENDING");
                pending
                    .arg(&s.key)
                    .arg(group)
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .arg(consumer);
                match self.query::<Value>(&pending).await {
                    Ok(Value::Array(items)) if items.is_empty() => {}
                    Ok(_) => continue,
                    Err(e) if e.is_missing_stream() => continue,
                    Err(e) => return Err(e),
                }
                let mut del = redis::cmd("XGROUP");
                del.arg("DELCONSUMER").arg(&s.key).arg(group).arg(consumer);
                match self.query::<u64>(&del).await {
                    Ok(_) => {}
                    Err(e) if e.is_missing_stream() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// `(consumer, pending, idle ms)` of each consumer of the group on `stream`; empty when
    /// the stream or the group does not exist.
    async fn stream_consumers(
        &self,
        stream: &StreamRef,
    ) -> Result<Vec<(String, u64, u64)>, QueueError> {
        const CTX: &str = "prune";
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("CONSUMERS")
            .arg(&stream.key)
            .arg(&self.config().group);
        let v: Value = match self.query(&cmd).await {
            Ok(v) => v,
            Err(e) if e.is_missing_stream() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        reply::array_or_nil(CTX, &v)?
            .iter()
            .map(|c| {
                let m = reply::value_map(CTX, c)?;
                let get = |f: &str| {
                    m.get(f)
                        .ok_or_else(|| QueueError::unexpected(CTX, format!("no {f} in XINFO")))
                };
                Ok((
                    reply::string(CTX, get("name")?)?,
                    reply::u64_of(CTX, get("pending")?)?,
                    reply::u64_of(CTX, get("idle")?)?,
                ))
            })
            .collect()
    }

    /// Whether `stream` holds no work (no entry ready or pending; finished entries wait for
    /// the next trim) and none was added after `cutoff` (true when it does not exist).
    async fn stream_idle_since(&self, stream: &StreamRef, cutoff: u64) -> Result<bool, QueueError> {
        const CTX: &str = "prune";
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("STREAM").arg(&stream.key);
        let v: Value = match self.query(&cmd).await {
            Ok(v) => v,
            Err(e) if e.is_missing_stream() => return Ok(true),
            Err(e) => return Err(e),
        };
        let m = reply::value_map(CTX, &v)?;
        let length = m.get("length").map(|v| reply::u64_of(CTX, v)).transpose()?;
        let last = m
            .get("last-generated-id")
            .map(|v| reply::string(CTX, v))
            .transpose()?;
        if last
            .as_deref()
            .and_then(id_ms)
            .is_some_and(|ms| ms >= cutoff)
        {
            return Ok(false);
        }
        let p = self
            .group_position(&stream.key, length.unwrap_or(0))
            .await?;
        Ok(p.ready == 0 && p.pending == 0)
    }

    /// Runs `prune.lua` for one capability; returns whether the capability was removed.
    async fn prune_capability(
        &self,
        k: &Keys,
        cap: &str,
        streams: &[StreamRef; 3],
        remove: bool,
        consumers: &[(usize, String)],
    ) -> Result<bool, QueueError> {
        const CTX: &str = "prune";
        let mut inv = self.inner.scripts.prune.prepare_invoke();
        inv.key(k.caps());
        for s in streams {
            inv.key(&s.key);
        }
        inv.arg(k.prefix())
            .arg(cap)
            .arg(&self.config().group)
            .arg(if remove { "1" } else { "0" });
        for (slot, consumer) in consumers {
            inv.arg(*slot).arg(consumer);
        }
        let v = self.invoke(&inv).await?;
        let items = reply::array(CTX, &v)?;
        let removed = items
            .first()
            .map(|v| reply::int(CTX, v))
            .transpose()?
            .unwrap_or(0);
        Ok(removed == 1)
    }

    /// Health views older than `cutoff`, and endpoints with no fresh view, no models record
    /// and no live lease.
    async fn prune_endpoints(
        &self,
        cutoff: u64,
        now_ms: u64,
        apply: bool,
        report: &mut PruneReport,
    ) -> Result<(), QueueError> {
        let k = self.spread_keys().await?.clone();
        for name in self.endpoint_names().await? {
            let health = self.endpoint_health(&name).await?;
            let mut fresh = 0;
            let mut stale = Vec::new();
            for (worker, json) in health {
                let updated_ms = serde_json::from_str::<serde_json::Value>(&json)
                    .ok()
                    .and_then(|v| v.get("updated_ms").and_then(serde_json::Value::as_u64));
                if updated_ms.is_some_and(|ms| ms >= cutoff) {
                    fresh += 1;
                } else {
                    stale.push(StaleHealth {
                        endpoint: name.clone(),
                        worker,
                        updated_ms,
                    });
                }
            }
            stale.sort_by(|a, b| a.worker.cmp(&b.worker));
            if apply && !stale.is_empty() {
                let mut cmd = redis::cmd("HDEL");
                cmd.arg(k.endpoint_health(&name));
                for s in &stale {
                    cmd.arg(&s.worker);
                }
                let _: u64 = self.query(&cmd).await?;
            }
            report.health.extend(stale);

            let mut pipe = redis::pipe();
            pipe.cmd("EXISTS").arg(k.endpoint_models(&name));
            pipe.cmd("ZCOUNT")
                .arg(k.endpoint_leases(&name))
                .arg(format!("({now_ms}"))
                .arg("+inf");
            let (models, leases): (u64, u64) = self.query_pipe(&pipe).await?;
            if fresh == 0 && models == 0 && leases == 0 {
                report.endpoints.push(name.clone());
                if apply {
                    // A worker configured with it again re-adds it with its next report.
                    // Two commands: the set is a home key, the rest the endpoint's (which
                    // have a slot of their own in a namespace over several shards).
                    let _: u64 = self
                        .query(redis::cmd("SREM").arg(k.endpoints()).arg(&name))
                        .await?;
                    let _: u64 = self
                        .query(
                            redis::cmd("DEL")
                                .arg(k.endpoint_health(&name))
                                .arg(k.endpoint_leases(&name))
                                .arg(k.endpoint_hold(&name))
                                .arg(k.endpoint_limit(&name))
                                .arg(k.endpoint_budget(&name))
                                .arg(k.endpoint_probe(&name)),
                        )
                        .await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_give_their_time() {
        assert_eq!(id_ms("1700000000000-3"), Some(1_700_000_000_000));
        assert_eq!(id_ms("0-0"), Some(0));
        assert_eq!(id_ms("x"), None);
    }
}
