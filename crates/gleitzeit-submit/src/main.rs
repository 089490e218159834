//! `gleitzeit-submit` binary: parses arguments, sets up logging, runs the command.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // clap exits with 2 on usage errors and 0 for --help/--version, matching `ExitCode`.
    let cli = gleitzeit_submit::Cli::parse();
    // Logs go to stderr and stay quiet unless asked for: stdout is the command's output.
    let filter = EnvFilter::try_from_env("GLEITZEIT_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    gleitzeit_submit::run(cli).into()
}
