//! Validation: [`WorkerConfig::validate`] checks every field, collects every problem with the
//! field it belongs to, and turns a valid configuration into [`Settings`]. Opens no socket.
//!
//! The checks run in file order (connection, capabilities, loop timings, metrics, endpoints,
//! routing, external services), so the errors are listed in that order too.

use std::time::Duration;

use deadpool_redis::redis::IntoConnectionInfo;
use gleitzeit_queue::connection::{
    ConnectionError, TLS_CA_SETTING, TLS_CERT_SETTING, TLS_KEY_SETTING,
};
use gleitzeit_queue::{RedisTarget, TlsFiles};

use super::error::{ConfigError, FieldError};
use super::schema::{
    EndpointRouting, EndpointSpec, RoutingConfig, WorkerConfig, DEFAULT_METRICS_ADDR,
    MAX_CONCURRENCY,
};
use super::settings::{ResolvedEndpoint, Settings};
use gleitzeit_core::pattern::Pattern;
use gleitzeit_llm::spec::{check_model_list, check_routing};

/// Where a check reports a problem: the field (as written in the YAML file) and the message.
type Report<'a> = dyn FnMut(&str, String) + 'a;

/// The intervals of the worker's loops, with their derived defaults filled in.
struct LoopTimings {
    read_block: Duration,
    claim_idle_overrides: Vec<(Pattern, Duration)>,
    reclaim_interval: Duration,
    heartbeat_interval: Duration,
}

impl WorkerConfig {
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

        check_connection(self, &mut err);
        let capabilities = check_capabilities(&self.capabilities, &mut err);
        let timings = check_loop_timings(self, &mut err);
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
        let endpoints = (0..specs.len())
            .map(|i| resolve_endpoint(&specs, i, &self.routing, env, &mut err))
            .collect();
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
            redis_tls: self.tls_files(),
            namespace: self.namespace.clone(),
            shards: self.shards,
            group: self.group.clone(),
            concurrency: self.concurrency,
            capabilities,
            caps_refresh: self.caps_refresh,
            read_block: timings.read_block,
            read_linger: self.read_linger,
            claim_idle: self.claim_idle,
            claim_idle_overrides: timings.claim_idle_overrides,
            reclaim_interval: timings.reclaim_interval,
            heartbeat_interval: timings.heartbeat_interval,
            max_deliveries: self.max_deliveries,
            drain_timeout: self.drain_timeout,
            promote_interval_max: self.promote_interval_max,
            endpoints,
            routing: self.routing.clone(),
            published_endpoints: self.published_endpoints,
            external,
            metrics_addr,
            metrics_fleet_interval: self.metrics.fleet_interval,
        })
    }
}

impl WorkerConfig {
    fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.redis_tls_ca.clone(),
            cert: self.redis_tls_cert.clone(),
            key: self.redis_tls_key.clone(),
        }
    }
}

/// Redis URL and TLS files, namespace, consumer group and concurrency.
fn check_connection(cfg: &WorkerConfig, err: &mut Report<'_>) {
    let target = RedisTarget::new(cfg.redis_url.as_str());
    if target.is_sentinel() || target.is_cluster() {
        // The Sentinel and cluster forms are parsed by gleitzeit-queue (check_tls reports
        // their errors).
        check_tls(cfg, err);
    } else if let Err(e) = cfg.redis_url.as_str().into_connection_info() {
        // The parser's messages name the problem, never the URL (which may hold a password).
        err("redis_url", format!("not a valid Redis URL ({e})"));
    } else {
        check_tls(cfg, err);
    }
    // The queue's own rules decide which namespaces make valid keys.
    if let Err(e) = gleitzeit_queue::Keys::new(&cfg.namespace) {
        err("namespace", e.to_string());
    }
    if let Some(n) = cfg.shards {
        if !(1..=gleitzeit_queue::MAX_SHARDS).contains(&n) {
            err(
                "shards",
                format!(
                    "must be between 1 and {}, got {n}",
                    gleitzeit_queue::MAX_SHARDS
                ),
            );
        }
    }
    if let Some(problem) = name_problem(&cfg.group) {
        err("group", problem);
    }
    if cfg.concurrency == 0 || cfg.concurrency > MAX_CONCURRENCY {
        err(
            "concurrency",
            format!(
                "must be between 1 and {MAX_CONCURRENCY}, got {}",
                cfg.concurrency
            ),
        );
    }
}

/// The TLS files: only with `rediss://`, certificate and key together, each readable PEM.
/// Reported under the field at fault.
fn check_tls(cfg: &WorkerConfig, err: &mut Report<'_>) {
    let target = RedisTarget::new(cfg.redis_url.as_str()).with_tls(cfg.tls_files());
    let Err(e) = target.validate() else {
        return;
    };
    let field = match &e {
        ConnectionError::TlsWithoutRediss { setting } => {
            err(
                setting,
                "is set but redis_url is not a rediss:// URL (TLS files apply only to TLS)"
                    .to_owned(),
            );
            return;
        }
        ConnectionError::IncompleteClientIdentity { set, missing } => {
            err(
                missing,
                format!("must be set together with {set} (a client certificate needs its key)"),
            );
            return;
        }
        ConnectionError::Read { setting, .. } | ConnectionError::NotPem { setting, .. } => *setting,
        ConnectionError::Url(_)
        | ConnectionError::SentinelUrl(_)
        | ConnectionError::ClusterUrl(_)
        | ConnectionError::UnknownSentinelService
        | ConnectionError::NeedsOneServer(_) => "redis_url",
        // redis-rs refused files that parsed as PEM: name the certificate files.
        ConnectionError::Tls(_) => {
            if cfg.redis_tls_cert.is_some() {
                TLS_CERT_SETTING
            } else if cfg.redis_tls_key.is_some() {
                TLS_KEY_SETTING
            } else {
                TLS_CA_SETTING
            }
        }
    };
    // The error text starts with the setting name; the field carries it already.
    let text = e.to_string();
    let message = text
        .strip_prefix(&format!("{field}: "))
        .unwrap_or(&text)
        .to_owned();
    err(field, message);
}

/// The capability patterns served; at least one.
fn check_capabilities(patterns: &[String], err: &mut Report<'_>) -> Vec<Pattern> {
    let mut capabilities = Vec::new();
    if patterns.is_empty() {
        err(
            "capabilities",
            "must list at least one pattern (for example \"llm:*\")".to_owned(),
        );
    }
    for (i, p) in patterns.iter().enumerate() {
        match Pattern::new(p) {
            Ok(p) => capabilities.push(p),
            Err(problem) => err(&format!("capabilities[{i}]"), problem),
        }
    }
    capabilities
}

/// The loops' intervals and limits, and the defaults derived from the claim idle times.
fn check_loop_timings(cfg: &WorkerConfig, err: &mut Report<'_>) -> LoopTimings {
    positive(err, "caps_refresh", cfg.caps_refresh);
    let read_block = cfg.read_block.unwrap_or(cfg.caps_refresh);
    positive(err, "read_block", read_block);
    // A linger as long as the blocking read would hold back every busy read by as much as
    // a quiet worker waits; it is meant to be a small fraction of it.
    if !read_block.is_zero() && cfg.read_linger >= read_block {
        err(
            "read_linger",
            format!(
                "must be shorter than read_block ({}), got {}",
                humantime::format_duration(read_block),
                humantime::format_duration(cfg.read_linger)
            ),
        );
    }
    positive(err, "claim_idle", cfg.claim_idle);
    let mut overrides = Vec::new();
    for (p, d) in &cfg.claim_idle_overrides {
        let field = format!("claim_idle_overrides[{p}]");
        match Pattern::new(p) {
            Ok(pattern) => overrides.push((pattern, *d)),
            Err(problem) => err(&field, problem),
        }
        positive(err, &field, *d);
    }
    // The shortest claim idle bounds the heartbeat: an entry of any capability must be
    // refreshed before another worker may take it.
    let min_idle = cfg
        .claim_idle_overrides
        .values()
        .copied()
        .chain(std::iter::once(cfg.claim_idle))
        .min()
        .unwrap_or(cfg.claim_idle);
    let reclaim_interval = cfg.reclaim_interval.unwrap_or(min_idle / 2);
    positive(err, "reclaim_interval", reclaim_interval);
    let heartbeat_interval = cfg.heartbeat_interval.unwrap_or(min_idle / 3);
    positive(err, "heartbeat_interval", heartbeat_interval);
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
    if cfg.max_deliveries == 0 {
        err("max_deliveries", "must be at least 1".to_owned());
    }
    positive(err, "promote_interval_max", cfg.promote_interval_max);
    LoopTimings {
        read_block,
        claim_idle_overrides: overrides,
        reclaim_interval,
        heartbeat_interval,
    }
}

/// Checks endpoint `i` of `specs` (name unique among those before it, URL, models, timeout),
/// reads its secret and attaches its routing attributes.
fn resolve_endpoint(
    specs: &[EndpointSpec],
    i: usize,
    routing: &RoutingConfig,
    env: &dyn Fn(&str) -> Option<String>,
    err: &mut Report<'_>,
) -> ResolvedEndpoint {
    let spec = &specs[i];
    let at = |f: &str| format!("endpoints[{i}].{f}");
    // The rules of one endpoint are shared with the endpoints published to the fleet.
    gleitzeit_llm::spec::check_endpoint(spec, &mut |f, m| err(&at(f), m));
    if gleitzeit_llm::spec::endpoint_name_problem(&spec.name).is_none()
        && specs[..i].iter().any(|o| o.name == spec.name)
    {
        err(
            &at("name"),
            format!("duplicate endpoint name {:?}", spec.name),
        );
    }
    let api_key = read_api_key(spec, &at, env, err);
    ResolvedEndpoint {
        name: spec.name.clone(),
        kind: spec.kind,
        url: spec.url.clone(),
        api_key,
        models: spec.models.clone(),
        timeout: spec.timeout,
        routing: endpoint_routing(routing, &spec.name),
    }
}

/// The endpoint's API key from `api_key_env` or `api_key_file` (at most one of them).
fn read_api_key(
    spec: &EndpointSpec,
    at: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
    err: &mut Report<'_>,
) -> Option<gleitzeit_llm::Secret> {
    match (&spec.api_key_env, &spec.api_key_file) {
        (Some(_), Some(_)) => {
            err(
                &at("api_key_env"),
                "set either api_key_env or api_key_file, not both".to_owned(),
            );
            None
        }
        // Reported by the shared checks, without repeating the value (it may be a key).
        (Some(var), None) if gleitzeit_llm::spec::api_key_env_problem(var).is_some() => None,
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
            Ok(v) if !v.trim().is_empty() => Some(gleitzeit_llm::Secret::new(v.trim().to_owned())),
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
    }
}

/// The routing attributes of endpoint `name`, with the top-level `routing.preload` list joined
/// to the endpoint's own (without repeating a model).
fn endpoint_routing(routing: &RoutingConfig, name: &str) -> EndpointRouting {
    let mut r = routing.endpoints.get(name).cloned().unwrap_or_default();
    for m in routing.preload.get(name).into_iter().flatten() {
        if !r.preload.contains(m) {
            r.preload.push(m.clone());
        }
    }
    r
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
fn validate_routing(routing: &RoutingConfig, specs: &[EndpointSpec], err: &mut Report<'_>) {
    positive(err, "routing.lease_ttl", routing.lease_ttl);
    if routing.lease_linger >= routing.lease_ttl {
        err(
            "routing.lease_linger",
            format!(
                "must be shorter than routing.lease_ttl ({}): a parked slot is returned before its lease could expire",
                humantime::format_duration(routing.lease_ttl)
            ),
        );
    }
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
    for (name, models) in &routing.preload {
        if !specs.iter().any(|s| &s.name == name) {
            err(
                &format!("routing.preload[{name}]"),
                "names no configured endpoint".to_owned(),
            );
        }
        check_model_list(err, &format!("routing.preload[{name}]"), models);
    }
    for (name, r) in &routing.endpoints {
        if !specs.iter().any(|s| &s.name == name) {
            err(
                &format!("routing.endpoints[{name}]"),
                "names no configured endpoint".to_owned(),
            );
        }
        check_routing(r, &mut |f, m| {
            err(&format!("routing.endpoints[{name}].{f}"), m)
        });
    }
}

fn positive(err: &mut Report<'_>, field: &str, d: Duration) {
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointKind;

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
    fn routing_section_parses_validates_and_reaches_the_endpoints() {
        let s = settings(
            r#"
endpoints:
  - {name: gpu, kind: ollama, url: "http://10.0.0.5:11434"}
  - {name: claude, kind: anthropic, url: "https://api.anthropic.com", models: [claude-x]}
routing:
  strategy: priority
  lease_ttl: 30s
  lease_linger: 5ms
  endpoints:
    gpu: {priority: 0, max_concurrent: 4, gpu: true, memory_gb: 48, tags: [fast]}
"#,
        );
        assert_eq!(s.routing.strategy, Some(gleitzeit_llm::Strategy::Priority));
        assert_eq!(s.routing.lease_ttl, Duration::from_secs(30));
        assert_eq!(s.routing.lease_linger, Duration::from_millis(5));
        assert_eq!(
            RoutingConfig::default().lease_linger,
            Duration::from_millis(50)
        );
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
  lease_linger: 1m
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
                "routing.lease_linger",
                "routing.max_cooldown",
            ]
        );
        assert!(WorkerConfig::from_yaml("routing: {strategy: fastest_ever}\n", "t").is_err());
    }

    #[test]
    fn the_shard_count_is_optional_and_bounded() {
        assert_eq!(settings("namespace: team-a\n").shards, None);
        assert_eq!(settings("shards: 3\n").shards, Some(3));
        assert_eq!(invalid_fields("shards: 0\n"), ["shards"]);
        assert_eq!(invalid_fields("shards: 257\n"), ["shards"]);
    }

    #[test]
    fn the_default_strategy_follows_the_endpoints() {
        use gleitzeit_llm::Strategy;
        let unset = RoutingConfig::default();
        assert_eq!(unset.strategy, None);
        // Endpoints that report their models: queue-aware placement.
        assert_eq!(
            unset.strategy_for([EndpointKind::OpenAi, EndpointKind::Ollama]),
            Strategy::ModelAffinity
        );
        // None does: the load decides.
        assert_eq!(
            unset.strategy_for([EndpointKind::OpenAi, EndpointKind::Anthropic]),
            Strategy::LeastLoaded
        );
        // A configured strategy is kept whatever the endpoints.
        let set = RoutingConfig {
            strategy: Some(Strategy::Priority),
            ..RoutingConfig::default()
        };
        assert_eq!(set.strategy_for([EndpointKind::Ollama]), Strategy::Priority);
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
        assert_eq!(
            s.routing.strategy,
            Some(gleitzeit_llm::Strategy::ModelAffinity)
        );
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
}
