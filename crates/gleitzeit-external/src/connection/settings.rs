//! The public settings and state of a connection: the credentials a worker authenticates
//! with, where an instance's address came from, the connect and reconnect timings, and the
//! state a connection is in.

use std::sync::Arc;
use std::time::Duration;

use gleitzeit_core::protocol::Hello;

use crate::config::Token;

/// instances, the TLS settings.
#[derive(Clone)]
pub struct Credentials {
    /// The shared service token, the key of both handshake proofs.
    pub token: Token,
    /// TLS for `https://` instances: `None` verifies them against the system's trust store;
    /// a connector built by [`crate::ExternalConfig::tls_connector`] trusts a private CA.
    pub tls: Option<native_tls::TlsConnector>,
}

impl Credentials {
    /// The token with the system's trust store for TLS.
    pub fn new(token: Token) -> Credentials {
        Credentials { token, tls: None }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token)
            .field("private_ca", &self.tls.is_some())
            .finish()
    }
}

/// Where an instance's address came from, which decides how strictly its hello is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Listed in the worker's configuration. The address may legitimately differ from the one
    /// the service advertises (a load balancer, a port mapping), and nobody but the operator
    /// can change it.
    Static,
    /// Read from a registration in Redis, which the service writes with the address it
    /// advertises. The service's proof binds that address, so it must equal the address
    /// dialled: otherwise the registration points at a relay in front of a real instance.
    Discovered,
}

/// How a connection is established and re-established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Limit for one connect: TCP, handshake and the service's hello.
    pub connect_timeout: Duration,
    /// First reconnect delay (doubled per failed attempt, with jitter).
    pub reconnect_min: Duration,
    /// Cap of the reconnect delay; also the retry delay of a misconfigured instance.
    pub reconnect_max: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            connect_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
        }
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceState {
    /// A connect attempt is under way (the first one, or right after the connection broke).
    Connecting,
    /// Connected and greeted: calls can be sent.
    Ready(Arc<Hello>),
    /// The last connect attempt failed (the instance is unreachable); the next one follows
    /// after a backoff delay.
    Down {
        /// Why the last attempt failed.
        reason: String,
    },
    /// The instance cannot be used as configured: the handshake failed (`auth`: it could not
    /// prove it holds the token, or refused this worker's proof), or it speaks another protocol
    /// version or is another service. Retried at the longest backoff so a corrected deployment
    /// is picked up, but never used meanwhile.
    Misconfigured {
        /// What is wrong.
        reason: String,
        /// Whether the handshake failed.
        auth: bool,
    },
    /// The connection was closed by the worker.
    Closed,
}

impl InstanceState {
    /// Whether calls can be sent now.
    pub fn is_ready(&self) -> bool {
        matches!(self, InstanceState::Ready(_))
    }
}
