//! The bridge between the LLM router and the queue: the router's fleet-wide stores
//! ([`Slots`] as endpoint leases, [`ModelStateStore`] as shared model state and queued work)
//! implemented on Redis through `gleitzeit-queue`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::FutureExt;
use gleitzeit_llm::router::aimd;
use gleitzeit_llm::{
    EndpointModels, HealthReport, ModelDemand, ModelMark, ModelStateStore, SlotCandidate,
    SlotError, SlotPick, Slots, StoreError,
};
use gleitzeit_llm::{RateBudget, SlotGrant, SlotOutcome};
use gleitzeit_queue::{
    lease_member, LeaseBudget, LeaseCandidate, LeaseLesson, LeasePick, ModelsRecord, Queue,
};

/// Capability prefix of LLM task streams (`llm:<model>`).
pub(crate) const LLM_PREFIX: &str = "llm:";
/// Running tasks per stream looked at for the tasks about to be ready (more than any
/// endpoint set runs at once in practice; the rest would only add to a demand already high).
const DEMAND_RUNNING_SCAN: usize = 256;

/// Model state in Redis (`{ns}:ep:<endpoint>:models`, `:probe`, `:health`, `:loading:<model>`,
/// the planner lock `{ns}:ep::planner`, `{ns}:endpoints`), shared by every worker of the
/// deployment; demand is read from the model's capability streams (`{ns}:q:llm:<model>`)
/// and the workflow DAGs (`Queue::demand`).
#[derive(Debug, Clone)]
pub struct RedisModelState {
    queue: Queue,
}

impl RedisModelState {
    /// Model state kept through `queue` (its namespace and connection pool).
    pub fn new(queue: Queue) -> RedisModelState {
        RedisModelState { queue }
    }
}

fn store_error(e: impl std::fmt::Display) -> StoreError {
    StoreError {
        message: e.to_string(),
    }
}

/// The record as the router sees it; unreadable JSON fields count as empty (the next
/// refresh rewrites them).
fn endpoint_models(r: ModelsRecord) -> EndpointModels {
    EndpointModels {
        loaded: r
            .loaded_json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        pulled: r
            .pulled_json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        updated_ms: r.updated_ms,
        loaded_ms: r.loaded_ms,
        probed_by: r.probed_by,
    }
}

impl ModelStateStore for RedisModelState {
    fn claim_probe<'a>(
        &'a self,
        endpoint: &'a str,
        worker: &'a str,
        interval: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            self.queue
                .endpoint_probe_claim(endpoint, worker, ttl_ms(interval))
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn models<'a>(
        &'a self,
        endpoints: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<EndpointModels>, StoreError>> {
        async move {
            let records = self
                .queue
                .endpoint_models(endpoints)
                .await
                .map_err(store_error)?;
            Ok(records.into_iter().map(endpoint_models).collect())
        }
        .boxed()
    }

    fn put_models<'a>(
        &'a self,
        endpoint: &'a str,
        models: &'a EndpointModels,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let record = ModelsRecord {
                loaded_json: Some(serde_json::to_string(&models.loaded).map_err(store_error)?),
                pulled_json: Some(serde_json::to_string(&models.pulled).map_err(store_error)?),
                updated_ms: models.updated_ms,
                loaded_ms: models.loaded_ms,
                probed_by: models.probed_by.clone(),
            };
            self.queue
                .endpoint_models_put(endpoint, &record)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn put_loaded<'a>(
        &'a self,
        endpoint: &'a str,
        loaded: &'a [String],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let record = ModelsRecord {
                loaded_json: Some(serde_json::to_string(loaded).map_err(store_error)?),
                loaded_ms: Some(at_ms),
                ..ModelsRecord::default()
            };
            self.queue
                .endpoint_models_put(endpoint, &record)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn publish_health<'a>(
        &'a self,
        endpoint: &'a str,
        report: &'a HealthReport,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let json = serde_json::to_string(report).map_err(store_error)?;
            self.queue
                .endpoint_health_publish(endpoint, &report.worker, &json, ttl_ms(ttl))
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn demand<'a>(
        &'a self,
        models: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<ModelDemand>, StoreError>> {
        async move {
            let caps: Vec<String> = models.iter().map(|m| format!("{LLM_PREFIX}{m}")).collect();
            let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
            let read = self
                .queue
                .demand(&refs, DEMAND_RUNNING_SCAN)
                .await
                .map_err(store_error)?;
            Ok(read
                .into_iter()
                .map(|d| ModelDemand {
                    ready: d.ready,
                    soon: d.soon,
                })
                .collect())
        }
        .boxed()
    }

    fn marks<'a>(
        &'a self,
        endpoints: &'a [&'a str],
        model: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ModelMark>, StoreError>> {
        async move {
            let read = self
                .queue
                .endpoint_marks(endpoints, model)
                .await
                .map_err(store_error)?;
            // A load started after an unload wins: the model is on its way back.
            Ok(read
                .into_iter()
                .map(|m| match (m.loading, m.unloading) {
                    (true, _) => ModelMark::Loading,
                    (false, true) => ModelMark::Unloading,
                    (false, false) => ModelMark::Settled,
                })
                .collect())
        }
        .boxed()
    }

    fn begin_loading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        by: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            self.queue
                .endpoint_loading_begin(endpoint, model, by, ttl_ms(ttl))
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn end_loading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.queue
                .endpoint_loading_end(endpoint, model)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn begin_unloading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        by: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            self.queue
                .endpoint_unloading_begin(endpoint, model, by, ttl_ms(ttl))
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn end_unloading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        linger: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let linger_ms = if linger.is_zero() { 0 } else { ttl_ms(linger) };
            self.queue
                .endpoint_unloading_end(endpoint, model, linger_ms)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn call_began<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.queue
                .endpoint_busy_begin(endpoint, model, ttl_ms(ttl))
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn call_ended<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.queue
                .endpoint_busy_end(endpoint, model)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn busy<'a>(
        &'a self,
        endpoints: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<HashMap<String, u64>>, StoreError>> {
        async move {
            self.queue
                .endpoint_busy(endpoints)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn claim_planner<'a>(
        &'a self,
        worker: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            self.queue
                .planner_claim(worker, ttl_ms(ttl))
                .await
                .map_err(store_error)
        }
        .boxed()
    }
}

/// In-flight slots as leases in Redis (`{ns}:ep:<endpoint>:leases`), shared by every worker
/// of the deployment.
#[derive(Debug, Clone)]
pub struct RedisSlots {
    queue: Queue,
    /// The consumer name leases are taken under (`<owner>|<id>` members), so that a reclaim
    /// of this worker's entries also frees its leases; `None` takes anonymous leases, which
    /// only expire.
    owner: Option<String>,
}

impl RedisSlots {
    /// Slots kept through `queue` (its namespace and connection pool), with anonymous leases.
    pub fn new(queue: Queue) -> RedisSlots {
        RedisSlots { queue, owner: None }
    }

    /// Slots whose leases are owned by the consumer `owner` (this worker's consumer name).
    pub fn owned_by(queue: Queue, owner: &str) -> RedisSlots {
        RedisSlots {
            queue,
            owner: Some(owner.to_owned()),
        }
    }

    /// The lease member stored for the router's lease id.
    fn member(&self, lease_id: &str) -> String {
        match &self.owner {
            Some(owner) => lease_member(owner, lease_id),
            None => lease_id.to_owned(),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The budget an answer reported, as the lease store keeps it.
fn lease_budget(b: RateBudget) -> LeaseBudget {
    LeaseBudget {
        requests: b.requests.map(|l| (l.remaining, l.reset_ms)),
        tokens: b.tokens.map(|l| (l.remaining, l.reset_ms)),
    }
}

fn slot_error(e: gleitzeit_queue::QueueError) -> SlotError {
    SlotError {
        message: e.to_string(),
    }
}

impl Slots for RedisSlots {
    fn acquire_with<'a>(
        &'a self,
        candidates: &'a [SlotCandidate<'a>],
        pick: SlotPick,
        lease_id: &'a str,
        ttl: Duration,
        tokens: u64,
    ) -> BoxFuture<'a, Result<SlotGrant, SlotError>> {
        async move {
            let cands: Vec<LeaseCandidate<'_>> = candidates
                .iter()
                .map(|c| LeaseCandidate {
                    endpoint: c.endpoint,
                    max: c.max,
                })
                .collect();
            let pick = match pick {
                SlotPick::InOrder => LeasePick::InOrder,
                SlotPick::LeastLoaded => LeasePick::LeastLoaded,
            };
            let now = now_ms();
            let grant = self
                .queue
                .lease_acquire(
                    &cands,
                    pick,
                    &self.member(lease_id),
                    tokens,
                    now,
                    now.saturating_add(ttl_ms(ttl)),
                )
                .await
                .map_err(slot_error)?;
            Ok(SlotGrant {
                chosen: grant.chosen,
                holds: grant
                    .holds_ms
                    .iter()
                    .map(|&ms| (ms > 0).then(|| Duration::from_millis(ms)))
                    .collect(),
                token_waits: grant
                    .token_waits_ms
                    .iter()
                    .map(|&ms| (ms > 0).then(|| Duration::from_millis(ms)))
                    .collect(),
                limits: grant.limits,
            })
        }
        .boxed()
    }

    fn acquire<'a>(
        &'a self,
        candidates: &'a [SlotCandidate<'a>],
        pick: SlotPick,
        lease_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<usize>, SlotError>> {
        async move {
            Ok(self
                .acquire_with(candidates, pick, lease_id, ttl, 0)
                .await?
                .chosen)
        }
        .boxed()
    }

    fn settle<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
        outcome: SlotOutcome,
    ) -> BoxFuture<'a, Result<(), SlotError>> {
        let lesson = match outcome {
            SlotOutcome::Answered {
                adapting,
                max,
                budget,
            } if adapting || budget.is_some() => Some(LeaseLesson::Answered {
                grow: adapting,
                max,
                budget: budget.map(lease_budget).unwrap_or_default(),
            }),
            SlotOutcome::Overloaded => Some(LeaseLesson::Overloaded {
                ttl_ms: ttl_ms(aimd::ADAPTED_LIMIT_TTL),
            }),
            SlotOutcome::RateLimited { wait } => Some(LeaseLesson::Hold { ms: ttl_ms(wait) }),
            SlotOutcome::Answered { .. } | SlotOutcome::Other => None,
        };
        async move {
            match lesson {
                // Nothing learned: the plain release (one ZREM) of the common case.
                None => self.release(endpoint, lease_id).await,
                Some(lesson) => self
                    .queue
                    .lease_settle(endpoint, &self.member(lease_id), lesson, now_ms())
                    .await
                    .map(|_| ())
                    .map_err(slot_error),
            }
        }
        .boxed()
    }

    fn renew<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SlotError>> {
        async move {
            self.queue
                .lease_renew(
                    endpoint,
                    &self.member(lease_id),
                    now_ms().saturating_add(ttl_ms(ttl)),
                )
                .await
                .map_err(slot_error)
        }
        .boxed()
    }

    fn release<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SlotError>> {
        async move {
            self.queue
                .lease_release(endpoint, &self.member(lease_id))
                .await
                .map(|_| ())
                .map_err(slot_error)
        }
        .boxed()
    }

    fn counts<'a>(
        &'a self,
        endpoints: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<u64>, SlotError>> {
        async move {
            self.queue
                .lease_counts(endpoints, now_ms())
                .await
                .map_err(slot_error)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleitzeit_queue::QueueConfig;
    use gleitzeit_testkit::redis::RedisServer;

    /// The marks as the fleet reads them through Redis: an unload under way shows as
    /// unloading, a load that starts meanwhile wins over it (and ends it), and an unload's
    /// mark goes at once after a failure or lingers after an answer.
    #[tokio::test]
    async fn loading_and_unloading_marks_read_back_through_redis() {
        let redis = RedisServer::start().unwrap();
        let queue = Queue::connect(&redis.url(), QueueConfig::default())
            .await
            .unwrap();
        let store = RedisModelState::new(queue);
        let long = Duration::from_secs(60);
        let both = ["e", "f"];
        use ModelMark::{Loading, Settled, Unloading};
        assert_eq!(store.marks(&both, "m").await.unwrap(), [Settled, Settled]);

        assert!(store.begin_unloading("e", "m", "w1", long).await.unwrap());
        assert!(!store.begin_unloading("e", "m", "w2", long).await.unwrap());
        assert_eq!(store.marks(&both, "m").await.unwrap(), [Unloading, Settled]);

        assert!(store.begin_loading("e", "m", "w2", long).await.unwrap());
        assert_eq!(store.marks(&both, "m").await.unwrap(), [Loading, Settled]);
        store.end_loading("e", "m").await.unwrap();
        assert_eq!(store.marks(&both, "m").await.unwrap(), [Settled, Settled]);

        assert!(store.begin_unloading("f", "m", "w1", long).await.unwrap());
        store.end_unloading("f", "m", Duration::ZERO).await.unwrap();
        assert_eq!(store.marks(&both, "m").await.unwrap(), [Settled, Settled]);
        assert!(store.begin_unloading("f", "m", "w1", long).await.unwrap());
        store.end_unloading("f", "m", long).await.unwrap();
        assert_eq!(store.marks(&both, "m").await.unwrap(), [Settled, Unloading]);
    }
}
