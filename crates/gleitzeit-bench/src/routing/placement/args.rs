//! The placement benchmark's command line: [`PlacementArgs`].

use std::time::Duration;

use gleitzeit_llm::Strategy;

/// Benchmark model placement: DAG workflows over several models, through the real queue and
/// worker runtimes, on simulated Ollama endpoints that load and evict models.
#[derive(Debug, Clone, clap::Args)]
pub struct PlacementArgs {
    /// Workflows submitted per run (each A → (B, C) → D).
    #[arg(long, default_value_t = 40)]
    pub workflows: usize,
    /// Models of the workload, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "llama3.2:3b,qwen2.5:7b,mistral:7b,gemma2:9b,llama3:70b"
    )]
    pub models: Vec<String>,
    /// Weight of each model, in the same order (how often a task names it).
    #[arg(long, value_delimiter = ',', default_value = "4,3,2,2,1")]
    pub weights: Vec<u32>,
    /// Generation speed of each simulated endpoint in tokens/s (one endpoint per value).
    #[arg(long, value_delimiter = ',', default_value = "200,100,100,50")]
    pub rates: Vec<u32>,
    /// Models each endpoint keeps loaded at once, in the same order.
    #[arg(long, value_delimiter = ',', default_value = "2,2,1,1")]
    pub max_loaded: Vec<usize>,
    /// `max_concurrent` of each endpoint, in the same order.
    #[arg(long, value_delimiter = ',', default_value = "4,4,4,4")]
    pub max_concurrent: Vec<u32>,
    /// Whether each endpoint is a GPU server, in the same order (models over 16 GB run only
    /// on GPU servers).
    #[arg(long, value_delimiter = ',', default_value = "true,true,false,false")]
    pub gpu: Vec<bool>,
    /// Time every model load takes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub load_delay: Duration,
    /// Tokens every task generates.
    #[arg(long, default_value_t = 100)]
    pub tokens: u32,
    /// Workers (in this process, each with its own router and consumer name).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Tasks each worker runs at the same time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Strategies to measure, comma-separated (default: every strategy).
    #[arg(long, value_delimiter = ',', value_parser = parse_strategy)]
    pub strategies: Vec<Strategy>,
    /// Runs per strategy (fresh simulators and namespace each).
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Redis to use (default: start a private redis-server on a free port).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Give up on a run after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
}
