//! Error classification: what a routed call's failure means for the task (retry, defer or
//! fail).

use gleitzeit_core::FailureKind;
use gleitzeit_llm::{ErrorClass, LlmError, RouteError};
use serde_json::{json, Value};

use crate::executor::ExecFailure;

/// Maps a routed call's failure to the retry decision.
pub(crate) fn classify_route(err: &RouteError) -> ExecFailure {
    match err {
        // Every endpoint the call reached refused, lost the connection, was overloaded or
        // rate limited it: the task itself was never tried, so it waits without using an
        // attempt, and its error names every endpoint with its error.
        RouteError::Call { .. } if err.is_endpoint_trouble() => endpoint_trouble(err),
        RouteError::Call {
            endpoint, error, ..
        } => classify(error, endpoint),
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

/// A deferral for a call that met only endpoint trouble: the detail lists each endpoint's
/// error; the wait is at least until the router expects any endpoint for the model to be
/// usable again (the first hold, `Retry-After` or budget reset to end), so a long hold costs
/// one deferral, not one per backoff step.
fn endpoint_trouble(err: &RouteError) -> ExecFailure {
    let errors = err.endpoint_errors();
    let endpoints: Vec<Value> = errors
        .iter()
        .map(|(endpoint, e)| {
            let (name, status) = error_name(e);
            let mut d = json!({"endpoint": endpoint, "error": name, "status": status, "message": e.to_string()});
            if let LlmError::RateLimited {
                retry_after: Some(wait),
                ..
            } = e
            {
                d["retry_after_ms"] = json!(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
            }
            d
        })
        .collect();
    let mut f = ExecFailure::deferred(format!("no endpoint could take the task: {err}"))
        .with_detail(json!({"error": "endpoint_trouble", "endpoints": endpoints}));
    f.min_retry_delay = err.retry_in();
    f
}
