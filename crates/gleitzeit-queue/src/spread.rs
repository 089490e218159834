//! Where a handle finds each LLM endpoint's state and each worker's record, and how it reads
//! several of them at once.
//!
//! With one shard, every endpoint's keys and every worker's record share the namespace's
//! slot and a read over several is one pipeline. Over N > 1 shards each has a prefix of its
//! own ([`Keys::endpoint_prefix`], [`Keys::worker_prefix`]): a pipeline may then only group
//! one name's commands (Redis Cluster refuses, and the cluster client cannot route, a
//! pipeline over several slots), so the names' groups go out concurrently on the shared
//! connection.
//!
//! A handle made without a shard count and never connected (the LLM executor's, built
//! before the worker reaches Redis) learns the layout from what the namespace records,
//! on its first endpoint call after a count is recorded.

use deadpool_redis::redis::{self, FromRedisValue, Pipeline, Value};

use crate::error::QueueError;
use crate::keys::Keys;
use crate::queue::Queue;

impl Queue {
    /// The keys to build endpoint and worker-record key names with: the home keys of a handle that knows its
    /// shard count; otherwise those of the count the namespace records (read once it is
    /// recorded; until then the one-shard layout, which is what a namespace that records
    /// nothing uses).
    ///
    /// # Errors
    /// Redis errors, and an unreadable recorded count.
    pub(crate) async fn spread_keys(&self) -> Result<&Keys, QueueError> {
        if self.inner.cfg.shards.is_some() {
            return Ok(&self.inner.keys);
        }
        if let Some(keys) = self.inner.adopted_keys.get() {
            return Ok(keys);
        }
        Ok(match self.recorded_shards().await? {
            Some(n) => self
                .inner
                .adopted_keys
                .get_or_init(|| self.inner.keys.with_spread(n > 1)),
            None => &self.inner.keys,
        })
    }

    /// Runs the commands `add` puts in a pipeline for each of `names` (endpoints or worker
    /// ids; touching only that name's keys) and returns every reply, in order: one pipeline
    /// while they share the namespace's slot, one per name, concurrently, when spread.
    ///
    /// # Errors
    /// Redis errors.
    pub(crate) async fn per_name(
        &self,
        names: &[&str],
        add: impl Fn(&Keys, &str, &mut Pipeline),
    ) -> Result<Vec<Value>, QueueError> {
        let keys = self.spread_keys().await?;
        if !keys.is_spread() {
            let mut pipe = redis::pipe();
            for n in names {
                add(keys, n, &mut pipe);
            }
            return self.query_pipe(&pipe).await;
        }
        let pipes: Vec<Pipeline> = names
            .iter()
            .map(|n| {
                let mut pipe = redis::pipe();
                add(keys, n, &mut pipe);
                pipe
            })
            .collect();
        let replies =
            futures::future::try_join_all(pipes.iter().map(|p| self.query_pipe::<Vec<Value>>(p)))
                .await?;
        Ok(replies.into_iter().flatten().collect())
    }

    /// [`Queue::per_name`] for one command per name, each reply parsed as `T`.
    ///
    /// # Errors
    /// Redis errors; a reply that is not a `T`.
    pub(crate) async fn per_name_one<T: FromRedisValue>(
        &self,
        names: &[&str],
        ctx: &'static str,
        add: impl Fn(&Keys, &str, &mut Pipeline),
    ) -> Result<Vec<T>, QueueError> {
        self.per_name(names, add)
            .await?
            .into_iter()
            .map(|v| {
                redis::from_redis_value(v).map_err(|e| QueueError::unexpected(ctx, e.to_string()))
            })
            .collect()
    }
}
