//! Clients for LLM endpoints: Ollama's native API, the OpenAI-compatible API and Anthropic's
//! Messages API.
//!
//! A [`Provider`] talks to one endpoint ([`EndpointConfig`]): it sends a provider-neutral
//! [`LlmRequest`] (generate, chat, vision, embed) and returns an [`LlmResponse`] with the text
//! or embeddings, the model, token counts and timings (total, model load, time to first
//! token) and the rate-limit budget the endpoint reported left ([`RateBudget`]). Failures are [`LlmError`]s whose [`LlmError::class`] tells the caller whether to
//! retry, wait, or give up — the basis for retries and for routing over many endpoints.
//!
//! A [`Router`] spreads calls over many endpoints: strategies, in-flight slots that can be
//! shared by a fleet ([`Slots`]), failover by error class, circuit breakers and
//! backpressure.
//!
//! [`spec`] holds the endpoints as operators write them (a worker's file configuration, the
//! endpoints published to a fleet) and the rules they are checked against.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gleitzeit_llm::LlmError> {
//! use gleitzeit_llm::{CallOptions, EndpointConfig, LlmRequest, Provider, ProviderKind};
//! let ollama = Provider::new(EndpointConfig::new(
//!     "local",
//!     "http://localhost:11434",
//!     ProviderKind::Ollama,
//! ))?;
//! let reply = ollama
//!     .call(&LlmRequest::generate("llama3.2", "Why is the sky blue?"), &CallOptions::default())
//!     .await?;
//! println!("{} ({:?} ms to first token)", reply.text.unwrap_or_default(), reply.ttft_ms);
//! # Ok(())
//! # }
//! ```

mod anthropic;
mod config;
mod error;
mod http;
mod image;
mod lines;
mod ollama;
mod openai;
mod provider;
mod ratelimit;
pub mod router;
mod secret;
pub mod spec;
mod types;

pub use anthropic::DEFAULT_MAX_TOKENS;
pub use config::{
    EndpointConfig, ProviderKind, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
};
pub use error::{ErrorClass, LlmError};
pub use provider::Provider;
pub use ratelimit::{BudgetLine, RateBudget};
pub use router::{
    EndpointModels, EndpointStatus, HealthReport, LocalModelState, LocalSlots, ModelDemand,
    ModelMark, ModelStateStore, PulledModel, RouteError, RouteTarget, Router, RouterConfig,
    Selection, SlotCandidate, SlotError, SlotGrant, SlotOutcome, SlotPick, Slots, StoreError,
    Strategy,
};
pub use secret::{Secret, REDACTED};
pub use spec::{EndpointKind, EndpointRouting, EndpointSpec, PublishedEndpoint, SpecProblem};
pub use types::{
    CallOptions, GenOptions, LlmRequest, LlmResponse, Message, ModelDetails, ModelInfo, Op,
};
