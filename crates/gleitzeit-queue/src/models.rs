//! Shared endpoint state in Redis: which models each LLM endpoint has loaded and pulled, the
//! probe lock that lets one worker per interval poll an endpoint, each worker's view of each
//! endpoint's health, the set of endpoint names, and how much queued work waits per
//! capability (what the `model_affinity` routing strategy must not evict).
//!
//! The values are opaque JSON text to this crate (like task specs); the formats are in
//! `docs/routing.md` ("Shared endpoint state"). Key names come from [`crate::keys`].

use std::collections::HashMap;

use deadpool_redis::redis;

use crate::error::QueueError;
use crate::keys::validate_capability;
use crate::queue::Queue;

/// One endpoint's `{ns}:ep:<endpoint>:models` hash; `None` for a field not written yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelsRecord {
    /// `loaded`: JSON array of model names, most recently used first.
    pub loaded_json: Option<String>,
    /// `pulled`: JSON array of `{"name", "size"}`.
    pub pulled_json: Option<String>,
    /// `updated_ms`: last full refresh.
    pub updated_ms: Option<u64>,
    /// `loaded_ms`: last change of `loaded`.
    pub loaded_ms: Option<u64>,
    /// `probed_by`: worker of the last full refresh.
    pub probed_by: Option<String>,
}

impl ModelsRecord {
    fn from_fields(mut f: HashMap<String, String>) -> ModelsRecord {
        let num = |v: Option<String>| v.and_then(|s| s.parse().ok());
        ModelsRecord {
            loaded_json: f.remove("loaded"),
            pulled_json: f.remove("pulled"),
            updated_ms: num(f.remove("updated_ms")),
            loaded_ms: num(f.remove("loaded_ms")),
            probed_by: f.remove("probed_by"),
        }
    }
}

impl Queue {
    /// Takes an endpoint's probe lock for `interval_ms` when nobody holds it (`SET NX PX`);
    /// `true` when `worker` got it.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_probe_claim(
        &self,
        endpoint: &str,
        worker: &str,
        interval_ms: u64,
    ) -> Result<bool, QueueError> {
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.keys().endpoint_probe(endpoint))
                    .arg(worker)
                    .arg("NX")
                    .arg("PX")
                    .arg(interval_ms.max(1)),
            )
            .await?;
        Ok(set.is_some())
    }

    /// The models records of these endpoints, in order (empty for one never written).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_models(
        &self,
        endpoints: &[&str],
    ) -> Result<Vec<ModelsRecord>, QueueError> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for e in endpoints {
            pipe.cmd("HGETALL").arg(self.keys().endpoint_models(e));
        }
        let all: Vec<HashMap<String, String>> = self.query_pipe(&pipe).await?;
        Ok(all.into_iter().map(ModelsRecord::from_fields).collect())
    }

    /// Writes the fields of `record` that are set into the endpoint's models hash.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_models_put(
        &self,
        endpoint: &str,
        record: &ModelsRecord,
    ) -> Result<(), QueueError> {
        let mut fields: Vec<(&str, String)> = Vec::new();
        if let Some(v) = &record.loaded_json {
            fields.push(("loaded", v.clone()));
        }
        if let Some(v) = &record.pulled_json {
            fields.push(("pulled", v.clone()));
        }
        if let Some(v) = record.updated_ms {
            fields.push(("updated_ms", v.to_string()));
        }
        if let Some(v) = record.loaded_ms {
            fields.push(("loaded_ms", v.to_string()));
        }
        if let Some(v) = &record.probed_by {
            fields.push(("probed_by", v.clone()));
        }
        if fields.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys().endpoint_models(endpoint));
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        let _: u64 = self.query(&cmd).await?;
        Ok(())
    }

    /// Publishes `worker`'s view of an endpoint's health (`report_json`) in the endpoint's
    /// health hash, which expires `ttl_ms` after the last write, and adds the endpoint to
    /// the `{ns}:endpoints` set.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_health_publish(
        &self,
        endpoint: &str,
        worker: &str,
        report_json: &str,
        ttl_ms: u64,
    ) -> Result<(), QueueError> {
        let key = self.keys().endpoint_health(endpoint);
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg(worker)
            .arg(report_json)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms.max(1))
            .ignore()
            .cmd("SADD")
            .arg(self.keys().endpoints())
            .arg(endpoint)
            .ignore();
        let () = self.query_pipe(&pipe).await?;
        Ok(())
    }

    /// Every worker's health JSON for an endpoint, by worker id.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_health(
        &self,
        endpoint: &str,
    ) -> Result<HashMap<String, String>, QueueError> {
        self.query(redis::cmd("HGETALL").arg(self.keys().endpoint_health(endpoint)))
            .await
    }

    /// The names in `{ns}:endpoints`, sorted.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_names(&self) -> Result<Vec<String>, QueueError> {
        let mut names: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(self.keys().endpoints()))
            .await?;
        names.sort_unstable();
        Ok(names)
    }

    /// Entries in each capability's three ready streams (`XLEN` summed over high, normal
    /// and low); 0 for a capability without streams.
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] for a capability that cannot name a stream; Redis
    /// errors.
    pub async fn queued_counts(&self, capabilities: &[&str]) -> Result<Vec<u64>, QueueError> {
        if capabilities.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for c in capabilities {
            validate_capability(c)?;
            for s in self.keys().stream_refs(c) {
                pipe.cmd("XLEN").arg(s.key);
            }
        }
        let lens: Vec<u64> = self.query_pipe(&pipe).await?;
        Ok(lens.chunks(3).map(|c| c.iter().sum()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Priority;
    use crate::types::QueueConfig;
    use gleitzeit_testkit::redis::RedisServer;

    #[tokio::test]
    async fn endpoint_state_round_trips_through_redis() {
        let redis = RedisServer::start().unwrap();
        let q = Queue::connect(&redis.url(), QueueConfig::default())
            .await
            .unwrap();
        // The probe lock: one holder until it expires.
        assert!(q.endpoint_probe_claim("e", "w1", 60_000).await.unwrap());
        assert!(!q.endpoint_probe_claim("e", "w2", 60_000).await.unwrap());
        assert!(q.endpoint_probe_claim("f", "w2", 60_000).await.unwrap());

        assert_eq!(
            q.endpoint_models(&["e"]).await.unwrap(),
            vec![ModelsRecord::default()]
        );
        let rec = ModelsRecord {
            loaded_json: Some(r#"["a"]"#.into()),
            pulled_json: Some(r#"[{"name":"a","size":5}]"#.into()),
            updated_ms: Some(7),
            loaded_ms: Some(7),
            probed_by: Some("w1".into()),
        };
        q.endpoint_models_put("e", &rec).await.unwrap();
        q.endpoint_models_put(
            "e",
            &ModelsRecord {
                loaded_json: Some(r#"["b","a"]"#.into()),
                loaded_ms: Some(9),
                ..ModelsRecord::default()
            },
        )
        .await
        .unwrap();
        let got = q.endpoint_models(&["e", "f"]).await.unwrap();
        assert_eq!(got[0].loaded_json.as_deref(), Some(r#"["b","a"]"#));
        assert_eq!(got[0].pulled_json, rec.pulled_json);
        assert_eq!(got[0].updated_ms, Some(7));
        assert_eq!(got[0].loaded_ms, Some(9));
        assert_eq!(got[1], ModelsRecord::default());

        q.endpoint_health_publish("e", "w1", r#"{"state":"ok"}"#, 60_000)
            .await
            .unwrap();
        q.endpoint_health_publish("f", "w1", r#"{"state":"open"}"#, 60_000)
            .await
            .unwrap();
        let h = q.endpoint_health("e").await.unwrap();
        assert_eq!(h["w1"], r#"{"state":"ok"}"#);
        assert_eq!(q.endpoint_names().await.unwrap(), ["e", "f"]);

        // Queued work: entries over the three priority streams.
        let keys = q.keys().clone();
        for p in [Priority::High, Priority::Low, Priority::Low] {
            let _: String = q
                .query(
                    redis::cmd("XADD")
                        .arg(keys.stream("llm:a", p))
                        .arg("*")
                        .arg("wf")
                        .arg("x"),
                )
                .await
                .unwrap();
        }
        assert_eq!(
            q.queued_counts(&["llm:a", "llm:b"]).await.unwrap(),
            vec![3, 0]
        );
        assert!(q.queued_counts(&["llm:{x}"]).await.is_err());
    }
}
