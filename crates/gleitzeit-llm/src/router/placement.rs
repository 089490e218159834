//! What `model_affinity` knows about where a model is and where it is wanted: the queue's
//! demand per model (ready tasks and tasks about to be ready, cached for one
//! `plan_interval`), the fleet-wide loading and unloading marks (a load or an unload under
//! way on any worker is seen by every other within one call), and the per-call rule that follows from them: a second load
//! of a model that is loaded or loading elsewhere starts only when its demand exceeds what
//! the warm endpoints can run at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::core::Router;
use super::models::{EndpointModels, ModelDemand, ModelMark};

/// How many rounds of calls the warm endpoints' slots must be behind before a model is
/// loaded on one more endpoint: a load costs seconds, about what a few calls take, so one
/// round of queued calls is cheaper to wait for than a second copy (which also evicts
/// something elsewhere).
const SPREAD_ROUNDS: f64 = 2.0;

/// Longest a loading mark lives when its call never reports back (the worker died).
const MAX_LOADING_MARK: Duration = Duration::from_secs(300);

/// Where one model stands on the candidate endpoints of a call, read fresh for the call.
#[derive(Debug, Clone)]
pub(super) struct Warmth {
    /// The shared model records, one per member.
    pub(super) view: Vec<EndpointModels>,
    /// Per candidate (in the order given): whether the model is being loaded or unloaded
    /// there now.
    pub(super) marks: Vec<ModelMark>,
    /// The model's queued work.
    pub(super) demand: ModelDemand,
    /// Per candidate: calls in flight per model there (fleet-wide).
    pub(super) busy: Vec<HashMap<String, u64>>,
}

/// Counts the models with calls in flight on an endpoint (`busy`) as loaded there: a call
/// that loads a model holds its place from the start, while the shared record learns of
/// it only when the call is answered.
pub(super) fn occupy(rec: &mut EndpointModels, busy: &HashMap<String, u64>) {
    for (m, n) in busy {
        if *n > 0 && !rec.is_loaded(m) {
            rec.loaded.insert(0, m.clone());
        }
    }
}

impl Router {
    /// Queued work of each model (read from the store when the cached figure is older than
    /// `plan_interval`; a failed read counts as no demand).
    pub(super) async fn demand_of(&self, models: &[&str]) -> HashMap<String, ModelDemand> {
        let mut known: HashMap<String, ModelDemand> = HashMap::new();
        if models.is_empty() {
            return known;
        }
        let now = Instant::now();
        let ttl = self.cfg.plan_interval;
        let mut ask: Vec<&str> = Vec::new();
        {
            let cache = self.demand_cache();
            for m in models {
                match cache.get(*m) {
                    Some((d, at)) if now.duration_since(*at) < ttl => {
                        known.insert((*m).to_owned(), *d);
                    }
                    _ => ask.push(m),
                }
            }
        }
        if !ask.is_empty() {
            match self.state.demand(&ask).await {
                Ok(read) => {
                    let mut cache = self.demand_cache();
                    for (m, d) in ask.iter().zip(read) {
                        cache.insert((*m).to_owned(), (d, now));
                        known.insert((*m).to_owned(), d);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the queue's demand"),
            }
        }
        known
    }

    fn demand_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ModelDemand, Instant)>> {
        self.demand.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The models loaded on member `i` (per `view`) whose copy there is needed: calls of it
    /// run there now (`busy`: calls in flight per model on `i`), or its queued work is more
    /// than the other members holding it can run at once. A model nobody uses or wants, or
    /// an extra copy of one that the other copies can serve, may be evicted; a needed copy
    /// never is by choice.
    pub(super) async fn needed_copies(
        &self,
        i: usize,
        view: &[EndpointModels],
        busy: &HashMap<String, u64>,
    ) -> Vec<String> {
        let Some(rec) = view.get(i) else {
            return Vec::new();
        };
        let loaded: Vec<&str> = rec.loaded.iter().map(String::as_str).collect();
        let demand = self.demand_of(&loaded).await;
        loaded
            .iter()
            .filter(|m| {
                busy.get(**m).is_some_and(|n| *n > 0)
                    || demand.get(**m).is_some_and(|d| {
                        let others: Vec<usize> = (0..view.len())
                            .filter(|&j| j != i && view[j].is_loaded(m))
                            .collect();
                        d.is_needed() && self.second_load_needed(&others, d.weight())
                    })
            })
            .map(|m| (*m).to_owned())
            .collect()
    }

    /// `model`'s standing on the candidates `eligible`: the shared records and the loading
    /// and unloading marks read now (concurrently), and its demand.
    pub(super) async fn warmth(&self, model: &str, eligible: &[usize]) -> Warmth {
        let names: Vec<&str> = eligible.iter().map(|&i| self.members[i].name()).collect();
        let one = [model];
        let (view, marks, demand, busy) = tokio::join!(
            self.refresh_view(),
            self.state.marks(&names, model),
            self.demand_of(&one),
            self.state.busy(&names),
        );
        let marks = marks.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "cannot read loading marks");
            vec![ModelMark::Settled; eligible.len()]
        });
        let busy = busy.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "cannot read calls in flight");
            vec![HashMap::new(); eligible.len()]
        });
        let mut view = view;
        for (&i, b) in eligible.iter().zip(&busy) {
            if let Some(rec) = view.get_mut(i) {
                occupy(rec, b);
            }
        }
        Warmth {
            view,
            marks,
            demand: demand.get(model).copied().unwrap_or_default(),
            busy,
        }
    }

    /// Whether `wanted` calls of a model need a load on a cold endpoint when the model is
    /// loaded or loading on the members `warm`: only when they are more than
    /// [`SPREAD_ROUNDS`] rounds of what those endpoints run at once. An unlimited warm
    /// endpoint can run anything.
    pub(super) fn second_load_needed(&self, warm: &[usize], wanted: f64) -> bool {
        if warm.is_empty() {
            return true;
        }
        let mut slots = 0.0;
        for &i in warm {
            match self.members[i].target.max_concurrent {
                0 => return false,
                max => slots += f64::from(max),
            }
        }
        wanted > SPREAD_ROUNDS * slots
    }

    /// Marks `model` as loading on member `i` when the shared view says it is not loaded
    /// there (this call will load it); `true` when this call set the mark and must clear it.
    pub(super) async fn mark_loading(&self, i: usize, model: &str) -> bool {
        let member = &self.members[i];
        if member.target.endpoint.kind != crate::config::ProviderKind::Ollama
            || self
                .view()
                .models
                .get(i)
                .is_some_and(|rec| rec.is_loaded(model))
        {
            return false;
        }
        let ttl = member.target.endpoint.request_timeout.min(MAX_LOADING_MARK);
        match self
            .state
            .begin_loading(member.name(), model, &self.id, ttl)
            .await
        {
            Ok(set) => set,
            Err(e) => {
                tracing::debug!(endpoint = member.name(), error = %e, "cannot mark a load");
                false
            }
        }
    }

    /// Calls in flight per model on member `i`, read now (empty when the read fails).
    pub(super) async fn busy_on(&self, i: usize) -> HashMap<String, u64> {
        let name = [self.members[i].name()];
        match self.state.busy(&name).await {
            Ok(mut b) if !b.is_empty() => b.swap_remove(0),
            Ok(_) => HashMap::new(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read calls in flight");
                HashMap::new()
            }
        }
    }

    /// Counts this call of `model` on member `i` for the fleet (`model_affinity`).
    pub(super) async fn count_call(&self, i: usize, model: &str) {
        let member = &self.members[i];
        let ttl = member.target.endpoint.request_timeout.min(MAX_LOADING_MARK);
        if let Err(e) = self.state.call_began(member.name(), model, ttl).await {
            tracing::debug!(endpoint = member.name(), error = %e, "cannot count a call");
        }
    }

    /// Counts the call as ended.
    pub(super) async fn uncount_call(&self, i: usize, model: &str) {
        let name = self.members[i].name();
        if let Err(e) = self.state.call_ended(name, model).await {
            tracing::debug!(endpoint = name, error = %e, "cannot count a call's end");
        }
    }

    /// Clears a loading mark this router set.
    pub(super) async fn unmark_loading(&self, i: usize, model: &str) {
        let name = self.members[i].name();
        if let Err(e) = self.state.end_loading(name, model).await {
            tracing::debug!(endpoint = name, error = %e, "cannot clear a loading mark");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_counts_ready_and_soon() {
        let d = ModelDemand {
            ready: 3,
            soon: 0.5,
        };
        assert_eq!(d.weight(), 3.5);
        assert!(d.is_needed());
        assert!(!ModelDemand::default().is_needed());
    }
}
