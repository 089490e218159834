//! How a worker run ends: its summary, and why it could not start.

use gleitzeit_queue::QueueError;

use crate::config::ConfigError;

/// What a worker did between start and shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Tasks this worker completed.
    pub completed: u64,
    /// Tasks this worker failed terminally (including poison entries).
    pub failed: u64,
    /// Failed attempts this worker scheduled for a retry.
    pub retried: u64,
    /// Tasks re-queued without using an attempt because no endpoint or service instance
    /// could take them.
    pub deferred: u64,
    /// Entries whose result was refused as stale or duplicate, or that another consumer took
    /// over while they ran.
    pub stale: u64,
    /// Entries abandoned at the drain deadline (they stay pending and are reclaimed).
    pub aborted: u64,
}

/// Why the worker could not start. Runtime Redis outages are not errors: the loops wait them out.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is invalid; fix it, retrying does not help.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An LLM endpoint client could not be built from the configuration; retrying does not help.
    #[error("cannot set up LLM endpoint {endpoint}: {message}")]
    Endpoint {
        /// Endpoint name.
        endpoint: String,
        /// Reason (contains no secret).
        message: String,
    },
    /// The queue refused a setting (for example the namespace); retrying does not help.
    #[error("cannot set up the queue")]
    Queue(#[source] QueueError),
    /// The metrics server cannot listen on `metrics_addr` (in use, or not a local address).
    #[error("cannot serve metrics on {addr} (metrics_addr): {source}")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
}
