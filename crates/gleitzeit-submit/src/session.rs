//! Plumbing every command that talks to Redis shares: the async runtime, the connection
//! context ([`Ctx`]), and printing a result (JSON line or text).

use std::io::Write;

use gleitzeit_queue::{Queue, QueueConfig, QueueError, RedisTarget, TlsFiles};
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
    pub(crate) json: bool,
}

impl Ctx {
    /// Connects and pings, so an unreachable Redis is reported before anything else.
    pub(crate) async fn connect(&self) -> Result<Queue, CliError> {
        let config = QueueConfig {
            namespace: self.namespace.clone(),
            ..QueueConfig::default()
        };
        let target = RedisTarget::new(self.redis_url.as_str()).with_tls(self.tls.clone());
        Queue::connect(target, config)
            .await
            .map_err(|e| self.queue_err(e))
    }

    pub(crate) fn queue_err(&self, err: QueueError) -> CliError {
        CliError::from_queue(err, &self.redis_url)
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
