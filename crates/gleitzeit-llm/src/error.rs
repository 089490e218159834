//! [`LlmError`]: what went wrong in a call, classified so a caller can decide what to do next
//! ([`LlmError::class`]): try again (here or on another endpoint), wait first, or give up.
//!
//! Messages that come from a server are truncated and scrubbed of the endpoint's key before
//! they are stored in an error, so no error text carries a credential.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use crate::ratelimit;
use crate::secret::Secret;

/// Longest server message kept in an error.
const MAX_MESSAGE_CHARS: usize = 1000;

/// A failed call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The endpoint configuration cannot be used (bad URL, client cannot be built). Fatal.
    #[error("invalid endpoint configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// The request cannot be sent as it is (for example an embed request without inputs).
    /// Fatal.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },
    /// No connection, or it broke before a response arrived (refused, reset, DNS). Retryable.
    #[error("connection failed: {message}")]
    Connect {
        /// The transport's description.
        message: String,
    },
    /// The call took longer than its limit. Retryable.
    #[error("timed out {}", if *before_first_byte { "before the response started" } else { "while reading the response" })]
    Timeout {
        /// No part of the response had arrived when the limit expired.
        before_first_byte: bool,
    },
    /// The server is overloaded or failing (5xx, Ollama's 503 when its queue is full).
    /// Retryable, preferably on another endpoint.
    #[error("endpoint overloaded or failing (HTTP {status}): {message}")]
    Overloaded {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// HTTP 429. Retry after `retry_after` when the server said how long.
    #[error("rate limited{}: {message}", retry_after.map(|d| format!(" (retry after {:.3}s)", d.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        /// From `Retry-After` (seconds or HTTP date), `retry-after-ms` or `x-ratelimit-reset-*`.
        retry_after: Option<Duration>,
        /// The server's message.
        message: String,
    },
    /// HTTP 401/403: the key is missing, wrong or lacks permission. Fatal.
    #[error("authentication failed (HTTP {status}): {message}")]
    Auth {
        /// HTTP status.
        status: u16,
        /// The server's message, scrubbed of the key.
        message: String,
    },
    /// The endpoint does not have the model (404, or an error saying so). Fatal on this
    /// endpoint.
    #[error("model {model:?} not found")]
    ModelNotFound {
        /// The model asked for.
        model: String,
    },
    /// The input does not fit the model's context window. Fatal.
    #[error("context length exceeded: {message}")]
    ContextTooLong {
        /// The server's message.
        message: String,
    },
    /// Any other 4xx: the request is wrong and sending it again will not help. Fatal.
    #[error("bad request (HTTP {status}): {message}")]
    BadRequest {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server reported an error inside a successful (200) stream, or the stream ended
    /// before its final chunk. Partial output is discarded. Retryable.
    #[error("stream failed: {message}")]
    Stream {
        /// What happened.
        message: String,
    },
    /// A successful response could not be understood. Retryable (a proxy or a restarting
    /// server can garble one response).
    #[error("cannot decode response: {message}")]
    Decode {
        /// What could not be parsed.
        message: String,
    },
    /// The response body exceeded the endpoint's `max_response_bytes`. Fatal: the same request
    /// would produce a response as large again.
    #[error("response larger than {limit} bytes")]
    ResponseTooLarge {
        /// The configured cap.
        limit: u64,
    },
}

/// What a caller should do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again, on this or another endpoint.
    Retry,
    /// Try again, but not before this much time has passed (on this endpoint).
    RetryAfter(Duration),
    /// Do not retry: the same request will fail the same way.
    Fatal,
}

impl LlmError {
    /// The caller's next step. Model-not-found is fatal because each endpoint is called on its
    /// own; a router that knows other endpoints serve the model may try them instead.
    pub fn class(&self) -> ErrorClass {
        match self {
            LlmError::Connect { .. }
            | LlmError::Timeout { .. }
            | LlmError::Overloaded { .. }
            | LlmError::Stream { .. }
            | LlmError::Decode { .. } => ErrorClass::Retry,
            LlmError::RateLimited { retry_after, .. } => match retry_after {
                Some(d) => ErrorClass::RetryAfter(*d),
                None => ErrorClass::Retry,
            },
            LlmError::Config { .. }
            | LlmError::InvalidRequest { .. }
            | LlmError::Auth { .. }
            | LlmError::ModelNotFound { .. }
            | LlmError::ContextTooLong { .. }
            | LlmError::BadRequest { .. }
            | LlmError::ResponseTooLarge { .. } => ErrorClass::Fatal,
        }
    }

    /// Whether retrying can help at all.
    pub fn is_retryable(&self) -> bool {
        !matches!(self.class(), ErrorClass::Fatal)
    }

    /// Whether the server said it is overloaded rather than that the call failed: 503 (an
    /// Ollama whose queue is full answers "server busy"), 529 (Anthropic's "overloaded"), or
    /// any 5xx whose message says the server is busy, overloaded or still loading the model.
    pub fn is_overload(&self) -> bool {
        match self {
            LlmError::Overloaded { status, message } => {
                matches!(*status, 503 | 529) || says_busy(message)
            }
            _ => false,
        }
    }

    /// Whether this is trouble of the endpoint, not of the task: the server refused or lost
    /// the connection before answering, is overloaded ([`LlmError::is_overload`]) or rate
    /// limited the call. Such an attempt says nothing about the task, so a caller should wait
    /// and try again without counting it as one of the task's attempts.
    pub fn is_endpoint_trouble(&self) -> bool {
        match self {
            LlmError::Connect { .. } | LlmError::RateLimited { .. } => true,
            LlmError::Overloaded { .. } => self.is_overload(),
            _ => false,
        }
    }
}

/// Whether a server's message says it is busy or not ready yet (Ollama: "server busy,
/// please try again", "loading model"; OpenAI-compatible servers: "overloaded").
fn says_busy(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "server busy",
        "overloaded",
        "loading model",
        "model is loading",
        "try again later",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Classifies a non-success HTTP response.
///
/// `message` is the server's error text (already extracted from its JSON shape); it is scrubbed
/// of `secret` and truncated here.
pub(crate) fn from_status(
    status: u16,
    message: &str,
    model: &str,
    headers: &HeaderMap,
    secret: Option<&Secret>,
) -> LlmError {
    let message = clean_message(message, secret);
    match status {
        401 | 403 => LlmError::Auth { status, message },
        404 => LlmError::ModelNotFound {
            model: model.to_owned(),
        },
        429 => LlmError::RateLimited {
            retry_after: ratelimit::retry_after(headers, SystemTime::now()),
            message,
        },
        _ if says_context_too_long(&message) && (400..=500).contains(&status) => {
            LlmError::ContextTooLong { message }
        }
        _ if says_model_not_found(&message) && (400..=500).contains(&status) => {
            LlmError::ModelNotFound {
                model: model.to_owned(),
            }
        }
        408 | 500..=599 => LlmError::Overloaded { status, message },
        _ => LlmError::BadRequest { status, message },
    }
}

/// Scrubs the key out of a server message and bounds its length.
pub(crate) fn clean_message(message: &str, secret: Option<&Secret>) -> String {
    let scrubbed = match secret {
        Some(s) => s.scrub(message),
        None => message.to_owned(),
    };
    let trimmed = scrubbed.trim();
    if trimmed.chars().count() > MAX_MESSAGE_CHARS {
        let mut short: String = trimmed.chars().take(MAX_MESSAGE_CHARS).collect();
        short.push('…');
        short
    } else {
        trimmed.to_owned()
    }
}

/// Recognises "the input is longer than the context window" across servers: OpenAI's
/// `context_length_exceeded`, vLLM's "maximum context length", llama.cpp's "exceeds the
/// available context size", Ollama's "input length exceeds the context length".
fn says_context_too_long(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("context length")
        || m.contains("context_length")
        || m.contains("context size")
        || m.contains("context window")
        || m.contains("exceed_context")
        // Anthropic: "prompt is too long: 210000 tokens > 200000 maximum".
        || m.contains("prompt is too long")
}

/// Recognises an error body saying the model does not exist (some servers answer 400 or 500
/// instead of 404).
fn says_model_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("model")
        && (m.contains("not found") || m.contains("does not exist") || m.contains("not_found"))
}

/// Extracts the human message from an error body: Ollama's `{"error": "..."}`, OpenAI's
/// `{"error": {"message": ...}}`, `{"message": ...}` / `{"detail": ...}` of other servers, or
/// the raw text.
pub(crate) fn error_body_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(m) = json_error_message(&v) {
            return m;
        }
    }
    String::from_utf8_lossy(body).into_owned()
}

/// The message of a JSON error object, if `v` is one.
pub(crate) fn json_error_message(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    if let Some(err) = v.get("error") {
        return match err {
            Value::Object(o) => o
                .get("message")
                .and_then(text)
                .or_else(|| Some(err.to_string())),
            other => text(other),
        };
    }
    v.get("message")
        .and_then(text)
        .or_else(|| v.get("detail").and_then(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_classes() {
        let h = HeaderMap::new();
        let c = |status, msg: &str| from_status(status, msg, "m", &h, None);
        assert!(matches!(c(401, "x"), LlmError::Auth { status: 401, .. }));
        assert!(matches!(c(403, "x"), LlmError::Auth { status: 403, .. }));
        assert_eq!(
            c(404, "whatever"),
            LlmError::ModelNotFound { model: "m".into() }
        );
        assert_eq!(
            c(400, "model \"m\" not found, try pulling it first"),
            LlmError::ModelNotFound { model: "m".into() }
        );
        assert!(matches!(
            c(400, "This model's maximum context length is 4097 tokens"),
            LlmError::ContextTooLong { .. }
        ));
        assert!(matches!(
            c(400, "the request exceeds the available context size"),
            LlmError::ContextTooLong { .. }
        ));
        assert!(matches!(
            c(422, "bad field"),
            LlmError::BadRequest { status: 422, .. }
        ));
        assert!(matches!(
            c(503, "busy"),
            LlmError::Overloaded { status: 503, .. }
        ));
        assert!(matches!(
            c(500, "boom"),
            LlmError::Overloaded { status: 500, .. }
        ));
        assert!(matches!(
            c(429, "slow down"),
            LlmError::RateLimited {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn classes() {
        let d = Duration::from_secs(3);
        assert_eq!(
            LlmError::RateLimited {
                retry_after: Some(d),
                message: String::new()
            }
            .class(),
            ErrorClass::RetryAfter(d)
        );
        assert_eq!(
            LlmError::Timeout {
                before_first_byte: true
            }
            .class(),
            ErrorClass::Retry
        );
        assert_eq!(
            LlmError::ModelNotFound { model: "x".into() }.class(),
            ErrorClass::Fatal
        );
        assert!(!LlmError::ResponseTooLarge { limit: 1 }.is_retryable());
        assert!(LlmError::Stream {
            message: String::new()
        }
        .is_retryable());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(error_body_message(br#"{"error":"model x"}"#), "model x");
        assert_eq!(
            error_body_message(br#"{"error":{"message":"Bad key","type":"invalid_request_error","code":"invalid_api_key"}}"#),
            "Bad key"
        );
        assert_eq!(error_body_message(br#"{"detail":"nope"}"#), "nope");
        assert_eq!(error_body_message(b"plain text"), "plain text");
    }

    #[test]
    fn messages_are_scrubbed_and_bounded() {
        let s = Secret::new("sk-abc");
        let h = HeaderMap::new();
        let e = from_status(401, "Incorrect API key provided: sk-abc", "m", &h, Some(&s));
        assert!(!e.to_string().contains("sk-abc"));
        assert!(!format!("{e:?}").contains("sk-abc"));
        let long = "x".repeat(5000);
        assert!(clean_message(&long, None).chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
