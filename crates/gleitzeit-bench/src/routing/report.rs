//! The routing benchmark's report: the setup and every strategy's figures, as a table for
//! people or one JSON document.

use serde_json::{json, Value};

use crate::stats;

use super::args::RoutingArgs;
use super::figures::{best_at, ideal, ms, Endpoint, StrategyResult};

/// Everything the report shows.
pub(super) struct Report<'a> {
    pub(super) args: &'a RoutingArgs,
    pub(super) endpoints: &'a [Endpoint],
    pub(super) models: &'a [String],
    pub(super) redis: String,
    pub(super) results: &'a [StrategyResult],
    pub(super) direct_us: &'a [u64],
}

/// How the overhead figures are obtained (printed with them).
pub(super) const OVERHEAD_METHOD: &str =
    "overhead = wall time of Router::call_with minus the simulator's configured \
service time (latency, plus load_delay when the response reports a load): lease script, \
strategy, HTTP exchange, simulator request handling and timer granularity (<1 ms), and any \
wait for a slot. router cost = sequential calls through the router to 0 ms simulators, next \
to the same calls made directly with a Provider (no router, no lease).";

impl Report<'_> {
    pub(super) fn weights(&self) -> Vec<(String, f64)> {
        let n = self.models.len();
        let total = (n * (n + 1) / 2) as f64;
        self.models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), (n - i) as f64 / total))
            .collect()
    }

    pub(super) fn json(&self) -> Value {
        let ideal = ideal(self.endpoints);
        let best = best_at(self.endpoints, self.args.concurrency);
        json!({
            "setup": {
                "endpoints": self.endpoints.iter().enumerate().map(|(i, e)| json!({
                    "name": e.name,
                    "kind": "ollama (simulator in this process)",
                    "latency_ms": e.latency.as_secs_f64() * 1000.0,
                    "max_concurrent": e.max_concurrent,
                    "priority": i,
                })).collect::<Vec<_>>(),
                "models": self.weights().into_iter().map(|(m, w)| json!({"model": m, "share": w})).collect::<Vec<_>>(),
                "max_loaded": self.args.max_loaded,
                "load_delay_ms": self.args.load_delay.as_secs_f64() * 1000.0,
                "calls": self.args.calls,
                "concurrency": self.args.concurrency,
                "overhead_calls": self.args.overhead_calls,
                "slots": "Redis leases (gleitzeit-worker's router, LlmExecutor::fleet)",
                "redis": self.redis,
                "cpus": crate::available_cpus(),
                "ideal_calls_per_s": ideal,
                "best_at_concurrency_calls_per_s": best,
                "overhead_method": OVERHEAD_METHOD,
            },
            "strategies": self.results.iter().map(|r| json!({
                "strategy": r.strategy.to_string(),
                "calls": r.ok,
                "failed": r.failed,
                "seconds": r.elapsed.as_secs_f64(),
                "calls_per_s": r.calls_per_s(),
                "percent_of_ideal": 100.0 * r.calls_per_s() / ideal,
                "percent_of_best_at_concurrency": 100.0 * r.calls_per_s() / best,
                "model_loads": r.loads,
                "calls_per_endpoint": self.endpoints.iter().zip(&r.per_endpoint)
                    .map(|(e, n)| (e.name.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "max_in_flight": self.endpoints.iter().zip(&r.max_in_flight)
                    .map(|(e, n)| (e.name.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "overhead_ms": {
                    "p50": ms(stats::percentile(&r.overhead_us, 50.0)),
                    "p99": ms(stats::percentile(&r.overhead_us, 99.0)),
                    "max": ms(r.overhead_us.last().copied()),
                },
                "zero_latency_routed_ms": if r.zero_routed_us.is_empty() { Value::Null } else { json!({
                    "p50": ms(stats::percentile(&r.zero_routed_us, 50.0)),
                    "p99": ms(stats::percentile(&r.zero_routed_us, 99.0)),
                    "router_cost_p50": ms(stats::percentile(&r.zero_routed_us, 50.0))
                        - ms(stats::percentile(self.direct_us, 50.0)),
                })},
            })).collect::<Vec<_>>(),
            "direct_zero_latency_ms": if self.direct_us.is_empty() { Value::Null } else { json!({
                "p50": ms(stats::percentile(self.direct_us, 50.0)),
                "p99": ms(stats::percentile(self.direct_us, 99.0)),
            })},
        })
    }

    pub(super) fn print(&self) {
        let ideal = ideal(self.endpoints);
        let best = best_at(self.endpoints, self.args.concurrency);
        println!("gleitzeit-bench routing");
        println!(
            "  endpoints          {} (Ollama simulators in this process; priority in this order)",
            self.endpoints
                .iter()
                .map(|e| format!(
                    "{} {} max_concurrent {}",
                    e.name,
                    humantime::format_duration(e.latency),
                    e.max_concurrent
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  models             {}",
            self.weights()
                .iter()
                .map(|(m, w)| format!("{m} {:.0}%", w * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  model loading      {} loaded per simulator (LRU eviction), {} per load",
            if self.args.max_loaded == 0 {
                "any number".to_owned()
            } else {
                self.args.max_loaded.to_string()
            },
            humantime::format_duration(self.args.load_delay)
        );
        println!(
            "  workload           {} calls per strategy, {} at a time, the same model sequence for every strategy (generate, streamed)",
            self.args.calls, self.args.concurrency
        );
        println!(
            "  slots              Redis leases, router built as gleitzeit-worker builds it; {}",
            self.redis
        );
        println!(
            "  ideal              {ideal:.1} calls/s (Σ max_concurrent / latency); {best:.1} calls/s at concurrency {} (fastest slots first); model loads not counted",
            self.args.concurrency
        );
        println!(
            "  machine            {} CPUs available",
            crate::available_cpus()
        );
        println!("  method             {OVERHEAD_METHOD}");
        println!("results");
        println!(
            "  {:<15} {:>8} {:>7} {:>7} {:>6}  {:<22} {:<14} {:>17} {:>24}",
            "strategy",
            "calls/s",
            "%ideal",
            "%best",
            "loads",
            "calls per endpoint",
            "max in flight",
            "overhead p50/p99",
            "0 ms routed p50/p99"
        );
        for r in self.results {
            let zero = if r.zero_routed_us.is_empty() {
                "-".to_owned()
            } else {
                format!(
                    "{:.2}/{:.2} ms",
                    ms(stats::percentile(&r.zero_routed_us, 50.0)),
                    ms(stats::percentile(&r.zero_routed_us, 99.0))
                )
            };
            println!(
                "  {:<15} {:>8.1} {:>6.1}% {:>6.1}% {:>6}  {:<22} {:<14} {:>17} {:>24}",
                r.strategy.to_string(),
                r.calls_per_s(),
                100.0 * r.calls_per_s() / ideal,
                100.0 * r.calls_per_s() / best,
                r.loads,
                join(&r.per_endpoint),
                join(&r.max_in_flight),
                format!(
                    "{:.2}/{:.2} ms",
                    ms(stats::percentile(&r.overhead_us, 50.0)),
                    ms(stats::percentile(&r.overhead_us, 99.0))
                ),
                zero
            );
        }
        if !self.direct_us.is_empty() {
            println!(
                "  direct call (0 ms simulator, no router): p50 {:.2} ms, p99 {:.2} ms",
                ms(stats::percentile(self.direct_us, 50.0)),
                ms(stats::percentile(self.direct_us, 99.0))
            );
        }
        for r in self.results {
            if r.failed > 0 {
                println!(
                    "  {}: {} calls failed (first: {})",
                    r.strategy,
                    r.failed,
                    r.first_error.as_deref().unwrap_or("?")
                );
            }
        }
    }
}

pub(crate) fn join(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("/")
}
