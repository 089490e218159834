//! The seam between the simulator's engine (gate, faults, timing) and an API's wire format:
//! each API implements [`Wire`] to parse its requests and encode its responses, chunks and
//! errors.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::config::{SimConfig, SimOp, SimRequest};

/// One generation in progress, as the encoders need it.
#[derive(Debug, Clone)]
pub(crate) struct Gen {
    pub(crate) model: String,
    pub(crate) op: SimOp,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    /// When the request arrived (for Ollama's `total_duration`).
    pub(crate) started: Instant,
    /// When the first token was produced (for `eval_duration`).
    pub(crate) gen_started: Option<Instant>,
    pub(crate) load_ns: u64,
    pub(crate) id: String,
    pub(crate) created: u64,
    /// OpenAI `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    /// `stop`, or `length` when `max_tokens` cut the reply.
    pub(crate) finish_reason: &'static str,
}

impl Gen {
    pub(crate) fn total_ns(&self) -> u64 {
        nanos(self.started)
    }

    pub(crate) fn eval_ns(&self) -> u64 {
        self.gen_started.map(nanos).unwrap_or(0)
    }
}

fn nanos(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What a request turned out to be.
pub(crate) enum Routed {
    /// An inference request to run through the engine.
    Inference {
        req: SimRequest,
        include_usage: bool,
    },
    /// A request answered directly (listings, unknown paths, malformed bodies).
    Direct(Response),
    /// Ollama's explicit load (`/api/generate` with a model and no prompt) or unload
    /// (`keep_alive: 0`): changes which models are loaded.
    Load { model: String, unload: bool },
    /// Ollama's `/api/pull`: adds the model to the served list.
    Pull { model: String },
}

/// An API's wire format.
pub(crate) trait Wire: Send + Sync {
    /// Parses an inference request or answers any other request. `loaded` lists the models
    /// used so far (Ollama's `/api/ps`).
    fn route(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        cfg: &SimConfig,
        loaded: &[String],
    ) -> Routed;
    /// The credential a request presents (default: `Authorization: Bearer <key>`).
    fn credential(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
    }
    /// A response refusing a request whose headers the API requires but misses (Anthropic's
    /// `anthropic-version`); `None` when the headers are acceptable.
    fn check_headers(&self, _headers: &HeaderMap) -> Option<Response> {
        None
    }
    /// 401. `presented` is the token the client sent, if any.
    fn unauthorized(&self, presented: Option<&str>) -> Response;
    /// 404 for an unknown model.
    fn model_not_found(&self, model: &str) -> Response;
    /// 429, with `Retry-After` when given.
    fn rate_limited(&self, retry_after: Option<&str>) -> Response;
    /// 503.
    fn overloaded(&self) -> Response;
    /// Content type of a streamed response.
    fn stream_content_type(&self) -> &'static str;
    /// Frames before the first token.
    fn stream_start(&self, g: &Gen) -> Vec<Bytes>;
    /// One token's frame.
    fn stream_token(&self, g: &Gen, token: &str) -> Bytes;
    /// Frames that finish a stream (final chunk, usage, terminator).
    fn stream_end(&self, g: &Gen) -> Vec<Bytes>;
    /// An error frame inside a 200 stream.
    fn stream_error(&self) -> Bytes;
    /// The body of a whole, non-streamed generation.
    fn complete(&self, g: &Gen, text: &str) -> Value;
    /// The body of an embeddings response.
    fn embeddings(&self, g: &Gen, vectors: Vec<Vec<f32>>) -> Value;
    /// An error object served with status 200 (non-streamed `StreamError`).
    fn error_object(&self) -> Value;
}

/// A JSON response.
pub(crate) fn json(status: u16, body: &Value) -> Response {
    raw(
        status,
        "application/json; charset=utf-8",
        body.to_string(),
        &[],
    )
}

/// A response with a raw body and extra headers. Invalid statuses or headers become 500s
/// rather than panics: a test that asks for nonsense sees it fail.
pub(crate) fn raw(
    status: u16,
    content_type: &str,
    body: impl Into<Body>,
    headers: &[(String, String)],
) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    for (k, v) in headers {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                resp.headers_mut().append(k, v);
            }
            _ => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    resp
}

/// Splits a reply into "tokens": words with their trailing whitespace.
pub(crate) fn tokens(text: &str) -> Vec<String> {
    text.split_inclusive(char::is_whitespace)
        .map(str::to_owned)
        .collect()
}

/// A rough prompt token count: whitespace-separated words, at least 1.
pub(crate) fn count_tokens(text: &str) -> u64 {
    (text.split_whitespace().count() as u64).max(1)
}

/// Prompt tokens of a request (reported as `prompt_eval_count` / `usage.prompt_tokens`).
pub(crate) fn prompt_tokens(req: &SimRequest) -> u64 {
    match req.op {
        SimOp::Embed => req.inputs.iter().map(|i| count_tokens(i)).sum(),
        _ => count_tokens(&req.prompt) + req.system.as_deref().map_or(0, count_tokens),
    }
}

/// Seconds since the epoch.
pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `SystemTime` as RFC 3339 in UTC with nanoseconds (Ollama's `created_at`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Text of an OpenAI-style `content` (string or parts) and the number of image parts.
pub(crate) fn content_text(content: &Value) -> (String, usize) {
    match content {
        Value::String(s) => (s.clone(), 0),
        Value::Array(parts) => {
            let mut text = Vec::new();
            let mut images = 0;
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            text.push(t);
                        }
                    }
                    Some("image_url") | Some("input_image") => images += 1,
                    _ => {}
                }
            }
            (text.join("\n"), images)
        }
        _ => (String::new(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        let t = UNIX_EPOCH + Duration::new(1_445_412_480, 5);
        assert_eq!(rfc3339(t), "2015-10-21T07:28:00.000000005Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339(leap).starts_with("2000-02-29T00:00:00"));
    }

    #[test]
    fn tokenising() {
        assert_eq!(tokens("a bc  d"), vec!["a ", "bc ", " ", "d"]);
        assert_eq!(tokens("a bc  d").concat(), "a bc  d");
        assert!(tokens("").is_empty());
        assert_eq!(count_tokens(""), 1);
        assert_eq!(count_tokens("one two three"), 3);
    }
}
