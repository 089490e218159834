//! Worker configuration: the YAML file format, environment and command-line overrides, and the
//! complete validation that runs before the worker opens any socket.
//!
//! Precedence, lowest first: built-in defaults, the YAML file (`--config`), `GLEITZEIT_*`
//! environment variables, command-line flags. [`WorkerConfig`] is what the operator writes;
//! [`WorkerConfig::validate`] turns it into [`Settings`], with every derived default filled in and
//! the endpoint secrets read. Secrets are only ever held in [`gleitzeit_llm::Secret`], whose
//! `Debug`/`Display` are redacted, and the Redis URL in a [`RedisUrl`], whose `Debug`/`Display`
//! hide its password.
//!
//! One file per concern: `schema` (the file format and its defaults), `durations` (duration
//! parsing and serde), `error`, `validate` (checks and derived defaults), `settings` (the
//! validated result) and `args` (flags and environment variables).

mod args;
mod durations;
mod error;
mod redis_url;
mod schema;
mod settings;
mod validate;

pub use args::WorkerArgs;
pub use durations::parse_duration;
pub use error::{ConfigError, FieldError};
pub use gleitzeit_core::redact_url;
pub use redis_url::RedisUrl;
pub use schema::{
    EndpointKind, EndpointRouting, EndpointSpec, MetricsSpec, PublishedEndpoints, RoutingConfig,
    WorkerConfig, DEFAULT_METRICS_ADDR, MAX_CONCURRENCY,
};
pub use settings::{ResolvedEndpoint, Settings};
