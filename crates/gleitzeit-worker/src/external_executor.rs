//! Executes *external* tasks (`type: external`, capability `ext:<service>`) by calling a
//! function of a Python task service over Socket.IO through [`gleitzeit_external::ServicePool`],
//! and [`Executors`], which puts the LLM and external executors behind one [`Executor`] so the
//! worker's loops stay unaware of task kinds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use gleitzeit_core::{Action, ResultMeta, Task, TaskResult};
use gleitzeit_external::{
    ExternalCall, ExternalConfig, ExternalError, ServicePool, ServiceTls, StaticService, Token,
    TokenSource,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::executor::{ExecContext, ExecFailure, Executor};

/// The `external` section of the worker configuration.
///
/// ```yaml
/// external:
///   enabled: true                  # default: serve external tasks when a token is available
///   token_env: GLEITZEIT_SERVICE_TOKEN   # or token_file: /run/secrets/service-token
///   tls_ca_file: /etc/gleitzeit/services-ca.pem  # optional: private CA for https:// services
///   services:                      # optional fixed addresses; services registered in Redis
///     - name: Python Tasks         # (the default) are found without configuration
///       urls: [http://10.0.0.5:8765]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalSpec {
    /// `true`: serve external tasks (a missing token is a configuration error); `false`: never;
    /// unset: serve them when the token is available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Environment variable holding the shared service token (default
    /// `GLEITZEIT_SERVICE_TOKEN`, the one the Python service reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// File holding the shared service token (instead of `token_env`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Services at fixed addresses, in addition to those registered in Redis.
    pub services: Vec<StaticServiceSpec>,
    /// PEM file of a private CA that `https://` services' certificates are verified against
    /// (only it is trusted then); unset: the system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

/// A service at fixed addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticServiceSpec {
    /// Service name as workflows use it.
    pub name: String,
    /// `http://host:port` of each instance.
    pub urls: Vec<String>,
}

/// The external configuration after validation, with its token loaded. `Debug` never shows
/// the token.
#[derive(Debug, Clone)]
pub struct ResolvedExternal {
    /// Client settings for the service pool.
    pub config: ExternalConfig,
    /// The shared token.
    pub token: Token,
}

/// A problem in the `external` section, with the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalSpecError {
    /// Field path (`external.token_env`).
    pub field: String,
    /// What is wrong (never the token).
    pub message: String,
}

impl ExternalSpec {
    /// Validates the section and loads the token. `Ok(None)`: external tasks are not served
    /// (disabled, or no token available and not explicitly enabled).
    ///
    /// # Errors
    /// [`ExternalSpecError`] naming the field; retrying does not help.
    pub fn resolve(
        &self,
        namespace: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ResolvedExternal>, ExternalSpecError> {
        let error = |field: &str, message: String| ExternalSpecError {
            field: format!("external.{field}"),
            message,
        };
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let source = match (&self.token_env, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err(error(
                    "token_file",
                    "set either token_env or token_file, not both".to_owned(),
                ))
            }
            (_, Some(path)) => TokenSource::File(path.clone()),
            (Some(name), None) => TokenSource::Env(name.clone()),
            (None, None) => TokenSource::default(),
        };
        let token = match &source {
            TokenSource::Env(name) => env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(Token::new)
                .ok_or_else(|| format!("environment variable {name} is not set or empty")),
            TokenSource::File(_) => source.load().map_err(|e| e.0),
        };
        let token = match token {
            Ok(token) => token,
            // Without a token no service would accept this worker: serve no external tasks
            // unless the configuration asked for them explicitly.
            Err(_) if self.enabled.is_none() => return Ok(None),
            Err(message) => {
                let field = if self.token_file.is_some() {
                    "token_file"
                } else {
                    "token_env"
                };
                return Err(error(field, message));
            }
        };
        let config = ExternalConfig {
            namespace: namespace.to_owned(),
            services: self
                .services
                .iter()
                .map(|s| StaticService {
                    name: s.name.clone(),
                    urls: s.urls.clone(),
                })
                .collect(),
            token: source,
            tls: ServiceTls {
                ca_file: self.tls_ca_file.clone(),
            },
            ..ExternalConfig::default()
        };
        config.validate().map_err(|e| {
            let field = if e.0.contains("tls.ca_file") {
                "tls_ca_file"
            } else {
                "services"
            };
            error(field, e.0)
        })?;
        // Reading the CA file here reports a bad one as a configuration error at start-up.
        config
            .tls_connector()
            .map_err(|e| error("tls_ca_file", e.0))?;
        Ok(Some(ResolvedExternal { config, token }))
    }
}

/// Capability prefix of external tasks (`ext:Python Tasks`).
const EXT_PREFIX: &str = "ext:";

/// Runs external tasks on the instances of their service.
pub struct ExternalExecutor {
    pool: ServicePool,
}

impl ExternalExecutor {
    /// Wraps a pool built from the worker's `external` configuration.
    pub fn new(pool: ServicePool) -> ExternalExecutor {
        ExternalExecutor { pool }
    }
}

impl Executor for ExternalExecutor {
    /// Every `ext:` capability: instances are discovered per service at call time, and a call
    /// to a service with no live instance fails retryably (its retry waits in Redis).
    fn serves(&self, capability: &str) -> bool {
        capability.starts_with(EXT_PREFIX)
    }

    fn execute<'a>(
        &'a self,
        task: &'a Task,
        ctx: &'a ExecContext,
    ) -> BoxFuture<'a, Result<TaskResult, ExecFailure>> {
        Box::pin(async move {
            let Action::External {
                service,
                function,
                args,
                kwargs,
            } = &task.action
            else {
                return Err(ExecFailure::permanent(format!(
                    "task {:?} of type {} was queued on external capability {}",
                    task.name,
                    task.action.kind().as_str(),
                    ctx.capability
                )));
            };
            // The idempotency key names the task, not the attempt: a service that already
            // answered a retried call returns its remembered result instead of running again.
            let call = ExternalCall::new(service.clone(), function.clone())
                .args(args.clone())
                .kwargs(kwargs.clone())
                .timeout(task.timeout)
                .task_id(format!("{}:{}", ctx.workflow_id, ctx.task_index))
                .idempotency_key(format!("{}/{}", ctx.workflow_id, task.name));
            let started = Instant::now();
            let in_flight = crate::metrics::record::ServiceCallGuard::new(service);
            let result = self.pool.call(call).await;
            drop(in_flight);
            crate::metrics::record::service_call(
                service,
                function,
                result.as_ref().map_or_else(error_class, |_| "ok"),
                started.elapsed(),
            );
            match result {
                Ok(value) => Ok(TaskResult {
                    value,
                    meta: Some(ResultMeta {
                        endpoint: Some(service.clone()),
                        duration_ms: Some(
                            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        ),
                        ..ResultMeta::default()
                    }),
                }),
                Err(e) => Err(map_error(&e)),
            }
        })
    }
}

/// The `outcome` label of a failed service call (metrics).
fn error_class(e: &ExternalError) -> &'static str {
    match e {
        ExternalError::NoInstance { .. } => "no_instance",
        ExternalError::Disconnected { .. } => "disconnected",
        ExternalError::Timeout { .. } => "timeout",
        ExternalError::Remote { .. } => "remote",
        ExternalError::Protocol(_) => "protocol",
        ExternalError::ResultTooLarge { .. } => "result_too_large",
        ExternalError::Discovery { .. } => "discovery",
        ExternalError::InvalidCall(_) => "invalid_call",
    }
}

/// Classifies an external error for the worker's retry decision, keeping what a person needs
/// to fix a Python exception (type, message, traceback) in the task's stored error.
fn map_error(e: &ExternalError) -> ExecFailure {
    let failure = match e {
        ExternalError::Timeout { after, .. } => ExecFailure::timeout(*after),
        // Nothing reached a service: wait for an instance without using an attempt.
        ExternalError::NoInstance { .. } | ExternalError::Discovery { .. } => {
            ExecFailure::deferred(e.to_string())
        }
        _ if e.retryable() => ExecFailure::retryable(e.to_string()),
        _ => ExecFailure::permanent(e.to_string()),
    };
    failure.with_detail(
        e.detail()
            .unwrap_or_else(|| json!({ "source": "external" })),
    )
}

/// Several executors behind one: each task goes to the first executor serving its capability.
pub struct Executors {
    inner: Vec<Arc<dyn Executor>>,
}

impl Executors {
    /// Executors in order of preference.
    pub fn new(inner: Vec<Arc<dyn Executor>>) -> Executors {
        Executors { inner }
    }

    fn pick(&self, capability: &str) -> Option<&Arc<dyn Executor>> {
        self.inner.iter().find(|e| e.serves(capability))
    }
}

impl Executor for Executors {
    fn serves(&self, capability: &str) -> bool {
        self.pick(capability).is_some()
    }

    fn saturated(&self, capability: &str) -> bool {
        self.pick(capability)
            .is_some_and(|e| e.saturated(capability))
    }

    fn execute<'a>(
        &'a self,
        task: &'a Task,
        ctx: &'a ExecContext,
    ) -> BoxFuture<'a, Result<TaskResult, ExecFailure>> {
        match self.pick(&ctx.capability) {
            Some(e) => e.execute(task, ctx),
            None => {
                let message = format!("no executor serves capability {}", ctx.capability);
                Box::pin(async move { Err(ExecFailure::permanent(message)) })
            }
        }
    }

    fn drained(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            futures::future::join_all(self.inner.iter().map(|e| e.drained())).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleitzeit_external::protocol::ErrorKind;

    #[test]
    fn remote_errors_keep_type_message_and_traceback() {
        let e = ExternalError::Remote {
            kind: ErrorKind::Exception,
            r#type: "ValueError".into(),
            message: "bad value".into(),
            traceback: Some("Traceback ...".into()),
            retryable: false,
        };
        let f = map_error(&e);
        assert!(!f.is_retryable());
        assert!(f.message.contains("bad value"), "{}", f.message);
        let d = f.detail.expect("detail");
        assert_eq!(d["type"], "ValueError");
        assert_eq!(d["traceback"], "Traceback ...");
    }

    #[test]
    fn disconnects_and_missing_instances_are_retryable() {
        let e = ExternalError::Disconnected {
            service: "Python Tasks".into(),
            url: "http://127.0.0.1:1".into(),
            reason: "closed".into(),
        };
        assert!(map_error(&e).is_retryable());
        let e = ExternalError::NoInstance {
            service: "Python Tasks".into(),
            detail: None,
        };
        let f = map_error(&e);
        assert!(
            f.is_retryable() && f.deferred,
            "a missing instance is a deferral"
        );
        let e = ExternalError::InvalidCall("empty function".into());
        assert!(!map_error(&e).is_retryable());
    }

    fn env_with_token(name: &str) -> Option<String> {
        (name == "GLEITZEIT_SERVICE_TOKEN").then(|| "s3cret".to_owned())
    }

    #[test]
    fn external_is_served_when_a_token_is_available() {
        let spec = ExternalSpec::default();
        let resolved = spec.resolve("gleitzeit", &env_with_token).unwrap();
        let resolved = resolved.expect("enabled by the token");
        assert_eq!(resolved.token.expose_secret(), "s3cret");
        assert!(!format!("{resolved:?}").contains("s3cret"));
        assert_eq!(
            spec.resolve("gleitzeit", &|_| None).unwrap().map(|_| ()),
            None
        );
    }

    #[test]
    fn explicitly_enabled_without_token_names_the_field() {
        let spec = ExternalSpec {
            enabled: Some(true),
            token_env: Some("MY_TOKEN".into()),
            ..ExternalSpec::default()
        };
        let e = spec.resolve("gleitzeit", &|_| None).unwrap_err();
        assert_eq!(e.field, "external.token_env");
        assert!(e.message.contains("MY_TOKEN"));
        let off = ExternalSpec {
            enabled: Some(false),
            ..ExternalSpec::default()
        };
        assert!(off.resolve("gleitzeit", &env_with_token).unwrap().is_none());
    }

    #[test]
    fn bad_static_service_is_refused() {
        let spec = ExternalSpec {
            services: vec![StaticServiceSpec {
                name: "Python Tasks".into(),
                urls: vec!["not a url".into()],
            }],
            ..ExternalSpec::default()
        };
        let e = spec.resolve("gleitzeit", &env_with_token).unwrap_err();
        assert_eq!(e.field, "external.services");
    }

    #[test]
    fn an_unusable_tls_ca_file_names_the_field() {
        let spec = ExternalSpec {
            tls_ca_file: Some("/nonexistent/gleitzeit-ca.pem".into()),
            ..ExternalSpec::default()
        };
        let e = spec.resolve("gleitzeit", &env_with_token).unwrap_err();
        assert_eq!(e.field, "external.tls_ca_file");
        assert!(e.message.contains("gleitzeit-ca.pem"), "{}", e.message);
    }
}
