//! [`Router`]: one model call routed over many endpoints — strategy, fleet-wide slots,
//! failover by error class, circuit breakers and backpressure.
//!
//! A call goes like this:
//!
//! 1. **Eligible endpoints**: those configured for the model (and matching the call's
//!    [`Selection`] of tag and provider, when it has one), minus the ones this call has
//!    already tried, whose breaker is open, that are rate limited, whose credentials were
//!    refused, or that said they lack the model. A half-open breaker lets one probe through.
//! 2. **Order** by [`Strategy`] (ties shuffled, so never always the first).
//! 3. **Slot**: one [`Slots::acquire`] takes a slot on the best candidate with room — the
//!    first in order, or the least loaded for [`Strategy::LeastLoaded`]. With a fleet-wide
//!    store (leases in Redis) `max_concurrent` holds across every worker. When all are
//!    full the call **waits** for a slot, bounded by its timeout, and meanwhile
//!    [`Router::saturated`] reports the model so the caller can stop taking its work.
//! 4. **Call**, renewing the slot's lease while it runs; release it after.
//! 5. **Failover** by the error: connection faults, 5xx/503/529 and timeouts before the
//!    first byte trip the endpoint's breaker and the call moves on at once; 429 parks the
//!    endpoint until `Retry-After` (and an endpoint whose reported rate-limit budget is spent
//!    is held until its reset, see [`budget`]); 401/403 mark it misconfigured (logged once, skipped
//!    from then on); 404 model-not-found skips it for that model; an error inside a 200
//!    stream discards the partial output and tries elsewhere; 400 and other 4xx end the call.
//!
//! Health (breakers, rate limits, latency) is per process; slots can be fleet-wide, and so
//! can model state ([`ModelStateStore`]: which models each endpoint has loaded and pulled,
//! refreshed by one worker per interval, see [`Router::health_round`]), which
//! [`Strategy::ModelAffinity`] uses to send calls where the model is already warm.

mod affinity;
pub mod budget;
mod core;
mod error;
mod guards;
mod health;
mod local_state;
mod models;
mod observe;
mod observer;
mod placement;
mod planner;
mod slots;
mod strategy;
mod target;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use serde::Serialize;
use tokio::sync::Notify;

use crate::config::ProviderKind;
use crate::error::LlmError;
use crate::provider::Provider;
use crate::types::{CallOptions, LlmRequest, LlmResponse};

pub use error::RouteError;
use health::{Availability, Circuit, Health};
pub use local_state::LocalModelState;
pub use models::{
    EndpointModels, HealthReport, ModelDemand, ModelMark, ModelStateStore, PulledModel, StoreError,
};
pub use observer::{
    error_class_name, Attempt, AttemptOutcome, BreakerState, CallObserver, EndpointHealth,
    NoopObserver, MODEL_LOAD_MIN,
};
pub use slots::aimd;
pub use slots::{LocalSlots, SlotCandidate, SlotError, SlotGrant, SlotOutcome, SlotPick, Slots};
pub use strategy::{Selection, Strategy};
pub use target::{RouteTarget, RouterConfig};

pub use self::core::Router;
use self::core::{Inventory, Member, ModelView, INVENTORY_TIMEOUT};
use guards::{LeaseGuard, ProbeGuard, WaitGuard};
use observer::Reported;

/// An endpoint's state, for operators.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStatus {
    /// Name.
    pub name: String,
    /// API.
    pub kind: ProviderKind,
    /// Priority.
    pub priority: i32,
    /// Concurrency limit (0 = unlimited).
    pub max_concurrent: u32,
    /// Slots held now (fleet-wide with a shared store); `None` when the store failed.
    pub in_flight: Option<u64>,
    /// `ok`, `open`, `half_open`, `rate_limited` or `misconfigured` (as this process sees it).
    pub state: &'static str,
    /// Moving response time of successful calls, ms.
    pub latency_ms: Option<f64>,
    /// Breaker trips so far.
    pub failures: u64,
}

/// What to do after an endpoint failed.
enum Verdict {
    /// Try the next eligible endpoint.
    Next,
    /// Give up: the request itself is at fault.
    Stop,
}

impl Router {
    /// Builds one provider per endpoint. Fails with [`LlmError::Config`] for an unusable
    /// endpoint or a duplicate name.
    pub fn new(
        targets: Vec<RouteTarget>,
        slots: Arc<dyn Slots>,
        cfg: RouterConfig,
    ) -> Result<Router, LlmError> {
        let mut members: Vec<Member> = Vec::with_capacity(targets.len());
        for target in targets {
            if members.iter().any(|m| m.name() == target.endpoint.name) {
                return Err(LlmError::Config {
                    message: format!("duplicate endpoint name {:?}", target.endpoint.name),
                });
            }
            let provider = Arc::new(Provider::new(target.endpoint.clone())?);
            members.push(Member {
                target,
                provider,
                health: Mutex::new(Health::new()),
                reported: Reported::new(),
            });
        }
        let has_gpu = members.iter().any(|m| m.target.gpu);
        let n = members.len();
        Ok(Router {
            state: Arc::new(LocalModelState::new()),
            view: Mutex::new(ModelView {
                models: vec![EndpointModels::default(); n],
                read: None,
            }),
            demand: Mutex::new(HashMap::new()),
            id: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            pulling: Mutex::new(HashSet::new()),
            observer: Arc::new(NoopObserver),
            has_gpu,
            inventory: Mutex::new(Inventory::default()),
            size_lookup: tokio::sync::Mutex::new(()),
            members,
            slots,
            cfg,
            turn: AtomicUsize::new(0),
            waiting: Mutex::new(HashMap::new()),
            released: Notify::new(),
        })
    }

    /// Keeps model state in `store` (shared by the fleet when the store is) instead of in
    /// this process only.
    pub fn with_model_state(mut self, store: Arc<dyn ModelStateStore>) -> Router {
        self.state = store;
        self
    }

    /// The settings.
    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// Whether any endpoint is configured for `model` (whatever a call's [`Selection`]:
    /// streams are per model, so a worker reads a model's tasks when any endpoint serves it).
    pub fn serves(&self, model: &str) -> bool {
        self.members.iter().any(|m| m.target.serves(model))
    }

    /// Whether calls for `model` are waiting for a slot right now: every eligible endpoint
    /// is at its limit (or cooling down). A reader should not take more work for the model
    /// while this holds.
    pub fn saturated(&self, model: &str) -> bool {
        self.waiting_map().get(model).is_some_and(|n| *n > 0)
    }

    fn waiting_map(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes one call with the configured strategy.
    pub async fn call(
        &self,
        req: &LlmRequest,
        opts: &CallOptions,
    ) -> Result<LlmResponse, RouteError> {
        self.call_with(req, opts, None).await
    }

    /// Routes one call; `strategy` overrides the configured one. `opts.timeout` bounds the
    /// whole call, waiting for a slot and failovers included ([`RouterConfig::max_wait`]
    /// when unset); each attempt is also bounded by its endpoint's request timeout.
    pub async fn call_with(
        &self,
        req: &LlmRequest,
        opts: &CallOptions,
        strategy: Option<Strategy>,
    ) -> Result<LlmResponse, RouteError> {
        self.call_selected(req, opts, &Selection::strategy(strategy))
            .await
    }

    /// Routes one call over the endpoints the selection admits (all of them for an empty
    /// selection), with its strategy or the configured one; otherwise like
    /// [`Router::call_with`]. When endpoints serve the model but none matches the selection,
    /// fails at once with [`RouteError::NoEndpoint`] naming the tag and provider asked for.
    ///
    /// A selected call waiting for a slot counts for [`Router::saturated`] like any other:
    /// the model's streams are shared by every selection.
    pub async fn call_selected(
        &self,
        req: &LlmRequest,
        opts: &CallOptions,
        selection: &Selection,
    ) -> Result<LlmResponse, RouteError> {
        // The configured keep_alive applies to requests that set none.
        let with_keep_alive;
        let req = match (&req.keep_alive, &self.cfg.keep_alive) {
            (None, Some(k)) => {
                with_keep_alive = LlmRequest {
                    keep_alive: Some(k.clone()),
                    ..req.clone()
                };
                &with_keep_alive
            }
            _ => req,
        };
        let model = req.model.as_str();
        let strategy = selection.strategy.unwrap_or(self.cfg.strategy);
        let start = Instant::now();
        let deadline = start + opts.timeout.unwrap_or(self.cfg.max_wait);
        let serving: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].target.serves(model))
            .collect();
        if serving.is_empty() {
            return Err(RouteError::NoEndpoint {
                model: model.to_owned(),
                tag: None,
                provider: None,
            });
        }
        // Selection: endpoints the call does not admit are not candidates at all.
        let serving: Vec<usize> = serving
            .into_iter()
            .filter(|&i| self.members[i].target.admitted_by(selection))
            .collect();
        if serving.is_empty() {
            return Err(RouteError::NoEndpoint {
                model: model.to_owned(),
                tag: selection.tag.clone(),
                provider: selection.provider,
            });
        }
        // Placement: endpoints that cannot hold the model are not candidates at all. A model
        // whose size no endpoint reports goes to GPU endpoints when one serves it: a CPU
        // endpoint is never chosen by guess for what may be a 70b model.
        let size = self.model_size(model).await;
        let unknown_to_gpu =
            size.is_none() && self.has_gpu && serving.iter().any(|&i| self.members[i].target.gpu);
        let serving: Vec<usize> = serving
            .into_iter()
            .filter(|&i| match size {
                Some(b) => self.fits(&self.members[i], b),
                None => !unknown_to_gpu || self.members[i].target.gpu,
            })
            .collect();
        if serving.is_empty() {
            return Err(RouteError::Unusable {
                model: model.to_owned(),
            });
        }
        // What the call counts against token budgets (the same for every endpoint).
        let tokens = budget::estimate_tokens(req);
        let mut tried = vec![false; self.members.len()];
        // Endpoints held back for this call only (token budget below its estimate), until.
        let mut call_holds: Vec<Option<Instant>> = vec![None; self.members.len()];
        let mut last: Option<RouteError> = None;
        // Every endpoint error so far, oldest first, for the error the caller gets.
        let mut failures: Vec<(String, LlmError)> = Vec::new();
        let mut waiting: Option<WaitGuard<'_>> = None;
        let mut pause = Duration::from_millis(5);
        loop {
            let now = Instant::now();
            // Tier 0: endpoints that list the model by name; tier 1: those serving any
            // model. A wildcard endpoint takes the call only when no named one can.
            let mut tiers: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
            let mut probes = Vec::new();
            let mut cooling = Vec::new();
            let mut earliest: Option<Instant> = None;
            for &i in &serving {
                if tried[i] {
                    continue;
                }
                if let Some(t) = call_holds[i].filter(|t| *t > now) {
                    earliest = Some(earliest.map_or(t, |e| e.min(t)));
                    continue;
                }
                let member = &self.members[i];
                let tier = usize::from(!member.target.lists(model));
                let mut h = member.health();
                if h.lacks(model, now) {
                    continue;
                }
                match h.availability(now) {
                    Availability::Ready => tiers[tier].push(i),
                    Availability::Probe => {
                        tiers[tier].push(i);
                        probes.push(i);
                    }
                    Availability::Cooling(_) => cooling.push((tier, i)),
                    Availability::NotBefore(t) => {
                        earliest = Some(earliest.map_or(t, |e| e.min(t)));
                    }
                    Availability::Never => {}
                }
            }
            if tiers.iter().all(Vec::is_empty) {
                if let Some(e) = last {
                    return Err(self.with_retry_in(e, &serving, model, &call_holds));
                }
                if !cooling.is_empty() {
                    // Every endpoint left has its breaker open: with no alternative, try
                    // them anyway rather than fail tasks without asking any server.
                    for (tier, i) in cooling {
                        tiers[tier].push(i);
                    }
                } else {
                    let Some(at) = earliest else {
                        return Err(RouteError::Unusable {
                            model: model.to_owned(),
                        });
                    };
                    if at >= deadline || at - now > self.cfg.max_cooldown_wait {
                        return Err(RouteError::Unavailable {
                            model: model.to_owned(),
                            retry_after: at.saturating_duration_since(now),
                        });
                    }
                    // Rate limits end within the deadline: wait, reporting the model
                    // saturated meanwhile.
                    waiting.get_or_insert_with(|| WaitGuard::new(self, model));
                    tokio::time::sleep_until(at.into()).await;
                    continue;
                }
            }
            let lease_id = format!("{:032x}", rand::random::<u128>());
            let mut chosen = None;
            // Whether the chosen endpoint's limit is being adapted (settled accordingly).
            let mut adapting = false;
            let mut all_held = true;
            for tier in tiers {
                if tier.is_empty() {
                    continue;
                }
                let (order, pick) = if strategy == Strategy::ModelAffinity {
                    (
                        self.affinity_order(model, tier, opts.chain_below).await,
                        SlotPick::InOrder,
                    )
                } else {
                    self.order(strategy, tier)
                };
                let candidates: Vec<SlotCandidate<'_>> = order
                    .iter()
                    .map(|&i| SlotCandidate {
                        endpoint: self.members[i].name(),
                        max: self.members[i].target.max_concurrent,
                    })
                    .collect();
                let grant = self
                    .slots
                    .acquire_with(&candidates, pick, &lease_id, self.cfg.lease_ttl, tokens)
                    .await?;
                self.note_holds(&order, &grant.holds);
                let held_at = Instant::now();
                for (&i, wait) in order.iter().zip(&grant.token_waits) {
                    if let Some(d) = wait {
                        call_holds[i] = Some(held_at + *d);
                    }
                }
                if let Some(k) = grant.chosen {
                    chosen = Some(order[k]);
                    adapting = grant.limits.get(k).is_some_and(Option::is_some);
                    break;
                }
                all_held &= grant
                    .holds
                    .iter()
                    .zip(&grant.token_waits)
                    .all(|(h, w)| h.is_some() || w.is_some());
            }
            let Some(i) = chosen else {
                if all_held {
                    // The fleet holds every candidate back: the holds are now cool-downs
                    // here, so the next round waits for the first to end or gives up.
                    continue;
                }
                // Every candidate is full: wait for a slot. Releases in this process wake
                // the wait at once; other workers' releases are seen by the next attempt.
                waiting.get_or_insert_with(|| WaitGuard::new(self, model));
                let now = Instant::now();
                if now >= deadline {
                    return Err(last.unwrap_or(RouteError::Saturated {
                        model: model.to_owned(),
                        waited: now - start,
                    }));
                }
                let nap = pause.min(deadline - now);
                tokio::select! {
                    _ = self.released.notified() => {}
                    _ = tokio::time::sleep(nap) => {}
                }
                pause = (pause * 2).min(Duration::from_millis(200));
                continue;
            };
            waiting = None;
            let member = &self.members[i];
            let lease = LeaseGuard {
                slots: self.slots.clone(),
                endpoint: member.name().to_owned(),
                id: lease_id,
                done: false,
            };
            if deadline <= Instant::now() {
                lease.settle(SlotOutcome::Other).await;
                return Err(last.unwrap_or(RouteError::Saturated {
                    model: model.to_owned(),
                    waited: start.elapsed(),
                }));
            }
            // With model_affinity, a call that will load its model says so to the fleet
            // until it is answered (other calls then wait for it rather than load again).
            // Its calls in flight are counted too, so that nobody evicts a model in use.
            // Both are undone below, after the attempt, on every path.
            let affinity = strategy == Strategy::ModelAffinity;
            let marked = affinity && {
                self.make_room(i, model).await;
                let (marked, ()) =
                    tokio::join!(self.mark_loading(i, model), self.count_call(i, model));
                marked
            };
            let probe = probes.contains(&i).then(|| ProbeGuard::start(self, member));
            // Read after the placement work above, which takes time of its own.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let call_opts = CallOptions {
                timeout: Some(remaining.min(member.target.endpoint.request_timeout)),
                ..*opts
            };
            let attempt_started = Instant::now();
            let result = self.attempt(member, req, &call_opts, &lease.id).await;
            self.observe_attempt(member, model, &result, attempt_started);
            let outcome = match &result {
                Ok(resp) => SlotOutcome::Answered {
                    adapting,
                    max: member.target.max_concurrent,
                    budget: resp.budget,
                },
                Err(LlmError::RateLimited { retry_after, .. }) => SlotOutcome::RateLimited {
                    wait: retry_after.unwrap_or(self.cfg.rate_limit_cooldown),
                },
                Err(e) if e.is_overload() => SlotOutcome::Overloaded,
                Err(_) => SlotOutcome::Other,
            };
            // The slot's return and the call's end go to the fleet together.
            tokio::join!(lease.settle(outcome), async {
                if affinity {
                    self.uncount_call(i, model).await;
                }
            });
            self.released.notify_waiters();
            if marked {
                // Loaded in the shared view before the mark goes, so no reader sees neither.
                if result.is_ok() {
                    self.note_loaded(i, model).await;
                }
                self.unmark_loading(i, model).await;
            }
            if let Some(p) = probe {
                p.finish();
            }
            match result {
                Ok(resp) => {
                    member.health().succeeded(resp.total_ms);
                    self.observe_health(member);
                    self.note_loaded(i, model).await;
                    return Ok(resp);
                }
                Err(error) => {
                    if matches!(error, LlmError::Timeout { .. }) && Instant::now() >= deadline {
                        // The caller's deadline cut the call, not the endpoint's own limit:
                        // nothing to hold against the endpoint, and no time left to go on.
                        return Err(RouteError::Call {
                            endpoint: member.name().to_owned(),
                            error,
                            earlier: failures,
                            retry_in: None,
                        });
                    }
                    let verdict = self.judge(member, model, &error);
                    self.observe_health(member);
                    if matches!(error, LlmError::ModelNotFound { .. }) {
                        self.start_pull(i, model);
                    }
                    tried[i] = true;
                    let err = RouteError::Call {
                        endpoint: member.name().to_owned(),
                        error: error.clone(),
                        earlier: failures.clone(),
                        retry_in: None,
                    };
                    failures.push((member.name().to_owned(), error));
                    match verdict {
                        Verdict::Stop => return Err(err),
                        Verdict::Next => {
                            // An operator wants to see an endpoint being failed away from (the
                            // breaker keeps a dead one from repeating this on every call).
                            if let RouteError::Call { error, .. } = &err {
                                tracing::warn!(
                                    endpoint = member.name(),
                                    model,
                                    error = %error,
                                    "call failed on this endpoint; failing over to the next"
                                );
                            }
                            last = Some(err);
                        }
                    }
                }
            }
        }
    }

    /// `err` with, when it is a [`RouteError::Call`], how long until any of the call's
    /// candidates (`serving`; `call_holds`: those held for this call only) can be called
    /// again, so a caller deferring the task need not come back before.
    fn with_retry_in(
        &self,
        mut err: RouteError,
        serving: &[usize],
        model: &str,
        call_holds: &[Option<Instant>],
    ) -> RouteError {
        if let RouteError::Call { retry_in, .. } = &mut err {
            let now = Instant::now();
            let at = health::earliest(serving.iter().map(|&i| {
                let h = self.members[i].health();
                h.resume(model, now).held_until(call_holds[i], now)
            }));
            *retry_in = at.map(|t| t - now);
        }
        err
    }

    /// Takes note of the fleet's holds on the candidates (`order[k]` held for `holds[k]`), so
    /// this process skips them until the holds end.
    fn note_holds(&self, order: &[usize], holds: &[Option<Duration>]) {
        let now = Instant::now();
        for (&i, hold) in order.iter().zip(holds) {
            if let Some(d) = hold {
                let member = &self.members[i];
                member.health().hold(now + *d);
                self.observe_health(member);
            }
        }
    }

    /// Whether a model of `bytes` may run on the endpoint: not more than its `memory_gb`,
    /// and on a CPU endpoint not more than `cpu_max_model_bytes` (when the deployment marks
    /// GPU endpoints at all).
    fn fits(&self, member: &Member, bytes: u64) -> bool {
        let t = &member.target;
        if t.memory_gb.is_some_and(|gb| bytes as f64 > gb * 1e9) {
            return false;
        }
        !(self.has_gpu && !t.gpu && bytes > self.cfg.cpu_max_model_bytes)
    }

    /// The model's size, when an endpoint reports it. Asks the Ollama endpoints' listings
    /// (other APIs report no sizes) when the size is unknown and the last look is older
    /// than `inventory_ttl`, and when they do not list it, estimates it from `/api/show`'s
    /// parameter count; failures just leave the size unknown. One lookup at a time: calls
    /// arriving while it runs wait for its answer (the first calls after a start would
    /// otherwise route before any size is known).
    async fn model_size(&self, model: &str) -> Option<u64> {
        if let Some(b) = self.inventory().sizes.get(model) {
            return Some(*b);
        }
        let _lookup = self.size_lookup.lock().await;
        {
            let mut inv = self.inventory();
            if let Some(b) = inv.sizes.get(model) {
                return Some(*b);
            }
            if inv
                .refreshed
                .is_some_and(|t| t.elapsed() < self.cfg.inventory_ttl)
            {
                return None;
            }
            inv.refreshed = Some(Instant::now());
        }
        let listings = futures::future::join_all(
            self.members
                .iter()
                .filter(|m| m.target.endpoint.kind == ProviderKind::Ollama)
                .map(|m| tokio::time::timeout(INVENTORY_TIMEOUT, m.provider.list_models())),
        )
        .await;
        {
            let mut inv = self.inventory();
            for models in listings.into_iter().flatten().flatten() {
                for m in models {
                    if let Some(b) = m.size_bytes {
                        let e = inv.sizes.entry(m.name).or_insert(0);
                        *e = (*e).max(b);
                    }
                }
            }
            if let Some(b) = inv.sizes.get(model) {
                return Some(*b);
            }
        }
        let shown = self.shown_size(model).await?;
        self.inventory().sizes.insert(model.to_owned(), shown);
        Some(shown)
    }

    fn inventory(&self) -> MutexGuard<'_, Inventory> {
        self.inventory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One call on one endpoint, renewing the lease while it runs.
    async fn attempt(
        &self,
        member: &Member,
        req: &LlmRequest,
        opts: &CallOptions,
        lease_id: &str,
    ) -> Result<LlmResponse, LlmError> {
        let ttl = self.cfg.lease_ttl;
        let period = (ttl / 3).max(Duration::from_millis(10));
        let call = member.provider.call(req, opts);
        tokio::pin!(call);
        loop {
            tokio::select! {
                biased;
                r = &mut call => return r,
                _ = tokio::time::sleep(period) => {
                    match self.slots.renew(member.name(), lease_id, ttl).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(endpoint = member.name(), "slot lease expired during a call; the endpoint may briefly exceed its limit"),
                        Err(e) => tracing::warn!(endpoint = member.name(), error = %e, "cannot renew slot lease"),
                    }
                }
            }
        }
    }

    /// Records what an error says about the endpoint and decides whether to move on.
    fn judge(&self, member: &Member, model: &str, error: &LlmError) -> Verdict {
        let now = Instant::now();
        let mut h = member.health();
        match error {
            LlmError::Connect { .. }
            | LlmError::Overloaded { .. }
            | LlmError::Timeout {
                before_first_byte: true,
            } => {
                h.trip(now, self.cfg.cooldown, self.cfg.max_cooldown);
                Verdict::Next
            }
            LlmError::RateLimited { retry_after, .. } => {
                h.rate_limit(now + retry_after.unwrap_or(self.cfg.rate_limit_cooldown));
                Verdict::Next
            }
            LlmError::Auth { status, .. } => {
                if h.misconfigure() {
                    tracing::error!(
                        endpoint = member.name(),
                        status,
                        "endpoint refused the credentials; skipping it from now on"
                    );
                }
                Verdict::Next
            }
            LlmError::ModelNotFound { .. } => {
                h.missing_model(model, now + self.cfg.missing_model_ttl);
                Verdict::Next
            }
            LlmError::Stream { .. }
            | LlmError::Decode { .. }
            | LlmError::Timeout {
                before_first_byte: false,
            } => {
                h.answered();
                Verdict::Next
            }
            LlmError::Config { .. }
            | LlmError::InvalidRequest { .. }
            | LlmError::ContextTooLong { .. }
            | LlmError::BadRequest { .. }
            | LlmError::ResponseTooLarge { .. } => {
                h.answered();
                Verdict::Stop
            }
        }
    }

    /// Orders the eligible endpoints for a strategy; ties are shuffled first so they break
    /// at random.
    fn order(&self, strategy: Strategy, mut eligible: Vec<usize>) -> (Vec<usize>, SlotPick) {
        eligible.shuffle(&mut rand::rng());
        match strategy {
            // Model affinity orders asynchronously (`affinity_order`); as a plain order it is
            // least loaded.
            Strategy::LeastLoaded | Strategy::ModelAffinity => (eligible, SlotPick::LeastLoaded),
            Strategy::Priority => {
                // Stable: equal priorities keep their shuffled order.
                eligible.sort_by_key(|&i| self.members[i].target.priority);
                (eligible, SlotPick::InOrder)
            }
            Strategy::Fastest => {
                let latency = |i: usize| self.members[i].health().latency_ms.unwrap_or(0.0);
                eligible.sort_by(|&a, &b| latency(a).total_cmp(&latency(b)));
                (eligible, SlotPick::InOrder)
            }
            Strategy::RoundRobin => {
                eligible.sort_unstable();
                let start = self.turn.fetch_add(1, Ordering::Relaxed) % eligible.len();
                eligible.rotate_left(start);
                (eligible, SlotPick::InOrder)
            }
        }
    }

    /// Returns the slots the store keeps for later calls and keeps none from now on (a
    /// draining worker: see [`Slots::flush`]).
    pub async fn flush_slots(&self) -> Result<(), SlotError> {
        self.slots.flush().await
    }

    /// Every endpoint's state (slot counts from the store: fleet-wide when it is shared).
    pub async fn status(&self) -> Vec<EndpointStatus> {
        let names: Vec<&str> = self.members.iter().map(Member::name).collect();
        let counts = self.slots.counts(&names).await.ok();
        let now = Instant::now();
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let h = m.health();
                let state = if h.misconfigured {
                    "misconfigured"
                } else if h.rate_limited_until.is_some_and(|t| t > now) {
                    "rate_limited"
                } else {
                    match h.circuit {
                        Circuit::Closed => "ok",
                        Circuit::Open { until, .. } if until > now => "open",
                        _ => "half_open",
                    }
                };
                EndpointStatus {
                    name: m.name().to_owned(),
                    kind: m.target.endpoint.kind,
                    priority: m.target.priority,
                    max_concurrent: m.target.max_concurrent,
                    in_flight: counts.as_ref().and_then(|c| c.get(i).copied()),
                    state,
                    latency_ms: h.latency_ms,
                    failures: h.failures,
                }
            })
            .collect()
    }
}
