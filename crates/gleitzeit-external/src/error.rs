//! What can go wrong with an external call, classified so the worker can decide between a
//! retry and a terminal failure ([`ExternalError::retryable`]).

use std::time::Duration;

use gleitzeit_core::protocol::{ErrorInfo, ErrorKind};

/// Why an external call did not return a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExternalError {
    /// No instance of the service is connected (none registered, all unreachable or still
    /// connecting). Retryable: instances come and go.
    #[error("no live instance of service {service:?}{}", detail_suffix(.detail))]
    NoInstance {
        /// The service asked for.
        service: String,
        /// What was found instead, when it helps (`2 instances connecting`).
        detail: Option<String>,
    },
    /// The connection to the instance serving the call broke before the answer came.
    /// Retryable: another instance (or the restarted one) can serve the retry; the service
    /// deduplicates by idempotency key.
    #[error("service {service:?} disconnected mid-call ({url}): {reason}")]
    Disconnected {
        /// The service.
        service: String,
        /// The instance's address.
        url: String,
        /// What ended the connection.
        reason: String,
    },
    /// No answer within the call's deadline (plus a grace period for the service's own
    /// `timeout` answer). Retryable.
    #[error("call of {function:?} on service {service:?} got no answer within {}", humantime::format_duration(*.after))]
    Timeout {
        /// The service.
        service: String,
        /// The function called.
        function: String,
        /// How long the worker waited.
        after: Duration,
    },
    /// The service answered with an error. Retryable as the service says, except that
    /// `unknown_function`, `bad_request` and `not_json` never are.
    #[error("service error ({kind}) {}: {message}", .r#type)]
    Remote {
        /// The protocol's error kind.
        kind: ErrorKind,
        /// The exception class name (or `UnknownFunction`, `BadRequest`, ...).
        r#type: String,
        /// The message.
        message: String,
        /// The Python traceback, when there is one.
        traceback: Option<String>,
        /// Whether calling again can succeed.
        retryable: bool,
    },
    /// A message of the service does not fit the protocol (or announces another version).
    /// Not retryable: the same service answers the same way.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The function's result exceeds the configured size cap. Not retryable: the function
    /// would return the same result again.
    #[error("result of {function:?} is {size} bytes, more than the limit of {limit} bytes")]
    ResultTooLarge {
        /// The function called.
        function: String,
        /// Size of the result as JSON.
        size: usize,
        /// The configured cap (`max_result_bytes`).
        limit: usize,
    },
    /// Reading the service's instances from Redis failed and none are known. Retryable.
    #[error("discovery of service {service:?} failed: {message}")]
    Discovery {
        /// The service.
        service: String,
        /// The Redis error.
        message: String,
    },
    /// The call itself is unusable (an invalid service name, a function name that is empty).
    /// Not retryable.
    #[error("invalid external call: {0}")]
    InvalidCall(String),
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

impl ExternalError {
    /// The error a service's `task:result` failure stands for. The service's `retryable` flag is
    /// kept, except for the kinds the protocol fixes as never retryable.
    pub fn from_remote(error: ErrorInfo) -> ExternalError {
        let retryable = error.retryable && !error.kind.never_retryable();
        ExternalError::Remote {
            kind: error.kind,
            r#type: error.r#type,
            message: error.message,
            traceback: error.traceback,
            retryable,
        }
    }

    /// Whether calling again (later, maybe on another instance) can succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ExternalError::NoInstance { .. }
            | ExternalError::Disconnected { .. }
            | ExternalError::Timeout { .. }
            | ExternalError::Discovery { .. } => true,
            ExternalError::Remote { retryable, .. } => *retryable,
            ExternalError::Protocol(_)
            | ExternalError::ResultTooLarge { .. }
            | ExternalError::InvalidCall(_) => false,
        }
    }

    /// Structured detail for the task's stored error: the remote error's kind, type and
    /// traceback, or the instance address of a connection failure. Never contains secrets.
    pub fn detail(&self) -> Option<serde_json::Value> {
        use serde_json::json;
        match self {
            ExternalError::Remote {
                kind,
                r#type,
                traceback,
                retryable,
                ..
            } => Some(json!({
                "kind": kind.as_str(),
                "type": r#type,
                "traceback": traceback,
                "retryable": retryable,
            })),
            ExternalError::Disconnected { service, url, .. } => {
                Some(json!({"service": service, "url": url}))
            }
            ExternalError::ResultTooLarge { size, limit, .. } => {
                Some(json!({"size": size, "limit": limit}))
            }
            _ => None,
        }
    }

    /// Whether the error is a deadline passing (the worker records those as timeouts).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ExternalError::Timeout { .. }
                | ExternalError::Remote {
                    kind: ErrorKind::Timeout,
                    ..
                }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(kind: ErrorKind, retryable: bool) -> ExternalError {
        ExternalError::from_remote(ErrorInfo {
            kind,
            r#type: "X".into(),
            message: "m".into(),
            traceback: None,
            retryable,
        })
    }

    #[test]
    fn remote_retryability_follows_the_service_but_not_for_fixed_kinds() {
        assert!(remote(ErrorKind::Exception, true).retryable());
        assert!(!remote(ErrorKind::Exception, false).retryable());
        assert!(remote(ErrorKind::Overloaded, true).retryable());
        assert!(remote(ErrorKind::Timeout, true).retryable());
        for kind in [
            ErrorKind::UnknownFunction,
            ErrorKind::BadRequest,
            ErrorKind::NotJson,
        ] {
            assert!(!remote(kind, true).retryable(), "{kind}");
        }
    }

    #[test]
    fn transport_errors_are_retryable_configuration_errors_are_not() {
        let svc = || "S".to_owned();
        assert!(ExternalError::NoInstance {
            service: svc(),
            detail: None
        }
        .retryable());
        assert!(ExternalError::Disconnected {
            service: svc(),
            url: "u".into(),
            reason: "r".into()
        }
        .retryable());
        let timeout = ExternalError::Timeout {
            service: svc(),
            function: "f".into(),
            after: Duration::from_secs(3),
        };
        assert!(timeout.retryable() && timeout.is_timeout());
        assert!(timeout.to_string().contains("3s"), "{timeout}");
        assert!(!ExternalError::Protocol("p".into()).retryable());
        assert!(!ExternalError::ResultTooLarge {
            function: "f".into(),
            size: 2,
            limit: 1
        }
        .retryable());
        assert!(remote(ErrorKind::Timeout, true).is_timeout());
    }

    #[test]
    fn detail_carries_the_remote_traceback() {
        let err = ExternalError::from_remote(ErrorInfo {
            kind: ErrorKind::Exception,
            r#type: "ValueError".into(),
            message: "m".into(),
            traceback: Some("Traceback ...".into()),
            retryable: false,
        });
        let detail = err.detail().unwrap();
        assert_eq!(detail["kind"], "exception");
        assert_eq!(detail["type"], "ValueError");
        assert_eq!(detail["traceback"], "Traceback ...");
        assert_eq!(ExternalError::Protocol("p".into()).detail(), None);
    }

    #[test]
    fn remote_display_names_kind_type_and_message() {
        let text = remote(ErrorKind::Exception, false).to_string();
        assert_eq!(text, "service error (exception) X: m");
    }
}
