//! The placement benchmark's report: the setup, every run's figures, and per strategy the
//! range over its runs, as a table for people or one JSON document.

use gleitzeit_llm::Strategy;
use serde_json::{json, Value};

use crate::routing::report::join;
use crate::stats;

use super::args::PlacementArgs;
use super::workload::{Bound, Endpoint};

/// What one run of one strategy achieved.
#[derive(Debug)]
pub(super) struct RunResult {
    pub(super) strategy: Strategy,
    pub(super) makespan_ms: u64,
    pub(super) loads: u64,
    pub(super) loads_per_endpoint: Vec<u64>,
    /// Per endpoint: every load as (model, ms after the first submission).
    pub(super) load_log: Vec<Vec<(String, u64)>>,
    pub(super) duplicate_loads: u64,
    /// Ready → end of every task, ms, sorted.
    pub(super) latencies_ms: Vec<u64>,
    pub(super) max_in_flight: Vec<u64>,
    pub(super) calls_per_endpoint: Vec<u64>,
    pub(super) gpu_only_on_cpu: usize,
    pub(super) not_completed: usize,
    pub(super) summaries: Vec<String>,
}

impl RunResult {
    fn p(&self, p: f64) -> u64 {
        stats::percentile(&self.latencies_ms, p).unwrap_or(0)
    }
}

/// Everything the report shows.
pub(super) struct Report<'a> {
    pub(super) args: &'a PlacementArgs,
    pub(super) endpoints: &'a [Endpoint],
    pub(super) redis: String,
    pub(super) bound: Bound,
    pub(super) results: &'a [RunResult],
}

/// `a–b` of the figures, or `a` when they are equal.
fn range(values: impl Iterator<Item = f64>, digits: usize) -> String {
    let v: Vec<f64> = values.collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() {
        "-".to_owned()
    } else if (hi - lo).abs() < 1e-9 {
        format!("{lo:.digits$}")
    } else {
        format!("{lo:.digits$}–{hi:.digits$}")
    }
}

impl Report<'_> {
    fn strategies(&self) -> Vec<Strategy> {
        let mut seen = Vec::new();
        for r in self.results {
            if !seen.contains(&r.strategy) {
                seen.push(r.strategy);
            }
        }
        seen
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "setup": {
                "endpoints": self.endpoints.iter().map(|e| json!({
                    "name": e.name,
                    "kind": "ollama (simulator in this process)",
                    "tokens_per_s": e.tokens_per_s,
                    "max_loaded": e.max_loaded,
                    "max_concurrent": e.max_concurrent,
                    "gpu": e.gpu,
                })).collect::<Vec<_>>(),
                "models": self.args.models.iter().zip(&self.args.weights)
                    .map(|(m, w)| json!({"model": m, "weight": w})).collect::<Vec<_>>(),
                "workflows": self.args.workflows,
                "shape": "A -> (B, C) -> D",
                "tokens_per_task": self.args.tokens,
                "load_delay_ms": self.args.load_delay.as_secs_f64() * 1000.0,
                "workers": self.args.workers,
                "concurrency": self.args.concurrency,
                "redis": self.redis,
                "cpus": crate::available_cpus(),
                "lower_bound_s": {
                    "work": self.bound.work_s,
                    "critical_path": self.bound.critical_path_s,
                },
            },
            "runs": self.results.iter().map(|r| json!({
                "strategy": r.strategy.to_string(),
                "makespan_s": r.makespan_ms as f64 / 1000.0,
                "over_lower_bound": r.makespan_ms as f64 / 1000.0 / self.bound.seconds(),
                "model_loads": r.loads,
                "loads_per_endpoint": r.loads_per_endpoint,
                "load_log": r.load_log,
                "duplicate_loads": r.duplicate_loads,
                "task_latency_ms": {"p50": r.p(50.0), "p95": r.p(95.0)},
                "calls_per_endpoint": r.calls_per_endpoint,
                "max_in_flight": r.max_in_flight,
                "gpu_only_model_calls_on_cpu": r.gpu_only_on_cpu,
                "not_completed": r.not_completed,
                "workers": r.summaries,
            })).collect::<Vec<_>>(),
        })
    }

    pub(super) fn print(&self) {
        let a = self.args;
        println!("gleitzeit-bench placement");
        println!(
            "  endpoints          {} (Ollama simulators in this process)",
            self.endpoints
                .iter()
                .map(|e| format!(
                    "{} {} tok/s max_loaded {} max_concurrent {}{}",
                    e.name,
                    e.tokens_per_s,
                    e.max_loaded,
                    e.max_concurrent,
                    if e.gpu { " gpu" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  models             {}",
            a.models
                .iter()
                .zip(&a.weights)
                .map(|(m, w)| format!("{m} ×{w}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  workload           {} workflows A → (B, C) → D submitted at once, {} tokens per task, {} per model load",
            a.workflows,
            a.tokens,
            humantime::format_duration(a.load_delay)
        );
        println!(
            "  fleet              {} workers in this process, concurrency {} each; {}; {} CPUs",
            a.workers,
            a.concurrency,
            self.redis,
            crate::available_cpus()
        );
        println!(
            "  lower bound        {:.1} s (one load + all tokens at the full rate {:.1} s; one load + critical path {:.1} s)",
            self.bound.seconds(),
            self.bound.work_s,
            self.bound.critical_path_s
        );
        println!("runs");
        println!(
            "  {:<15} {:>9} {:>7} {:>6} {:>5} {:>13} {:<14} {:<14} {:>9}",
            "strategy",
            "makespan",
            "×bound",
            "loads",
            "dup",
            "latency p50/95",
            "calls/endpoint",
            "max in flight",
            "70b@cpu"
        );
        for r in self.results {
            println!(
                "  {:<15} {:>7.1} s {:>7.2} {:>6} {:>5} {:>13} {:<14} {:<14} {:>9}",
                r.strategy.to_string(),
                r.makespan_ms as f64 / 1000.0,
                r.makespan_ms as f64 / 1000.0 / self.bound.seconds(),
                r.loads,
                r.duplicate_loads,
                format!(
                    "{:.1}/{:.1} s",
                    r.p(50.0) as f64 / 1000.0,
                    r.p(95.0) as f64 / 1000.0
                ),
                join(&r.calls_per_endpoint),
                join(&r.max_in_flight),
                r.gpu_only_on_cpu
            );
        }
        println!("per strategy (range over runs)");
        println!(
            "  {:<15} {:>12} {:>9} {:>9} {:>15}",
            "strategy", "makespan s", "loads", "dup", "p95 latency s"
        );
        for s in self.strategies() {
            let runs: Vec<&RunResult> = self.results.iter().filter(|r| r.strategy == s).collect();
            println!(
                "  {:<15} {:>12} {:>9} {:>9} {:>15}",
                s.to_string(),
                range(runs.iter().map(|r| r.makespan_ms as f64 / 1000.0), 1),
                range(runs.iter().map(|r| r.loads as f64), 0),
                range(runs.iter().map(|r| r.duplicate_loads as f64), 0),
                range(runs.iter().map(|r| r.p(95.0) as f64 / 1000.0), 1),
            );
        }
    }
}
