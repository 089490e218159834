//! The HTTP transport shared by the providers: one pooled `reqwest::Client` per endpoint,
//! bearer authentication, status classification and size-capped body reading.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::{Client, RequestBuilder, Response, Url};

use crate::config::{EndpointConfig, ProviderKind};
use crate::error::{self, LlmError};
use crate::lines::{LineBuffer, SseDecoder, SseEvent};
use crate::ratelimit::RateBudget;
use crate::secret::Secret;

/// How much of an error body is read to find its message; the status already decides the
/// class, so there is no reason to buffer more of a misbehaving server's output.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// Records whether any part of the response has arrived, so a timeout can say whether the
/// server ever answered, and the rate-limit budget a successful answer's headers reported.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    responded: AtomicBool,
    budget: Mutex<Option<RateBudget>>,
}

impl Progress {
    fn mark(&self) {
        self.responded.store(true, Ordering::Relaxed);
    }

    /// The budget the successful answer reported, if any (taken: asked once per call).
    pub(crate) fn take_budget(&self) -> Option<RateBudget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Whether the response status line has arrived.
    pub(crate) fn responded(&self) -> bool {
        self.responded.load(Ordering::Relaxed)
    }
}

/// One endpoint's transport.
#[derive(Debug)]
pub(crate) struct Http {
    client: Client,
    /// Base URL without a trailing slash.
    base: String,
    secret: Option<Secret>,
    max_bytes: u64,
    kind: ProviderKind,
}

/// The Messages API version this client speaks; Anthropic requires the header on every call.
pub(crate) const ANTHROPIC_VERSION: &str = "2023-06-01";

impl Http {
    /// Validates the URL and builds the pooled client.
    pub(crate) fn new(cfg: &EndpointConfig) -> Result<Http, LlmError> {
        let url = Url::parse(&cfg.url).map_err(|e| LlmError::Config {
            message: format!("endpoint {}: invalid url: {e}", cfg.name),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(LlmError::Config {
                message: format!(
                    "endpoint {}: url must be http(s)://host[:port][/path]",
                    cfg.name
                ),
            });
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(LlmError::Config {
                message: format!(
                    "endpoint {}: url must not have a query or fragment",
                    cfg.name
                ),
            });
        }
        let client = Client::builder()
            .connect_timeout(cfg.connect_timeout)
            // Idle pooled connections are closed before typical server keep-alive limits.
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("gleitzeit-llm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Config {
                message: format!(
                    "endpoint {}: cannot build HTTP client: {}",
                    cfg.name,
                    describe(e)
                ),
            })?;
        Ok(Http {
            client,
            base: cfg.url.trim_end_matches('/').to_owned(),
            secret: cfg.api_key.clone(),
            max_bytes: cfg.max_response_bytes,
            kind: cfg.kind,
        })
    }

    /// Whether the base URL already ends in `/v1` (OpenAI-style bases are often written so).
    pub(crate) fn base_ends_with_v1(&self) -> bool {
        self.base.ends_with("/v1")
    }

    /// The key, for scrubbing messages.
    pub(crate) fn secret(&self) -> Option<&Secret> {
        self.secret.as_ref()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs a JSON body; returns the response when its status is 2xx.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        model: &str,
        progress: &Progress,
    ) -> Result<Response, LlmError> {
        self.send(self.client.post(self.url(path)).json(body), model, progress)
            .await
    }

    /// GETs `path`; returns the response when its status is 2xx.
    pub(crate) async fn get(&self, path: &str, progress: &Progress) -> Result<Response, LlmError> {
        self.send(self.client.get(self.url(path)), "", progress)
            .await
    }

    async fn send(
        &self,
        rb: RequestBuilder,
        model: &str,
        progress: &Progress,
    ) -> Result<Response, LlmError> {
        let rb = match (self.kind, &self.secret) {
            (ProviderKind::Anthropic, secret) => {
                let rb = rb.header("anthropic-version", ANTHROPIC_VERSION);
                match secret {
                    Some(s) => match reqwest::header::HeaderValue::from_str(s.expose()) {
                        Ok(mut v) => {
                            // Kept out of the HTTP stack's logs, like the bearer header.
                            v.set_sensitive(true);
                            rb.header("x-api-key", v)
                        }
                        Err(_) => {
                            return Err(LlmError::Config {
                                message: "API key contains characters not allowed in a header"
                                    .into(),
                            })
                        }
                    },
                    None => rb,
                }
            }
            // reqwest marks the header sensitive, so it is not logged by the HTTP stack.
            (_, Some(s)) => rb.bearer_auth(s.expose()),
            (_, None) => rb,
        };
        let resp = rb.send().await.map_err(|e| self.send_error(e))?;
        progress.mark();
        let status = resp.status();
        if status.is_success() {
            // Budget headers come on every answer, not only on 429s: read them here, once
            // for every API.
            *progress.budget.lock().unwrap_or_else(|e| e.into_inner()) =
                RateBudget::from_headers(resp.headers(), SystemTime::now());
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let body = read_prefix(resp, ERROR_BODY_LIMIT).await;
        let message = error::error_body_message(&body);
        Err(error::from_status(
            status.as_u16(),
            &message,
            model,
            &headers,
            self.secret.as_ref(),
        ))
    }

    fn send_error(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            return LlmError::Timeout {
                before_first_byte: true,
            };
        }
        if e.is_builder() {
            return LlmError::Config {
                message: self.scrub(&describe(e)),
            };
        }
        // Refused, reset, DNS failure, or the connection closed before a response.
        LlmError::Connect {
            message: self.scrub(&describe(e)),
        }
    }

    fn scrub(&self, text: &str) -> String {
        error::clean_message(text, self.secret.as_ref())
    }

    /// Reads a whole body, failing with `ResponseTooLarge` past the cap.
    pub(crate) async fn read_body(&self, resp: Response) -> Result<Vec<u8>, LlmError> {
        let mut reader = self.reader(resp)?;
        let mut body = Vec::new();
        while let Some(chunk) = reader.next().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Reads a server-sent-events body (OpenAI and Anthropic streaming), handing each event to
    /// `on_event` until it returns `true` (the API's end marker). Returns whether the end
    /// marker came; a body that ends without it is the caller's stream error. The cap and
    /// the connection reuse of [`Http::reader`] apply.
    pub(crate) async fn read_sse(
        &self,
        resp: Response,
        mut on_event: impl FnMut(&SseEvent) -> Result<bool, LlmError>,
    ) -> Result<bool, LlmError> {
        let mut reader = self.reader(resp)?;
        let mut lines = LineBuffer::default();
        let mut sse = SseDecoder::default();
        let not_utf8 = |_| LlmError::Decode {
            message: "stream line is not UTF-8".into(),
        };
        while let Some(chunk) = reader.next().await? {
            for line in lines.push(&chunk).map_err(not_utf8)? {
                if let Some(event) = sse.line(&line) {
                    if on_event(&event)? {
                        // Drain the rest so the connection goes back to the pool.
                        reader.finish().await;
                        return Ok(true);
                    }
                }
            }
        }
        // The last line may lack its newline, and the last event its blank line.
        let tail = lines.finish().map_err(not_utf8)?;
        let events = tail
            .and_then(|l| sse.line(&l))
            .into_iter()
            .chain(sse.finish());
        for event in events {
            if on_event(&event)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A chunk reader that enforces the cap as bytes arrive.
    pub(crate) fn reader(&self, resp: Response) -> Result<CappedBody<'_>, LlmError> {
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(LlmError::ResponseTooLarge {
                limit: self.max_bytes,
            });
        }
        Ok(CappedBody {
            http: self,
            resp,
            read: 0,
        })
    }
}

/// A response body read chunk by chunk under the endpoint's size cap.
pub(crate) struct CappedBody<'a> {
    http: &'a Http,
    resp: Response,
    read: u64,
}

impl CappedBody<'_> {
    /// The next chunk, `None` at the end of the body.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, LlmError> {
        match self.resp.chunk().await {
            Ok(Some(chunk)) => {
                self.read += chunk.len() as u64;
                if self.read > self.http.max_bytes {
                    return Err(LlmError::ResponseTooLarge {
                        limit: self.http.max_bytes,
                    });
                }
                Ok(Some(chunk))
            }
            Ok(None) => Ok(None),
            Err(e) if e.is_timeout() => Err(LlmError::Timeout {
                before_first_byte: false,
            }),
            Err(e) => Err(LlmError::Stream {
                message: format!(
                    "connection lost while reading the response: {}",
                    self.http.scrub(&describe(e))
                ),
            }),
        }
    }
}

impl CappedBody<'_> {
    /// Ends a stream whose final chunk has been read by reading what follows — normally just
    /// the chunked-encoding terminator, already on its way — so the connection returns to the
    /// pool for the next call instead of being closed. A server that keeps the stream open
    /// after its final chunk is cut off after [`DRAIN_LIMIT`] bytes or [`DRAIN_TIME`]; the
    /// result is unaffected either way.
    pub(crate) async fn finish(mut self) {
        let drain = async {
            let mut read = 0usize;
            while let Ok(Some(chunk)) = self.resp.chunk().await {
                read += chunk.len();
                if read > DRAIN_LIMIT {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
}

/// Most bytes drained after a stream's final chunk.
const DRAIN_LIMIT: usize = 64 * 1024;
/// Longest wait for a stream's end after its final chunk.
const DRAIN_TIME: Duration = Duration::from_millis(250);

/// Reads at most `limit` bytes of a body, ignoring transport errors (used for error bodies,
/// whose status already says what happened).
async fn read_prefix(mut resp: Response, limit: u64) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limit.saturating_sub(body.len() as u64) as usize;
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() as u64 >= limit {
            break;
        }
    }
    body
}

/// Milliseconds since `start`.
pub(crate) fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A transport error with its causes, without the URL (which may carry user info).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
