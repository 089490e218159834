//! Reading the live instances of a task service from Redis.
//!
//! A service registers itself (`python/gleitzeit/discovery.py`): member `<instance>` of the zset
//! `{ns}:svc:<service>` with score = expiry time in ms, and the hash
//! `{ns}:svc:<service>:<instance>` describing it. A member whose score is in the past belongs to
//! an instance that died without deregistering; readers ignore it and may remove it, which this
//! reader does. In a namespace spread over several shards a service's keys are under its own
//! prefix `{ns~svc~<service>}:` (`Keys::service_prefix`); this reader then looks under both,
//! since a service registers where the count it last read says (one that started before the
//! namespace recorded its count is under the home prefix until its next heartbeat).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_redis::redis;

use gleitzeit_core::protocol::FunctionInfo;

use gleitzeit_queue::{Keys, SharedConnection};

use crate::keys::{validate_namespace, validate_service_name};

/// Reading the registry failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// Redis could not be reached or answered with an error. Retryable.
    #[error("redis: {0}")]
    Redis(String),
    /// A namespace or service name cannot be used in a key. Not retryable.
    #[error("{0}")]
    InvalidName(String),
}

impl DiscoveryError {
    /// Whether reading again later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, DiscoveryError::Redis(_))
    }
}

/// One registered, live instance of a service (the fields of its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Instance id, `<hostname>-<pid>-<8 hex>`.
    pub instance: String,
    /// Service name.
    pub service: String,
    /// `http://host:port` the instance is reachable at.
    pub url: String,
    /// What it serves (as in its `service:hello`).
    pub functions: Vec<FunctionInfo>,
    /// Calls it runs at once.
    pub max_concurrency: u64,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
    /// Protocol version it speaks.
    pub protocol: u64,
    /// Its registration's expiry (the zset score), ms since the Unix epoch.
    pub expires_ms: u64,
}

impl InstanceRecord {
    /// Parses an instance hash as Redis returns it (all fields strings).
    ///
    /// # Errors
    /// A message naming the missing or malformed field.
    pub fn from_hash(
        fields: &HashMap<String, String>,
        expires_ms: u64,
    ) -> Result<InstanceRecord, String> {
        let get = |name: &str| {
            fields
                .get(name)
                .ok_or_else(|| format!("field {name} is missing"))
        };
        let int = |name: &str| -> Result<u64, String> {
            let text = get(name)?;
            text.trim()
                .parse::<u64>()
                .map_err(|_| format!("field {name} is not an integer: {text:?}"))
        };
        let functions_json: serde_json::Value = serde_json::from_str(get("functions")?)
            .map_err(|e| format!("field functions is not JSON: {e}"))?;
        let functions = match &functions_json {
            serde_json::Value::Array(items) => items
                .iter()
                .map(FunctionInfo::from_value)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("field functions: {e}"))?,
            _ => return Err("field functions is not a JSON array".to_owned()),
        };
        // Anyone who can write Redis can write a registration: only an http(s) address of the
        // plain form is ever dialled.
        let url = get("url")?;
        crate::config::validate_url(url).map_err(|e| format!("field url: {e}"))?;
        Ok(InstanceRecord {
            instance: get("instance")?.clone(),
            service: get("service")?.clone(),
            url: url.clone(),
            functions,
            max_concurrency: int("max_concurrency")?,
            started_ms: int("started_ms")?,
            protocol: int("protocol")?,
            expires_ms,
        })
    }
}

/// Reads service registrations from one Redis, in one namespace.
#[derive(Clone)]
pub struct Discovery {
    redis: SharedConnection,
    namespace: String,
    /// The namespace's home keys.
    keys: Keys,
    /// Whether the namespace is spread over several shards, once it records its count (the
    /// count never changes once recorded).
    spread: Arc<OnceLock<bool>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// A reader over `redis` for the keys of `namespace`.
    ///
    /// # Errors
    /// [`DiscoveryError::InvalidName`] for a namespace that cannot be a hash tag.
    pub fn new(
        redis: SharedConnection,
        namespace: impl Into<String>,
    ) -> Result<Discovery, DiscoveryError> {
        let namespace = namespace.into();
        validate_namespace(&namespace).map_err(DiscoveryError::InvalidName)?;
        let keys = Keys::new(&namespace).map_err(|e| DiscoveryError::InvalidName(e.to_string()))?;
        Ok(Discovery {
            redis,
            namespace,
            keys,
            spread: Arc::new(OnceLock::new()),
        })
    }

    /// The layouts a service's registration may be under: its own prefix first when the
    /// namespace records a count above one, and the home prefix.
    async fn layouts(&self) -> Result<Vec<Keys>, DiscoveryError> {
        let spread = match self.spread.get() {
            Some(&s) => s,
            None => {
                let mut get = redis::pipe();
                get.cmd("GET").arg(self.keys.shard_count());
                let (recorded,): (Option<String>,) = self
                    .redis
                    .pipeline(&get)
                    .await
                    .map_err(|e| DiscoveryError::Redis(e.to_string()))?;
                match recorded.and_then(|t| t.trim().parse::<u16>().ok()) {
                    Some(n) => *self.spread.get_or_init(|| n > 1),
                    // Nothing recorded yet: everyone registers under the home prefix.
                    None => false,
                }
            }
        };
        Ok(if spread {
            vec![self.keys.with_spread(true), self.keys.clone()]
        } else {
            vec![self.keys.clone()]
        })
    }

    /// The namespace read.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The live instances of `service` now, oldest registration first.
    ///
    /// # Errors
    /// [`DiscoveryError::Redis`] when Redis fails (retryable), `InvalidName` for a service name
    /// that cannot be in a key.
    pub async fn live_instances(
        &self,
        service: &str,
    ) -> Result<Vec<InstanceRecord>, DiscoveryError> {
        self.live_instances_at(service, now_ms()).await
    }

    /// The instances of `service` alive at `now_ms` (members with a score below it are dead
    /// and are removed from the zset on the way). Instances whose hash is gone or malformed
    /// are skipped; a malformed one is logged. An instance found under both layouts counts
    /// once (its own prefix's record wins: it is the newer).
    ///
    /// # Errors
    /// As [`Discovery::live_instances`].
    pub async fn live_instances_at(
        &self,
        service: &str,
        now_ms: u64,
    ) -> Result<Vec<InstanceRecord>, DiscoveryError> {
        validate_service_name(service).map_err(DiscoveryError::InvalidName)?;
        let mut found: Vec<InstanceRecord> = Vec::new();
        let layouts = self.layouts().await?;
        for keys in &layouts {
            for record in self.instances_under(keys, service, now_ms).await? {
                if !found.iter().any(|f| f.instance == record.instance) {
                    found.push(record);
                }
            }
        }
        if layouts.len() > 1 {
            // Each layout's list is in expiry order; so is the merged one.
            found.sort_by_key(|r| r.expires_ms);
        }
        Ok(found)
    }

    /// [`Discovery::live_instances_at`] under one layout's keys.
    async fn instances_under(
        &self,
        keys: &Keys,
        service: &str,
        now_ms: u64,
    ) -> Result<Vec<InstanceRecord>, DiscoveryError> {
        let zset = keys.service(service);
        // Pruning and reading in one MULTI/EXEC, so the read sees exactly the members that
        // survived the prune.
        let mut prune_and_read = redis::pipe();
        prune_and_read
            .atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&zset)
            .arg("-inf")
            .arg(format!("({now_ms}"))
            .ignore()
            .cmd("ZRANGEBYSCORE")
            .arg(&zset)
            .arg(now_ms)
            .arg("+inf")
            .arg("WITHSCORES");
        let (members,): (Vec<(String, f64)>,) = self
            .redis
            .pipeline(&prune_and_read)
            .await
            .map_err(|e| DiscoveryError::Redis(e.to_string()))?;
        let members: Vec<(String, f64)> = members
            .into_iter()
            .filter(|(member, _)| {
                // A member that could not be a key part is not an instance of ours.
                !member.is_empty()
                    && !member
                        .chars()
                        .any(|c| c == '{' || c == '}' || c.is_control())
            })
            .collect();
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (member, _) in &members {
            pipe.cmd("HGETALL")
                .arg(keys.service_instance(service, member));
        }
        let hashes: Vec<HashMap<String, String>> = self
            .redis
            .pipeline(&pipe)
            .await
            .map_err(|e| DiscoveryError::Redis(e.to_string()))?;
        let mut found = Vec::with_capacity(members.len());
        for ((member, score), fields) in members.into_iter().zip(hashes) {
            if fields.is_empty() {
                // The hash expired or was deleted between the beats: treated as gone.
                continue;
            }
            // Scores are integral ms; the float came from Redis' reply format.
            let expires_ms = if score.is_finite() && score > 0.0 {
                score as u64
            } else {
                0
            };
            match InstanceRecord::from_hash(&fields, expires_ms) {
                Ok(record) => found.push(record),
                Err(reason) => tracing::warn!(
                    service,
                    instance = %member,
                    %reason,
                    "ignoring malformed service registration"
                ),
            }
        }
        Ok(found)
    }
}

/// Milliseconds since the Unix epoch (the clock registrations are written with).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_hash() -> HashMap<String, String> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/protocol/keys.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        fixture["instance_hash_example"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn parses_the_fixture_instance_hash() {
        let record = InstanceRecord::from_hash(&fixture_hash(), 42).unwrap();
        assert_eq!(record.instance, "tasks-1-4242-0a1b2c3d");
        assert_eq!(record.service, "Python Tasks");
        assert_eq!(record.url, "http://tasks-1:8765");
        assert_eq!(record.functions.len(), 2);
        assert_eq!(record.functions[0].name, "fetch");
        assert_eq!(record.functions[0].timeout_ms, Some(10000));
        assert_eq!(record.functions[1].timeout_ms, None);
        assert_eq!(record.max_concurrency, 32);
        assert_eq!(record.started_ms, 1_732_672_800_000);
        assert_eq!(record.protocol, 2);
        assert_eq!(record.expires_ms, 42);
    }

    #[test]
    fn registrations_with_other_addresses_are_refused() {
        for url in [
            "file:///etc/passwd",
            "redis://127.0.0.1:6379",
            "http://h:1/socket.io?x",
        ] {
            let mut fields = fixture_hash();
            fields.insert("url".into(), url.into());
            let err = InstanceRecord::from_hash(&fields, 42).unwrap_err();
            assert!(err.contains("field url"), "{url}: {err}");
        }
    }

    #[test]
    fn malformed_hashes_name_the_field() {
        for (field, value, needle) in [
            ("max_concurrency", Some("many"), "max_concurrency"),
            ("functions", Some("{"), "functions"),
            ("functions", Some("{}"), "functions"),
            ("functions", Some("[{\"description\":\"x\"}]"), "functions"),
            ("url", None, "url"),
        ] {
            let mut hash = fixture_hash();
            match value {
                Some(v) => hash.insert(field.to_owned(), v.to_owned()),
                None => hash.remove(field),
            };
            let err = InstanceRecord::from_hash(&hash, 0).unwrap_err();
            assert!(err.contains(needle), "{err:?} should mention {needle}");
        }
    }
}
