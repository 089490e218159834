//! Call observation: a hook the [`Router`] calls once per attempt on an endpoint and whenever
//! an endpoint's breaker state changes, so the embedding program can export metrics without
//! this crate depending on a metrics library.
//!
//! Every method of [`CallObserver`] has a no-op default; the router holds a no-op observer
//! until [`Router::with_observer`] sets one. Observers are called on the request path, so
//! they must be cheap and must not block.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::LlmError;
use crate::types::LlmResponse;

use super::health::Circuit;
use super::{Member, Router};

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
pub(super) struct Reported(AtomicU8);

const UNREPORTED: u8 = u8::MAX;

impl Reported {
    pub(super) fn new() -> Reported {
        Reported(AtomicU8::new(UNREPORTED))
    }
}

fn encode(h: EndpointHealth) -> u8 {
    h.breaker.as_number() + if h.misconfigured { 4 } else { 0 }
}

impl Router {
    /// Reports every attempt and health change to `observer` (replacing the previous one),
    /// starting with each endpoint's current health.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Router {
        self.observer = observer;
        for m in &self.members {
            m.reported.0.store(UNREPORTED, Ordering::Relaxed);
            self.observe_health(m);
        }
        self
    }

    /// Reports one finished attempt.
    pub(super) fn observe_attempt(
        &self,
        member: &Member,
        model: &str,
        result: &Result<LlmResponse, LlmError>,
        started: Instant,
    ) {
        let latency = started.elapsed();
        let attempt = match result {
            Ok(resp) => Attempt {
                endpoint: member.name(),
                model,
                outcome: AttemptOutcome::Ok,
                latency,
                ttft: resp.ttft_ms.map(Duration::from_millis),
                tokens_in: resp.prompt_tokens,
                tokens_out: resp.completion_tokens,
                model_loaded: resp
                    .load_ms
                    .is_some_and(|ms| Duration::from_millis(ms) > MODEL_LOAD_MIN),
            },
            Err(e) => Attempt {
                endpoint: member.name(),
                model,
                outcome: AttemptOutcome::Error(error_class_name(e)),
                latency,
                ttft: None,
                tokens_in: None,
                tokens_out: None,
                model_loaded: false,
            },
        };
        self.observer.attempt(&attempt);
    }

    /// Reports the member's health when it differs from what was last reported.
    pub(super) fn observe_health(&self, member: &Member) {
        let health = {
            let h = member.health();
            EndpointHealth {
                breaker: match h.circuit {
                    Circuit::Closed => BreakerState::Closed,
                    Circuit::HalfOpen { .. } => BreakerState::HalfOpen,
                    Circuit::Open { until, .. } if until > Instant::now() => BreakerState::Open,
                    // The cool-down is over: the next call is the probe.
                    Circuit::Open { .. } => BreakerState::HalfOpen,
                },
                misconfigured: h.misconfigured,
            }
        };
        let code = encode(health);
        if member.reported.0.swap(code, Ordering::Relaxed) != code {
            self.observer.health_changed(member.name(), health);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use gleitzeit_testkit::llm::{Fault, MockOllama, SimConfig};

    use super::*;
    use crate::config::{EndpointConfig, ProviderKind};
    use crate::router::{LocalSlots, RouteTarget, RouterConfig, Strategy};
    use crate::types::{CallOptions, LlmRequest};

    /// Remembers everything it is told, as text.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl CallObserver for Recorder {
        fn attempt(&self, a: &Attempt<'_>) {
            self.0.lock().unwrap().push(format!(
                "attempt {} {} {} loaded={} tokens={}/{}",
                a.endpoint,
                a.model,
                a.outcome.as_str(),
                a.model_loaded,
                a.tokens_in.is_some(),
                a.tokens_out.is_some(),
            ));
        }

        fn health_changed(&self, endpoint: &str, h: EndpointHealth) {
            self.0.lock().unwrap().push(format!(
                "health {endpoint} {:?} up={}",
                h.breaker,
                h.is_up()
            ));
        }
    }

    #[tokio::test]
    async fn attempts_loads_and_breaker_changes_are_reported() {
        let flaky = MockOllama::start(SimConfig::default()).await.unwrap();
        flaky.push_fault(Fault::Overloaded);
        let good = MockOllama::start(SimConfig {
            load_delay: MODEL_LOAD_MIN * 2,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let target = |name: &str, url: String, priority| {
            RouteTarget::new(EndpointConfig::new(name, url, ProviderKind::Ollama))
                .with_priority(priority)
        };
        let recorder = Arc::new(Recorder::default());
        let router = Router::new(
            vec![
                target("flaky", flaky.url(), 0),
                target("good", good.url(), 1),
            ],
            Arc::new(LocalSlots::new()),
            RouterConfig {
                strategy: Strategy::Priority,
                ..RouterConfig::default()
            },
        )
        .unwrap()
        .with_observer(recorder.clone());
        let opts = CallOptions {
            timeout: Some(Duration::from_secs(30)),
            ..CallOptions::default()
        };
        let req = LlmRequest::generate("m", "hello");
        // First call: flaky is overloaded (its breaker opens), good loads the model.
        router.call(&req, &opts).await.unwrap();
        // Second call: flaky is skipped while open; good answers warm.
        router.call(&req, &opts).await.unwrap();
        let seen = recorder.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                "health flaky Closed up=true",
                "health good Closed up=true",
                "attempt flaky m overloaded loaded=false tokens=false/false",
                "health flaky Open up=false",
                "attempt good m ok loaded=true tokens=true/true",
                "attempt good m ok loaded=false tokens=true/true",
            ]
        );
    }

    #[test]
    fn error_classes_are_snake_case_names() {
        assert_eq!(
            error_class_name(&LlmError::Timeout {
                before_first_byte: true
            }),
            "timeout"
        );
    }

    #[test]
    fn breaker_numbers_and_up() {
        assert_eq!(BreakerState::Closed.as_number(), 0);
        assert_eq!(BreakerState::HalfOpen.as_number(), 1);
        assert_eq!(BreakerState::Open.as_number(), 2);
        assert!(EndpointHealth {
            breaker: BreakerState::HalfOpen,
            misconfigured: false
        }
        .is_up());
        assert!(!EndpointHealth {
            breaker: BreakerState::Open,
            misconfigured: false
        }
        .is_up());
        assert!(!EndpointHealth {
            breaker: BreakerState::Closed,
            misconfigured: true
        }
        .is_up());
    }
}
