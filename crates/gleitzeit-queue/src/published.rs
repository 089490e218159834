//! Endpoints published to the fleet: `gleitzeit-submit endpoints add|remove|strategy` write
//! them, workers with `published_endpoints: adopt` read them and route over them.
//!
//! Three keys (names in [`crate::keys`]): the hash of endpoints (field = name, value = JSON in
//! the shapes of the worker's file configuration; opaque text to this crate, checked by its
//! writers and again by its readers), the strategy, and a version counter raised with every
//! change in the same `MULTI`, so a worker notices a change with one `GET`.

use std::collections::BTreeMap;

use deadpool_redis::redis;

use crate::error::QueueError;
use crate::queue::Queue;

/// What is published, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Endpoint name → its JSON value.
    pub endpoints: BTreeMap<String, String>,
    /// The published routing strategy's name, when one is set.
    pub strategy: Option<String>,
    /// The version counter (0: nothing was ever published).
    pub version: u64,
}

impl Queue {
    /// Everything published. The version is read before the rest, so a reader that keeps it
    /// with what it read can only see a change it already has again, never miss one.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn published(&self) -> Result<Published, QueueError> {
        let keys = self.keys();
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(keys.published_version())
            .cmd("HGETALL")
            .arg(keys.published_endpoints())
            .cmd("GET")
            .arg(keys.published_strategy());
        let (version, endpoints, strategy): (
            Option<u64>,
            BTreeMap<String, String>,
            Option<String>,
        ) = self.query_pipe(&pipe).await?;
        Ok(Published {
            endpoints,
            strategy,
            version: version.unwrap_or(0),
        })
    }

    /// The version counter alone (0 when nothing was ever published): one `GET`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn published_version(&self) -> Result<u64, QueueError> {
        let v: Option<u64> = self
            .query(redis::cmd("GET").arg(self.keys().published_version()))
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// How many endpoints are published: one `HLEN`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn published_count(&self) -> Result<u64, QueueError> {
        self.query(redis::cmd("HLEN").arg(self.keys().published_endpoints()))
            .await
    }

    /// Publishes endpoint `name` as `value` (replacing one of the same name) and raises the
    /// version, in one `MULTI`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn publish_endpoint(&self, name: &str, value: &str) -> Result<(), QueueError> {
        let keys = self.keys();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(keys.published_endpoints())
            .arg(name)
            .arg(value)
            .ignore()
            .cmd("INCR")
            .arg(keys.published_version())
            .ignore();
        self.query_pipe::<()>(&pipe).await
    }

    /// Withdraws endpoint `name` and raises the version, in one `MULTI`; `true` when it was
    /// published.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn unpublish_endpoint(&self, name: &str) -> Result<bool, QueueError> {
        let keys = self.keys();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(keys.published_endpoints())
            .arg(name)
            .cmd("INCR")
            .arg(keys.published_version())
            .ignore();
        let (removed,): (u64,) = self.query_pipe(&pipe).await?;
        Ok(removed > 0)
    }

    /// Publishes the routing strategy (by name) and raises the version, in one `MULTI`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn publish_strategy(&self, strategy: &str) -> Result<(), QueueError> {
        let keys = self.keys();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(keys.published_strategy())
            .arg(strategy)
            .ignore()
            .cmd("INCR")
            .arg(keys.published_version())
            .ignore();
        self.query_pipe::<()>(&pipe).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueueConfig;
    use gleitzeit_testkit::redis::RedisServer;

    #[tokio::test]
    async fn changes_raise_the_version_and_read_back() {
        let redis = RedisServer::start().unwrap();
        let q = Queue::connect(crate::RedisTarget::new(redis.url()), QueueConfig::default())
            .await
            .unwrap();
        assert_eq!(q.published().await.unwrap(), Published::default());
        assert_eq!(q.published_count().await.unwrap(), 0);
        q.publish_endpoint("a", "{\"x\":1}").await.unwrap();
        q.publish_endpoint("a", "{\"x\":2}").await.unwrap();
        q.publish_strategy("priority").await.unwrap();
        let p = q.published().await.unwrap();
        assert_eq!(p.endpoints["a"], "{\"x\":2}");
        assert_eq!(p.strategy.as_deref(), Some("priority"));
        assert_eq!(p.version, 3);
        assert_eq!(q.published_version().await.unwrap(), 3);
        assert_eq!(q.published_count().await.unwrap(), 1);
        assert!(q.unpublish_endpoint("a").await.unwrap());
        assert!(!q.unpublish_endpoint("a").await.unwrap());
        let p = q.published().await.unwrap();
        assert!(p.endpoints.is_empty());
        assert_eq!(p.version, 5);
    }
}
