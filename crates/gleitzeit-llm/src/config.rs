//! One endpoint's configuration: where it is, which API it speaks, its credential and limits.
//!
//! A router over many endpoints keeps one [`crate::Provider`] per [`EndpointConfig`]; the name is
//! what results, metrics and errors report, never the URL's credentials.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Default cap on one response body (16 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// Default limit for establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for one whole call (request sent, response fully read).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The HTTP API an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Ollama's native API (`/api/generate`, `/api/chat`, `/api/embed`, `/api/tags`).
    Ollama,
    /// The OpenAI-compatible API (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`),
    /// spoken by OpenAI, llama.cpp's server, vLLM and others.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API (`/v1/messages`, `x-api-key`, `anthropic-version`), also
    /// spoken by llama.cpp's server.
    Anthropic,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Ollama => "ollama",
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
        })
    }
}

/// One endpoint. `Debug` is safe to log: the key is a [`Secret`].
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Unique name, reported in responses and logs.
    pub name: String,
    /// Base URL, for example `http://localhost:11434` or `https://api.openai.com`. For OpenAI a
    /// base that already ends in `/v1` is accepted too.
    pub url: String,
    /// Which API the endpoint speaks.
    pub kind: ProviderKind,
    /// Sent as `Authorization: Bearer <key>` (Anthropic: `x-api-key: <key>`) when present.
    pub api_key: Option<Secret>,
    /// Limit for establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Limit for one whole call; [`crate::CallOptions::timeout`] overrides it per call.
    pub request_timeout: Duration,
    /// Largest response body read; a larger one fails with
    /// [`crate::LlmError::ResponseTooLarge`] instead of growing memory without bound.
    pub max_response_bytes: u64,
}

impl EndpointConfig {
    /// A configuration with default timeouts and cap and no key.
    pub fn new(name: impl Into<String>, url: impl Into<String>, kind: ProviderKind) -> Self {
        EndpointConfig {
            name: name.into(),
            url: url.into(),
            kind,
            api_key: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets the whole-call timeout.
    pub fn with_request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Sets the response size cap.
    pub fn with_max_response_bytes(mut self, bytes: u64) -> Self {
        self.max_response_bytes = bytes;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_config_hides_the_key() {
        let cfg = EndpointConfig::new("cloud", "https://api.example", ProviderKind::OpenAi)
            .with_api_key(Secret::new("sk-live-abcdef"));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("sk-live-abcdef"), "{shown}");
        assert!(shown.contains("cloud"));
    }

    #[test]
    fn defaults() {
        let cfg = EndpointConfig::new("a", "http://x", ProviderKind::Ollama);
        assert_eq!(cfg.max_response_bytes, 16 * 1024 * 1024);
        assert_eq!(cfg.api_key, None);
        assert_eq!(ProviderKind::OpenAi.to_string(), "openai");
        assert_eq!(
            serde_json::from_str::<ProviderKind>("\"openai\"").unwrap(),
            ProviderKind::OpenAi
        );
        assert_eq!(
            serde_json::from_str::<ProviderKind>("\"anthropic\"").unwrap(),
            ProviderKind::Anthropic
        );
        assert_eq!(ProviderKind::Anthropic.to_string(), "anthropic");
    }
}
