//! The routing benchmark's command line: [`RoutingArgs`].

use std::time::Duration;

use gleitzeit_llm::Strategy;

/// Benchmark the endpoint router's strategies on simulated endpoints of unequal speed.
#[derive(Debug, clap::Args)]
pub struct RoutingArgs {
    /// Calls per strategy.
    #[arg(long, default_value_t = 2000)]
    pub calls: usize,
    /// Calls in flight at once (below the endpoints' total slots, so the strategy's choice
    /// of endpoint shows in the throughput).
    #[arg(long, default_value_t = 12)]
    pub concurrency: usize,
    /// Latency of each simulated endpoint, comma-separated (one endpoint per value).
    #[arg(long, value_delimiter = ',', default_value = "20ms,40ms,80ms,160ms",
          value_parser = humantime::parse_duration)]
    pub latencies: Vec<Duration>,
    /// `max_concurrent` of each endpoint, in the same order.
    #[arg(long, value_delimiter = ',', default_value = "8,4,4,2")]
    pub max_concurrent: Vec<u32>,
    /// Models of the workload, comma-separated; the first is asked most often (weights n, n-1,
    /// …, 1).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "llama3.2:3b,qwen2.5:7b,mistral:7b,gemma2:2b"
    )]
    pub models: Vec<String>,
    /// Models each simulator keeps loaded (least recently used evicted; 0 = no limit).
    #[arg(long, default_value_t = 2)]
    pub max_loaded: usize,
    /// Delay a simulator pays every time it loads a model.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub load_delay: Duration,
    /// Strategies to measure, comma-separated (default: every strategy).
    #[arg(long, value_delimiter = ',', value_parser = parse_strategy)]
    pub strategies: Vec<Strategy>,
    /// Sequential calls of the zero-latency pass per strategy (0 skips the pass).
    #[arg(long, default_value_t = 300)]
    pub overhead_calls: usize,
    /// Redis to use (default: start a private redis-server on a free port).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Bound of every single call (waiting for a slot included).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
}
