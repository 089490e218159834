//! `gleitzeit-sim`: serves one provider simulator (Ollama, OpenAI-compatible or Anthropic) for
//! benchmarks, demos and end-to-end tests that need the simulator in its own process. The
//! first line on stdout is the bound URL, so a script can start it with `--port 0` and read
//! where it listens.
//!
//! ```text
//! gleitzeit-sim --kind ollama --latency 30ms --max-loaded 2 --load-delay 200ms
//! gleitzeit-sim anthropic --port 8081          # the kind may also be given positionally
//! ```

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use gleitzeit_testkit::llm::{Flavor, Reply, SimConfig, SimServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Api {
    /// Ollama's native API (/api/generate, /api/chat, /api/embed, /api/tags, /api/ps, ...).
    Ollama,
    /// The OpenAI-compatible API (/v1/chat/completions, /v1/embeddings, /v1/models).
    Openai,
    /// Anthropic's Messages API (/v1/messages, /v1/models).
    Anthropic,
}

/// Serve an LLM provider simulator.
#[derive(Debug, Parser)]
#[command(name = "gleitzeit-sim", version)]
struct Args {
    /// Which API to speak (the same as `--kind`; kept for scripts that pass it first).
    #[arg(value_name = "KIND", required_unless_present = "kind")]
    api: Option<Api>,
    /// Which API to speak.
    #[arg(long, conflicts_with = "api")]
    kind: Option<Api>,
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
    /// Extra delay whenever a model is loaded (first use, and again after an eviction).
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    load_delay: Duration,
    /// Most models loaded at once; one more evicts the least recently used (0 = no limit).
    #[arg(long, default_value_t = 0)]
    max_loaded: usize,
    /// Models served, comma-separated; empty serves any model name.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Longest echoed reply, in characters.
    #[arg(long, default_value_t = 200)]
    max_chars: usize,
    /// Dimensions of returned embeddings.
    #[arg(long, default_value_t = 8)]
    embedding_dims: usize,
    /// Require this API key (a bearer token, or `x-api-key` for Anthropic).
    #[arg(long, env = "GLEITZEIT_SIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// On SIGINT/SIGTERM, print one JSON line of what was served before stopping: requests
    /// received, the most in flight at once, model loads and the load log (for benchmarks
    /// that drive the simulator from outside, e.g. another router).
    #[arg(long)]
    stats: bool,
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
    // clap guarantees exactly one of the two; Ollama is only a formal fallback.
    let flavor = match args.kind.or(args.api).unwrap_or(Api::Ollama) {
        Api::Ollama => Flavor::Ollama,
        Api::Openai => Flavor::OpenAi,
        Api::Anthropic => Flavor::Anthropic,
    };
    // Built from the defaults so that settings added to the simulator later keep theirs.
    let base = SimConfig::default()
        .with_models(args.models.into_iter().filter(|m| !m.is_empty()))
        .with_latency(args.latency)
        .with_token_delay(args.token_delay)
        .with_reply(Reply::Echo {
            max_chars: args.max_chars,
        });
    let cfg = SimConfig {
        load_delay: args.load_delay,
        max_loaded: args.max_loaded,
        embedding_dims: args.embedding_dims,
        api_key: args.api_key,
        ..base
    };
    (flavor, cfg, SocketAddr::new(args.host, args.port))
}

async fn serve(args: Args) -> ExitCode {
    let stats = args.stats;
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
    if stats {
        let c = server.counters();
        let log: Vec<serde_json::Value> = server
            .load_log()
            .iter()
            .map(|l| {
                serde_json::json!({
                    "model": l.model,
                    "started_ms": l.started_ms,
                    "done_ms": l.done_ms(),
                })
            })
            .collect();
        let line = serde_json::json!({
            "received": c.received,
            "max_in_flight": c.max_in_flight,
            "loads": c.loads,
            "load_log": log,
        });
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return ExitCode::FAILURE;
        }
    }
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

    /// One HTTP/1.1 request on a fresh connection; the whole response as text.
    async fn http(addr: SocketAddr, request: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        response
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

        let response = http(
            server.addr(),
            "GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""id":"smollm2""#), "{response}");
        assert!(response.contains(r#""id":"other""#), "{response}");
    }

    #[test]
    fn every_kind_can_be_chosen_by_flag_or_position() {
        for (name, flavor) in [
            ("ollama", Flavor::Ollama),
            ("openai", Flavor::OpenAi),
            ("anthropic", Flavor::Anthropic),
        ] {
            let by_flag = Args::try_parse_from(["gleitzeit-sim", "--kind", name]).unwrap();
            assert_eq!(setup(by_flag).0, flavor, "--kind {name}");
            let by_position = Args::try_parse_from(["gleitzeit-sim", name]).unwrap();
            assert_eq!(setup(by_position).0, flavor, "{name}");
        }
    }

    #[test]
    fn kind_is_required_once() {
        assert!(Args::try_parse_from(["gleitzeit-sim"]).is_err());
        assert!(Args::try_parse_from(["gleitzeit-sim", "ollama", "--kind", "openai"]).is_err());
        assert!(Args::try_parse_from(["gleitzeit-sim", "--kind", "gemini"]).is_err());
    }

    #[test]
    fn model_loading_flags_reach_the_config() {
        let args = Args::try_parse_from([
            "gleitzeit-sim",
            "--kind",
            "ollama",
            "--max-loaded",
            "2",
            "--load-delay",
            "150ms",
        ])
        .unwrap();
        let (_, cfg, _) = setup(args);
        assert_eq!(cfg.max_loaded, 2);
        assert_eq!(cfg.load_delay, Duration::from_millis(150));
        let defaults = setup(Args::try_parse_from(["gleitzeit-sim", "ollama"]).unwrap()).1;
        assert_eq!(defaults.max_loaded, 0, "no limit unless asked");
    }

    #[tokio::test]
    async fn anthropic_simulator_answers_messages() {
        let args = Args::try_parse_from([
            "gleitzeit-sim",
            "--kind",
            "anthropic",
            "--api-key",
            "k-test",
        ])
        .unwrap();
        let (flavor, cfg, addr) = setup(args);
        let server = SimServer::start_on(flavor, cfg, addr).await.unwrap();
        let body =
            r#"{"model":"claude-x","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
        let request = |key: &str| {
            format!(
                "POST /v1/messages HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
                 content-type: application/json\r\nx-api-key: {key}\r\n\
                 anthropic-version: 2023-06-01\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let ok = http(server.addr(), &request("k-test")).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("claude-x: hi"), "{ok}");
        let refused = http(server.addr(), &request("wrong")).await;
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    }
}
