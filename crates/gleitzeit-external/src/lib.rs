//! The worker side of Python task services: external tasks are function calls to services
//! written with the `gleitzeit` Python package, over Socket.IO (`docs/protocol.md`).
//!
//! - [`protocol`]: the messages (`service:hello`, `task:call`, `task:result`) and their strict
//!   decoders, checked against the shared fixtures in `tests/protocol/`.
//! - [`keys`] and [`discovery`]: where services register in Redis and how live instances are
//!   read.
//! - [`InstanceConnection`]: one supervised Socket.IO connection with the mutual
//!   challenge-response of [`handshake`] (the token never crosses the wire), optional TLS,
//!   request/response by request id, reconnect and disconnect handling.
//! - [`ServicePool`]: every instance of every service, least-loaded choice per call;
//!   [`ServicePool::call`] is what the worker's executor uses.
//!
//! Errors say whether retrying can help ([`ExternalError::retryable`]).

pub mod call;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod error;
pub mod keys;
pub mod pool;
/// The connection handshake (nonces and proofs), also from the core crate.
pub use gleitzeit_core::handshake;
/// The protocol types live in the core crate (one definition for every side).
pub use gleitzeit_core::protocol;

pub use call::{CallLimits, ExternalCall};
pub use config::{ConfigError, ExternalConfig, ServiceTls, StaticService, Token, TokenSource};
pub use connection::{ConnectionSettings, Credentials, InstanceConnection, InstanceState, Origin};
pub use discovery::{Discovery, DiscoveryError, InstanceRecord};
pub use error::ExternalError;
pub use pool::{InstanceStatus, ServicePool};
