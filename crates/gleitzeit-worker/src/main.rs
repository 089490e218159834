//! `gleitzeit-worker`: parses the configuration (file, `GLEITZEIT_*` environment, flags), sets
//! up logging, turns SIGTERM/SIGINT into a graceful shutdown and runs the worker.
//!
//! Exit codes: 0 after a clean shutdown, 2 for an invalid configuration, 1 for other errors.
//!
//! The first signal starts the two-phase shutdown (stop taking work, drain in-flight tasks up to
//! `drain_timeout`); a second signal exits at once: entries still pending are reclaimed by other
//! workers, so nothing is lost.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use gleitzeit_queue::QueueError;
use gleitzeit_worker::{ConfigError, WorkerArgs, WorkerError};

#[tokio::main]
async fn main() -> ExitCode {
    let args = WorkerArgs::parse();
    init_tracing(args.log_json);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, without a backtrace.
            tracing::error!("{e:#}");
            ExitCode::from(if config_error(&e) { 2 } else { 1 })
        }
    }
}

/// Whether the failure is a configuration problem (exit code 2: fix the configuration). A
/// TLS handshake Redis refused is one too: the TLS settings have to change.
fn config_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<ConfigError>()
            || matches!(
                c.downcast_ref::<WorkerError>(),
                Some(
                    WorkerError::Config(_)
                        | WorkerError::Endpoint { .. }
                        | WorkerError::Queue(
                            QueueError::Tls { .. }
                                | QueueError::Connection(_)
                                | QueueError::ShardCount { .. }
                        )
                )
            )
    })
}

async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = args.load().context("loading the worker configuration")?;

    let shutdown = CancellationToken::new();
    install_signal_handlers(shutdown.clone()).context("installing signal handlers")?;

    let summary = gleitzeit_worker::run(config, shutdown).await?;
    tracing::info!(
        completed = summary.completed,
        failed = summary.failed,
        retried = summary.retried,
        stale = summary.stale,
        aborted = summary.aborted,
        "worker stopped"
    );
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}

/// First SIGTERM/SIGINT cancels `shutdown`; the next one exits the process immediately.
fn install_signal_handlers(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut received = 0u32;
        loop {
            let code = tokio::select! {
                _ = term.recv() => 128 + 15,
                _ = int.recv() => 128 + 2,
            };
            received += 1;
            if received == 1 {
                tracing::info!(
                    "shutdown requested: draining in-flight tasks (signal again to exit at once)"
                );
                shutdown.cancel();
            } else {
                tracing::warn!("second signal: exiting without waiting for in-flight tasks");
                std::process::exit(code);
            }
        }
    });
    Ok(())
}
