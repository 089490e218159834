//! A namespace spread over shards: the count each handle works with (recorded in
//! `{ns}:shards`, checked when a handle connects), and which shard a workflow, a key or an
//! idempotency key belongs to. The layout is in `keys.rs` ([`Keys::shard`], [`shard_of`]);
//! each operation picks its shard's keys through these.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use deadpool_redis::redis;

use crate::error::QueueError;
use crate::keys::{shard_of, Keys, StreamRef, MAX_SHARDS};
use crate::queue::{Inner, Queue};
use crate::types::QueueConfig;

impl Queue {
    /// The shard count the namespace records (`{ns}:shards`), if any.
    pub(crate) async fn recorded_shards(&self) -> Result<Option<u16>, QueueError> {
        let key = self.inner.keys.shard_count();
        // Its own command, not pipelined with the connection's PING: a pipeline's errors
        // come back bundled, which would hide a refused login behind a generic error.
        let v: Option<String> = self.query(redis::cmd("GET").arg(&key)).await?;
        v.map(|text| {
            text.parse::<u16>()
                .ok()
                .filter(|n| (1..=MAX_SHARDS).contains(n))
                .ok_or_else(|| QueueError::unexpected("shards", format!("{key} holds {text:?}")))
        })
        .transpose()
    }

    /// This handle (not yet shared) laid out for `shards` shards: the same connection, the
    /// keys of each shard.
    pub(crate) fn with_shard_count(self, shards: u16) -> Result<Queue, QueueError> {
        let inner = Arc::try_unwrap(self.inner)
            .map_err(|_| QueueError::unexpected("connect", "the handle is already shared"))?;
        let cfg = QueueConfig {
            shards: Some(shards),
            ..inner.cfg
        };
        cfg.validate()?;
        Ok(Queue {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|k| inner.keys.shard(k, shards)).collect(),
                keys: inner.keys.with_spread(shards > 1),
                cfg,
                ..inner
            }),
        })
    }

    /// Records this handle's shard count unless the namespace records one, then checks
    /// that the namespace's count is this handle's ([`QueueError::ShardCount`] if not).
    /// [`Queue::connect`] does it for a handle configured with a count, a submission for
    /// one that adopted an unrecorded count; workers call it when they start, so that the
    /// count they read with can no longer change under them.
    ///
    /// # Errors
    /// [`QueueError::ShardCount`]; Redis errors (a role without write access to
    /// `{ns}:shards` is refused when nothing is recorded yet).
    pub async fn record_shard_count(&self) -> Result<(), QueueError> {
        if self.inner.shards_recorded.load(Ordering::Relaxed) {
            return Ok(());
        }
        let n = self.shard_count();
        let key = self.inner.keys.shard_count();
        // SET NX, then GET: whoever records first decides. Two commands, not one
        // pipeline, so that a refusal of the SET (a full Redis, a missing permission) is
        // its own error rather than a value in the pipeline's reply.
        let _: Option<String> = self
            .query(redis::cmd("SET").arg(&key).arg(n).arg("NX"))
            .await?;
        let recorded: Option<String> = self.query(redis::cmd("GET").arg(&key)).await?;
        let recorded = recorded.and_then(|t| t.parse::<u16>().ok()).unwrap_or(0);
        if recorded != n {
            return Err(QueueError::ShardCount {
                namespace: self.inner.cfg.namespace.clone(),
                configured: n,
                recorded,
            });
        }
        self.inner.shards_recorded.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// How many shards the namespace's workflows are spread over.
    pub fn shard_count(&self) -> u16 {
        self.inner.shards.len() as u16
    }

    /// The keys of every shard, in shard order (one entry, the home keys, when unsharded).
    pub fn shards(&self) -> &[Keys] {
        &self.inner.shards
    }

    /// The keys of the shard workflow `workflow_id` lives in ([`shard_of`]).
    pub fn shard_keys(&self, workflow_id: &str) -> &Keys {
        &self.inner.shards[self.shard_index(workflow_id)]
    }

    /// The index of the shard workflow `workflow_id` lives in ([`shard_of`]).
    pub(crate) fn shard_index(&self, workflow_id: &str) -> usize {
        usize::from(shard_of(workflow_id, self.shard_count()))
    }

    /// The shard whose keys `key` (a stream key, a workflow hash) is under, if any.
    pub(crate) fn shard_of_key(&self, key: &str) -> Option<&Keys> {
        self.inner
            .shards
            .iter()
            .find(|k| key.starts_with(k.prefix()))
    }

    /// The ready streams (high, normal, low) of `capability` in every shard: shard by
    /// shard, each shard's three in read order.
    pub fn stream_refs(&self, capability: &str) -> Vec<StreamRef> {
        self.inner
            .shards
            .iter()
            .flat_map(|k| k.stream_refs(capability))
            .collect()
    }

    /// A new workflow id from `generate` that lives in the shard a submission with
    /// `idempotency_key` must go to: with several shards the key's record and the workflow
    /// share a shard, so ids are drawn until one hashes there (about as many draws as there
    /// are shards). Without a key, or with one shard, the first id drawn.
    pub fn workflow_id_for(
        &self,
        idempotency_key: Option<&str>,
        mut generate: impl FnMut() -> String,
    ) -> String {
        let n = self.shard_count();
        match idempotency_key {
            Some(key) if n > 1 => {
                let want = shard_of(key, n);
                loop {
                    let id = generate();
                    if shard_of(&id, n) == want {
                        return id;
                    }
                }
            }
            _ => generate(),
        }
    }
}
