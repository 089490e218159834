//! The operations of the workers' background loops on [`Queue`]: moving due retries back
//! onto their streams and trimming the workflow index (promote), removing finished entries
//! from the streams (trim), keeping a running task's
//! claim alive (heartbeat), and taking over what a dead consumer held (reclaim). Each is one
//! atomic script call; the per-task path (submit, begin, complete, fail) is in `queue.rs`.

use std::time::Duration;

use deadpool_redis::redis::{self, Value};

use crate::error::QueueError;
use crate::keys::{Keys, StreamRef};
use crate::queue::{validate_consumer, Queue};
use crate::reply;
use crate::types::{Delivery, Promoted};

impl Queue {
    /// Queues up to `limit` retries that are due at `now_ms` in each shard; returns how many
    /// moved (all shards) and when the next one is due (the earliest).
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] for `limit == 0`; Redis errors.
    pub async fn promote(&self, now_ms: u64, limit: u32) -> Result<Promoted, QueueError> {
        if limit == 0 {
            return Err(QueueError::InvalidArgument(
                "promote limit must be positive".to_owned(),
            ));
        }
        let mut all = Promoted {
            moved: 0,
            next_due_ms: None,
            trimmed: 0,
        };
        for k in self.shards() {
            let p = self.promote_in(k, now_ms, limit).await?;
            all.moved += p.moved;
            all.trimmed += p.trimmed;
            all.next_due_ms = match (all.next_due_ms, p.next_due_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(all)
    }

    /// [`Queue::promote`] in one shard.
    async fn promote_in(&self, k: &Keys, now_ms: u64, limit: u32) -> Result<Promoted, QueueError> {
        const CTX: &str = "promote";
        let mut inv = self.inner.scripts.promote.prepare_invoke();
        inv.key(k.delayed())
            .arg(k.prefix())
            .arg(now_ms)
            .arg(limit)
            .arg(self.inner.cfg.events_maxlen);
        let v = self.invoke(&inv).await?;
        let items = reply::array(CTX, &v)?;
        let moved = reply::u32_of(
            CTX,
            items
                .first()
                .ok_or_else(|| QueueError::unexpected(CTX, "empty reply"))?,
        )?;
        let next_due_ms = match items.get(1) {
            None | Some(Value::Nil) => None,
            Some(score) => {
                let s = reply::string(CTX, score)?;
                let due: f64 = reply::parse_num(CTX, "score", &s)?;
                // Scores are integral ms written by `fail`; the float is Redis's encoding.
                Some(due.max(0.0) as u64)
            }
        };
        let trimmed = match items.get(2) {
            None => 0,
            Some(v) => reply::u32_of(CTX, v)?,
        };
        Ok(Promoted {
            moved,
            next_due_ms,
            trimmed,
        })
    }

    /// Removes the finished entries at the head of every capability stream (`trim.lua`):
    /// tasks only acknowledge their entries, and this deletes them in bulk. With `lock`, only
    /// when no trim ran within that time anywhere in the fleet (`None` is returned then;
    /// each shard has its own lock); without, at once. Returns the entries removed.
    ///
    /// # Errors
    /// Redis errors or an unexpected reply.
    pub async fn trim_streams(&self, lock: Option<Duration>) -> Result<Option<u64>, QueueError> {
        let mut removed = None;
        for k in self.shards() {
            if let Some(n) = self.trim_in(k, lock).await? {
                removed = Some(removed.unwrap_or(0) + n);
            }
        }
        Ok(removed)
    }

    /// [`Queue::trim_streams`] in one shard.
    async fn trim_in(&self, k: &Keys, lock: Option<Duration>) -> Result<Option<u64>, QueueError> {
        const CTX: &str = "trim";
        let mut inv = self.inner.scripts.trim.prepare_invoke();
        inv.key(k.caps()).key(k.trim_lock()).arg(k.prefix());
        match lock {
            Some(t) => inv.arg(u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)),
            None => inv.arg(""),
        };
        let v = self.invoke(&inv).await?;
        match reply::array(CTX, &v)? {
            [ran, removed] => Ok((reply::u64_of(CTX, ran)? == 1)
                .then(|| reply::u64_of(CTX, removed))
                .transpose()?),
            other => Err(QueueError::unexpected(CTX, format!("{other:?}"))),
        }
    }

    /// Keeps this consumer's in-flight entries from being reclaimed (resets their idle
    /// time) and returns the deliveries that are no longer this consumer's — their work
    /// should be abandoned; they are never taken back.
    ///
    /// # Errors
    /// Invalid deliveries, Redis errors, or an unexpected script reply.
    pub async fn heartbeat(
        &self,
        consumer: &str,
        deliveries: &[Delivery],
    ) -> Result<Vec<Delivery>, QueueError> {
        const CTX: &str = "heartbeat";
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        for d in deliveries {
            self.check_delivery(d, consumer)?;
        }
        let mut lost = Vec::new();
        // One script call per shard (a script stays in one slot).
        let mut by_shard: Vec<Vec<&Delivery>> = vec![Vec::new(); self.shards().len()];
        for d in deliveries {
            by_shard[self.shard_index(&d.workflow_id)].push(d);
        }
        for (k, mine) in self.shards().iter().zip(by_shard) {
            if mine.is_empty() {
                continue;
            }
            let mut inv = self.inner.scripts.heartbeat.prepare_invoke();
            inv.arg(k.prefix()).arg(&self.inner.cfg.group).arg(consumer);
            for d in &mine {
                inv.key(&d.stream).arg(&d.entry_id).arg(d.deliveries);
            }
            let v = self.invoke(&inv).await?;
            for pos in reply::array_or_nil(CTX, &v)? {
                let pos = reply::u64_of(CTX, pos)? as usize;
                let d = pos
                    .checked_sub(1)
                    .and_then(|i| mine.get(i))
                    .ok_or_else(|| QueueError::unexpected(CTX, format!("position {pos}")))?;
                lost.push((*d).clone());
            }
        }
        Ok(lost)
    }

    /// Claims up to `count` entries of `stream` that other consumers (or this one) left
    /// idle for at least `min_idle`, with their current delivery counts.
    ///
    /// # Errors
    /// Invalid arguments, Redis errors, or an unexpected script reply.
    pub async fn reclaim(
        &self,
        consumer: &str,
        stream: &StreamRef,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        const CTX: &str = "reclaim";
        validate_consumer(consumer)?;
        if count == 0 {
            return Ok(Vec::new());
        }
        // The stream's shard: its workflows are there.
        let k = self.shard_of_key(&stream.key).ok_or_else(|| {
            QueueError::InvalidArgument(format!(
                "stream {:?} is in none of the namespace's shards",
                stream.key
            ))
        })?;
        // With several shards the leases (home keys) are not in the script's slot:
        // reclaim.lua finds no endpoints under the shard's prefix and frees nothing, so the
        // owners are read here and their leases freed after the claim, as the script does
        // for an unsharded namespace. Not atomic with the claim: at worst a lease is freed
        // a moment early or, when this process stops in between, at its expiry.
        let owners = if self.shard_count() == 1 {
            Vec::new()
        } else {
            self.idle_owners(&stream.key, consumer, min_idle, count)
                .await?
        };
        let mut inv = self.inner.scripts.reclaim.prepare_invoke();
        inv.key(&stream.key)
            .arg(k.prefix())
            .arg(&self.inner.cfg.group)
            .arg(consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg(count);
        let v = self.invoke(&inv).await?;
        let items = reply::array_or_nil(CTX, &v)?;
        if items.len() % 4 != 0 {
            return Err(QueueError::unexpected(CTX, format!("{items:?}")));
        }
        if !items.is_empty() && !owners.is_empty() {
            self.free_leases_of(&owners).await?;
        }
        items
            .chunks(4)
            .map(|c| {
                Ok(Delivery {
                    stream: stream.key.clone(),
                    capability: stream.capability.clone(),
                    priority: stream.priority,
                    entry_id: reply::string(CTX, &c[0])?,
                    workflow_id: reply::string(CTX, &c[1])?,
                    task: reply::u32_of(CTX, &c[2])?,
                    deliveries: reply::u64_of(CTX, &c[3])?,
                })
            })
            .collect()
    }

    /// The consumers other than `consumer` holding entries of `stream` idle for `min_idle`
    /// (the first `count`, as the claim takes them).
    async fn idle_owners(
        &self,
        stream: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<String>, QueueError> {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(stream)
            .arg(&self.inner.cfg.group)
            .arg("IDLE")
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg("-")
            .arg("+")
            .arg(count);
        let pending: Vec<(String, String, u64, u64)> = match self.query(&cmd).await {
            Ok(p) => p,
            Err(e) if e.is_missing_stream() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut owners: Vec<String> = pending
            .into_iter()
            .map(|(_, owner, _, _)| owner)
            .filter(|o| o != consumer)
            .collect();
        owners.sort();
        owners.dedup();
        Ok(owners)
    }
}
