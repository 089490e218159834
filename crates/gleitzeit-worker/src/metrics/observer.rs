//! The router observer that turns each LLM call attempt and each endpoint health change into
//! the `gleitzeit_endpoint_*` metrics.

use gleitzeit_llm::router::{Attempt, CallObserver, EndpointHealth};

use super::catalogue::*;

/// Records router events as metrics (through the global recorder; a no-op without one).
#[derive(Debug, Default, Clone, Copy)]
pub struct RouterMetrics;

impl CallObserver for RouterMetrics {
    fn attempt(&self, a: &Attempt<'_>) {
        let endpoint = a.endpoint.to_owned();
        let model = a.model.to_owned();
        metrics::counter!(
            ENDPOINT_REQUESTS,
            "endpoint" => endpoint.clone(),
            "model" => model.clone(),
            "outcome" => a.outcome.as_str()
        )
        .increment(1);
        metrics::histogram!(ENDPOINT_REQUEST_SECONDS, "endpoint" => endpoint.clone(), "model" => model.clone())
            .record(a.latency.as_secs_f64());
        if let Some(t) = a.ttft {
            metrics::histogram!(ENDPOINT_TTFT_SECONDS, "endpoint" => endpoint.clone(), "model" => model.clone())
                .record(t.as_secs_f64());
        }
        if let Some(n) = a.tokens_in {
            metrics::counter!(ENDPOINT_TOKENS, "endpoint" => endpoint.clone(), "model" => model.clone(), "direction" => "in")
                .increment(n);
        }
        if let Some(n) = a.tokens_out {
            metrics::counter!(ENDPOINT_TOKENS, "endpoint" => endpoint.clone(), "model" => model.clone(), "direction" => "out")
                .increment(n);
        }
        if a.model_loaded {
            metrics::counter!(ENDPOINT_MODEL_LOADS, "endpoint" => endpoint, "model" => model)
                .increment(1);
        }
    }

    fn health_changed(&self, endpoint: &str, health: EndpointHealth) {
        metrics::gauge!(ENDPOINT_UP, "endpoint" => endpoint.to_owned()).set(if health.is_up() {
            1.0
        } else {
            0.0
        });
        metrics::gauge!(ENDPOINT_CIRCUIT_STATE, "endpoint" => endpoint.to_owned())
            .set(f64::from(health.breaker.as_number()));
    }
}
