//! [`LocalModelState`]: the model state store of one process, in memory — right for a
//! single worker and for tests (the fleet's store is in Redis, `gleitzeit-worker`'s bridge).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::models::{
    EndpointModels, HealthReport, ModelDemand, ModelMark, ModelStateStore, StoreError,
};

#[derive(Debug, Default)]
struct LocalState {
    models: HashMap<String, EndpointModels>,
    probes: HashMap<String, Instant>,
    health: HashMap<String, HashMap<String, HealthReport>>,
    demand: HashMap<String, ModelDemand>,
    /// (endpoint, model) → until.
    loading: HashMap<(String, String), Instant>,
    /// (endpoint, model) → until.
    unloading: HashMap<(String, String), Instant>,
    planner: Option<(String, Instant)>,
    busy: HashMap<String, HashMap<String, u64>>,
}

/// Sets a mark on `key` for `ttl` unless a live one is there (`SET NX PX`); `true` when set.
fn claim(
    marks: &mut HashMap<(String, String), Instant>,
    key: (String, String),
    ttl: Duration,
) -> bool {
    let now = Instant::now();
    let free = marks.get(&key).is_none_or(|until| *until <= now);
    if free {
        marks.insert(key, now + ttl);
    }
    free
}

/// Model state of one process, in memory: right for a single worker and for tests. Queued
/// work is unknown to it unless set with [`LocalModelState::set_queued`] or
/// [`LocalModelState::set_demand`].
#[derive(Debug, Default)]
pub struct LocalModelState {
    state: Mutex<LocalState>,
}

impl LocalModelState {
    /// An empty store.
    pub fn new() -> LocalModelState {
        LocalModelState::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalState> {
        // Single assignments only: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says that `n` ready tasks wait for `model` (and none is about to be ready).
    pub fn set_queued(&self, model: &str, n: u64) {
        self.set_demand(
            model,
            ModelDemand {
                ready: n,
                soon: 0.0,
            },
        );
    }

    /// Sets the queued work of `model`.
    pub fn set_demand(&self, model: &str, demand: ModelDemand) {
        self.lock().demand.insert(model.to_owned(), demand);
    }

    /// The health reports published for an endpoint, by worker.
    pub fn health(&self, endpoint: &str) -> HashMap<String, HealthReport> {
        self.lock()
            .health
            .get(endpoint)
            .cloned()
            .unwrap_or_default()
    }
}

impl ModelStateStore for LocalModelState {
    fn claim_probe<'a>(
        &'a self,
        endpoint: &'a str,
        _worker: &'a str,
        interval: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = Instant::now();
        let mut s = self.lock();
        let free = s.probes.get(endpoint).is_none_or(|until| *until <= now);
        if free {
            s.probes.insert(endpoint.to_owned(), now + interval);
        }
        drop(s);
        async move { Ok(free) }.boxed()
    }

    fn models<'a>(
        &'a self,
        endpoints: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<EndpointModels>, StoreError>> {
        let s = self.lock();
        let r = endpoints
            .iter()
            .map(|e| s.models.get(*e).cloned().unwrap_or_default())
            .collect();
        drop(s);
        async move { Ok(r) }.boxed()
    }

    fn put_models<'a>(
        &'a self,
        endpoint: &'a str,
        models: &'a EndpointModels,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock()
            .models
            .insert(endpoint.to_owned(), models.clone());
        async move { Ok(()) }.boxed()
    }

    fn put_loaded<'a>(
        &'a self,
        endpoint: &'a str,
        loaded: &'a [String],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut s = self.lock();
        let rec = s.models.entry(endpoint.to_owned()).or_default();
        rec.loaded = loaded.to_vec();
        rec.loaded_ms = Some(at_ms);
        drop(s);
        async move { Ok(()) }.boxed()
    }

    fn publish_health<'a>(
        &'a self,
        endpoint: &'a str,
        report: &'a HealthReport,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock()
            .health
            .entry(endpoint.to_owned())
            .or_default()
            .insert(report.worker.clone(), report.clone());
        async move { Ok(()) }.boxed()
    }

    fn demand<'a>(
        &'a self,
        models: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<ModelDemand>, StoreError>> {
        let s = self.lock();
        let r = models
            .iter()
            .map(|m| s.demand.get(*m).copied().unwrap_or_default())
            .collect();
        drop(s);
        async move { Ok(r) }.boxed()
    }

    fn marks<'a>(
        &'a self,
        endpoints: &'a [&'a str],
        model: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ModelMark>, StoreError>> {
        let now = Instant::now();
        let s = self.lock();
        let live = |map: &HashMap<(String, String), Instant>, e: &str| {
            map.get(&(e.to_owned(), model.to_owned()))
                .is_some_and(|until| *until > now)
        };
        let r = endpoints
            .iter()
            .map(|e| {
                if live(&s.loading, e) {
                    ModelMark::Loading
                } else if live(&s.unloading, e) {
                    ModelMark::Unloading
                } else {
                    ModelMark::Settled
                }
            })
            .collect();
        drop(s);
        async move { Ok(r) }.boxed()
    }

    fn begin_loading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        _by: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut s = self.lock();
        let key = (endpoint.to_owned(), model.to_owned());
        // A load under way ends any unloading of the model there.
        s.unloading.remove(&key);
        let free = claim(&mut s.loading, key, ttl);
        drop(s);
        async move { Ok(free) }.boxed()
    }

    fn end_loading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock()
            .loading
            .remove(&(endpoint.to_owned(), model.to_owned()));
        async move { Ok(()) }.boxed()
    }

    fn begin_unloading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        _by: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let key = (endpoint.to_owned(), model.to_owned());
        let free = claim(&mut self.lock().unloading, key, ttl);
        async move { Ok(free) }.boxed()
    }

    fn end_unloading<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        linger: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = (endpoint.to_owned(), model.to_owned());
        let mut s = self.lock();
        if linger.is_zero() {
            s.unloading.remove(&key);
        } else if let Some(until) = s.unloading.get_mut(&key) {
            *until = Instant::now() + linger;
        }
        drop(s);
        async move { Ok(()) }.boxed()
    }

    fn call_began<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        *self
            .lock()
            .busy
            .entry(endpoint.to_owned())
            .or_default()
            .entry(model.to_owned())
            .or_insert(0) += 1;
        async move { Ok(()) }.boxed()
    }

    fn call_ended<'a>(
        &'a self,
        endpoint: &'a str,
        model: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut s = self.lock();
        if let Some(models) = s.busy.get_mut(endpoint) {
            if let Some(n) = models.get_mut(model) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    models.remove(model);
                }
            }
        }
        drop(s);
        async move { Ok(()) }.boxed()
    }

    fn busy<'a>(
        &'a self,
        endpoints: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<HashMap<String, u64>>, StoreError>> {
        let s = self.lock();
        let r = endpoints
            .iter()
            .map(|e| s.busy.get(*e).cloned().unwrap_or_default())
            .collect();
        drop(s);
        async move { Ok(r) }.boxed()
    }

    fn claim_planner<'a>(
        &'a self,
        worker: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = Instant::now();
        let mut s = self.lock();
        let mine = match &s.planner {
            Some((holder, until)) => holder == worker || *until <= now,
            None => true,
        };
        if mine {
            s.planner = Some((worker.to_owned(), now + ttl));
        }
        drop(s);
        async move { Ok(mine) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_probe_lock_is_exclusive_until_it_expires() {
        let s = LocalModelState::new();
        let long = Duration::from_secs(60);
        assert_eq!(s.claim_probe("e", "w1", long).await, Ok(true));
        assert_eq!(s.claim_probe("e", "w2", long).await, Ok(false));
        assert_eq!(s.claim_probe("f", "w2", long).await, Ok(true));
        let t = LocalModelState::new();
        assert_eq!(t.claim_probe("e", "w1", Duration::ZERO).await, Ok(true));
        assert_eq!(t.claim_probe("e", "w2", long).await, Ok(true));
    }
}
