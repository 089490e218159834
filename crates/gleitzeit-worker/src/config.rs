//! Worker configuration: the YAML file format, environment and command-line overrides, and the
//! complete validation that runs before the worker opens any socket.
//!
//! Precedence, lowest first: built-in defaults, the YAML file (`--config`), `GLEITZEIT_*`
//! environment variables, command-line flags. [`WorkerConfig`] is what the operator writes;
//! [`WorkerConfig::validate`] turns it into [`Settings`], with every derived default filled in and
//! the endpoint secrets read. Secrets are only ever held in [`gleitzeit_llm::Secret`], whose
//! `Debug`/`Display` are redacted, and the Redis URL's password is redacted from `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use deadpool_redis::redis::IntoConnectionInfo;
use serde::{Deserialize, Serialize};

use crate::external_executor::{ExternalSpec, ResolvedExternal};
use crate::pattern::Pattern;

/// Largest accepted `concurrency`: far above what one process can usefully run, low enough that
/// a typo (an extra zero or two) is caught instead of opening thousands of HTTP calls.
pub const MAX_CONCURRENCY: usize = 100_000;

/// The worker's configuration as written in the YAML file (every field optional there).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Redis URL (`redis://`, `rediss://` or `unix://`). May carry a password; never logged.
    pub redis_url: String,
    /// Key namespace: every key is `{<namespace>}:…`.
    pub namespace: String,
    /// Consumer group on every capability stream.
    pub group: String,
    /// Tasks executed at the same time by this process.
    pub concurrency: usize,
    /// Capability patterns this worker may serve (`*` matches any run of characters).
    pub capabilities: Vec<String>,
    /// How often `{ns}:caps` is re-read so that new model streams are served.
    #[serde(with = "duration_serde")]
    pub caps_refresh: Duration,
    /// Longest blocking read; defaults to `caps_refresh`.
    #[serde(with = "opt_duration_serde", skip_serializing_if = "Option::is_none")]
    pub read_block: Option<Duration>,
    /// Idle time after which another worker may reclaim an entry.
    #[serde(with = "duration_serde")]
    pub claim_idle: Duration,
    /// Per-capability `claim_idle` (pattern → duration); the first matching pattern in sorted
    /// order wins, capabilities no pattern matches use `claim_idle`.
    #[serde(with = "duration_map_serde")]
    pub claim_idle_overrides: BTreeMap<String, Duration>,
    /// How often idle entries are reclaimed; defaults to half the shortest claim idle time.
    #[serde(with = "opt_duration_serde", skip_serializing_if = "Option::is_none")]
    pub reclaim_interval: Option<Duration>,
    /// How often in-flight claims are refreshed; defaults to a third of the shortest claim idle.
    #[serde(with = "opt_duration_serde", skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<Duration>,
    /// Deliveries after which an entry is dead-lettered as poison instead of run again.
    pub max_deliveries: u64,
    /// How long in-flight tasks may finish after a shutdown signal.
    #[serde(with = "duration_serde")]
    pub drain_timeout: Duration,
    /// Longest sleep of the promoter between two runs.
    #[serde(with = "duration_serde")]
    pub promote_interval_max: Duration,
    /// Retention of finished workflows, handed to the queue handle. Each workflow carries the
    /// retention it was submitted with, and that is what its keys get when it ends; this value
    /// only applies to workflows this process would create itself (none today).
    #[serde(with = "duration_serde")]
    pub retention: Duration,
    /// LLM endpoints. Empty: one Ollama endpoint at `http://127.0.0.1:11434` serving any model.
    pub endpoints: Vec<EndpointSpec>,
    /// How LLM calls are spread over the endpoints, and each endpoint's placement attributes.
    pub routing: RoutingConfig,
    /// External task services (Python `@gleitzeit_task` functions over Socket.IO).
    pub external: ExternalSpec,
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz` (`host:port`), or
    /// `off`.
    pub metrics_addr: String,
    /// Metrics settings besides the address.
    pub metrics: MetricsSpec,
}

/// The `metrics` section of the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSpec {
    /// How often the fleet-wide gauges (streams, leases, services, workflow totals) are read
    /// from Redis.
    #[serde(with = "duration_serde")]
    pub fleet_interval: Duration,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        MetricsSpec {
            fleet_interval: Duration::from_secs(15),
        }
    }
}

/// The default `metrics_addr`.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9464";

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            namespace: "gleitzeit".to_owned(),
            group: "workers".to_owned(),
            concurrency: 32,
            capabilities: vec!["llm:*".to_owned(), "ext:*".to_owned()],
            caps_refresh: Duration::from_secs(1),
            read_block: None,
            claim_idle: Duration::from_secs(60),
            claim_idle_overrides: BTreeMap::new(),
            reclaim_interval: None,
            heartbeat_interval: None,
            max_deliveries: 5,
            drain_timeout: Duration::from_secs(30),
            promote_interval_max: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            endpoints: Vec::new(),
            routing: RoutingConfig::default(),
            external: ExternalSpec::default(),
            metrics_addr: DEFAULT_METRICS_ADDR.to_owned(),
            metrics: MetricsSpec::default(),
        }
    }
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("namespace", &self.namespace)
            .field("group", &self.group)
            .field("concurrency", &self.concurrency)
            .field("capabilities", &self.capabilities)
            .field("caps_refresh", &self.caps_refresh)
            .field("read_block", &self.read_block)
            .field("claim_idle", &self.claim_idle)
            .field("claim_idle_overrides", &self.claim_idle_overrides)
            .field("reclaim_interval", &self.reclaim_interval)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("max_deliveries", &self.max_deliveries)
            .field("drain_timeout", &self.drain_timeout)
            .field("promote_interval_max", &self.promote_interval_max)
            .field("retention", &self.retention)
            .field("endpoints", &self.endpoints)
            .field("routing", &self.routing)
            .field("external", &self.external)
            .field("metrics_addr", &self.metrics_addr)
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// Provider API an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// Ollama's native API (`/api/generate`, `/api/chat`, `/api/embed`).
    Ollama,
    /// OpenAI-compatible API (`/v1/chat/completions`, `/v1/embeddings`).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API (`/v1/messages`; the key is sent as `x-api-key`).
    Anthropic,
}

/// The `routing` section: the strategy for the whole deployment and, per endpoint name,
/// what routing needs to know about that endpoint. Endpoints not listed under `endpoints`
/// get [`EndpointRouting::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// `round_robin`, `least_loaded` (default), `priority`, `fastest` or `model_affinity`.
    pub strategy: gleitzeit_llm::Strategy,
    /// Lifetime of an in-flight slot's lease in Redis (renewed while the call runs); a
    /// worker that dies frees its slots after at most this long.
    #[serde(with = "duration_serde")]
    pub lease_ttl: Duration,
    /// First cool-down of an endpoint after a connection fault or 5xx (doubled for each
    /// consecutive failure, up to `max_cooldown`).
    #[serde(with = "duration_serde")]
    pub cooldown: Duration,
    /// Longest cool-down.
    #[serde(with = "duration_serde")]
    pub max_cooldown: Duration,
    /// Largest model (GB, from Ollama's `/api/tags`) a CPU endpoint takes once any endpoint
    /// is marked `gpu: true`.
    pub cpu_max_model_gb: f64,
    /// Ollama `keep_alive` sent with every call (how long the model stays loaded, e.g.
    /// `"30m"`, `"-1"` = forever); unset = the server's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<String>,
    /// On "model not found" from an Ollama endpoint, pull the model there in the background
    /// (the call fails over meanwhile).
    pub allow_pull: bool,
    /// How often the worker publishes endpoint health and (one worker per endpoint per
    /// interval) refreshes the shared loaded/pulled model state.
    #[serde(with = "duration_serde")]
    pub health_interval: Duration,
    /// Per endpoint name: models to load at start (merged with each endpoint's `preload`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub preload: BTreeMap<String, Vec<String>>,
    /// Per endpoint name: priority, concurrency limit, hardware, tags.
    pub endpoints: BTreeMap<String, EndpointRouting>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            strategy: gleitzeit_llm::Strategy::default(),
            lease_ttl: Duration::from_secs(60),
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(60),
            cpu_max_model_gb: 16.0,
            keep_alive: None,
            allow_pull: false,
            health_interval: Duration::from_secs(10),
            preload: BTreeMap::new(),
            endpoints: BTreeMap::new(),
        }
    }
}

/// What routing knows about one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointRouting {
    /// Lower is tried first by the `priority` strategy.
    pub priority: i32,
    /// Most calls in flight on the endpoint across the whole fleet; unset = unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Whether the endpoint runs models on a GPU.
    pub gpu: bool,
    /// Memory available for models, GB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_gb: Option<f64>,
    /// Free-form labels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Most models the endpoint keeps loaded at once (Ollama's `OLLAMA_MAX_LOADED_MODELS`),
    /// so `model_affinity` can foresee evictions; unset = unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_loaded: Option<u32>,
    /// Models loaded on the endpoint when the worker starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preload: Vec<String>,
}

/// One LLM endpoint as configured. The API key is never written here: only the name of the
/// environment variable or the path of the file that holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Name used in logs and task result metadata; unique among endpoints.
    pub name: String,
    /// Provider API.
    pub kind: EndpointKind,
    /// Base URL (`http://host:port`; OpenAI-compatible URLs without the `/v1` suffix).
    pub url: String,
    /// Environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// File holding the API key (surrounding whitespace is trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Models this endpoint serves; `"*"` means any model.
    #[serde(default = "any_model")]
    pub models: Vec<String>,
    /// Limit for one HTTP request to this endpoint.
    #[serde(default = "default_endpoint_timeout", with = "duration_serde")]
    pub timeout: Duration,
}

fn any_model() -> Vec<String> {
    vec!["*".to_owned()]
}

fn default_endpoint_timeout() -> Duration {
    Duration::from_secs(300)
}

impl EndpointSpec {
    /// The endpoint used when none is configured: a local Ollama serving any model.
    pub fn default_ollama() -> EndpointSpec {
        EndpointSpec {
            name: "ollama".to_owned(),
            kind: EndpointKind::Ollama,
            url: "http://127.0.0.1:11434".to_owned(),
            api_key_env: None,
            api_key_file: None,
            models: any_model(),
            timeout: default_endpoint_timeout(),
        }
    }
}

/// One problem with one configuration field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as written in the YAML file (`endpoints[1].url`).
    pub field: String,
    /// What is wrong with it (never contains a secret).
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a configuration cannot be used. None of these is helped by retrying: the operator has to
/// change the file, the environment or the flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (shown in the message, so not chained as a source).
        error: std::io::Error,
    },
    /// The configuration file (or an inline YAML value) is not valid for the schema.
    #[error("{origin} is not a valid worker configuration: {message}")]
    Parse {
        /// Where the text came from (file path, flag or environment variable).
        origin: String,
        /// The parser's message (with line and column where known).
        message: String,
    },
    /// One or more fields have invalid values; every problem found is listed.
    #[error("invalid worker configuration: {}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// The fields named by an [`ConfigError::Invalid`] error (empty for other variants).
    pub fn fields(&self) -> Vec<&str> {
        match self {
            ConfigError::Invalid(errors) => errors.iter().map(|e| e.field.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

/// An endpoint after validation: URL checked, secret read.
#[derive(Debug, Clone)]
pub struct ResolvedEndpoint {
    /// Unique name.
    pub name: String,
    /// Provider API.
    pub kind: EndpointKind,
    /// Base URL.
    pub url: String,
    /// The API key, when configured (redacted in `Debug`).
    pub api_key: Option<gleitzeit_llm::Secret>,
    /// Served models; `"*"` = any.
    pub models: Vec<String>,
    /// Limit for one HTTP request.
    pub timeout: Duration,
    /// Routing attributes (from `routing.endpoints.<name>`).
    pub routing: EndpointRouting,
}

impl ResolvedEndpoint {
    /// Whether this endpoint may serve `model`.
    pub fn serves_model(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }
}

/// The validated configuration the worker runs with: every default resolved.
#[derive(Clone)]
pub struct Settings {
    /// Redis URL (may carry a password; redacted in `Debug`).
    pub redis_url: String,
    /// Key namespace.
    pub namespace: String,
    /// Consumer group.
    pub group: String,
    /// Concurrent tasks.
    pub concurrency: usize,
    /// Capability patterns served.
    pub capabilities: Vec<Pattern>,
    /// Interval of the `{ns}:caps` refresh.
    pub caps_refresh: Duration,
    /// Longest blocking read.
    pub read_block: Duration,
    /// Default idle time before reclaim.
    pub claim_idle: Duration,
    /// Per-capability idle times, in match order.
    pub claim_idle_overrides: Vec<(Pattern, Duration)>,
    /// Interval of the reclaimer.
    pub reclaim_interval: Duration,
    /// Interval of the heartbeat.
    pub heartbeat_interval: Duration,
    /// Deliveries after which an entry is poison.
    pub max_deliveries: u64,
    /// Drain deadline after a shutdown signal.
    pub drain_timeout: Duration,
    /// Longest promoter sleep.
    pub promote_interval_max: Duration,
    /// Retention of finished workflows.
    pub retention: Duration,
    /// Endpoints with their secrets.
    pub endpoints: Vec<ResolvedEndpoint>,
    /// Routing settings (the per-endpoint part is in each [`ResolvedEndpoint`]).
    pub routing: RoutingConfig,
    /// External services with the loaded token; `None` when external tasks are not served.
    pub external: Option<ResolvedExternal>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` when `off`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Interval of the fleet-wide gauge refresh.
    pub metrics_fleet_interval: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("namespace", &self.namespace)
            .field("group", &self.group)
            .field("concurrency", &self.concurrency)
            .field("capabilities", &self.capabilities)
            .field("caps_refresh", &self.caps_refresh)
            .field("read_block", &self.read_block)
            .field("claim_idle", &self.claim_idle)
            .field("claim_idle_overrides", &self.claim_idle_overrides)
            .field("reclaim_interval", &self.reclaim_interval)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("max_deliveries", &self.max_deliveries)
            .field("drain_timeout", &self.drain_timeout)
            .field("promote_interval_max", &self.promote_interval_max)
            .field("retention", &self.retention)
            .field("endpoints", &self.endpoints)
            .field("routing", &self.routing)
            .field("external", &self.external)
            .field("metrics_addr", &self.metrics_addr)
            .field("metrics_fleet_interval", &self.metrics_fleet_interval)
            .finish()
    }
}

impl Settings {
    /// Idle time after which entries of `capability` may be reclaimed.
    pub fn claim_idle_for(&self, capability: &str) -> Duration {
        self.claim_idle_overrides
            .iter()
            .find(|(p, _)| p.matches(capability))
            .map(|(_, d)| *d)
            .unwrap_or(self.claim_idle)
    }

    /// Whether `capability` matches one of the configured capability patterns.
    pub fn allows_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|p| p.matches(capability))
    }

    /// Redis URL with any password replaced, for logs.
    pub fn redis_url_redacted(&self) -> String {
        redact_url(&self.redis_url)
    }
}

impl WorkerConfig {
    /// Reads a YAML configuration file. Fields it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<WorkerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        WorkerConfig::from_yaml(&text, &path.display().to_string())
    }

    /// Parses YAML configuration text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<WorkerConfig, ConfigError> {
        // An empty file is a valid configuration: all defaults.
        if text.trim().is_empty() {
            return Ok(WorkerConfig::default());
        }
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Validates every field, fills in derived defaults and reads endpoint secrets from the
    /// process environment and the filesystem. Opens no socket.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        self.validate_with_env(&|name| std::env::var(name).ok())
    }

    /// [`WorkerConfig::validate`] with an explicit environment lookup (for `api_key_env`).
    pub fn validate_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                message,
            })
        };

        if let Err(e) = self.redis_url.as_str().into_connection_info() {
            // The parser's messages name the problem, never the URL (which may hold a password).
            err("redis_url", format!("not a valid Redis URL ({e})"));
        }
        // The queue's own rules decide which namespaces make valid keys.
        if let Err(e) = gleitzeit_queue::Keys::new(&self.namespace) {
            err("namespace", e.to_string());
        }
        if let Some(problem) = name_problem(&self.group) {
            err("group", problem);
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            err(
                "concurrency",
                format!(
                    "must be between 1 and {MAX_CONCURRENCY}, got {}",
                    self.concurrency
                ),
            );
        }
        let mut capabilities = Vec::new();
        if self.capabilities.is_empty() {
            err(
                "capabilities",
                "must list at least one pattern (for example \"llm:*\")".to_owned(),
            );
        }
        for (i, p) in self.capabilities.iter().enumerate() {
            match Pattern::new(p) {
                Ok(p) => capabilities.push(p),
                Err(problem) => err(&format!("capabilities[{i}]"), problem),
            }
        }
        positive(&mut err, "caps_refresh", self.caps_refresh);
        let read_block = self.read_block.unwrap_or(self.caps_refresh);
        positive(&mut err, "read_block", read_block);
        positive(&mut err, "claim_idle", self.claim_idle);
        let mut overrides = Vec::new();
        for (p, d) in &self.claim_idle_overrides {
            let field = format!("claim_idle_overrides[{p}]");
            match Pattern::new(p) {
                Ok(pattern) => overrides.push((pattern, *d)),
                Err(problem) => err(&field, problem),
            }
            positive(&mut err, &field, *d);
        }
        // The shortest claim idle bounds the heartbeat: an entry of any capability must be
        // refreshed before another worker may take it.
        let min_idle = self
            .claim_idle_overrides
            .values()
            .copied()
            .chain(std::iter::once(self.claim_idle))
            .min()
            .unwrap_or(self.claim_idle);
        let reclaim_interval = self.reclaim_interval.unwrap_or(min_idle / 2);
        positive(&mut err, "reclaim_interval", reclaim_interval);
        let heartbeat_interval = self.heartbeat_interval.unwrap_or(min_idle / 3);
        positive(&mut err, "heartbeat_interval", heartbeat_interval);
        if !min_idle.is_zero() && heartbeat_interval >= min_idle {
            err(
                "heartbeat_interval",
                format!(
                    "must be shorter than the shortest claim idle time ({}), got {}",
                    humantime::format_duration(min_idle),
                    humantime::format_duration(heartbeat_interval)
                ),
            );
        }
        if self.max_deliveries == 0 {
            err("max_deliveries", "must be at least 1".to_owned());
        }
        positive(&mut err, "promote_interval_max", self.promote_interval_max);
        positive(&mut err, "retention", self.retention);
        let metrics_addr = match parse_metrics_addr(&self.metrics_addr) {
            Ok(a) => a,
            Err(problem) => {
                err("metrics_addr", problem);
                None
            }
        };
        positive(
            &mut err,
            "metrics.fleet_interval",
            self.metrics.fleet_interval,
        );

        let specs = if self.endpoints.is_empty() {
            vec![EndpointSpec::default_ollama()]
        } else {
            self.endpoints.clone()
        };
        let mut endpoints = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let at = |f: &str| format!("endpoints[{i}].{f}");
            if spec.name.trim().is_empty() || spec.name.chars().any(char::is_control) {
                err(
                    &at("name"),
                    "must be non-empty without control characters".to_owned(),
                );
            } else if specs[..i].iter().any(|o| o.name == spec.name) {
                err(
                    &at("name"),
                    format!("duplicate endpoint name {:?}", spec.name),
                );
            }
            match reqwest::Url::parse(&spec.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                Ok(u) => err(
                    &at("url"),
                    format!(
                        "must be an http(s) URL with a host, got scheme {:?}",
                        u.scheme()
                    ),
                ),
                Err(e) => err(&at("url"), format!("not a valid URL ({e})")),
            }
            if spec.models.is_empty() {
                err(
                    &at("models"),
                    "must list at least one model (\"*\" = any)".to_owned(),
                );
            }
            for (j, m) in spec.models.iter().enumerate() {
                if m.is_empty()
                    || m.chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
                {
                    err(
                        &at(&format!("models[{j}]")),
                        format!("{m:?} is not a valid model name"),
                    );
                }
            }
            positive(&mut err, &at("timeout"), spec.timeout);
            let api_key = match (&spec.api_key_env, &spec.api_key_file) {
                (Some(_), Some(_)) => {
                    err(
                        &at("api_key_env"),
                        "set either api_key_env or api_key_file, not both".to_owned(),
                    );
                    None
                }
                (Some(var), None) => match env(var) {
                    Some(v) if !v.trim().is_empty() => {
                        Some(gleitzeit_llm::Secret::new(v.trim().to_owned()))
                    }
                    Some(_) => {
                        err(
                            &at("api_key_env"),
                            format!("environment variable {var} is empty"),
                        );
                        None
                    }
                    None => {
                        err(
                            &at("api_key_env"),
                            format!("environment variable {var} is not set"),
                        );
                        None
                    }
                },
                (None, Some(path)) => match std::fs::read_to_string(path) {
                    Ok(v) if !v.trim().is_empty() => {
                        Some(gleitzeit_llm::Secret::new(v.trim().to_owned()))
                    }
                    Ok(_) => {
                        err(&at("api_key_file"), format!("{} is empty", path.display()));
                        None
                    }
                    Err(e) => {
                        err(
                            &at("api_key_file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                },
                (None, None) => None,
            };
            endpoints.push(ResolvedEndpoint {
                name: spec.name.clone(),
                kind: spec.kind,
                url: spec.url.clone(),
                api_key,
                models: spec.models.clone(),
                timeout: spec.timeout,
                routing: {
                    let mut r = self
                        .routing
                        .endpoints
                        .get(&spec.name)
                        .cloned()
                        .unwrap_or_default();
                    for m in self.routing.preload.get(&spec.name).into_iter().flatten() {
                        if !r.preload.contains(m) {
                            r.preload.push(m.clone());
                        }
                    }
                    r
                },
            });
        }
        validate_routing(&self.routing, &specs, &mut err);
        let external = match self.external.resolve(&self.namespace, env) {
            Ok(external) => external,
            Err(e) => {
                err(&e.field, e.message);
                None
            }
        };

        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        Ok(Settings {
            redis_url: self.redis_url.clone(),
            namespace: self.namespace.clone(),
            group: self.group.clone(),
            concurrency: self.concurrency,
            capabilities,
            caps_refresh: self.caps_refresh,
            read_block,
            claim_idle: self.claim_idle,
            claim_idle_overrides: overrides,
            reclaim_interval,
            heartbeat_interval,
            max_deliveries: self.max_deliveries,
            drain_timeout: self.drain_timeout,
            promote_interval_max: self.promote_interval_max,
            retention: self.retention,
            endpoints,
            routing: self.routing.clone(),
            external,
            metrics_addr,
            metrics_fleet_interval: self.metrics.fleet_interval,
        })
    }
}

/// `off` → `None`; otherwise a socket address `host:port` with a literal IP (port 0 picks a
/// free port).
fn parse_metrics_addr(text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    t.parse().map(Some).map_err(|_| {
        format!("must be `off` or an address like {DEFAULT_METRICS_ADDR} (IP and port), got {t:?}")
    })
}

/// Checks the `routing` section: durations, per-endpoint values, and that every endpoint it
/// names exists.
fn validate_routing(
    routing: &RoutingConfig,
    specs: &[EndpointSpec],
    err: &mut impl FnMut(&str, String),
) {
    positive(err, "routing.lease_ttl", routing.lease_ttl);
    positive(err, "routing.cooldown", routing.cooldown);
    if routing.max_cooldown < routing.cooldown {
        err(
            "routing.max_cooldown",
            "must not be shorter than routing.cooldown".to_owned(),
        );
    }
    if !routing.cpu_max_model_gb.is_finite() || routing.cpu_max_model_gb <= 0.0 {
        err(
            "routing.cpu_max_model_gb",
            format!(
                "must be a positive number, got {}",
                routing.cpu_max_model_gb
            ),
        );
    }
    positive(err, "routing.health_interval", routing.health_interval);
    if let Some(k) = &routing.keep_alive {
        if k.trim().is_empty() || k.chars().any(char::is_control) {
            err(
                "routing.keep_alive",
                "must be a duration such as \"30m\" or \"-1\"".to_owned(),
            );
        }
    }
    let check_models = |err: &mut dyn FnMut(&str, String), at: &str, models: &[String]| {
        for (j, m) in models.iter().enumerate() {
            if m.trim().is_empty() || m.chars().any(|c| c.is_control() || c.is_whitespace()) {
                err(
                    &format!("{at}[{j}]"),
                    "must be a model name without whitespace or control characters".to_owned(),
                );
            }
        }
    };
    for (name, models) in &routing.preload {
        if !specs.iter().any(|s| &s.name == name) {
            err(
                &format!("routing.preload[{name}]"),
                "names no configured endpoint".to_owned(),
            );
        }
        check_models(err, &format!("routing.preload[{name}]"), models);
    }
    for (name, r) in &routing.endpoints {
        let at = |f: &str| format!("routing.endpoints[{name}].{f}");
        if r.max_loaded == Some(0) {
            err(
                &at("max_loaded"),
                "must be at least 1 (leave it out when unknown)".to_owned(),
            );
        }
        check_models(err, &at("preload"), &r.preload);
        if !specs.iter().any(|s| &s.name == name) {
            err(
                &format!("routing.endpoints[{name}]"),
                "names no configured endpoint".to_owned(),
            );
        }
        if r.max_concurrent == Some(0) {
            err(
                &at("max_concurrent"),
                "must be at least 1 (leave it out for no limit)".to_owned(),
            );
        }
        if let Some(gb) = r.memory_gb {
            if !gb.is_finite() || gb <= 0.0 {
                err(
                    &at("memory_gb"),
                    format!("must be a positive number, got {gb}"),
                );
            }
        }
        for (j, t) in r.tags.iter().enumerate() {
            if t.trim().is_empty() || t.chars().any(char::is_control) {
                err(
                    &at(&format!("tags[{j}]")),
                    "must be non-empty without control characters".to_owned(),
                );
            }
        }
    }
}

fn positive(err: &mut impl FnMut(&str, String), field: &str, d: Duration) {
    if d.is_zero() {
        err(field, "must be longer than zero".to_owned());
    }
}

/// Group names are command arguments; whitespace would make them awkward in every tool that
/// shows or takes them (`redis-cli`, `XINFO`).
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "{name:?} must not contain whitespace or control characters"
        ));
    }
    None
}

/// Replaces the password (and user name) of a URL with `***`. Text that does not parse as a
/// URL is replaced entirely: it may be a mistyped URL that still holds a password.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// Parses a duration: a humantime string (`"500ms"`, `"2m"`) or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{t:?} is not a valid number of seconds"));
    }
    humantime::parse_duration(t).map_err(|e| format!("{t:?} is not a duration ({e})"))
}

/// Serde for durations: humantime strings or numbers of seconds in, humantime strings out.
mod duration_serde {
    use super::parse_duration;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum Raw {
        Secs(f64),
        Text(String),
    }

    impl Raw {
        pub(super) fn into_duration<E: serde::de::Error>(self) -> Result<Duration, E> {
            match self {
                Raw::Secs(s) => Duration::try_from_secs_f64(s)
                    .map_err(|_| E::custom(format!("{s} is not a valid number of seconds"))),
                Raw::Text(t) => parse_duration(&t).map_err(E::custom),
            }
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Raw::deserialize(d)?.into_duration()
    }
}

/// Serde for optional durations.
mod opt_duration_serde {
    use super::duration_serde::Raw;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            Some(raw) => raw.into_duration().map(Some),
            None => Ok(None),
        }
    }
}

/// Serde for maps of durations.
mod duration_map_serde {
    use super::duration_serde::Raw;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            map.serialize_entry(k, &humantime::format_duration(*v).to_string())?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, Raw>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| v.into_duration().map(|d| (k, d)))
            .collect()
    }
}

/// Command-line flags of `gleitzeit-worker`; each also reads a `GLEITZEIT_*` environment
/// variable. Values given here override the configuration file; flags override the environment.
#[derive(Parser, Clone, Default)]
#[command(
    name = "gleitzeit-worker",
    version,
    about = "Gleitzeit worker: executes workflow tasks from Redis streams"
)]
pub struct WorkerArgs {
    /// YAML configuration file.
    #[arg(long, env = "GLEITZEIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Redis URL.
    #[arg(long, env = "GLEITZEIT_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Key namespace.
    #[arg(long, env = "GLEITZEIT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Consumer group.
    #[arg(long, env = "GLEITZEIT_GROUP")]
    pub group: Option<String>,
    /// Tasks executed at the same time.
    #[arg(long, env = "GLEITZEIT_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Capability patterns, comma separated (`llm:*,ext:*`).
    #[arg(long, env = "GLEITZEIT_CAPABILITIES", value_delimiter = ',')]
    pub capabilities: Option<Vec<String>>,
    /// Interval of the capability refresh (`1s`).
    #[arg(long, env = "GLEITZEIT_CAPS_REFRESH", value_parser = parse_duration)]
    pub caps_refresh: Option<Duration>,
    /// Longest blocking read.
    #[arg(long, env = "GLEITZEIT_READ_BLOCK", value_parser = parse_duration)]
    pub read_block: Option<Duration>,
    /// Idle time before another worker may reclaim an entry.
    #[arg(long, env = "GLEITZEIT_CLAIM_IDLE", value_parser = parse_duration)]
    pub claim_idle: Option<Duration>,
    /// Per-capability claim idle times, `PATTERN=DURATION`, comma separated; replaces the
    /// file's map.
    #[arg(long, env = "GLEITZEIT_CLAIM_IDLE_OVERRIDES", value_delimiter = ',', value_parser = parse_override)]
    pub claim_idle_overrides: Option<Vec<(String, Duration)>>,
    /// Interval of the reclaimer.
    #[arg(long, env = "GLEITZEIT_RECLAIM_INTERVAL", value_parser = parse_duration)]
    pub reclaim_interval: Option<Duration>,
    /// Interval of the heartbeat.
    #[arg(long, env = "GLEITZEIT_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Deliveries after which an entry is dead-lettered as poison.
    #[arg(long, env = "GLEITZEIT_MAX_DELIVERIES")]
    pub max_deliveries: Option<u64>,
    /// Drain deadline after SIGTERM/SIGINT.
    #[arg(long, env = "GLEITZEIT_DRAIN_TIMEOUT", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Longest promoter sleep.
    #[arg(long, env = "GLEITZEIT_PROMOTE_INTERVAL_MAX", value_parser = parse_duration)]
    pub promote_interval_max: Option<Duration>,
    /// Retention of finished workflows.
    #[arg(long, env = "GLEITZEIT_RETENTION", value_parser = parse_duration)]
    pub retention: Option<Duration>,
    /// Endpoints as a YAML or JSON list (same shape as the file's `endpoints`); replaces the
    /// file's list.
    #[arg(long, env = "GLEITZEIT_ENDPOINTS")]
    pub endpoints: Option<String>,
    /// The `routing` section as YAML or JSON (same shape as in the file); replaces the file's.
    #[arg(long, env = "GLEITZEIT_ROUTING")]
    pub routing: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "GLEITZEIT_LOG_JSON")]
    pub log_json: bool,
    /// Address of the `/metrics`, `/healthz` and `/readyz` server (`0.0.0.0:9464`), or `off`.
    #[arg(long, env = "GLEITZEIT_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

fn parse_override(text: &str) -> Result<(String, Duration), String> {
    let (pattern, duration) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?} is not PATTERN=DURATION"))?;
    Ok((pattern.trim().to_owned(), parse_duration(duration)?))
}

impl WorkerArgs {
    /// Builds the configuration: defaults, then the file (if any), then these values.
    /// Does not validate; call [`WorkerConfig::validate`].
    pub fn load(&self) -> Result<WorkerConfig, ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => WorkerConfig::from_file(path)?,
            None => WorkerConfig::default(),
        };
        self.apply(&mut cfg)?;
        Ok(cfg)
    }

    /// Overrides the fields of `cfg` that were given as flags or environment variables.
    pub fn apply(&self, cfg: &mut WorkerConfig) -> Result<(), ConfigError> {
        if let Some(v) = &self.redis_url {
            cfg.redis_url = v.clone();
        }
        if let Some(v) = &self.namespace {
            cfg.namespace = v.clone();
        }
        if let Some(v) = &self.group {
            cfg.group = v.clone();
        }
        if let Some(v) = self.concurrency {
            cfg.concurrency = v;
        }
        if let Some(v) = &self.capabilities {
            cfg.capabilities = v.iter().map(|s| s.trim().to_owned()).collect();
        }
        if let Some(v) = self.caps_refresh {
            cfg.caps_refresh = v;
        }
        if let Some(v) = self.read_block {
            cfg.read_block = Some(v);
        }
        if let Some(v) = self.claim_idle {
            cfg.claim_idle = v;
        }
        if let Some(v) = &self.claim_idle_overrides {
            cfg.claim_idle_overrides = v.iter().cloned().collect();
        }
        if let Some(v) = self.reclaim_interval {
            cfg.reclaim_interval = Some(v);
        }
        if let Some(v) = self.heartbeat_interval {
            cfg.heartbeat_interval = Some(v);
        }
        if let Some(v) = self.max_deliveries {
            cfg.max_deliveries = v;
        }
        if let Some(v) = self.drain_timeout {
            cfg.drain_timeout = v;
        }
        if let Some(v) = self.promote_interval_max {
            cfg.promote_interval_max = v;
        }
        if let Some(v) = self.retention {
            cfg.retention = v;
        }
        if let Some(text) = &self.endpoints {
            cfg.endpoints = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
                origin: "--endpoints / GLEITZEIT_ENDPOINTS".to_owned(),
                message: e.to_string(),
            })?;
        }
        if let Some(text) = &self.routing {
            cfg.routing = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
                origin: "--routing / GLEITZEIT_ROUTING".to_owned(),
                message: e.to_string(),
            })?;
        }
        if let Some(v) = &self.metrics_addr {
            cfg.metrics_addr = v.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings of a valid configuration file (no environment variables).
    fn settings(yaml: &str) -> Settings {
        WorkerConfig::from_yaml(yaml, "t.yaml")
            .unwrap()
            .validate_with_env(&|_| None)
            .unwrap()
    }

    /// The fields an invalid (but well-formed) configuration file is rejected for, sorted.
    fn invalid_fields(yaml: &str) -> Vec<String> {
        let e = WorkerConfig::from_yaml(yaml, "t.yaml")
            .unwrap()
            .validate_with_env(&|_| None)
            .unwrap_err();
        let mut fields: Vec<String> = e.fields().into_iter().map(str::to_owned).collect();
        fields.sort_unstable();
        fields
    }

    #[test]
    fn durations_accept_strings_and_seconds() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact_url("redis://:hunter2@example.com:6379/0"),
            "redis://:***@example.com:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("not a url hunter2"), "<unparsable URL>");
    }

    #[test]
    fn routing_section_parses_validates_and_reaches_the_endpoints() {
        let s = settings(
            r#"
endpoints:
  - {name: gpu, kind: ollama, url: "http://10.0.0.5:11434"}
  - {name: claude, kind: anthropic, url: "https://api.anthropic.com", models: [claude-x]}
routing:
  strategy: priority
  lease_ttl: 30s
  endpoints:
    gpu: {priority: 0, max_concurrent: 4, gpu: true, memory_gb: 48, tags: [fast]}
"#,
        );
        assert_eq!(s.routing.strategy, gleitzeit_llm::Strategy::Priority);
        assert_eq!(s.routing.lease_ttl, Duration::from_secs(30));
        assert_eq!(s.routing.cooldown, Duration::from_secs(5));
        assert_eq!(s.endpoints[0].routing.max_concurrent, Some(4));
        assert!(s.endpoints[0].routing.gpu);
        assert_eq!(s.endpoints[0].routing.memory_gb, Some(48.0));
        assert_eq!(s.endpoints[0].routing.tags, ["fast"]);
        assert_eq!(s.endpoints[1].kind, EndpointKind::Anthropic);
        assert_eq!(s.endpoints[1].routing, EndpointRouting::default());

        let fields = invalid_fields(
            r#"
endpoints: [{name: a, kind: openai, url: "http://x"}]
routing:
  cooldown: 10s
  max_cooldown: 1s
  endpoints:
    a: {max_concurrent: 0, memory_gb: -1, tags: [" "]}
    ghost: {}
"#,
        );
        assert_eq!(
            fields,
            [
                "routing.endpoints[a].max_concurrent",
                "routing.endpoints[a].memory_gb",
                "routing.endpoints[a].tags[0]",
                "routing.endpoints[ghost]",
                "routing.max_cooldown",
            ]
        );
        assert!(WorkerConfig::from_yaml("routing: {strategy: fastest_ever}\n", "t").is_err());
    }

    #[test]
    fn routing_can_come_from_the_environment() {
        let args = WorkerArgs::try_parse_from([
            "gleitzeit-worker",
            "--routing",
            "{strategy: round_robin, endpoints: {ollama: {max_concurrent: 2}}}",
        ])
        .unwrap();
        let cfg = args.load().unwrap();
        assert_eq!(cfg.routing.strategy, gleitzeit_llm::Strategy::RoundRobin);
        let s = cfg.validate_with_env(&|_| None).unwrap();
        // The default endpoint (local Ollama) is named `ollama`.
        assert_eq!(s.endpoints[0].routing.max_concurrent, Some(2));
    }

    #[test]
    fn model_placement_settings_parse_validate_and_merge() {
        let s = settings(
            r#"
endpoints:
  - {name: gpu, kind: ollama, url: "http://10.0.0.5:11434"}
  - {name: cpu, kind: ollama, url: "http://10.0.0.6:11434"}
routing:
  strategy: model_affinity
  keep_alive: 30m
  allow_pull: true
  health_interval: 5s
  preload: {gpu: [llama3.1:70b], cpu: [llama3.2]}
  endpoints:
    gpu: {max_loaded: 2, preload: [llama3.2, llama3.1:70b]}
"#,
        );
        assert_eq!(s.routing.strategy, gleitzeit_llm::Strategy::ModelAffinity);
        assert_eq!(s.routing.keep_alive.as_deref(), Some("30m"));
        assert!(s.routing.allow_pull);
        assert_eq!(s.routing.health_interval, Duration::from_secs(5));
        assert_eq!(s.endpoints[0].routing.max_loaded, Some(2));
        // The top-level list joins the endpoint's own, without repeating a model.
        assert_eq!(s.endpoints[0].routing.preload, ["llama3.2", "llama3.1:70b"]);
        assert_eq!(s.endpoints[1].routing.preload, ["llama3.2"]);
        let d = RoutingConfig::default();
        assert_eq!((d.keep_alive, d.allow_pull), (None, false));
        assert_eq!(d.health_interval, Duration::from_secs(10));

        let fields = invalid_fields(
            r#"
endpoints: [{name: a, kind: ollama, url: "http://x"}]
routing:
  health_interval: 0s
  keep_alive: " "
  preload: {ghost: [m], a: ["two words"]}
  endpoints:
    a: {max_loaded: 0, preload: [""]}
"#,
        );
        assert_eq!(
            fields,
            [
                "routing.endpoints[a].max_loaded",
                "routing.endpoints[a].preload[0]",
                "routing.health_interval",
                "routing.keep_alive",
                "routing.preload[a][0]",
                "routing.preload[ghost]",
            ]
        );
    }

    #[test]
    fn override_flag_parses() {
        assert_eq!(
            parse_override("llm:big*=10m"),
            Ok(("llm:big*".to_owned(), Duration::from_secs(600)))
        );
        assert!(parse_override("llm:x").is_err());
    }
}
