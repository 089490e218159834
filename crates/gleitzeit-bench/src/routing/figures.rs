//! What the routing benchmark measures and the bounds it compares with: the simulated
//! endpoints, each strategy's results, and the ideal and best-possible call rates.

use std::time::Duration;

use gleitzeit_llm::Strategy;

/// One simulated endpoint of the setup.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) name: String,
    pub(super) latency: Duration,
    pub(super) max_concurrent: u32,
}

/// What one strategy achieved.
#[derive(Debug)]
pub(super) struct StrategyResult {
    pub(super) strategy: Strategy,
    pub(super) ok: usize,
    pub(super) failed: usize,
    pub(super) first_error: Option<String>,
    pub(super) elapsed: Duration,
    pub(super) loads: u64,
    pub(super) per_endpoint: Vec<u64>,
    pub(super) max_in_flight: Vec<u64>,
    /// Sorted, µs.
    pub(super) overhead_us: Vec<u64>,
    /// Sorted, µs; empty when the zero-latency pass is skipped.
    pub(super) zero_routed_us: Vec<u64>,
}

impl StrategyResult {
    pub(super) fn calls_per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Calls per second with every slot busy all the time: `Σ max_concurrent / latency`.
pub(super) fn ideal(endpoints: &[Endpoint]) -> f64 {
    endpoints
        .iter()
        .map(|e| f64::from(e.max_concurrent) / e.latency.as_secs_f64())
        .sum()
}

/// Calls per second with `concurrency` calls in flight on the fastest free slots.
pub(super) fn best_at(endpoints: &[Endpoint], concurrency: usize) -> f64 {
    let mut by_speed: Vec<&Endpoint> = endpoints.iter().collect();
    by_speed.sort_by_key(|e| e.latency);
    let mut left = concurrency as f64;
    let mut rate = 0.0;
    for e in by_speed {
        let used = left.min(f64::from(e.max_concurrent));
        rate += used / e.latency.as_secs_f64();
        left -= used;
    }
    rate
}

pub(super) fn ms(us: Option<u64>) -> f64 {
    us.unwrap_or(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps() -> Vec<Endpoint> {
        [(20, 8), (40, 4), (80, 4), (160, 2)]
            .into_iter()
            .enumerate()
            .map(|(i, (ms, max))| Endpoint {
                name: format!("e{i}"),
                latency: Duration::from_millis(ms),
                max_concurrent: max,
            })
            .collect()
    }

    #[test]
    fn ideal_is_every_slot_busy() {
        assert!((ideal(&eps()) - 562.5).abs() < 1e-9);
    }

    #[test]
    fn best_at_concurrency_fills_the_fastest_slots() {
        assert!((best_at(&eps(), 12) - 500.0).abs() < 1e-9);
        assert!((best_at(&eps(), 4) - 200.0).abs() < 1e-9);
        assert!((best_at(&eps(), 100) - 562.5).abs() < 1e-9);
    }
}
