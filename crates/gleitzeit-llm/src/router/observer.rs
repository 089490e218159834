//! Call observation: a hook the [`Router`](super::Router) calls once per attempt on an
//! endpoint and whenever an endpoint's breaker state changes, so the embedding program can
//! export metrics without this crate depending on a metrics library.
//!
//! Every method of [`CallObserver`] has a no-op default; the router holds a no-op observer
//! until [`Router::with_observer`](super::Router::with_observer) sets one. Observers are
//! called on the request path, so they must be cheap and must not block.

use std::sync::atomic::AtomicU8;
use std::time::Duration;

use crate::error::LlmError;

/// A response whose reported model load time (Ollama's `load_duration`) exceeds this counts
/// as a model load. Warm Ollama responses still report a few milliseconds of
/// `load_duration`; loading a model from disk takes hundreds at least.
pub const MODEL_LOAD_MIN: Duration = Duration::from_millis(100);

/// How one attempt on one endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The endpoint answered successfully.
    Ok,
    /// It failed; the class names the [`LlmError`] variant in snake case (`connect`,
    /// `timeout`, `rate_limited`, `auth`, …, see [`error_class_name`]).
    Error(&'static str),
}

impl AttemptOutcome {
    /// `ok` or the error class name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Error(class) => class,
        }
    }
}

/// One attempt of a routed call on one endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The endpoint's configured name.
    pub endpoint: &'a str,
    /// The model asked for.
    pub model: &'a str,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Wall-clock time of the attempt (the slot wait not included).
    pub latency: Duration,
    /// Time to the first content chunk (streaming calls that produced one).
    pub ttft: Option<Duration>,
    /// Prompt tokens, when reported.
    pub tokens_in: Option<u64>,
    /// Generated tokens, when reported.
    pub tokens_out: Option<u64>,
    /// Whether the response reported loading the model (load time above [`MODEL_LOAD_MIN`]).
    pub model_loaded: bool,
}

/// An endpoint's breaker as this process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// One probe call may go (or is under way).
    HalfOpen,
    /// No calls until the cool-down ends.
    Open,
}

impl BreakerState {
    /// 0 closed, 1 half-open, 2 open (the metric encoding).
    pub fn as_number(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// An endpoint's health as last reported to the observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointHealth {
    /// The breaker.
    pub breaker: BreakerState,
    /// Whether the endpoint refused the credentials (skipped for the process's life).
    pub misconfigured: bool,
}

impl EndpointHealth {
    /// Whether the endpoint can take calls: breaker not open, credentials accepted.
    pub fn is_up(self) -> bool {
        !self.misconfigured && self.breaker != BreakerState::Open
    }
}

/// Receives what the router sees. Implementations must be cheap and non-blocking.
pub trait CallObserver: Send + Sync {
    /// One attempt on one endpoint ended.
    fn attempt(&self, _attempt: &Attempt<'_>) {}

    /// An endpoint's health changed (also called once per endpoint when the observer is
    /// set, with the initial state).
    fn health_changed(&self, _endpoint: &str, _health: EndpointHealth) {}
}

/// The observer a router has until one is set.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl CallObserver for NoopObserver {}

/// The snake-case class name of an error, as used in [`AttemptOutcome::Error`].
pub fn error_class_name(error: &LlmError) -> &'static str {
    match error {
        LlmError::Config { .. } => "config",
        LlmError::InvalidRequest { .. } => "invalid_request",
        LlmError::Connect { .. } => "connect",
        LlmError::Timeout { .. } => "timeout",
        LlmError::Overloaded { .. } => "overloaded",
        LlmError::RateLimited { .. } => "rate_limited",
        LlmError::Auth { .. } => "auth",
        LlmError::ModelNotFound { .. } => "model_not_found",
        LlmError::ContextTooLong { .. } => "context_too_long",
        LlmError::BadRequest { .. } => "bad_request",
        LlmError::Stream { .. } => "stream",
        LlmError::Decode { .. } => "decode",
        LlmError::ResponseTooLarge { .. } => "response_too_large",
    }
}

/// What was last reported for a member: `UNREPORTED`, or breaker number + 4 × misconfigured.
pub(super) struct Reported(pub(super) AtomicU8);

pub(super) const UNREPORTED: u8 = u8::MAX;

impl Reported {
    pub(super) fn new() -> Reported {
        Reported(AtomicU8::new(UNREPORTED))
    }
}

pub(super) fn encode(h: EndpointHealth) -> u8 {
    h.breaker.as_number() + if h.misconfigured { 4 } else { 0 }
}
