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
//!    endpoint until `Retry-After`; 401/403 mark it misconfigured (logged once, skipped
//!    from then on); 404 model-not-found skips it for that model; an error inside a 200
//!    stream discards the partial output and tries elsewhere; 400 and other 4xx end the call.
//!
//! Health (breakers, rate limits, latency) is per process; slots can be fleet-wide, and so
//! can model state ([`ModelStateStore`]: which models each endpoint has loaded and pulled,
//! refreshed by one worker per interval, see [`Router::health_round`]), which
//! [`Strategy::ModelAffinity`] uses to send calls where the model is already warm.

mod affinity;
mod health;
mod models;
mod observe;
mod slots;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{EndpointConfig, ProviderKind};
use crate::error::{ErrorClass, LlmError};
use crate::provider::Provider;
use crate::types::{CallOptions, LlmRequest, LlmResponse};

use health::{Availability, Circuit, Health};
pub use models::{
    EndpointModels, HealthReport, LocalModelState, ModelStateStore, PulledModel, StoreError,
};
pub use observe::{
    error_class_name, Attempt, AttemptOutcome, BreakerState, CallObserver, EndpointHealth,
    NoopObserver, MODEL_LOAD_MIN,
};
pub use slots::{LocalSlots, SlotCandidate, SlotError, SlotPick, Slots};

/// How a call chooses among the endpoints that can take it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each call starts at the next endpoint in turn (per process).
    RoundRobin,
    /// The endpoint with the lowest fleet-wide load (slots held / max).
    #[default]
    LeastLoaded,
    /// The lowest `priority` number first; spills over to the next when full.
    Priority,
    /// The lowest moving response time first (endpoints not measured yet are tried first).
    Fastest,
    /// Where the model is loaded first, then where it is pulled, then the rest; least loaded
    /// among equals. When the model must be loaded where the memory is full, endpoints whose
    /// loaded models no queued task needs come first.
    ModelAffinity,
}

impl Strategy {
    /// Every strategy, by its configuration name.
    pub const ALL: [Strategy; 5] = [
        Strategy::RoundRobin,
        Strategy::LeastLoaded,
        Strategy::Priority,
        Strategy::Fastest,
        Strategy::ModelAffinity,
    ];
}

impl std::str::FromStr for Strategy {
    type Err = String;

    /// Parses a configuration name (`round_robin`, `least_loaded`, `priority`, `fastest`,
    /// `model_affinity`).
    fn from_str(s: &str) -> Result<Strategy, String> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.to_string() == s)
            .ok_or_else(|| {
                format!("unknown routing strategy {s:?} (round_robin, least_loaded, priority, fastest, model_affinity)")
            })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastLoaded => "least_loaded",
            Strategy::Priority => "priority",
            Strategy::Fastest => "fastest",
            Strategy::ModelAffinity => "model_affinity",
        })
    }
}

/// What one call asks of the endpoints beyond serving its model: a strategy of its own,
/// and which endpoints may take it at all. Endpoints that do not match are not candidates;
/// when none matches, the call fails with [`RouteError::NoEndpoint`] before any request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Overrides [`RouterConfig::strategy`].
    pub strategy: Option<Strategy>,
    /// Only endpoints carrying this tag ([`RouteTarget::tags`]).
    pub tag: Option<String>,
    /// Only endpoints of this kind.
    pub provider: Option<ProviderKind>,
}

impl Selection {
    /// A selection that only overrides the strategy.
    pub fn strategy(strategy: Option<Strategy>) -> Selection {
        Selection {
            strategy,
            ..Selection::default()
        }
    }

    /// Whether the endpoint may take the call.
    fn admits(&self, target: &RouteTarget) -> bool {
        self.tag
            .as_ref()
            .is_none_or(|tag| target.tags.iter().any(|t| t == tag))
            && self
                .provider
                .is_none_or(|kind| target.endpoint.kind == kind)
    }
}

/// How a [`RouteError::NoEndpoint`] names the selection that matched nothing: empty without
/// one, otherwise ` with tag "gpu"`, ` of provider openai` or both.
fn selection_phrase(tag: &Option<String>, provider: &Option<ProviderKind>) -> String {
    let mut s = String::new();
    if let Some(tag) = tag {
        s.push_str(&format!(" with tag {tag:?}"));
    }
    if let Some(kind) = provider {
        if tag.is_some() {
            s.push_str(" and");
        }
        s.push_str(&format!(" of provider {kind}"));
    }
    s
}

/// Router settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// Default strategy ([`Router::call_with`] overrides it per call).
    pub strategy: Strategy,
    /// Lifetime of a slot's lease; renewed every third of it while the call runs, so a
    /// dead holder's slots return after at most this long.
    pub lease_ttl: Duration,
    /// First cool-down of a tripped breaker (doubled for each consecutive trip).
    pub cooldown: Duration,
    /// Longest cool-down.
    pub max_cooldown: Duration,
    /// Cool-down of a 429 without `Retry-After`.
    pub rate_limit_cooldown: Duration,
    /// How long an endpoint that answered "model not found" is skipped for that model.
    pub missing_model_ttl: Duration,
    /// Bound of a call (waiting for a slot included) when the call sets no timeout.
    pub max_wait: Duration,
    /// Largest model (bytes) a CPU endpoint (`gpu: false`) takes, once any endpoint of the
    /// router is marked as a GPU endpoint; model sizes are learned from Ollama's
    /// `/api/tags`.
    pub cpu_max_model_bytes: u64,
    /// How long learned model sizes are trusted before `/api/tags` is asked again for a
    /// model of unknown size.
    pub inventory_ttl: Duration,
    /// Longest a call waits in process for a cooling-down endpoint (breaker open, rate
    /// limited) when no other can take it; longer waits fail the call with
    /// [`RouteError::Unavailable`] so the task is retried later instead of holding a slot.
    pub max_cooldown_wait: Duration,
    /// Ollama `keep_alive` sent with every call whose request sets none (`None` = the
    /// server's default).
    pub keep_alive: Option<String>,
    /// Whether a "model not found" from an Ollama endpoint starts a background pull of the
    /// model there (once per model and endpoint per process); the call fails over meanwhile.
    pub allow_pull: bool,
    /// Bound of one background pull.
    pub pull_timeout: Duration,
    /// Period of [`Router::health_round`] (and the probe lock's lifetime).
    pub health_interval: Duration,
    /// How long the shared model state and queued-work counts read from the store are used
    /// before being read again.
    pub model_state_ttl: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            strategy: Strategy::default(),
            lease_ttl: Duration::from_secs(60),
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(60),
            rate_limit_cooldown: Duration::from_secs(5),
            missing_model_ttl: Duration::from_secs(60),
            max_wait: Duration::from_secs(300),
            max_cooldown_wait: Duration::from_secs(2),
            cpu_max_model_bytes: 16_000_000_000,
            inventory_ttl: Duration::from_secs(300),
            keep_alive: None,
            allow_pull: false,
            pull_timeout: Duration::from_secs(3600),
            health_interval: Duration::from_secs(10),
            model_state_ttl: Duration::from_secs(1),
        }
    }
}

/// One endpoint as the router sees it: the connection settings plus what routing needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTarget {
    /// Connection settings (name, URL, kind, key, timeouts).
    pub endpoint: EndpointConfig,
    /// Models it serves; `"*"` = any.
    pub models: Vec<String>,
    /// Lower is preferred by [`Strategy::Priority`].
    pub priority: i32,
    /// Most calls in flight on it across the fleet; 0 = unlimited.
    pub max_concurrent: u32,
    /// Whether it runs models on a GPU.
    pub gpu: bool,
    /// Memory for models, GB, when known.
    pub memory_gb: Option<f64>,
    /// Free-form labels; a call's [`Selection::tag`] admits only endpoints carrying it.
    pub tags: Vec<String>,
    /// Most models the endpoint keeps loaded at once, when known (Ollama's
    /// `OLLAMA_MAX_LOADED_MODELS`); lets `model_affinity` foresee evictions.
    pub max_loaded: Option<u32>,
    /// Models to load when the worker starts ([`Router::preload`]).
    pub preload: Vec<String>,
}

impl RouteTarget {
    /// Any model, priority 0, unlimited, CPU, no tags.
    pub fn new(endpoint: EndpointConfig) -> RouteTarget {
        RouteTarget {
            endpoint,
            models: vec!["*".to_owned()],
            priority: 0,
            max_concurrent: 0,
            gpu: false,
            memory_gb: None,
            tags: Vec::new(),
            max_loaded: None,
            preload: Vec::new(),
        }
    }

    /// Sets how many models the endpoint keeps loaded at once.
    pub fn with_max_loaded(mut self, max: u32) -> Self {
        self.max_loaded = Some(max);
        self
    }

    /// Sets the models loaded at start.
    pub fn with_preload<S: Into<String>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        self.preload = models.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the served models.
    pub fn with_models<S: Into<String>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Marks a GPU endpoint with this much memory for models (GB).
    pub fn with_gpu(mut self, memory_gb: Option<f64>) -> Self {
        self.gpu = true;
        self.memory_gb = memory_gb;
        self
    }

    /// Sets the concurrency limit (0 = unlimited).
    pub fn with_max_concurrent(mut self, max: u32) -> Self {
        self.max_concurrent = max;
        self
    }

    /// Sets the tags.
    pub fn with_tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }

    /// Whether the model is listed by name (not only through `"*"`).
    fn lists(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
    }
}

/// Why a routed call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    /// No endpoint is configured for the model, or none of those that are matches the
    /// call's [`Selection`] (then `tag`/`provider` name what was asked). Fatal.
    #[error(
        "no endpoint{} is configured to serve model {model:?}",
        selection_phrase(.tag, .provider)
    )]
    NoEndpoint {
        /// The model.
        model: String,
        /// The tag the call asked for, when no endpoint serving the model carries it.
        tag: Option<String>,
        /// The provider the call asked for, when it is part of what matched nothing.
        provider: Option<ProviderKind>,
    },
    /// Every endpoint for the model is unusable in this process (credentials refused, each
    /// said it lacks the model, or the model is too large for each). Fatal.
    #[error(
        "no usable endpoint for model {model:?} (credentials refused, model missing or too large)"
    )]
    Unusable {
        /// The model.
        model: String,
    },
    /// Every endpoint for the model is cooling down (breaker open or rate limited) past
    /// the call's deadline. Retry after `retry_after`.
    #[error("no endpoint for model {model:?} is available now")]
    Unavailable {
        /// The model.
        model: String,
        /// When the first endpoint becomes available again.
        retry_after: Duration,
    },
    /// Every endpoint for the model stayed at its concurrency limit until the deadline.
    /// Retryable.
    #[error("every endpoint for model {model:?} stayed at its concurrency limit for {waited:?}")]
    Saturated {
        /// The model.
        model: String,
        /// How long the call waited.
        waited: Duration,
    },
    /// The last endpoint tried failed; its error says whether to retry.
    #[error("endpoint {endpoint}: {error}")]
    Call {
        /// The endpoint.
        endpoint: String,
        /// Its error.
        error: LlmError,
    },
    /// The slot store failed. Retryable.
    #[error(transparent)]
    Slots(#[from] SlotError),
}

impl RouteError {
    /// What the caller should do next.
    pub fn class(&self) -> ErrorClass {
        match self {
            RouteError::NoEndpoint { .. } | RouteError::Unusable { .. } => ErrorClass::Fatal,
            RouteError::Unavailable { retry_after, .. } => ErrorClass::RetryAfter(*retry_after),
            RouteError::Saturated { .. } | RouteError::Slots(_) => ErrorClass::Retry,
            RouteError::Call { error, .. } => error.class(),
        }
    }

    /// The endpoint whose error this is, if one.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            RouteError::Call { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }
}

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

struct Member {
    target: RouteTarget,
    provider: Arc<Provider>,
    health: Mutex<Health>,
    /// What the observer was last told about this endpoint's health.
    reported: observe::Reported,
}

impl Member {
    fn name(&self) -> &str {
        &self.target.endpoint.name
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        // Health updates are single assignments; a panic elsewhere cannot leave it torn.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Routes calls over a set of endpoints. `Send + Sync`; share it behind an `Arc`.
pub struct Router {
    members: Vec<Member>,
    slots: Arc<dyn Slots>,
    cfg: RouterConfig,
    turn: AtomicUsize,
    waiting: Mutex<HashMap<String, usize>>,
    released: Notify,
    inventory: Mutex<Inventory>,
    /// Whether any endpoint is marked `gpu` (only then do CPU endpoints refuse big models).
    has_gpu: bool,
    /// Shared model state (loaded, pulled) and queued work.
    state: Arc<dyn ModelStateStore>,
    /// This process's copy of the shared model state, one record per member.
    view: Mutex<ModelView>,
    /// Ready queued tasks per model, with when they were read.
    queued: Mutex<HashMap<String, (u64, Instant)>>,
    /// (endpoint, model) pulls started by this process.
    pulling: Mutex<HashSet<(String, String)>>,
    /// Told about every attempt and health change (metrics).
    observer: Arc<dyn CallObserver>,
}

/// The shared model state as last read, per member index.
#[derive(Debug, Default)]
struct ModelView {
    models: Vec<EndpointModels>,
    read: Option<Instant>,
}

/// Model sizes learned from the endpoints' listings.
#[derive(Debug, Default)]
struct Inventory {
    sizes: HashMap<String, u64>,
    refreshed: Option<Instant>,
}

/// Bound of one listing request made to learn model sizes.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(5);

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field(
                "endpoints",
                &self.members.iter().map(Member::name).collect::<Vec<_>>(),
            )
            .field("strategy", &self.cfg.strategy)
            .field("slots", &self.slots)
            .finish()
    }
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
                reported: observe::Reported::new(),
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
            queued: Mutex::new(HashMap::new()),
            pulling: Mutex::new(HashSet::new()),
            observer: Arc::new(NoopObserver),
            has_gpu,
            inventory: Mutex::new(Inventory::default()),
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
            .filter(|&i| selection.admits(&self.members[i].target))
            .collect();
        if serving.is_empty() {
            return Err(RouteError::NoEndpoint {
                model: model.to_owned(),
                tag: selection.tag.clone(),
                provider: selection.provider,
            });
        }
        // Placement: endpoints that cannot hold the model are not candidates at all.
        let size = self.model_size(model).await;
        let serving: Vec<usize> = serving
            .into_iter()
            .filter(|&i| size.is_none_or(|b| self.fits(&self.members[i], b)))
            .collect();
        if serving.is_empty() {
            return Err(RouteError::Unusable {
                model: model.to_owned(),
            });
        }
        let mut tried = vec![false; self.members.len()];
        let mut last: Option<RouteError> = None;
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
                    return Err(e);
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
            for tier in tiers {
                if tier.is_empty() {
                    continue;
                }
                let (order, pick) = if strategy == Strategy::ModelAffinity {
                    (self.affinity_order(model, tier).await, SlotPick::InOrder)
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
                if let Some(k) = self
                    .slots
                    .acquire(&candidates, pick, &lease_id, self.cfg.lease_ttl)
                    .await?
                {
                    chosen = Some(order[k]);
                    break;
                }
            }
            let Some(i) = chosen else {
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
            if strategy == Strategy::ModelAffinity {
                self.make_room(i, model).await;
            }
            let probe = probes.contains(&i).then(|| ProbeGuard::start(self, member));
            let lease = LeaseGuard {
                slots: self.slots.clone(),
                endpoint: member.name().to_owned(),
                id: lease_id,
                done: false,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                lease.release().await;
                if let Some(p) = probe {
                    p.abandon();
                }
                return Err(last.unwrap_or(RouteError::Saturated {
                    model: model.to_owned(),
                    waited: start.elapsed(),
                }));
            }
            let call_opts = CallOptions {
                timeout: Some(remaining.min(member.target.endpoint.request_timeout)),
                stream: opts.stream,
            };
            let attempt_started = Instant::now();
            let result = self.attempt(member, req, &call_opts, &lease.id).await;
            self.observe_attempt(member, model, &result, attempt_started);
            lease.release().await;
            self.released.notify_waiters();
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
                        error,
                    };
                    match verdict {
                        Verdict::Stop => return Err(err),
                        Verdict::Next => {
                            tracing::debug!(endpoint = member.name(), model, error = %err, "trying the next endpoint");
                            last = Some(err);
                        }
                    }
                }
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
    /// parameter count; failures just leave the size unknown.
    async fn model_size(&self, model: &str) -> Option<u64> {
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
            // Marked before asking, so concurrent calls do not all ask at once.
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

/// Counts a call waiting for a slot under its model (what [`Router::saturated`] reads).
struct WaitGuard<'a> {
    router: &'a Router,
    model: String,
}

impl<'a> WaitGuard<'a> {
    fn new(router: &'a Router, model: &str) -> WaitGuard<'a> {
        *router.waiting_map().entry(model.to_owned()).or_insert(0) += 1;
        WaitGuard {
            router,
            model: model.to_owned(),
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.router.waiting_map();
        if let Some(n) = map.get_mut(&self.model) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.model);
            }
        }
    }
}

/// Marks the half-open probe; a probe abandoned mid-call (the caller gave up) counts as a
/// failure so the breaker does not stay half-open with a probe that never reports.
struct ProbeGuard<'a> {
    router: &'a Router,
    member: &'a Member,
    done: bool,
}

impl<'a> ProbeGuard<'a> {
    fn start(router: &'a Router, member: &'a Member) -> ProbeGuard<'a> {
        member.health().start_probe();
        router.observe_health(member);
        ProbeGuard {
            router,
            member,
            done: false,
        }
    }

    fn finish(mut self) {
        self.done = true;
    }

    fn abandon(mut self) {
        self.done = true;
        self.member.health().abandon_probe();
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let cfg = &self.router.cfg;
            self.member
                .health()
                .trip(Instant::now(), cfg.cooldown, cfg.max_cooldown);
            self.router.observe_health(self.member);
        }
    }
}

/// Returns a slot; if the call is abandoned before it could, the release still happens in
/// the background (and failing that, the lease expires).
struct LeaseGuard {
    slots: Arc<dyn Slots>,
    endpoint: String,
    id: String,
    done: bool,
}

impl LeaseGuard {
    async fn release(mut self) {
        self.done = true;
        if let Err(e) = self.slots.release(&self.endpoint, &self.id).await {
            tracing::warn!(endpoint = %self.endpoint, error = %e, "cannot release slot lease; it will expire");
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let slots = self.slots.clone();
            let endpoint = std::mem::take(&mut self.endpoint);
            let id = std::mem::take(&mut self.id);
            rt.spawn(async move {
                let _ = slots.release(&endpoint, &id).await;
            });
        }
    }
}
