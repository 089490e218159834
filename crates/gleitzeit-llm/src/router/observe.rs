//! Reporting what the [`Router`] sees to its [`CallObserver`](super::CallObserver): one call
//! per attempt on an endpoint, and one whenever an endpoint's breaker state changes (the
//! observer API itself is in `observer.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::LlmError;
use crate::types::LlmResponse;

use super::core::{Member, Router};
use super::health::Circuit;
use super::observer::{
    encode, error_class_name, Attempt, AttemptOutcome, BreakerState, CallObserver, EndpointHealth,
    MODEL_LOAD_MIN, UNREPORTED,
};

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
