//! What the router is configured with: [`RouterConfig`] and each endpoint's [`RouteTarget`].

use std::time::Duration;

use crate::config::EndpointConfig;

use super::strategy::{Selection, Strategy};

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
    /// Period of the placement planner (`model_affinity`): how often the fleet's one planner
    /// reads the queue's demand and preloads models; also how long a call trusts the demand
    /// it read.
    pub plan_interval: Duration,
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
            plan_interval: Duration::from_millis(250),
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

    /// Whether a call's selection admits this endpoint (its tag and provider match).
    pub(super) fn admitted_by(&self, selection: &Selection) -> bool {
        selection
            .tag
            .as_ref()
            .is_none_or(|tag| self.tags.iter().any(|t| t == tag))
            && selection
                .provider
                .is_none_or(|kind| self.endpoint.kind == kind)
    }

    pub(super) fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }

    /// Whether the model is listed by name (not only through `"*"`).
    pub(super) fn lists(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
    }
}
