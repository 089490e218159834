//! The fleet's placement planner for `model_affinity`: one worker at a time (the holder of
//! a lock in the store, renewed every round; the others follow and only route) reads the
//! queue's demand per model — ready tasks and tasks about to be ready because their parents
//! run — and preloads a model (an Ollama load request with the configured `keep_alive`) on
//! a suitable endpoint before its tasks are routed: where nothing holds it yet, or on one
//! more endpoint when its queued work outgrows the slots of the endpoints that hold it.
//!
//! A suitable endpoint serves the model, can hold it (the size rule of every call: a model
//! of unknown size never goes to a CPU endpoint by guess), is not loading anything the queue
//! wants now, and has room or holds a model no queued task needs (which is unloaded first);
//! an endpoint whose every loaded model is wanted is never made to evict one. Each preload
//! is marked as loading for the whole fleet until it is answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::Router;
use super::health::Availability;
use super::models::{ModelDemand, ModelMark};
use super::placement::occupy;
use crate::config::ProviderKind;

/// Bound of one preload request.
const PRELOAD_TIMEOUT: Duration = Duration::from_secs(300);

impl Router {
    /// One planning round as `worker`: nothing unless this worker holds (or takes) the
    /// planner lock. Returns the (endpoint, model) preloads started, which run on in the
    /// background.
    pub async fn plan_round(self: &Arc<Self>, worker: &str) -> Vec<(String, String)> {
        match self
            .state
            .claim_planner(worker, self.cfg.plan_interval * 4)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Vec::new(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot take the planner lock");
                return Vec::new();
            }
        }
        let models = self.planned_models();
        let refs: Vec<&str> = models.iter().map(String::as_str).collect();
        let demand = match self.state.demand(&refs).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the queue's demand");
                return Vec::new();
            }
        };
        {
            // The planner's read is the freshest: calls of this process use it too.
            let now = Instant::now();
            let mut cache = self.demand.lock().unwrap_or_else(|e| e.into_inner());
            for (m, d) in refs.iter().zip(&demand) {
                cache.insert((*m).to_owned(), (*d, now));
            }
        }
        let mut wanted: Vec<(&str, ModelDemand)> = refs
            .iter()
            .copied()
            .zip(demand)
            .filter(|(_, d)| d.is_needed())
            .collect();
        if wanted.is_empty() {
            return Vec::new();
        }
        wanted.sort_by(|a, b| b.1.weight().total_cmp(&a.1.weight()));
        let mut view = self.refresh_view().await;
        let names: Vec<&str> = self.members.iter().map(|m| m.name()).collect();
        let in_use = self
            .state
            .busy(&names)
            .await
            .unwrap_or_else(|_| vec![Default::default(); names.len()]);
        for (rec, b) in view.iter_mut().zip(&in_use) {
            occupy(rec, b);
        }
        let marks: Vec<Vec<ModelMark>> =
            futures::future::join_all(wanted.iter().map(|(m, _)| self.state.marks(&names, m)))
                .await
                .into_iter()
                .map(|r| r.unwrap_or_else(|_| vec![ModelMark::Settled; names.len()]))
                .collect();
        // Endpoints loading a wanted model now take no second load meanwhile.
        let mut busy: Vec<bool> = (0..names.len())
            .map(|i| marks.iter().any(|m| m.get(i) == Some(&ModelMark::Loading)))
            .collect();
        let now = Instant::now();
        let mut started = Vec::new();
        for (k, (model, d)) in wanted.iter().enumerate() {
            let serving: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.members[i].target.serves(model))
                .collect();
            let warm: Vec<usize> = serving
                .iter()
                .copied()
                .filter(|&i| match marks[k][i] {
                    ModelMark::Loading => true,
                    ModelMark::Unloading => false,
                    ModelMark::Settled => view[i].is_loaded(model),
                })
                .collect();
            // Enough where it is: the planner adds an endpoint only when the queued work
            // (not counting any call) outgrows the warm slots.
            if !warm.is_empty() && !self.second_load_needed(&warm, d.weight()) {
                continue;
            }
            let size = self.model_size(model).await;
            let unknown_to_gpu = size.is_none()
                && self.has_gpu
                && serving.iter().any(|&i| self.members[i].target.gpu);
            let mut best: Option<(usize, (bool, i32, usize))> = None;
            for &i in &serving {
                let member = &self.members[i];
                let rec = &view[i];
                if member.target.endpoint.kind != ProviderKind::Ollama
                    || warm.contains(&i)
                    || busy[i]
                    || member.health().availability(now) != Availability::Ready
                {
                    continue;
                }
                let fits = match size {
                    Some(b) => self.fits(member, b),
                    None => !unknown_to_gpu || member.target.gpu,
                };
                if !fits {
                    continue;
                }
                let full = self.is_full(i, rec);
                // Never evict a copy the queue needs.
                if full && self.needed_copies(i, &view, &in_use[i]).await.len() >= rec.loaded.len()
                {
                    continue;
                }
                let rank = (full, member.target.priority, rec.loaded.len());
                if best.as_ref().is_none_or(|(_, r)| rank < *r) {
                    best = Some((i, rank));
                }
            }
            let Some((i, _)) = best else { continue };
            if self.preload_on(i, model).await {
                busy[i] = true;
                started.push((self.members[i].name().to_owned(), (*model).to_owned()));
            }
        }
        started
    }

    /// Starts loading `model` on member `i` in the background, marked as loading for the
    /// fleet until answered; `false` when another worker marked it first.
    async fn preload_on(self: &Arc<Self>, i: usize, model: &str) -> bool {
        let member = &self.members[i];
        match self
            .state
            .begin_loading(member.name(), model, &self.id, PRELOAD_TIMEOUT)
            .await
        {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::debug!(endpoint = member.name(), error = %e, "cannot mark a preload");
                return false;
            }
        }
        // Counted like a call: the endpoint's place for the model is taken from now on,
        // although the shared record learns of it only when the load is answered.
        self.count_call(i, model).await;
        self.make_room(i, model).await;
        tracing::debug!(
            endpoint = member.name(),
            model,
            "preloading for queued work"
        );
        let router = Arc::clone(self);
        let model = model.to_owned();
        tokio::spawn(async move {
            let member = &router.members[i];
            let keep_alive = router.cfg.keep_alive.as_deref();
            match tokio::time::timeout(PRELOAD_TIMEOUT, member.provider.load(&model, keep_alive))
                .await
            {
                Ok(Ok(true)) => router.note_loaded(i, &model).await,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(endpoint = member.name(), model, error = %e, "preload failed")
                }
                Err(_) => tracing::debug!(endpoint = member.name(), model, "preload timed out"),
            }
            router.unmark_loading(i, &model).await;
            router.uncount_call(i, &model).await;
        });
        true
    }

    /// The models the planner considers: those the endpoints list by name, those loaded
    /// anywhere, and those calls of this process have asked for (what wildcard endpoints
    /// serve shows up in the last two).
    fn planned_models(&self) -> Vec<String> {
        let mut models: Vec<String> = self
            .members
            .iter()
            .flat_map(|m| m.target.models.iter())
            .filter(|m| *m != "*")
            .cloned()
            .collect();
        models.extend(
            self.view()
                .models
                .iter()
                .flat_map(|r| r.loaded.iter().cloned()),
        );
        models.extend(
            self.demand
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned(),
        );
        models.sort();
        models.dedup();
        models
    }

    /// Runs [`Router::plan_round`] every `plan_interval` under `worker` (for the
    /// `model_affinity` strategy; other strategies place no models).
    pub(super) async fn plan_loop(self: &Arc<Self>, worker: &str) {
        let mut tick = tokio::time::interval(self.cfg.plan_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.plan_round(worker).await;
        }
    }
}
