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
    /// Redis refused the worker's credentials (wrong password, unknown or disabled user, or no
    /// password where one is required); retrying with the same URL does not help.
    #[error("Redis refused the worker's credentials; fix the user and password in redis_url (redis://USER:PASSWORD@HOST:PORT)")]
    Auth(#[source] QueueError),
    /// The worker's Redis user lacks a command or key of the worker role; nothing was read.
    #[error("the worker's Redis user lacks permissions of role worker; give it the rules printed by `gleitzeit-submit acl --role worker` (docs/acl.md)")]
    Permission(#[source] QueueError),
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
