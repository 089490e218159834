//! [`Settings`]: the validated configuration the worker runs with, every default resolved and
//! the endpoint secrets read.

use std::time::Duration;

use super::redis_url::RedisUrl;
use super::schema::{EndpointKind, EndpointRouting, PublishedEndpoints, RoutingConfig};
use crate::external_executor::ResolvedExternal;
use gleitzeit_core::pattern::Pattern;
use gleitzeit_queue::{RedisTarget, TlsFiles};

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
#[derive(Debug, Clone)]
pub struct Settings {
    /// Redis URL (may carry a password; redacted in `Debug`).
    pub redis_url: RedisUrl,
    /// TLS files of a `rediss://` URL (checked: they exist and hold PEM).
    pub redis_tls: TlsFiles,
    /// Key namespace.
    pub namespace: String,
    /// Shards of the namespace (`None`: what the namespace records).
    pub shards: Option<u16>,
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
    /// Pause between reads while busy (zero: none).
    pub read_linger: Duration,
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
    /// Endpoints with their secrets.
    pub endpoints: Vec<ResolvedEndpoint>,
    /// Routing settings (the per-endpoint part is in each [`ResolvedEndpoint`]).
    pub routing: RoutingConfig,
    /// Whether the endpoints published in Redis are adopted.
    pub published_endpoints: PublishedEndpoints,
    /// External services with the loaded token; `None` when external tasks are not served.
    pub external: Option<ResolvedExternal>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` when `off`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Interval of the fleet-wide gauge refresh.
    pub metrics_fleet_interval: Duration,
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

    /// Where Redis is and how to reach it: what every connection of the worker is built from.
    pub fn redis_target(&self) -> RedisTarget {
        RedisTarget::new(self.redis_url.as_str()).with_tls(self.redis_tls.clone())
    }

    /// Redis URL with any password replaced, for logs.
    pub fn redis_url_redacted(&self) -> String {
        self.redis_url.redacted()
    }
}
