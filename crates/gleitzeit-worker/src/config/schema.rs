//! The configuration file's schema: [`WorkerConfig`] and its sections as the operator writes
//! them, their defaults, and reading them from YAML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gleitzeit_llm::Strategy;
use serde::{Deserialize, Serialize};

use super::durations::{duration_map_serde, duration_serde, opt_duration_serde};
use super::error::ConfigError;
use super::redis_url::RedisUrl;
use crate::external_executor::ExternalSpec;
pub use gleitzeit_llm::spec::{EndpointKind, EndpointRouting, EndpointSpec};

/// Largest accepted `concurrency`: far above what one process can usefully run, low enough that
/// a typo (an extra zero or two) is caught instead of opening thousands of HTTP calls.
pub const MAX_CONCURRENCY: usize = 100_000;

/// The worker's configuration as written in the YAML file (every field optional there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Redis URL (`redis://`, `rediss://`, `unix://`, `redis+sentinel://` or
    /// `redis+cluster://`: docs/scaling.md). May carry a password; never logged.
    pub redis_url: RedisUrl,
    /// PEM file of the CA certificates to trust for a `rediss://` URL, instead of the system
    /// store (which honours `SSL_CERT_FILE`). Only with `rediss://`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_tls_ca: Option<PathBuf>,
    /// PEM client certificate for a Redis with `tls-auth-clients yes`; needs `redis_tls_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_tls_cert: Option<PathBuf>,
    /// PEM private key of `redis_tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_tls_key: Option<PathBuf>,
    /// Key namespace: every key is `{<namespace>}:…`.
    pub namespace: String,
    /// How many shards the namespace's workflows are spread over (1-256; docs/scaling.md,
    /// "Sharding"). Unset: the count the namespace records (one when none is recorded).
    /// Set: recorded if the namespace records none; the worker refuses to start against a
    /// namespace that records another count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<u16>,
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
    /// While busy, how long the reader waits after a read that emptied its streams before
    /// it reads again, so entries arriving meanwhile are read together (zero: never).
    #[serde(with = "duration_serde")]
    pub read_linger: Duration,
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
    /// LLM endpoints. Empty: one Ollama endpoint at `http://127.0.0.1:11434` serving any model.
    pub endpoints: Vec<EndpointSpec>,
    /// How LLM calls are spread over the endpoints, and each endpoint's placement attributes.
    pub routing: RoutingConfig,
    /// Whether endpoints published to the fleet in Redis (`gleitzeit-submit endpoints add`)
    /// are routed over besides `endpoints`: `adopt` or `ignore` (default).
    pub published_endpoints: PublishedEndpoints,
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

/// The default `read_linger`: long enough that a busy reader takes several entries per
/// read, short next to an LLM call (docs/benchmarks.md, "The thirteenth round").
pub const DEFAULT_READ_LINGER: Duration = Duration::from_millis(2);

/// The default `metrics_addr`.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9464";

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_tls_ca: None,
            redis_tls_cert: None,
            redis_tls_key: None,
            namespace: "gleitzeit".to_owned(),
            shards: None,
            group: "workers".to_owned(),
            concurrency: 32,
            capabilities: vec!["llm:*".to_owned(), "ext:*".to_owned()],
            caps_refresh: Duration::from_secs(1),
            read_block: None,
            read_linger: DEFAULT_READ_LINGER,
            claim_idle: Duration::from_secs(60),
            claim_idle_overrides: BTreeMap::new(),
            reclaim_interval: None,
            heartbeat_interval: None,
            max_deliveries: 5,
            drain_timeout: Duration::from_secs(30),
            promote_interval_max: Duration::from_secs(1),
            endpoints: Vec::new(),
            routing: RoutingConfig::default(),
            published_endpoints: PublishedEndpoints::default(),
            external: ExternalSpec::default(),
            metrics_addr: DEFAULT_METRICS_ADDR.to_owned(),
            metrics: MetricsSpec::default(),
        }
    }
}

/// What a worker does with the endpoints published to the fleet in Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PublishedEndpoints {
    /// Route over them too (checked like file endpoints; the file's win on a name clash),
    /// following every change, and use the published strategy when one is set.
    Adopt,
    /// Route over the file's endpoints only; say once that some are published.
    #[default]
    Ignore,
}

/// The `routing` section: the strategy for the whole deployment and, per endpoint name,
/// what routing needs to know about that endpoint. Endpoints not listed under `endpoints`
/// get [`EndpointRouting::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// `round_robin`, `least_loaded`, `priority`, `fastest` or `model_affinity`; unset =
    /// `model_affinity` when any endpoint reports its models (Ollama), else `least_loaded`
    /// ([`RoutingConfig::strategy_for`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<gleitzeit_llm::Strategy>,
    /// Lifetime of an in-flight slot's lease in Redis (renewed while the call runs); a
    /// worker that dies frees its slots after at most this long.
    #[serde(with = "duration_serde")]
    pub lease_ttl: Duration,
    /// How long a slot returned after a plain answer stays with this worker for its next
    /// call on the endpoint (taken then without a Redis round trip; returned to the fleet
    /// when no call comes); `0s` returns every slot at once. Reuse skips asking the fleet
    /// for at most 250 ms (a quarter of `lease_ttl` if less) after the slot was granted.
    #[serde(with = "duration_serde")]
    pub lease_linger: Duration,
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

impl RoutingConfig {
    /// The strategy over endpoints of these kinds: the configured one, else
    /// `model_affinity` where an endpoint reports the models it has loaded (Ollama: placing
    /// calls by where models are, and preloading for the queue, saves model loads), else
    /// `least_loaded`.
    pub fn strategy_for(&self, kinds: impl IntoIterator<Item = EndpointKind>) -> Strategy {
        self.strategy.unwrap_or_else(|| {
            if kinds.into_iter().any(|k| k == EndpointKind::Ollama) {
                Strategy::ModelAffinity
            } else {
                Strategy::LeastLoaded
            }
        })
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            strategy: None,
            lease_ttl: Duration::from_secs(60),
            // Long enough to span a busy worker's pauses between bursts of calls (its
            // reader lingers between reads), short next to an LLM call for the others: a
            // parked slot is idle only when this worker has nothing more for the endpoint.
            lease_linger: Duration::from_millis(50),
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
            message: with_moved_field_hint(e.to_string()),
        })
    }
}

/// A setting that moved elsewhere gets a pointer to its new place instead of a bare "unknown
/// field".
fn with_moved_field_hint(message: String) -> String {
    if message.contains("unknown field `retention`") {
        return format!(
            "{message}; retention is no longer a worker setting: each workflow carries its own \
             (the workflow file's `retention:`, else `gleitzeit-submit --retention` or \
             GLEITZEIT_RETENTION of the submitter, else 24h)"
        );
    }
    message
}
