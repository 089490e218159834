//! Error classification: what a routed call's failure means for the task (retry, defer or
//! fail).

use gleitzeit_core::FailureKind;
use gleitzeit_llm::{ErrorClass, LlmError, RouteError};
use serde_json::json;

use crate::executor::ExecFailure;

/// Maps a routed call's failure to the retry decision.
pub(crate) fn classify_route(err: &RouteError) -> ExecFailure {
    match err {
        RouteError::Call { endpoint, error } => classify(error, endpoint),
        // A selection matched nothing: the detail says what the task asked for.
        RouteError::NoEndpoint { tag, provider, .. } if tag.is_some() || provider.is_some() => {
            ExecFailure::permanent(err.to_string()).with_detail(json!({
                "error": "no_endpoint",
                "tag": tag,
                "provider": provider.map(|p| p.to_string()),
            }))
        }
        RouteError::NoEndpoint { .. } | RouteError::Unusable { .. } => {
            ExecFailure::permanent(err.to_string()).with_detail(json!({"error": "no_endpoint"}))
        }
        // The three below sent no request (the router returns the endpoint's own error
        // once any call was made), so they are deferrals: no attempt is used.
        RouteError::Unavailable { retry_after, .. } => {
            let mut f = ExecFailure::deferred(err.to_string()).with_detail(json!({
                "error": "unavailable",
                "retry_after_ms": u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            }));
            f.min_retry_delay = Some(*retry_after);
            f
        }
        RouteError::Saturated { .. } => {
            ExecFailure::deferred(err.to_string()).with_detail(json!({"error": "saturated"}))
        }
        RouteError::Slots(_) => {
            ExecFailure::deferred(err.to_string()).with_detail(json!({"error": "slots"}))
        }
    }
}

/// Retry / RetryAfter → retryable (RetryAfter sets the minimum delay); Fatal → permanent.
pub(crate) fn classify(err: &LlmError, endpoint: &str) -> ExecFailure {
    let message = format!("endpoint {endpoint}: {err}");
    let (name, status) = error_name(err);
    let mut detail = json!({ "endpoint": endpoint, "error": name });
    if let Some(status) = status {
        detail["status"] = json!(status);
    }
    match err.class() {
        // The endpoint's own request limit expired: recorded as a timeout (still retried).
        ErrorClass::Retry if matches!(err, LlmError::Timeout { .. }) => ExecFailure {
            kind: FailureKind::Timeout,
            message,
            detail: Some(detail),
            min_retry_delay: None,
            deferred: false,
        },
        ErrorClass::Retry => ExecFailure::retryable(message).with_detail(detail),
        ErrorClass::RetryAfter(d) => {
            detail["retry_after_ms"] = json!(d.as_millis() as u64);
            let mut f = ExecFailure::retryable(message).with_detail(detail);
            f.min_retry_delay = Some(d);
            f
        }
        ErrorClass::Fatal => ExecFailure::permanent(message).with_detail(detail),
    }
}

/// A stable name (and the HTTP status, when there is one) for the stored error detail.
fn error_name(err: &LlmError) -> (&'static str, Option<u16>) {
    match err {
        LlmError::Config { .. } => ("config", None),
        LlmError::InvalidRequest { .. } => ("invalid_request", None),
        LlmError::Connect { .. } => ("connect", None),
        LlmError::Timeout { .. } => ("timeout", None),
        LlmError::Overloaded { status, .. } => ("overloaded", Some(*status)),
        LlmError::RateLimited { .. } => ("rate_limited", Some(429)),
        LlmError::Auth { status, .. } => ("auth", Some(*status)),
        LlmError::ModelNotFound { .. } => ("model_not_found", None),
        LlmError::ContextTooLong { .. } => ("context_too_long", None),
        LlmError::BadRequest { status, .. } => ("bad_request", Some(*status)),
        LlmError::Stream { .. } => ("stream", None),
        LlmError::Decode { .. } => ("decode", None),
        LlmError::ResponseTooLarge { .. } => ("response_too_large", None),
    }
}
