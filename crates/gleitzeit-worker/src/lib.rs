//! Gleitzeit worker: reads tasks from the capability streams in Redis, runs them on LLM
//! endpoints and reports each outcome through the queue's fenced scripts.
//!
//! A worker process is stateless: Redis holds every task, result, retry and claim. The process
//! runs a reader (prioritised `XREADGROUP` bounded by free execution slots), one tokio task per
//! delivery, a heartbeat that keeps its in-flight claims alive, a reclaimer that takes over
//! entries of dead or stalled workers, and a promoter that moves due retries back into their
//! streams. See `docs/architecture.md` ("Worker loops").
//!
//! Entry points: [`run`] (configuration in, summary out) and [`run_with_executor`] for callers
//! that bring their own [`Executor`].

pub mod backoff;
pub mod bridge;
pub mod config;
pub mod error;
pub mod executor;
pub mod external_executor;
pub mod health;
pub mod identity;
pub mod llm_executor;
pub mod metrics;
pub mod parked;
pub mod registry;
pub mod runtime;

pub use config::{
    ConfigError, EndpointKind, EndpointRouting, EndpointSpec, FieldError, MetricsSpec,
    PublishedEndpoints, ResolvedEndpoint, RoutingConfig, Settings, WorkerArgs, WorkerConfig,
};
pub use error::{RunSummary, WorkerError};
pub use executor::{ExecContext, ExecFailure, Executor};
pub use external_executor::{Executors, ExternalExecutor, ExternalSpec};
pub use gleitzeit_core::pattern::Pattern;
pub use llm_executor::LlmExecutor;
pub use runtime::{consumer_name, run, run_with_executor};
