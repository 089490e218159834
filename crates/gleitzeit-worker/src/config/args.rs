//! Command-line flags ([`WorkerArgs`]) and the `GLEITZEIT_*` environment variables they read,
//! applied over the configuration file.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::durations::parse_duration;
use super::error::ConfigError;
use super::schema::{PublishedEndpoints, WorkerConfig};

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
    /// PEM file of CA certificates to trust for a rediss:// URL (instead of the system store).
    #[arg(long, env = "GLEITZEIT_REDIS_TLS_CA", value_name = "PEM")]
    pub redis_tls_ca: Option<PathBuf>,
    /// PEM client certificate for a Redis that requires one (with --redis-tls-key).
    #[arg(long, env = "GLEITZEIT_REDIS_TLS_CERT", value_name = "PEM")]
    pub redis_tls_cert: Option<PathBuf>,
    /// PEM private key of --redis-tls-cert.
    #[arg(long, env = "GLEITZEIT_REDIS_TLS_KEY", value_name = "PEM")]
    pub redis_tls_key: Option<PathBuf>,
    /// Key namespace.
    #[arg(long, env = "GLEITZEIT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Shards the namespace's workflows are spread over (1-256; default: what the namespace
    /// records).
    #[arg(long, env = "GLEITZEIT_SHARDS")]
    pub shards: Option<u16>,
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
    /// Pause between reads while busy (`2ms`; `0s`: none).
    #[arg(long, env = "GLEITZEIT_READ_LINGER", value_parser = parse_duration)]
    pub read_linger: Option<Duration>,
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
    /// Endpoints as a YAML or JSON list (same shape as the file's `endpoints`); replaces the
    /// file's list.
    #[arg(long, env = "GLEITZEIT_ENDPOINTS")]
    pub endpoints: Option<String>,
    /// The `routing` section as YAML or JSON (same shape as in the file); replaces the file's.
    #[arg(long, env = "GLEITZEIT_ROUTING")]
    pub routing: Option<String>,
    /// Endpoints published to the fleet in Redis: `adopt` (route over them too) or `ignore`.
    #[arg(long, env = "GLEITZEIT_PUBLISHED_ENDPOINTS", value_enum)]
    pub published_endpoints: Option<PublishedEndpoints>,
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
            cfg.redis_url = v.as_str().into();
        }
        if let Some(v) = &self.redis_tls_ca {
            cfg.redis_tls_ca = Some(v.clone());
        }
        if let Some(v) = &self.redis_tls_cert {
            cfg.redis_tls_cert = Some(v.clone());
        }
        if let Some(v) = &self.redis_tls_key {
            cfg.redis_tls_key = Some(v.clone());
        }
        if let Some(v) = &self.namespace {
            cfg.namespace = v.clone();
        }
        if let Some(v) = self.shards {
            cfg.shards = Some(v);
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
        if let Some(v) = self.read_linger {
            cfg.read_linger = v;
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
        if let Some(v) = self.published_endpoints {
            cfg.published_endpoints = v;
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

    #[test]
    fn override_flag_parses() {
        assert_eq!(
            parse_override("llm:big*=10m"),
            Ok(("llm:big*".to_owned(), Duration::from_secs(600)))
        );
        assert!(parse_override("llm:x").is_err());
    }

    #[test]
    fn published_endpoints_default_to_ignore_and_are_set_by_file_or_flag() {
        use crate::config::PublishedEndpoints;
        let none = WorkerArgs::try_parse_from(["gleitzeit-worker"]).unwrap();
        assert_eq!(
            none.load().unwrap().published_endpoints,
            PublishedEndpoints::Ignore
        );
        let file = WorkerConfig::from_yaml("published_endpoints: adopt\n", "t").unwrap();
        assert_eq!(file.published_endpoints, PublishedEndpoints::Adopt);
        let s = file.validate_with_env(&|_| None).unwrap();
        assert_eq!(s.published_endpoints, PublishedEndpoints::Adopt);
        assert!(WorkerConfig::from_yaml("published_endpoints: always\n", "t").is_err());
        let flag =
            WorkerArgs::try_parse_from(["gleitzeit-worker", "--published-endpoints", "adopt"])
                .unwrap();
        assert_eq!(
            flag.load().unwrap().published_endpoints,
            PublishedEndpoints::Adopt
        );
        assert!(
            WorkerArgs::try_parse_from(["gleitzeit-worker", "--published-endpoints", "maybe"])
                .is_err()
        );
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
        assert_eq!(
            cfg.routing.strategy,
            Some(gleitzeit_llm::Strategy::RoundRobin)
        );
        let s = cfg.validate_with_env(&|_| None).unwrap();
        // The default endpoint (local Ollama) is named `ollama`.
        assert_eq!(s.endpoints[0].routing.max_concurrent, Some(2));
    }
}
