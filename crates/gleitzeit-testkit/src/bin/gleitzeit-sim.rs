//! `gleitzeit-sim`: serves one provider simulator (Ollama or OpenAI-compatible) for benchmarks
//! and demos. The first line on stdout is the bound URL, so a script can start it with
//! `--port 0` and read where it listens.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use gleitzeit_testkit::llm::{Flavor, Reply, SimConfig, SimServer};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Api {
    /// Ollama's native API (/api/generate, /api/chat, /api/embed, ...).
    Ollama,
    /// The OpenAI-compatible API (/v1/chat/completions, /v1/embeddings, /v1/models).
    Openai,
}

/// Serve an LLM provider simulator.
#[derive(Debug, Parser)]
#[command(name = "gleitzeit-sim", version)]
struct Args {
    /// Which API to speak.
    api: Api,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Delay before each response starts (e.g. 0ms, 250ms, 1s).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Delay before each generated token.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    token_delay: Duration,
    /// Extra delay the first time a model is used.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    load_delay: Duration,
    /// Models served, comma-separated; empty serves any model name.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Longest echoed reply, in characters.
    #[arg(long, default_value_t = 200)]
    max_chars: usize,
    /// Dimensions of returned embeddings.
    #[arg(long, default_value_t = 8)]
    embedding_dims: usize,
    /// Require this bearer token.
    #[arg(long, env = "GLEITZEIT_SIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gleitzeit-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(args))
}

/// The simulator's API, configuration and address from the command line.
fn setup(args: Args) -> (Flavor, SimConfig, SocketAddr) {
    let flavor = match args.api {
        Api::Ollama => Flavor::Ollama,
        Api::Openai => Flavor::OpenAi,
    };
    let cfg = SimConfig {
        models: args.models.into_iter().filter(|m| !m.is_empty()).collect(),
        latency: args.latency,
        token_delay: args.token_delay,
        load_delay: args.load_delay,
        reply: Reply::Echo {
            max_chars: args.max_chars,
        },
        embedding_dims: args.embedding_dims,
        api_key: args.api_key,
    };
    (flavor, cfg, SocketAddr::new(args.host, args.port))
}

async fn serve(args: Args) -> ExitCode {
    let (flavor, cfg, addr) = setup(args);
    let server = match SimServer::start_on(flavor, cfg, addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gleitzeit-sim: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{}", server.url())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(out);
    wait_for_signal().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// Returns on SIGINT or SIGTERM.
async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn cli_is_well_formed() {
        Args::command().debug_assert();
    }

    #[tokio::test]
    async fn serves_what_the_flags_say() {
        let args = Args::try_parse_from([
            "gleitzeit-sim",
            "openai",
            "--port",
            "0",
            "--latency",
            "5ms",
            "--models",
            "smollm2,other",
            "--max-chars",
            "12",
        ])
        .unwrap();
        let (flavor, cfg, addr) = setup(args);
        assert_eq!(flavor, Flavor::OpenAi);
        assert_eq!(cfg.latency, Duration::from_millis(5));
        assert_eq!(cfg.models, ["smollm2", "other"]);
        assert_eq!(addr.port(), 0);
        let server = SimServer::start_on(flavor, cfg, addr).await.unwrap();
        assert!(server.url().starts_with("http://127.0.0.1:"));

        let mut conn = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        conn.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""id":"smollm2""#), "{response}");
        assert!(response.contains(r#""id":"other""#), "{response}");
    }

    #[test]
    fn unknown_api_is_refused() {
        assert!(Args::try_parse_from(["gleitzeit-sim", "anthropic"]).is_err());
    }
}
