//! Worker configuration: the YAML file format, environment and command-line overrides, and the
//! complete validation that runs before the worker opens any socket.
//!
//! Precedence, lowest first: built-in defaults, the YAML file (`--config`), `GLEITZEIT_*`
//! environment variables, command-line flags. [`WorkerConfig`] is what the operator writes;
//! [`WorkerConfig::validate`] turns it into [`Settings`], with every derived default filled in and
//! the endpoint secrets read. Secrets are only ever held in [`gleitzeit_llm::Secret`], whose
//! `Debug`/`Display` are redacted, and the Redis URL's password is redacted from `Debug` output.
//!
//! One file per concern: `schema` (the file format and its defaults), `durations` (duration
//! parsing and serde), `error`, `validate` (checks and derived defaults), `settings` (the
//! validated result) and `args` (flags and environment variables).

mod args;
mod durations;
mod error;
mod schema;
mod settings;
mod validate;

pub use args::WorkerArgs;
pub use durations::parse_duration;
pub use error::{ConfigError, FieldError};
pub use schema::{
    EndpointKind, EndpointRouting, EndpointSpec, MetricsSpec, RoutingConfig, WorkerConfig,
    DEFAULT_METRICS_ADDR, MAX_CONCURRENCY,
};
pub use settings::{ResolvedEndpoint, Settings};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
