//! Model placement on top of the router: the `model_affinity` order, making room on an
//! endpoint whose loaded-model set is full, remembering what a call loaded, background
//! pulls, preloading at start, and the health rounds that refresh the shared model state
//! (one worker per endpoint per interval) and publish this process's view of each endpoint
//! (and, with `model_affinity`, run the placement planner, `planner.rs`).
//!
//! Loading a model into memory takes seconds to minutes, far more than any queueing
//! difference between endpoints, so `model_affinity` sends a call where its model is
//! already loaded or being loaded, and when it must load it somewhere, evicts only copies
//! that neither run calls nor are needed by queued work (`placement.rs` says what is
//! needed and where loads are under way).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use super::core::{ModelView, Router};
use super::models::{unix_ms, EndpointModels, HealthReport, ModelMark, PulledModel};
use super::placement::occupy;
use super::strategy::Strategy;
use crate::config::ProviderKind;

/// Bound of one unload or listing request made by the router itself.
const MANAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a candidate stands for `model_affinity` (lower sorts first).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Standing {
    /// 0 = the model is loaded there, 1 = being loaded there now (by any worker), 2 =
    /// pulled, 3 = neither (or unknown).
    warmth: u8,
    /// 0 = loading it evicts nothing (room left, or the limit is unknown), 1 = it evicts a
    /// model no queued task needs, 2 = every loaded model is needed by queued work.
    eviction: u8,
    /// For a call with tasks waiting on it (the critical path): the endpoint's moving
    /// response time in ms, so the fastest comes first (not measured yet: last). 0 for
    /// every candidate of a call nothing waits on.
    pace: f64,
    /// Fleet-wide slots held / max (unlimited: / 1e6).
    load: f64,
}

/// Bytes per parameter of a quantisation level (`Q4_K_M`, `Q8_0`, `F16`, …); unknown
/// levels count as 4-bit, Ollama's default.
fn bytes_per_parameter(quantization: Option<&str>) -> f64 {
    let q = quantization.unwrap_or("").to_ascii_uppercase();
    let bits = if q.starts_with("F32") {
        32.0
    } else if q.starts_with("F16") || q.starts_with("BF16") {
        16.0
    } else {
        q.strip_prefix("IQ")
            .or_else(|| q.strip_prefix('Q'))
            .and_then(|rest| rest.chars().next())
            .and_then(|c| c.to_digit(10))
            .map_or(4.0, f64::from)
    };
    // Quantised formats carry scales besides the weights: about 20 % over the raw bits.
    if bits >= 16.0 {
        bits / 8.0
    } else {
        bits / 8.0 * 1.2
    }
}

impl Router {
    /// Orders eligible members for `model_affinity`: loaded before loading (anywhere in the
    /// fleet, now) before pulled before the rest; then by what loading would evict; then
    /// least loaded. Shuffled first, sorted stably, so ties break at random. Cold members are
    /// left out while the model is loaded or loading on a candidate and its queued work fits
    /// in those candidates' slots: the call waits for a warm slot rather than starting a
    /// second load (see [`Router::second_load_needed`]).
    /// `chain_below` is the longest chain of tasks waiting on the calling task: when it is
    /// above 0, among otherwise equal candidates the fastest comes first.
    pub(super) async fn affinity_order(
        &self,
        model: &str,
        mut eligible: Vec<usize>,
        chain_below: u32,
    ) -> Vec<usize> {
        eligible.shuffle(&mut rand::rng());
        let names: Vec<&str> = eligible.iter().map(|&i| self.members[i].name()).collect();
        let (warmth, counts) =
            tokio::join!(self.warmth(model, &eligible), self.slots.counts(&names));
        let counts = counts.ok();
        let view = &warmth.view;
        // Which loaded copies queued work needs, on the endpoints that would have to evict.
        let mut needed: Vec<Vec<String>> = Vec::with_capacity(eligible.len());
        for &i in &eligible {
            let rec = &view[i];
            needed.push(if !rec.is_loaded(model) && self.is_full(i, rec) {
                let busy = warmth.busy.get(needed.len()).cloned().unwrap_or_default();
                self.needed_copies(i, view, &busy).await
            } else {
                Vec::new()
            });
        }
        let standing: Vec<Standing> = eligible
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let rec = &view[i];
                let needed = &needed[k];
                let mark = warmth.marks.get(k).copied().unwrap_or_default();
                // A copy being unloaded is not warm, whatever the record still says.
                let warmth = if rec.is_loaded(model) && mark != ModelMark::Unloading {
                    0
                } else if mark == ModelMark::Loading {
                    1
                } else if rec.is_pulled(model) {
                    2
                } else {
                    3
                };
                let eviction = if warmth <= 1 || !self.is_full(i, rec) {
                    0
                } else if rec.loaded.iter().any(|m| !needed.contains(m)) {
                    1
                } else {
                    2
                };
                let held = counts.as_ref().and_then(|c| c.get(k)).copied().unwrap_or(0) as f64;
                let max = self.members[i].target.max_concurrent;
                let load = if max == 0 {
                    held / 1e6
                } else {
                    held / f64::from(max)
                };
                let pace = if chain_below == 0 {
                    0.0
                } else {
                    self.members[i].health().latency_ms.unwrap_or(f64::MAX)
                };
                Standing {
                    warmth,
                    eviction,
                    pace,
                    load,
                }
            })
            .collect();
        let warm: Vec<usize> = eligible
            .iter()
            .zip(&standing)
            .filter(|(_, s)| s.warmth <= 1)
            .map(|(&i, _)| i)
            .collect();
        // This call's own task is running, so not in the demand: it counts once more.
        let cold_allowed = self.second_load_needed(&warm, warmth.demand.weight() + 1.0);
        // Evicting a needed copy is the last resort: only for a model held nowhere.
        let mut order: Vec<usize> = (0..eligible.len())
            .filter(|&k| {
                standing[k].warmth <= 1
                    || (cold_allowed && (standing[k].eviction < 2 || warm.is_empty()))
            })
            .collect();
        order.sort_by(|&a, &b| {
            standing[a]
                .partial_cmp(&standing[b])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        order.into_iter().map(|k| eligible[k]).collect()
    }

    /// Whether the member's loaded-model set is at its configured limit.
    pub(super) fn is_full(&self, i: usize, rec: &EndpointModels) -> bool {
        self.members[i]
            .target
            .max_loaded
            .is_some_and(|max| max > 0 && rec.loaded.len() >= max as usize)
    }

    /// Before `model` is loaded on a full member: unload the least recently used loaded
    /// model whose copy there no queued task needs ([`Router::needed_copies`]), so the
    /// server does not evict one that is needed. Nothing to do when the model is loaded,
    /// there is room, or every loaded copy is needed (the server then evicts by its own
    /// rule).
    pub(super) async fn make_room(&self, i: usize, model: &str) {
        // This runs before every `model_affinity` call: first the answers that need no
        // read of the calls in flight (those only add models to the set, so they cannot
        // unload a loaded model or fill an unlimited endpoint). Both callers (the call path
        // and the planner) have just refreshed the view.
        if self.members[i].target.max_loaded.is_none_or(|max| max == 0)
            || self
                .view()
                .models
                .get(i)
                .is_some_and(|rec| rec.is_loaded(model))
        {
            return;
        }
        let (mut view, busy) = tokio::join!(self.model_view(), self.busy_on(i));
        let Some(rec) = view.get_mut(i) else { return };
        occupy(rec, &busy);
        let rec = rec.clone();
        if rec.is_loaded(model) || !self.is_full(i, &rec) {
            return;
        }
        let loaded: Vec<&str> = rec.loaded.iter().map(String::as_str).collect();
        let needed = self.needed_copies(i, &view, &busy).await;
        // `loaded` is most recently used first: the victim is the last unneeded one.
        let Some(victim) = loaded
            .iter()
            .rev()
            .find(|m| !needed.iter().any(|n| n == **m))
        else {
            return;
        };
        let member = &self.members[i];
        let name = member.name();
        // The fleet sees the copy as going before the request is sent, so no worker sends a
        // call there for a warm model that is about to be gone; a worker already unloading
        // it makes the room this call needs.
        match self
            .state
            .begin_unloading(name, victim, &self.id, MANAGE_TIMEOUT * 2)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(endpoint = name, error = %e, "cannot mark an unload");
            }
        }
        let unloaded = match tokio::time::timeout(MANAGE_TIMEOUT, member.provider.unload(victim))
            .await
        {
            Ok(Ok(true)) => {
                tracing::info!(
                    endpoint = name,
                    model = *victim,
                    for_model = model,
                    "unloaded a model no queued task needs to make room"
                );
                self.update_loaded(i, |l| l.retain(|m| m != victim)).await;
                true
            }
            Ok(Ok(false)) => false,
            Ok(Err(e)) => {
                tracing::debug!(endpoint = name, model = *victim, error = %e, "cannot unload model");
                false
            }
            Err(_) => {
                tracing::debug!(endpoint = name, model = *victim, "unloading timed out");
                false
            }
        };
        // After an unload the mark outlives the workers' cached records (which may still
        // list the model for up to `model_state_ttl`); after a failure it goes at once.
        let linger = if unloaded {
            self.cfg.model_state_ttl
        } else {
            Duration::ZERO
        };
        if let Err(e) = self.state.end_unloading(name, victim, linger).await {
            tracing::debug!(endpoint = name, error = %e, "cannot end an unloading mark");
        }
    }

    /// A model's size in memory estimated from Ollama's `/api/show` (parameter count times
    /// the bytes per parameter of its quantisation), asking the Ollama endpoints that serve
    /// it until one answers.
    pub(super) async fn shown_size(&self, model: &str) -> Option<u64> {
        for m in &self.members {
            if m.target.endpoint.kind != ProviderKind::Ollama || !m.target.serves(model) {
                continue;
            }
            if let Ok(Ok(Some(d))) =
                tokio::time::timeout(MANAGE_TIMEOUT, m.provider.show(model)).await
            {
                if let Some(p) = d.parameters {
                    return Some(
                        (p as f64 * bytes_per_parameter(d.quantization.as_deref())) as u64,
                    );
                }
            }
        }
        None
    }

    /// A successful call of `model` on member `i`: the model is loaded there now. Only
    /// Ollama endpoints load and evict models; other APIs serve what they serve.
    pub(super) async fn note_loaded(&self, i: usize, model: &str) {
        if self.members[i].target.endpoint.kind != ProviderKind::Ollama {
            return;
        }
        // The common case on a busy fleet: the model is already the most recently used one
        // here, so there is nothing to tell the fleet and no Redis round trip on the call path.
        if self
            .view()
            .models
            .get(i)
            .and_then(|rec| rec.loaded.first())
            .is_some_and(|first| first == model)
        {
            return;
        }
        let max = self.members[i].target.max_loaded;
        self.update_loaded(i, |l| {
            let mut rec = EndpointModels {
                loaded: std::mem::take(l),
                ..EndpointModels::default()
            };
            rec.touch(model, max);
            *l = rec.loaded;
        })
        .await;
    }

    /// Changes member `i`'s loaded list here and in the store (read-modify-write of the
    /// store's copy; a concurrent writer may win, the next refresh repairs it).
    async fn update_loaded(&self, i: usize, change: impl Fn(&mut Vec<String>)) {
        let name = self.members[i].name();
        {
            let mut view = self.view();
            if let Some(rec) = view.models.get_mut(i) {
                change(&mut rec.loaded);
            }
        }
        let stored = match self.state.models(&[name]).await {
            Ok(mut v) if !v.is_empty() => v.swap_remove(0),
            Ok(_) => EndpointModels::default(),
            Err(e) => {
                tracing::debug!(endpoint = name, error = %e, "cannot read model state");
                return;
            }
        };
        let mut loaded = stored.loaded;
        change(&mut loaded);
        if let Err(e) = self.state.put_loaded(name, &loaded, unix_ms()).await {
            tracing::debug!(endpoint = name, error = %e, "cannot write model state");
        }
    }

    /// The shared model state per member, read from the store when the copy is older than
    /// `model_state_ttl` (a failed read keeps the old copy).
    async fn model_view(&self) -> Vec<EndpointModels> {
        {
            let view = self.view();
            if view
                .read
                .is_some_and(|t| t.elapsed() < self.cfg.model_state_ttl)
            {
                return view.models.clone();
            }
        }
        self.refresh_view().await
    }

    /// Reads every member's record from the store now.
    pub(super) async fn refresh_view(&self) -> Vec<EndpointModels> {
        let names: Vec<&str> = self.members.iter().map(|m| m.name()).collect();
        let read = self.state.models(&names).await;
        let mut view = self.view();
        match read {
            Ok(models) if models.len() == names.len() => {
                view.models = models;
                view.read = Some(Instant::now());
            }
            Ok(_) => tracing::debug!("model state store answered for the wrong endpoints"),
            Err(e) => tracing::debug!(error = %e, "cannot read model state"),
        }
        view.models.clone()
    }

    pub(super) fn view(&self) -> std::sync::MutexGuard<'_, ModelView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After "model not found" on member `i`: pull the model there in the background, once
    /// per (endpoint, model) in this process, when `allow_pull` is set.
    pub(super) fn start_pull(&self, i: usize, model: &str) {
        let member = &self.members[i];
        if !self.cfg.allow_pull || member.target.endpoint.kind != ProviderKind::Ollama {
            return;
        }
        let key = (member.name().to_owned(), model.to_owned());
        if !self
            .pulling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
        {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let provider = member.provider.clone();
        let model = model.to_owned();
        let limit = self.cfg.pull_timeout;
        tracing::info!(
            endpoint = member.name(),
            model,
            "model missing; pulling it in the background"
        );
        rt.spawn(async move {
            match provider.pull(&model, limit).await {
                Ok(_) => tracing::info!(endpoint = provider.name(), model, "model pulled"),
                Err(e) => {
                    tracing::warn!(endpoint = provider.name(), model, error = %e, "pull failed")
                }
            }
        });
    }

    /// Loads every endpoint's `preload` models (with the configured `keep_alive`). Failures
    /// are logged, never fatal. Returns how many loads succeeded.
    pub async fn preload(&self) -> usize {
        let mut done = 0;
        for (i, member) in self.members.iter().enumerate() {
            for model in &member.target.preload {
                let keep_alive = self.cfg.keep_alive.as_deref();
                match member.provider.load(model, keep_alive).await {
                    Ok(true) => {
                        tracing::info!(endpoint = member.name(), model, "model preloaded");
                        self.note_loaded(i, model).await;
                        done += 1;
                    }
                    Ok(false) => tracing::warn!(
                        endpoint = member.name(),
                        model,
                        "this endpoint's API cannot load models; preload skipped"
                    ),
                    Err(e) => {
                        tracing::warn!(endpoint = member.name(), model, error = %e, "preload failed")
                    }
                }
            }
        }
        done
    }

    /// One health round: publishes this process's view of every endpoint's health under
    /// `worker`, and for each Ollama endpoint whose probe lock this worker wins, polls
    /// `/api/ps` and `/api/tags` and rewrites the shared model record; then re-reads the
    /// shared records. Returns the endpoints this worker polled.
    pub async fn health_round(&self, worker: &str) -> Vec<String> {
        let interval = self.cfg.health_interval;
        let now = unix_ms();
        for st in self.status().await {
            let report = HealthReport {
                state: st.state.to_owned(),
                latency_ms: st.latency_ms,
                failures: st.failures,
                in_flight: st.in_flight,
                updated_ms: now,
                worker: worker.to_owned(),
            };
            if let Err(e) = self
                .state
                .publish_health(&st.name, &report, interval * 3)
                .await
            {
                tracing::debug!(endpoint = st.name, error = %e, "cannot publish endpoint health");
            }
        }
        let mut polled = Vec::new();
        for member in &self.members {
            if member.target.endpoint.kind != ProviderKind::Ollama {
                continue;
            }
            match self
                .state
                .claim_probe(member.name(), worker, interval)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::debug!(endpoint = member.name(), error = %e, "cannot take the probe lock");
                    continue;
                }
            }
            polled.push(member.name().to_owned());
            let (ps, tags) = tokio::join!(
                tokio::time::timeout(MANAGE_TIMEOUT, member.provider.loaded_models()),
                tokio::time::timeout(MANAGE_TIMEOUT, member.provider.list_models()),
            );
            let (Ok(Ok(Some(ps))), Ok(Ok(tags))) = (ps, tags) else {
                tracing::debug!(
                    endpoint = member.name(),
                    "cannot read the endpoint's models"
                );
                continue;
            };
            let at = unix_ms();
            let rec = EndpointModels {
                loaded: ps.into_iter().map(|m| m.name).collect(),
                pulled: tags
                    .into_iter()
                    .map(|m| PulledModel {
                        name: m.name,
                        size: m.size_bytes,
                    })
                    .collect(),
                updated_ms: Some(at),
                loaded_ms: Some(at),
                probed_by: Some(worker.to_owned()),
            };
            if let Err(e) = self.state.put_models(member.name(), &rec).await {
                tracing::debug!(endpoint = member.name(), error = %e, "cannot write model state");
            }
        }
        self.refresh_view().await;
        polled
    }

    /// Runs [`Router::health_round`] every `health_interval`, and with `model_affinity` the
    /// placement planner ([`Router::plan_round`]) every `plan_interval`, until the returned
    /// handle is aborted (or dropped with the runtime).
    pub fn spawn_health(self: &Arc<Self>, worker: String) -> tokio::task::JoinHandle<()> {
        let router = Arc::clone(self);
        tokio::spawn(async move {
            let health = async {
                let mut tick = tokio::time::interval(router.cfg.health_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    router.health_round(&worker).await;
                }
            };
            let plan = async {
                if router.cfg.strategy == Strategy::ModelAffinity {
                    router.plan_loop(&worker).await;
                }
            };
            tokio::join!(health, plan);
        })
    }

    /// Every endpoint's shared model record as this process last read it (for status
    /// displays and tests).
    pub async fn endpoint_models(&self) -> Vec<(String, EndpointModels)> {
        let view = self.model_view().await;
        self.members
            .iter()
            .map(|m| m.name().to_owned())
            .zip(view)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::bytes_per_parameter;

    #[test]
    fn quantisation_sets_bytes_per_parameter() {
        assert_eq!(bytes_per_parameter(Some("Q4_K_M")), 0.6);
        assert_eq!(bytes_per_parameter(Some("q8_0")), 1.2);
        assert_eq!(bytes_per_parameter(Some("F16")), 2.0);
        assert_eq!(bytes_per_parameter(Some("IQ2_XS")), 0.3);
        assert_eq!(bytes_per_parameter(None), 0.6);
    }
}
