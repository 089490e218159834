//! One Socket.IO connection to one instance of a task service, kept alive by a supervisor task.
//!
//! The design works around what `rust_socketio` 0.6 cannot do reliably:
//!
//! - Requests and responses are two ordinary events matched by our own `request_id` (UUIDv4)
//!   in a pending map; Socket.IO acknowledgements are never used (their ids collide and a
//!   collision can kill the client's reader).
//! - `connect()` returns before the service accepted the namespace connect, so the supervisor
//!   waits for `service:hello` (or a connect error, which is how a refused connect shows up)
//!   with a timeout before the instance counts as ready.
//! - The client never reconnects after a server-initiated disconnect, so reconnecting is ours:
//!   the client is built with `reconnect(false)` and rebuilt, with capped exponential backoff,
//!   whenever the connection ends.
//! - `.on(...)` callbacks run one at a time inside the client's reader, so they only push into
//!   a channel or resolve a pending entry; everything else happens in the supervisor.
//!
//! Every connect runs the handshake of [`gleitzeit_core::handshake`]: the connect `auth`
//! carries a fresh nonce (never the token); the service's proof in `service:hello` is verified
//! before the worker sends anything; only then does the worker send its own proof and wait for
//! `service:auth`. An instance that cannot prove it holds the token gets no call and no proof
//! and is marked [`InstanceState::Misconfigured`] with `auth: true`; answers arriving on a
//! connection whose handshake has not completed are dropped.

mod client;
mod handshake;
mod instance;
mod outcome;
mod pending;
mod settings;
mod supervise;

pub use instance::InstanceConnection;
pub use settings::{ConnectionSettings, Credentials, InstanceState, Origin};
