//! Plumbing every command that talks to Redis shares: the async runtime, the connection
//! context ([`Ctx`]), and printing a result (JSON line or text).

use std::io::Write;

use gleitzeit_queue::{Queue, QueueConfig, QueueError, RedisTarget, Role, TlsFiles};
use serde::Serialize;

use crate::error::CliError;

/// One command at a time needs no worker threads.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Settings shared by the commands that talk to Redis.
pub(crate) struct Ctx {
    pub(crate) redis_url: String,
    /// The TLS files of a `rediss://` URL.
    pub(crate) tls: TlsFiles,
    pub(crate) namespace: String,
    /// The shard count given (`--shards`); `None` adopts the namespace's.
    pub(crate) shards: Option<u16>,
    /// Replicas that must confirm a submission (`--replica-acks`).
    pub(crate) replica_acks: u32,
    pub(crate) json: bool,
    /// The role the command runs as (named in permission errors).
    pub(crate) role: Role,
    /// Whether [`Ctx::connect`] first checks that the user holds the whole role: done before
    /// the commands that run scripts, since a script refused a command half way would leave
    /// its work half done.
    pub(crate) check_role: bool,
}

impl Ctx {
    /// Connects and pings, so an unreachable Redis (or refused credentials) is reported
    /// before anything else; then checks the role's permissions when asked to.
    pub(crate) async fn connect(&self) -> Result<Queue, CliError> {
        let config = QueueConfig {
            namespace: self.namespace.clone(),
            shards: self.shards,
            replica_acks: self.replica_acks,
            ..QueueConfig::default()
        };
        let target = RedisTarget::new(self.redis_url.as_str()).with_tls(self.tls.clone());
        let queue = Queue::connect(target, config)
            .await
            .map_err(|e| self.queue_err(e))?;
        if self.check_role {
            queue
                .check_role(self.role)
                .await
                .map_err(|e| self.queue_err(e))?;
        }
        Ok(queue)
    }

    pub(crate) fn queue_err(&self, err: QueueError) -> CliError {
        CliError::from_queue_as(err, &self.redis_url, Some(self.role))
    }
}

pub(crate) fn print_json<T: Serialize>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    let text =
        serde_json::to_string(value).map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// Prints a command's result: one JSON line under `--json`, else `render`'s text for people.
pub(crate) fn print_view<T: Serialize>(
    json: bool,
    out: &mut dyn Write,
    view: &T,
    render: impl FnOnce(&T) -> String,
) -> Result<(), CliError> {
    if json {
        print_json(out, view)
    } else {
        write!(out, "{}", render(view))?;
        Ok(())
    }
}
