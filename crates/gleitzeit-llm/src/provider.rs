//! [`Provider`]: a client for one endpoint, speaking that endpoint's API.
//!
//! A provider owns one pooled HTTP client for its whole life, so repeated calls reuse
//! connections. It is `Send + Sync`; share it behind an `Arc`. A multi-endpoint router holds
//! one provider per endpoint and picks among them; everything endpoint-specific lives here.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::config::{EndpointConfig, ProviderKind};
use crate::error::LlmError;
use crate::http::{Http, Progress};
use crate::types::{CallOptions, LlmRequest, LlmResponse, ModelDetails, ModelInfo, Op};
use crate::{anthropic, ollama, openai};

/// A client for one endpoint.
#[derive(Debug)]
pub struct Provider {
    config: EndpointConfig,
    http: Http,
}

impl Provider {
    /// Validates the configuration and builds the endpoint's HTTP client. Fails with
    /// [`LlmError::Config`] for an unusable URL.
    pub fn new(config: EndpointConfig) -> Result<Provider, LlmError> {
        if config.name.trim().is_empty() {
            return Err(LlmError::Config {
                message: "endpoint name must not be empty".into(),
            });
        }
        let http = Http::new(&config)?;
        Ok(Provider { config, http })
    }

    /// The endpoint's configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// The endpoint's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The API the endpoint speaks.
    pub fn kind(&self) -> ProviderKind {
        self.config.kind
    }

    /// Runs one request. The whole call — connecting, sending, reading the full response — is
    /// bounded by `opts.timeout` or the endpoint's `request_timeout`.
    pub async fn call(
        &self,
        req: &LlmRequest,
        opts: &CallOptions,
    ) -> Result<LlmResponse, LlmError> {
        validate(req)?;
        let start = Instant::now();
        let progress = Progress::default();
        let limit = opts.timeout.unwrap_or(self.config.request_timeout);
        let name = self.config.name.as_str();
        let result = bounded(limit, &progress, async {
            match self.config.kind {
                ProviderKind::Ollama => {
                    ollama::call(&self.http, name, req, opts, &progress, start).await
                }
                ProviderKind::OpenAi => {
                    openai::call(&self.http, name, req, opts, &progress, start).await
                }
                ProviderKind::Anthropic => {
                    anthropic::call(&self.http, name, req, opts, &progress, start).await
                }
            }
        })
        .await;
        let result = result.map(|mut r| {
            r.budget = progress.take_budget();
            r
        });
        match &result {
            Ok(r) => tracing::debug!(
                endpoint = name,
                model = %req.model,
                total_ms = r.total_ms,
                ttft_ms = ?r.ttft_ms,
                "llm call finished"
            ),
            Err(e) => {
                tracing::debug!(endpoint = name, model = %req.model, error = %e, "llm call failed")
            }
        }
        result
    }

    /// The models the endpoint offers (Ollama `GET /api/tags`, OpenAI and Anthropic
    /// `GET /v1/models`).
    pub async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        let progress = Progress::default();
        bounded(self.config.request_timeout, &progress, async {
            match self.config.kind {
                ProviderKind::Ollama => ollama::list_models(&self.http, &progress).await,
                ProviderKind::OpenAi => openai::list_models(&self.http, &progress).await,
                ProviderKind::Anthropic => anthropic::list_models(&self.http, &progress).await,
            }
        })
        .await
    }

    /// The models loaded in memory right now (Ollama `GET /api/ps`), for placing work where a
    /// model is already warm; `None` for APIs that do not say.
    pub async fn loaded_models(&self) -> Result<Option<Vec<ModelInfo>>, LlmError> {
        match self.config.kind {
            ProviderKind::OpenAi | ProviderKind::Anthropic => Ok(None),
            ProviderKind::Ollama => {
                let progress = Progress::default();
                bounded(self.config.request_timeout, &progress, async {
                    ollama::loaded_models(&self.http, &progress).await.map(Some)
                })
                .await
            }
        }
    }
}

impl Provider {
    /// A model's details (Ollama `POST /api/show`); `None` for APIs that have no such call.
    pub async fn show(&self, model: &str) -> Result<Option<ModelDetails>, LlmError> {
        if self.config.kind != ProviderKind::Ollama {
            return Ok(None);
        }
        let progress = Progress::default();
        bounded(self.config.request_timeout, &progress, async {
            ollama::show(&self.http, model, &progress).await.map(Some)
        })
        .await
    }

    /// Downloads a model onto the endpoint (Ollama `POST /api/pull`, not streamed), bounded
    /// by `limit`. `false` for APIs that cannot pull.
    pub async fn pull(&self, model: &str, limit: Duration) -> Result<bool, LlmError> {
        if self.config.kind != ProviderKind::Ollama {
            return Ok(false);
        }
        let progress = Progress::default();
        bounded(limit, &progress, ollama::pull(&self.http, model, &progress)).await?;
        Ok(true)
    }

    /// Loads a model into memory without generating anything (Ollama: `/api/generate` with
    /// only the model); `keep_alive` = how long it stays (server default when `None`).
    /// `false` for APIs where loading is not the caller's business.
    pub async fn load(&self, model: &str, keep_alive: Option<&str>) -> Result<bool, LlmError> {
        self.load_or_unload(model, keep_alive, false).await
    }

    /// Unloads a model from memory (Ollama: `keep_alive: 0`). `false` for other APIs.
    pub async fn unload(&self, model: &str) -> Result<bool, LlmError> {
        self.load_or_unload(model, None, true).await
    }

    async fn load_or_unload(
        &self,
        model: &str,
        keep_alive: Option<&str>,
        unload: bool,
    ) -> Result<bool, LlmError> {
        if self.config.kind != ProviderKind::Ollama {
            return Ok(false);
        }
        let progress = Progress::default();
        bounded(
            self.config.request_timeout,
            &progress,
            ollama::load(&self.http, model, keep_alive, unload, &progress),
        )
        .await?;
        Ok(true)
    }
}

/// Applies the whole-call limit; on expiry reports whether the response had started.
async fn bounded<T>(
    limit: Duration,
    progress: &Progress,
    fut: impl Future<Output = Result<T, LlmError>>,
) -> Result<T, LlmError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(LlmError::Timeout {
            before_first_byte: !progress.responded(),
        }),
    }
}

/// Rejects requests no server could answer, before any network traffic.
fn validate(req: &LlmRequest) -> Result<(), LlmError> {
    let invalid = |message: &str| {
        Err(LlmError::InvalidRequest {
            message: message.to_owned(),
        })
    };
    if req.model.trim().is_empty() {
        return invalid("model must not be empty");
    }
    match &req.op {
        Op::Embed { inputs } if inputs.is_empty() => invalid("embed needs at least one input"),
        Op::Chat { messages, .. } if messages.is_empty() => {
            invalid("chat needs at least one message")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configs_are_refused() {
        for url in ["not a url", "ftp://h/x", "http://h:1/?q=1", "unix:/tmp/x"] {
            let r = Provider::new(EndpointConfig::new("e", url, ProviderKind::Ollama));
            assert!(matches!(r, Err(LlmError::Config { .. })), "{url}");
        }
        assert!(matches!(
            Provider::new(EndpointConfig::new(" ", "http://h", ProviderKind::Ollama)),
            Err(LlmError::Config { .. })
        ));
        assert!(Provider::new(EndpointConfig::new(
            "e",
            "https://h:8/v1/",
            ProviderKind::OpenAi
        ))
        .is_ok());
    }

    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn futures_are_send_and_providers_shareable() {
        // Callers box the call future (`BoxFuture`) and share providers across tasks.
        assert_send_sync::<Provider>();
        let p = Provider::new(EndpointConfig::new(
            "e",
            "http://127.0.0.1:1",
            ProviderKind::Ollama,
        ))
        .unwrap();
        let req = LlmRequest::generate("m", "p");
        let opts = CallOptions::default();
        assert_send(&p.call(&req, &opts));
        assert_send(&p.list_models());
        assert_send(&p.loaded_models());
    }

    #[tokio::test]
    async fn invalid_requests_fail_without_a_call() {
        // Port 1 on loopback: a call would fail with Connect, so InvalidRequest proves no call.
        let p = Provider::new(EndpointConfig::new(
            "e",
            "http://127.0.0.1:1",
            ProviderKind::Ollama,
        ))
        .unwrap();
        let opts = CallOptions::default();
        for req in [
            LlmRequest::embed("m", vec![]),
            LlmRequest::chat("m", vec![]),
            LlmRequest::generate("", "p"),
        ] {
            assert!(matches!(
                p.call(&req, &opts).await,
                Err(LlmError::InvalidRequest { .. })
            ));
        }
    }
}
