//! Which models each endpoint has loaded and pulled, and how each process sees each
//! endpoint's health — state that a fleet shares so that one worker polls an endpoint per
//! interval and every worker can place calls where the model is already warm.
//!
//! [`ModelStateStore`] is where that state lives: `LocalModelState` (`local_state.rs`)
//! keeps it in memory (one process, tests); the worker keeps it in Redis
//! (`{ns}:ep:<name>:models`, `:probe`, `:health`, `:loading:<model>`, `:unloading:<model>`,
//! `:busy`, `{ns}:endpoints`, documented in `docs/routing.md`). The store also answers what
//! queued work wants of each model ([`ModelDemand`]), so that `model_affinity` loads models before
//! they are needed and never evicts one that is about to be.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// The model state store could not be reached or answered nonsense. Routing goes on with
/// what it knew before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model state store: {message}")]
pub struct StoreError {
    /// What went wrong (never contains a credential).
    pub message: String,
}

/// A model an endpoint has on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledModel {
    /// Model name.
    pub name: String,
    /// Size in bytes, when the endpoint says.
    pub size: Option<u64>,
}

/// What one endpoint has: the shared `{ns}:ep:<name>:models` record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointModels {
    /// Models loaded in memory, most recently used first.
    pub loaded: Vec<String>,
    /// Models on disk (empty: unknown or none).
    pub pulled: Vec<PulledModel>,
    /// Unix ms of the last full refresh from the endpoint; `None` = never refreshed.
    pub updated_ms: Option<u64>,
    /// Unix ms of the last change of `loaded`.
    pub loaded_ms: Option<u64>,
    /// Worker that made the last full refresh.
    pub probed_by: Option<String>,
}

impl EndpointModels {
    /// Whether `model` is loaded.
    pub fn is_loaded(&self, model: &str) -> bool {
        self.loaded.iter().any(|m| m == model)
    }

    /// Whether `model` is on disk.
    pub fn is_pulled(&self, model: &str) -> bool {
        self.pulled.iter().any(|m| m.name == model)
    }

    /// Moves `model` to the front of `loaded` (it was just used) and keeps at most `max`
    /// models when the limit is known (the server evicts the least recently used).
    pub fn touch(&mut self, model: &str, max: Option<u32>) {
        self.loaded.retain(|m| m != model);
        self.loaded.insert(0, model.to_owned());
        if let Some(max) = max.filter(|m| *m > 0) {
            self.loaded.truncate(max as usize);
        }
    }
}

/// What the fleet is doing with one model on one endpoint now: the marks every worker reads
/// on each call, so a load or an unload under way on any worker is seen by every other
/// within one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ModelMark {
    /// Neither: the shared record says whether the model is loaded there.
    #[default]
    Settled,
    /// A call or a preload is loading it there now.
    Loading,
    /// A worker is unloading it there to make room (or just did, and cached records may
    /// still list it): it is not warm there, whatever a record says.
    Unloading,
}

/// One process's view of an endpoint's health: the value of field `<worker>` in
/// `{ns}:ep:<name>:health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `ok`, `open`, `half_open`, `rate_limited` or `misconfigured`.
    pub state: String,
    /// Moving response time of successful calls, ms.
    pub latency_ms: Option<f64>,
    /// Breaker trips in this process.
    pub failures: u64,
    /// Slots held fleet-wide, when the slot store answered.
    pub in_flight: Option<u64>,
    /// Unix ms when written.
    pub updated_ms: u64,
    /// The worker (consumer name) whose view this is.
    pub worker: String,
}

/// Where shared model state is kept. Every method is best effort for the router: a failure
/// is logged and routing goes on with what it knew.
pub trait ModelStateStore: Send + Sync + fmt::Debug {
    /// Takes the endpoint's probe lock for `interval` if nobody holds it; `true` when this
    /// worker got it (and should poll the endpoint now).
    fn claim_probe<'a>(
        &'a self,
        endpoint: &'a str,
        worker: &'a str,
        interval: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The records of these endpoints (an empty record for one never written).
    fn models<'a>(
        &'a self,
        endpoints: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<EndpointModels>, StoreError>>;

    /// Replaces an endpoint's whole record (after a full refresh).
    fn put_models<'a>(
        &'a self,
        endpoint: &'a str,
        models: &'a EndpointModels,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Replaces only the `loaded` list (and `loaded_ms`) of an endpoint's record.
    fn put_loaded<'a>(
        &'a self,
        endpoint: &'a str,
        loaded: &'a [String],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Publishes this worker's view of an endpoint's health (kept for `ttl`) and records
    /// the endpoint's name among the fleet's endpoints.
    fn publish_health<'a>(
        &'a self,
        endpoint: &'a str,
        report: &'a HealthReport,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Queued work per model: ready tasks, and tasks about to be ready (see
    /// [`ModelDemand`]).
    fn demand<'a>(
        &'a self,
        models: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<ModelDemand>, StoreError>>;

    /// What the fleet is doing with `model` on each of `endpoints` now (by any worker).
    fn marks<'a>(
        &'a self,
        endpoints: &'a [&'a str],
        model: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ModelMark>, StoreError>>;

    /// Marks `model` as loading on `endpoint` for at most `ttl`; `false` when it is marked
    /// already.
    fn begin_loading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        by: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Clears the loading mark (the load was answered, or failed).
    fn end_loading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Marks `model` as unloading from `endpoint` for at most `ttl`; `false` when it is
    /// marked already (another worker is unloading it).
    fn begin_unloading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        by: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Ends the unloading mark: at once when `linger` is zero (the unload failed), otherwise
    /// after `linger` (the unload was answered; workers' cached records may list the model
    /// for that long).
    fn end_unloading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        linger: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Counts a call of `model` in flight on `endpoint` (until [`ModelStateStore::call_ended`],
    /// or `ttl` after the last call began there when nobody reports back).
    fn call_began<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Counts that call as ended.
    fn call_ended<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Calls in flight per model on each of `endpoints` (fleet-wide when the store is shared).
    fn busy<'a>(
        &'a self,
        endpoints: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<HashMap<String, u64>>, StoreError>>;

    /// Takes or keeps the fleet's placement planner lock for `ttl`; `true` when `worker`
    /// holds it now.
    fn claim_planner<'a>(
        &'a self,
        worker: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// What queued work wants of one model: tasks ready to run and tasks about to be ready.
/// Running tasks are not demand (they already have their endpoint).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelDemand {
    /// Tasks queued and not running.
    pub ready: u64,
    /// Waiting tasks whose parents run now, each weighted by the share of its unfinished
    /// parents that runs (1 = ready as soon as the running parents end).
    pub soon: f64,
}

impl ModelDemand {
    /// Ready tasks plus the weighted tasks about to be ready.
    pub fn weight(&self) -> f64 {
        self.ready as f64 + self.soon
    }

    /// Whether any queued work needs the model within the horizon (ready or about to be).
    pub fn is_needed(&self) -> bool {
        self.weight() > 0.0
    }
}

/// Unix time in ms.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_keeps_most_recent_first_within_the_limit() {
        let mut m = EndpointModels::default();
        m.touch("a", Some(2));
        m.touch("b", Some(2));
        assert_eq!(m.loaded, ["b", "a"]);
        m.touch("a", Some(2));
        assert_eq!(m.loaded, ["a", "b"]);
        m.touch("c", Some(2));
        assert_eq!(m.loaded, ["c", "a"]);
        m.touch("d", None);
        assert_eq!(m.loaded, ["d", "c", "a"]);
    }
}
