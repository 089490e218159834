//! The bridge between the LLM router and the queue: the router's fleet-wide stores
//! ([`Slots`] as endpoint leases, [`ModelStateStore`] as shared model state and queued work)
//! implemented on Redis through `gleitzeit-queue`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::parked::Lot;
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
/// of the deployment. With a linger ([`RedisSlots::reusing`]) a slot returned after a plain
/// answer is parked for this process's next call instead (see [`crate::parked`]).
#[derive(Debug, Clone)]
pub struct RedisSlots {
    queue: Queue,
    /// The consumer name leases are taken under (`<owner>|<id>` members), so that a reclaim
    /// of this worker's entries also frees its leases; `None` takes anonymous leases, which
    /// only expire.
    owner: Option<String>,
    /// Parked and active leases of this process (a zero linger parks nothing).
    lot: Arc<Lot>,
}

impl RedisSlots {
    /// Slots kept through `queue` (its namespace and connection pool), with anonymous leases.
    pub fn new(queue: Queue) -> RedisSlots {
        RedisSlots {
            queue,
            owner: None,
            lot: Arc::new(Lot::new(Duration::ZERO)),
        }
    }

    /// Slots whose leases are owned by the consumer `owner` (this worker's consumer name).
    pub fn owned_by(queue: Queue, owner: &str) -> RedisSlots {
        RedisSlots {
            owner: Some(owner.to_owned()),
            ..RedisSlots::new(queue)
        }
    }

    /// These slots, parking a lease returned after a plain answer for `linger` so that the
    /// next call of this process on the endpoint takes it without a round trip (zero: every
    /// lease is returned at once). See [`crate::parked`].
    pub fn reusing(self, linger: Duration) -> RedisSlots {
        RedisSlots {
            lot: Arc::new(Lot::new(linger)),
            ..self
        }
    }

    /// Leases parked now in this process.
    pub fn parked(&self) -> usize {
        self.lot.parked()
    }

    /// Returns a lease to the fleet (one `ZREM`).
    async fn give_back(&self, endpoint: &str, real: &str) -> Result<(), SlotError> {
        self.queue
            .lease_release(endpoint, &self.member(real))
            .await
            .map(|_| ())
            .map_err(slot_error)
    }

    /// Returns leases `(endpoint, real)` to the fleet in one round trip (nothing asked when
    /// there are none): every one is sent, so a failure on one leaves none of the others
    /// behind (a failed one expires after `lease_ttl`).
    async fn give_back_all(&self, leases: &[(String, String)]) -> Result<(), SlotError> {
        let members: Vec<(&str, String)> = leases
            .iter()
            .map(|(endpoint, real)| (endpoint.as_str(), self.member(real)))
            .collect();
        let pairs: Vec<(&str, &str)> = members.iter().map(|(e, m)| (*e, m.as_str())).collect();
        self.queue
            .lease_release_many(&pairs)
            .await
            .map(|_| ())
            .map_err(slot_error)
    }

    /// Parks the lease `real` on `endpoint` (parked at `since`) and starts its sweep: if no
    /// call has taken it when the linger is over, it goes back to the fleet.
    fn sweep_later(&self, endpoint: &str, real: String, since: Instant) {
        let slots = self.clone();
        let endpoint = endpoint.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(slots.lot.linger()).await;
            if slots.lot.expire(&real, since) {
                if let Err(e) = slots.give_back(&endpoint, &real).await {
                    tracing::warn!(endpoint = %endpoint, error = %e, "cannot return a parked slot lease; it will expire");
                }
            }
        });
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
            let names: Vec<&str> = candidates.iter().map(|c| c.endpoint).collect();
            let take = self.lot.take(&names, pick == SlotPick::InOrder, lease_id);
            // Parked slots on these endpoints that the call does not take go back first: the
            // script counts them as taken, and this process must not hold one it does not
            // use. Also when the call reuses another one: the lot has let go of them, so
            // nothing else would return them before their lease expires (`lease_ttl`),
            // and meanwhile they would count against the endpoint's limit for the fleet.
            self.give_back_all(&take.returned).await?;
            if let Some(k) = take.reused {
                // The parked lease is still this process's in Redis: nothing to ask.
                let n = candidates.len();
                return Ok(SlotGrant {
                    chosen: Some(k),
                    holds: vec![None; n],
                    token_waits: vec![None; n],
                    limits: vec![None; n],
                });
            }
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
            if grant.chosen.is_some() {
                self.lot.granted(lease_id, ttl);
            }
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
        // Only an answer that taught the fleet nothing parks its lease: errors and lessons
        // return it (the next call asks the fleet again).
        let plain = matches!(outcome, SlotOutcome::Answered { .. }) && lesson.is_none();
        async move {
            let real = match self.lot.finish(endpoint, lease_id, plain) {
                Ok((real, since)) => {
                    self.sweep_later(endpoint, real, since);
                    return Ok(());
                }
                Err(real) => real,
            };
            match lesson {
                // Nothing learned: the plain release (one ZREM) of the common case.
                None => self.give_back(endpoint, &real).await,
                Some(lesson) => self
                    .queue
                    .lease_settle(endpoint, &self.member(&real), lesson, now_ms())
                    .await
                    .map(|_| ())
                    .map_err(slot_error),
            }
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SlotError>> {
        async move { self.give_back_all(&self.lot.close()).await }.boxed()
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
                    &self.member(&self.lot.real(lease_id)),
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
            // A release is never parked: the router releases calls it abandoned.
            let real = match self.lot.finish(endpoint, lease_id, false) {
                Ok((real, _)) | Err(real) => real,
            };
            self.give_back(endpoint, &real).await
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
    use deadpool_redis::redis;
    use gleitzeit_queue::QueueConfig;
    use gleitzeit_testkit::redis::RedisServer;

    const TTL: Duration = Duration::from_secs(120);

    fn one(endpoint: &str, max: u32) -> [SlotCandidate<'_>; 1] {
        [SlotCandidate { endpoint, max }]
    }

    /// Two endpoints with one slot each, in this order.
    fn first_and_second() -> [SlotCandidate<'static>; 2] {
        [
            SlotCandidate {
                endpoint: "first",
                max: 1,
            },
            SlotCandidate {
                endpoint: "second",
                max: 1,
            },
        ]
    }

    fn plain() -> SlotOutcome {
        SlotOutcome::Answered {
            adapting: false,
            max: 0,
            budget: None,
        }
    }

    /// A worker's slots, and a handle on its Redis for reading the leases there.
    async fn slots(redis: &RedisServer, owner: &str, linger: Duration) -> (RedisSlots, Leases) {
        let queue = Queue::connect(&redis.url(), QueueConfig::default())
            .await
            .unwrap();
        (
            RedisSlots::owned_by(queue.clone(), owner).reusing(linger),
            Leases(queue, redis.url()),
        )
    }

    struct Leases(Queue, String);

    /// The lease members held on `endpoint` in Redis.
    async fn members(leases: &Leases, endpoint: &str) -> Vec<String> {
        let key = leases.0.keys().endpoint_leases(endpoint);
        let mut conn = redis::Client::open(leases.1.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// A slot returned after a plain answer stays this worker's lease in Redis and the next
    /// call takes it under its own id, without a second lease; its renewals reach the lease
    /// in Redis; an answer that teaches the fleet something returns it for real.
    #[tokio::test]
    async fn a_plain_answer_parks_the_lease_and_the_next_call_takes_it_over() {
        let redis = RedisServer::start().unwrap();
        let (s, q) = slots(&redis, "w1", Duration::from_secs(60)).await;
        let c = one("e", 4);
        let g = s
            .acquire_with(&c, SlotPick::LeastLoaded, "c1", TTL, 0)
            .await
            .unwrap();
        assert_eq!(g.chosen, Some(0));
        s.settle("e", "c1", plain()).await.unwrap();
        assert_eq!(s.parked(), 1);
        assert_eq!(
            members(&q, "e").await,
            ["w1|c1"],
            "the parked slot is still held"
        );

        let g = s
            .acquire_with(&c, SlotPick::LeastLoaded, "c2", TTL, 0)
            .await
            .unwrap();
        assert_eq!(g.chosen, Some(0));
        assert_eq!(s.parked(), 0);
        assert_eq!(members(&q, "e").await, ["w1|c1"], "no second lease");
        assert!(
            s.renew("e", "c2", TTL).await.unwrap(),
            "renews the lease it took over"
        );

        s.settle("e", "c2", SlotOutcome::Overloaded).await.unwrap();
        assert_eq!(s.parked(), 0);
        assert!(members(&q, "e").await.is_empty());
        // An abandoned call's release is never parked either.
        s.acquire_with(&c, SlotPick::InOrder, "c3", TTL, 0)
            .await
            .unwrap();
        s.release("e", "c3").await.unwrap();
        assert_eq!(s.parked(), 0);
        assert!(members(&q, "e").await.is_empty());
    }

    /// A parked slot counts against the endpoint's limit for every worker, so the limit
    /// holds across the fleet; the drain's flush gives it to the others and parks nothing
    /// after it; a slot nobody reuses goes back on its own after the linger.
    #[tokio::test]
    async fn a_parked_slot_counts_for_the_fleet_until_the_linger_or_the_flush_returns_it() {
        let redis = RedisServer::start().unwrap();
        let (a, q) = slots(&redis, "wa", Duration::from_secs(60)).await;
        let (b, _) = slots(&redis, "wb", Duration::from_secs(60)).await;
        let c = one("e", 1);
        assert_eq!(
            a.acquire_with(&c, SlotPick::InOrder, "a1", TTL, 0)
                .await
                .unwrap()
                .chosen,
            Some(0)
        );
        a.settle("e", "a1", plain()).await.unwrap();
        assert_eq!(
            b.acquire_with(&c, SlotPick::InOrder, "b1", TTL, 0)
                .await
                .unwrap()
                .chosen,
            None,
            "the one slot is parked with the other worker"
        );
        a.flush().await.unwrap();
        assert!(members(&q, "e").await.is_empty());
        assert_eq!(
            b.acquire_with(&c, SlotPick::InOrder, "b2", TTL, 0)
                .await
                .unwrap()
                .chosen,
            Some(0)
        );
        b.settle("e", "b2", plain()).await.unwrap();
        assert_eq!(members(&q, "e").await, ["wb|b2"]);
        // After its flush a worker parks nothing.
        b.flush().await.unwrap();
        b.acquire_with(&c, SlotPick::InOrder, "b3", TTL, 0)
            .await
            .unwrap();
        b.settle("e", "b3", plain()).await.unwrap();
        assert_eq!(b.parked(), 0);
        assert!(members(&q, "e").await.is_empty());

        // A short linger: the sweep returns the slot without any further call.
        let (short, _) = slots(&redis, "wc", Duration::from_millis(50)).await;
        short
            .acquire_with(&c, SlotPick::InOrder, "s1", TTL, 0)
            .await
            .unwrap();
        short.settle("e", "s1", plain()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !members(&q, "e").await.is_empty() {
            assert!(Instant::now() < deadline, "the parked slot never went back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(short.parked(), 0);
    }

    /// An in-order pick reuses a parked slot only on its first candidate (what the script
    /// would choose when that one has room); a parked slot on another candidate goes back
    /// before the fleet is asked, so the worker never holds a slot it does not use.
    #[tokio::test]
    async fn an_in_order_pick_returns_a_slot_parked_on_a_later_candidate() {
        let redis = RedisServer::start().unwrap();
        let (s, q) = slots(&redis, "w", Duration::from_secs(60)).await;
        let second = one("second", 1);
        s.acquire_with(&second, SlotPick::InOrder, "x1", TTL, 0)
            .await
            .unwrap();
        s.settle("second", "x1", plain()).await.unwrap();
        let both = first_and_second();
        let g = s
            .acquire_with(&both, SlotPick::InOrder, "x2", TTL, 0)
            .await
            .unwrap();
        assert_eq!(g.chosen, Some(0));
        assert_eq!(members(&q, "first").await, ["w|x2"]);
        assert!(members(&q, "second").await.is_empty());
        assert_eq!(s.parked(), 0);
    }

    /// The drain returns every parked slot, on every endpoint, in one round trip.
    #[tokio::test]
    async fn the_flush_returns_the_parked_slots_of_every_endpoint() {
        let redis = RedisServer::start().unwrap();
        let (s, q) = slots(&redis, "w", Duration::from_secs(60)).await;
        for (endpoint, id) in [("first", "x1"), ("second", "x2"), ("first", "x3")] {
            let c = one(endpoint, 2);
            s.acquire_with(&c, SlotPick::InOrder, id, TTL, 0)
                .await
                .unwrap();
        }
        // x3 and x2 end with plain answers and are parked; x1 is still in use.
        s.settle("first", "x3", plain()).await.unwrap();
        s.settle("second", "x2", plain()).await.unwrap();
        assert_eq!(s.parked(), 2);
        assert_eq!(members(&q, "first").await.len(), 2);
        s.flush().await.unwrap();
        assert_eq!(s.parked(), 0);
        assert_eq!(members(&q, "first").await, ["w|x1"], "the one in use stays");
        assert!(members(&q, "second").await.is_empty());
    }

    /// A call that reuses the slot parked on its first candidate returns the one parked on
    /// a later candidate (which an in-order pick may not take) at once: the lot lets go of
    /// it, so no sweep would, and it would count against that endpoint's limit for the
    /// whole fleet until its lease expired.
    #[tokio::test]
    async fn a_reusing_call_returns_the_parked_slots_it_does_not_take() {
        let redis = RedisServer::start().unwrap();
        let (s, q) = slots(&redis, "w", Duration::from_secs(60)).await;
        for (endpoint, id) in [("second", "x1"), ("first", "x2")] {
            let c = one(endpoint, 1);
            s.acquire_with(&c, SlotPick::InOrder, id, TTL, 0)
                .await
                .unwrap();
            s.settle(endpoint, id, plain()).await.unwrap();
        }
        assert_eq!(s.parked(), 2);
        let both = first_and_second();
        let g = s
            .acquire_with(&both, SlotPick::InOrder, "x3", TTL, 0)
            .await
            .unwrap();
        assert_eq!(g.chosen, Some(0), "the slot parked on the first is reused");
        assert_eq!(members(&q, "first").await, ["w|x2"]);
        assert!(
            members(&q, "second").await.is_empty(),
            "the slot parked on the second went back"
        );
        assert_eq!(s.parked(), 0);
    }

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
