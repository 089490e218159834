//! Shared endpoint state in Redis: which models each LLM endpoint has loaded and pulled, which
//! it is loading or unloading now, the probe lock that lets one worker per interval poll an endpoint, the
//! lock of the fleet's one placement planner, each worker's view of each endpoint's health,
//! and the set of endpoint names. (What queued work wants of each model is `demand.rs`.)
//!
//! The values are opaque JSON text to this crate (like task specs); the formats are in
//! `docs/routing.md` ("Shared endpoint state"). Key names come from [`crate::keys`].

use std::collections::HashMap;

use deadpool_redis::redis;

use crate::error::QueueError;
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

/// The marks of one model on one endpoint ([`Queue::endpoint_marks`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadMarks {
    /// A worker is loading the model there now.
    pub loading: bool,
    /// A worker is unloading it there (or just did).
    pub unloading: bool,
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
        let key = self.spread_keys().await?.endpoint_probe(endpoint);
        self.set_unless_held(&key, worker, interval_ms).await
    }

    /// `SET key holder NX PX ttl_ms`: `true` when `holder` set it (nobody held it).
    async fn set_unless_held(
        &self,
        key: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<bool, QueueError> {
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms.max(1)),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Marks `model` as loading on `endpoint` for `ttl_ms` (`SET NX PX`, value = `worker`);
    /// `false` when it is marked already (someone else is loading it there). Either way a
    /// load is under way, so an unloading mark of the model there is deleted.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_loading_begin(
        &self,
        endpoint: &str,
        model: &str,
        worker: &str,
        ttl_ms: u64,
    ) -> Result<bool, QueueError> {
        let keys = self.spread_keys().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(keys.endpoint_loading(endpoint, model))
            .arg(worker)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1))
            .cmd("DEL")
            .arg(keys.endpoint_unloading(endpoint, model))
            .ignore();
        let (set,): (Option<String>,) = self.query_pipe(&pipe).await?;
        Ok(set.is_some())
    }

    /// Clears the loading mark of `model` on `endpoint` (the load was answered).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_loading_end(
        &self,
        endpoint: &str,
        model: &str,
    ) -> Result<(), QueueError> {
        let _: u64 = self
            .query(
                redis::cmd("DEL").arg(self.spread_keys().await?.endpoint_loading(endpoint, model)),
            )
            .await?;
        Ok(())
    }

    /// Marks `model` as unloading from `endpoint` for `ttl_ms` (`SET NX PX`, value =
    /// `worker`); `false` when it is marked already (someone else is unloading it there).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_unloading_begin(
        &self,
        endpoint: &str,
        model: &str,
        worker: &str,
        ttl_ms: u64,
    ) -> Result<bool, QueueError> {
        let key = self
            .spread_keys()
            .await?
            .endpoint_unloading(endpoint, model);
        self.set_unless_held(&key, worker, ttl_ms).await
    }

    /// Ends the unloading mark of `model` on `endpoint`: deleted when `linger_ms` is 0,
    /// otherwise kept for `linger_ms` more (while cached records may still list the model).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_unloading_end(
        &self,
        endpoint: &str,
        model: &str,
        linger_ms: u64,
    ) -> Result<(), QueueError> {
        let key = self
            .spread_keys()
            .await?
            .endpoint_unloading(endpoint, model);
        let mut cmd = if linger_ms == 0 {
            redis::cmd("DEL")
        } else {
            redis::cmd("PEXPIRE")
        };
        cmd.arg(key);
        if linger_ms > 0 {
            cmd.arg(linger_ms);
        }
        let _: u64 = self.query(&cmd).await?;
        Ok(())
    }

    /// Whether `model` is loading and whether it is unloading on each of `endpoints`, in
    /// order (one `MGET` per endpoint, [`Queue::per_name`]).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_marks(
        &self,
        endpoints: &[&str],
        model: &str,
    ) -> Result<Vec<LoadMarks>, QueueError> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<(Option<String>, Option<String>)> = self
            .per_name_one(endpoints, "endpoint_marks", |keys, e, pipe| {
                pipe.cmd("MGET")
                    .arg(keys.endpoint_loading(e, model))
                    .arg(keys.endpoint_unloading(e, model));
            })
            .await?;
        Ok(marks
            .into_iter()
            .map(|(loading, unloading)| LoadMarks {
                loading: loading.is_some(),
                unloading: unloading.is_some(),
            })
            .collect())
    }

    /// Counts one more call of `model` in flight on `endpoint`; the endpoint's count hash
    /// lives `ttl_ms` after the last call began.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_busy_begin(
        &self,
        endpoint: &str,
        model: &str,
        ttl_ms: u64,
    ) -> Result<(), QueueError> {
        let key = self.spread_keys().await?.endpoint_busy(endpoint);
        let mut pipe = redis::pipe();
        pipe.cmd("HINCRBY")
            .arg(&key)
            .arg(model)
            .arg(1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms.max(1))
            .ignore();
        let () = self.query_pipe(&pipe).await?;
        Ok(())
    }

    /// Counts one call of `model` fewer in flight on `endpoint`. A field at 0 stays (readers
    /// leave it out; the hash expires after the last call began): deleting it would race
    /// with a concurrent begin and lose that call.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_busy_end(&self, endpoint: &str, model: &str) -> Result<(), QueueError> {
        let key = self.spread_keys().await?.endpoint_busy(endpoint);
        let _: i64 = self
            .query(redis::cmd("HINCRBY").arg(&key).arg(model).arg(-1))
            .await?;
        Ok(())
    }

    /// Calls in flight per model on each of `endpoints` (models with none left out).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn endpoint_busy(
        &self,
        endpoints: &[&str],
    ) -> Result<Vec<HashMap<String, u64>>, QueueError> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let all: Vec<HashMap<String, i64>> = self
            .per_name_one(endpoints, "endpoint_busy", |keys, e, pipe| {
                pipe.cmd("HGETALL").arg(keys.endpoint_busy(e));
            })
            .await?;
        Ok(all
            .into_iter()
            .map(|m| {
                m.into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| (k, n.unsigned_abs()))
                    .collect()
            })
            .collect())
    }

    /// Takes or keeps the placement planner's lock for `ttl_ms`: `true` when `worker` holds
    /// it now (taken free, or renewed because it was its own).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn planner_claim(&self, worker: &str, ttl_ms: u64) -> Result<bool, QueueError> {
        let key = self.spread_keys().await?.placement_planner();
        if self.set_unless_held(&key, worker, ttl_ms).await? {
            return Ok(true);
        }
        let holder: Option<String> = self.query(redis::cmd("GET").arg(&key)).await?;
        if holder.as_deref() != Some(worker) {
            return Ok(false);
        }
        // Renewing our own lock; should it have expired between the two reads and been taken,
        // this lengthens the new holder's term by one interval, which costs nothing.
        let _: u64 = self
            .query(redis::cmd("PEXPIRE").arg(&key).arg(ttl_ms.max(1)))
            .await?;
        Ok(true)
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
        let all: Vec<HashMap<String, String>> = self
            .per_name_one(endpoints, "endpoint_models", |keys, e, pipe| {
                pipe.cmd("HGETALL").arg(keys.endpoint_models(e));
            })
            .await?;
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
        cmd.arg(self.spread_keys().await?.endpoint_models(endpoint));
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
        let keys = self.spread_keys().await?;
        let key = keys.endpoint_health(endpoint);
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg(worker)
            .arg(report_json)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms.max(1))
            .ignore();
        let mut add = redis::cmd("SADD");
        add.arg(keys.endpoints()).arg(endpoint);
        if keys.is_spread() {
            // The set is a home key, the health an endpoint key: two slots.
            let () = self.query_pipe(&pipe).await?;
            let _: u64 = self.query(&add).await?;
        } else {
            pipe.add_command(add).ignore();
            let () = self.query_pipe(&pipe).await?;
        }
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
        let key = self.spread_keys().await?.endpoint_health(endpoint);
        self.query(redis::cmd("HGETALL").arg(key)).await
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoint_state_round_trips_through_redis() {
        let (_redis, q) = crate::types::test_queue().await;
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
        // Loading marks: one holder per endpoint and model, visible to every reader.
        assert!(q
            .endpoint_loading_begin("e", "m", "w1", 60_000)
            .await
            .unwrap());
        assert!(!q
            .endpoint_loading_begin("e", "m", "w2", 60_000)
            .await
            .unwrap());
        let marks = |loading, unloading| LoadMarks { loading, unloading };
        assert_eq!(
            q.endpoint_marks(&["e", "f"], "m").await.unwrap(),
            [marks(true, false), marks(false, false)]
        );
        q.endpoint_loading_end("e", "m").await.unwrap();
        assert_eq!(
            q.endpoint_marks(&["e"], "m").await.unwrap(),
            [marks(false, false)]
        );
        // Unloading marks: one holder; a load of the model deletes it; it can linger.
        assert!(q
            .endpoint_unloading_begin("f", "m", "w1", 60_000)
            .await
            .unwrap());
        assert!(!q
            .endpoint_unloading_begin("f", "m", "w2", 60_000)
            .await
            .unwrap());
        assert_eq!(
            q.endpoint_marks(&["e", "f"], "m").await.unwrap(),
            [marks(false, false), marks(false, true)]
        );
        q.endpoint_unloading_end("f", "m", 60_000).await.unwrap();
        assert_eq!(
            q.endpoint_marks(&["f"], "m").await.unwrap(),
            [marks(false, true)]
        );
        assert!(q
            .endpoint_loading_begin("f", "m", "w2", 60_000)
            .await
            .unwrap());
        assert_eq!(
            q.endpoint_marks(&["f"], "m").await.unwrap(),
            [marks(true, false)]
        );
        q.endpoint_loading_end("f", "m").await.unwrap();
        q.endpoint_unloading_begin("f", "m", "w1", 60_000)
            .await
            .unwrap();
        q.endpoint_unloading_end("f", "m", 0).await.unwrap();
        assert_eq!(
            q.endpoint_marks(&["f"], "m").await.unwrap(),
            [marks(false, false)]
        );
        // Calls in flight per model: counted up and down, left out at zero.
        q.endpoint_busy_begin("e", "m", 60_000).await.unwrap();
        q.endpoint_busy_begin("e", "m", 60_000).await.unwrap();
        q.endpoint_busy_begin("e", "n", 60_000).await.unwrap();
        q.endpoint_busy_end("e", "n").await.unwrap();
        let busy = q.endpoint_busy(&["e", "f"]).await.unwrap();
        assert_eq!(busy[0], HashMap::from([("m".to_owned(), 2)]));
        assert!(busy[1].is_empty());
        // The planner lock: taken, kept by its holder, refused to others.
        assert!(q.planner_claim("w1", 60_000).await.unwrap());
        assert!(q.planner_claim("w1", 60_000).await.unwrap());
        assert!(!q.planner_claim("w2", 60_000).await.unwrap());

        let h = q.endpoint_health("e").await.unwrap();
        assert_eq!(h["w1"], r#"{"state":"ok"}"#);
        assert_eq!(q.endpoint_names().await.unwrap(), ["e", "f"]);
    }
}
