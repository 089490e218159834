//! What a simulator is configured with, what it records, and the faults it can inject.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Computes a reply's text from the request.
pub type ReplyFn = Arc<dyn Fn(&SimRequest) -> String + Send + Sync>;

/// How a simulator answers generate and chat requests.
#[derive(Clone)]
pub enum Reply {
    /// `"{model}: {prompt}"`, truncated to `max_chars` characters ([`echo_reply`]).
    Echo {
        /// Longest reply.
        max_chars: usize,
    },
    /// A function of the request.
    Func(ReplyFn),
}

impl Reply {
    /// A reply computed by `f`.
    pub fn func(f: impl Fn(&SimRequest) -> String + Send + Sync + 'static) -> Reply {
        Reply::Func(Arc::new(f))
    }

    pub(crate) fn text(&self, req: &SimRequest) -> String {
        match self {
            Reply::Echo { max_chars } => echo_reply(req, *max_chars),
            Reply::Func(f) => f(req),
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Echo { max_chars } => write!(f, "Echo {{ max_chars: {max_chars} }}"),
            Reply::Func(_) => f.write_str("Func(..)"),
        }
    }
}

/// The default reply: `"{model}: {prompt}"` truncated to `max_chars` characters.
pub fn echo_reply(req: &SimRequest, max_chars: usize) -> String {
    format!("{}: {}", req.model, req.prompt)
        .chars()
        .take(max_chars)
        .collect()
}

/// A deterministic unit vector of `dims` dimensions derived from `text` (SHA-256 in counter
/// mode): equal texts get equal vectors, different texts different ones.
pub fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(dims);
    let mut counter = 0u32;
    while out.len() < dims {
        let digest = Sha256::new()
            .chain_update(counter.to_le_bytes())
            .chain_update(text.as_bytes())
            .finalize();
        for word in digest.chunks_exact(4) {
            if out.len() == dims {
                break;
            }
            let n = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            out.push((n as f64 / u32::MAX as f64 * 2.0 - 1.0) as f32);
        }
        counter += 1;
    }
    let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut out {
            *x /= norm;
        }
    }
    out
}

/// A simulator's behaviour. Everything can also be changed while it runs
/// ([`crate::llm::SimServer::update_config`]).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Models the server has. Empty: every model name is served (and none is listed).
    pub models: Vec<String>,
    /// Delay before a response starts.
    pub latency: Duration,
    /// Delay before each generated token (streamed or not).
    pub token_delay: Duration,
    /// Extra delay whenever a model is loaded: on first use, and again after it was evicted
    /// or unloaded (reported as Ollama's `load_duration`).
    pub load_delay: Duration,
    /// Most models loaded at once; loading one more evicts the least recently used.
    /// 0 = unlimited.
    pub max_loaded: usize,
    /// How generate and chat requests are answered.
    pub reply: Reply,
    /// Dimensions of the embeddings returned.
    pub embedding_dims: usize,
    /// When set, every request must carry `Authorization: Bearer <api_key>` (401 otherwise).
    pub api_key: Option<String>,
    /// Extra headers on every inference answer that is not a fault (for example a
    /// rate-limit budget); a [`Fault::Headers`] adds its own after these.
    pub headers: Vec<(String, String)>,
    /// When set, the gate ([`crate::llm::SimServer::hold`]) also holds model load and
    /// unload requests (Ollama's `/api/generate` without a prompt, and with `keep_alive: 0`),
    /// counted in [`Counters::held`] like inference requests, so a test can look at the
    /// fleet while one is under way.
    pub gate_loads: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            models: Vec::new(),
            latency: Duration::ZERO,
            token_delay: Duration::ZERO,
            load_delay: Duration::ZERO,
            max_loaded: 0,
            reply: Reply::Echo { max_chars: 200 },
            embedding_dims: 8,
            api_key: None,
            headers: Vec::new(),
            gate_loads: false,
        }
    }
}

impl SimConfig {
    /// Holds model loads and unloads at the gate too ([`SimConfig::gate_loads`]).
    pub fn with_gated_loads(mut self) -> Self {
        self.gate_loads = true;
        self
    }

    /// Serves exactly these models.
    pub fn with_models<S: Into<String>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the delay before each response.
    pub fn with_latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// Sets the delay before each token.
    pub fn with_token_delay(mut self, d: Duration) -> Self {
        self.token_delay = d;
        self
    }

    /// Sets the delay paid on every model load.
    pub fn with_load_delay(mut self, d: Duration) -> Self {
        self.load_delay = d;
        self
    }

    /// Sets the most models loaded at once (0 = unlimited).
    pub fn with_max_loaded(mut self, n: usize) -> Self {
        self.max_loaded = n;
        self
    }

    /// Sets the reply.
    pub fn with_reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }

    /// Adds a header to every inference answer that is not a fault.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Requires this bearer token.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    pub(crate) fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimOp {
    /// Ollama `/api/generate`.
    Generate,
    /// Ollama `/api/chat` or OpenAI `/v1/chat/completions`.
    Chat,
    /// Ollama `/api/embed` or OpenAI `/v1/embeddings`.
    Embed,
}

/// An inference request as the reply function sees it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// The operation.
    pub op: SimOp,
    /// The model asked for.
    pub model: String,
    /// The generate prompt, the last user message, or the embedding inputs joined by `\n`.
    pub prompt: String,
    /// The system prompt, if any.
    pub system: Option<String>,
    /// Embedding inputs (embed only).
    pub inputs: Vec<String>,
    /// Number of images attached.
    pub images: usize,
    /// Whether a streamed response was asked for.
    pub stream: bool,
    /// Most tokens to generate, when the request limits them.
    pub max_tokens: Option<u64>,
    /// The JSON body.
    pub body: Value,
}

/// A request as received.
#[derive(Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path (without query).
    pub path: String,
    /// Headers, names lowercase. `Debug` redacts credentials.
    pub headers: Vec<(String, String)>,
    /// The body as JSON, when it was JSON.
    pub body: Option<Value>,
}

impl RecordedRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `body[key]`, or `Null`.
    pub fn json(&self, key: &str) -> &Value {
        self.body
            .as_ref()
            .and_then(|b| b.get(key))
            .unwrap_or(&Value::Null)
    }
}

fn is_secret_header(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "proxy-authorization" | "x-api-key" | "api-key" | "cookie"
    )
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_header(k) {
                    "[REDACTED]"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &headers)
            .field("body", &self.body)
            .finish()
    }
}

/// A fault injected into an inference request (from the queue, or by poison).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and raw JSON (or text) body.
    Status(u16, String),
    /// Answer with this status, headers and raw body.
    Response {
        /// HTTP status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Raw body.
        body: String,
    },
    /// 429 in the API's error shape, with `Retry-After: <value>` when given (seconds or an
    /// HTTP date, verbatim).
    RateLimit {
        /// The `Retry-After` header value.
        retry_after: Option<String>,
    },
    /// 503 in the API's error shape (Ollama's "server busy").
    Overloaded,
    /// Close the connection without any response.
    DropConnection,
    /// A 200 stream: `after_chunks` content chunks, then an error line/event. Non-streamed
    /// requests get a 200 body that is an error object.
    StreamError {
        /// Content chunks sent first.
        after_chunks: usize,
    },
    /// A 200 stream that ends cleanly after `after_chunks` content chunks, without its final
    /// chunk (`done` / `[DONE]`). Non-streamed requests get half a JSON body.
    StreamCut {
        /// Content chunks sent first.
        after_chunks: usize,
    },
    /// A 200 stream whose connection breaks after `after_chunks` content chunks.
    StreamReset {
        /// Content chunks sent first.
        after_chunks: usize,
    },
    /// Wait this long (in addition to the latency), then answer normally.
    Delay(std::time::Duration),
    /// Answer normally, with these extra headers (for example the rate-limit budget an API
    /// reports on successful answers: `x-ratelimit-remaining-requests`, …).
    Headers(Vec<(String, String)>),
    /// 404 "model not found" in the API's shape, whatever the model.
    ModelNotFound,
    /// 401 in the API's shape.
    Unauthorized,
}

/// Request counters; inference requests only, except `loads` (which also counts explicit
/// loads through `/api/generate` without a prompt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Inference requests received.
    pub received: u64,
    /// Inference requests whose response has not finished.
    pub in_flight: u64,
    /// Highest `in_flight` seen.
    pub max_in_flight: u64,
    /// Requests waiting at the closed gate.
    pub held: u64,
    /// Inference requests whose response finished (or whose client went away).
    pub finished: u64,
    /// TCP connections accepted (shows whether a client reuses connections).
    pub connections: u64,
    /// Model loads (first use, reload after eviction or unload, explicit loads).
    pub loads: u64,
}

/// One model load of a simulator: first use, reload after eviction or unload, or an explicit
/// load request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadEvent {
    /// The model loaded.
    pub model: String,
    /// Unix ms when the load began.
    pub started_ms: u64,
    /// How long it takes (the configured `load_delay` at the time).
    pub duration: Duration,
}

impl LoadEvent {
    /// Unix ms when the load is over.
    pub fn done_ms(&self) -> u64 {
        self.started_ms
            .saturating_add(u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello", 16);
        assert_eq!(a.len(), 16);
        assert_eq!(a, embedding("hello", 16));
        assert_ne!(a, embedding("hello!", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(embedding("x", 40).len(), 40);
    }

    #[test]
    fn recorded_request_debug_hides_credentials() {
        let r = RecordedRequest {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![
                ("authorization".into(), "Bearer sk-secret".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: None,
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("application/json"));
        assert_eq!(r.header("Authorization"), Some("Bearer sk-secret"));
    }

    #[test]
    fn echo_truncates_by_characters() {
        let req = SimRequest {
            op: SimOp::Generate,
            model: "m".into(),
            prompt: "äöü".repeat(10),
            system: None,
            inputs: vec![],
            images: 0,
            stream: true,
            max_tokens: None,
            body: Value::Null,
        };
        assert_eq!(echo_reply(&req, 5), "m: äö");
        assert_eq!(echo_reply(&req, 1000).chars().count(), 33);
    }
}
