//! The OpenAI and Anthropic providers against a real implementation: llama.cpp's
//! `llama-server` with a small model, which serves `/v1/chat/completions` and `/v1/messages`.
//!
//! Runs when `GLEITZEIT_LLAMA_SERVER` (the binary) and `GLEITZEIT_LLAMA_MODEL` (a GGUF file)
//! are set (`scripts/local-llm.sh env` prints both); otherwise each test says why it skipped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gleitzeit_llm::{CallOptions, EndpointConfig, LlmRequest, Message, Provider, ProviderKind};

/// A running `llama-server`, killed on drop.
struct LlamaServer {
    child: Child,
    url: String,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts the server, or `None` (with a message) when it is not installed here.
async fn start() -> Option<LlamaServer> {
    let (Ok(bin), Ok(model)) = (
        std::env::var("GLEITZEIT_LLAMA_SERVER"),
        std::env::var("GLEITZEIT_LLAMA_MODEL"),
    ) else {
        eprintln!(
            "skipped: set GLEITZEIT_LLAMA_SERVER and GLEITZEIT_LLAMA_MODEL \
             (eval \"$(scripts/local-llm.sh env)\") to test against llama-server"
        );
        return None;
    };
    let port = free_port();
    let child = Command::new(&bin)
        .args(["-m", &model, "--alias", "smollm2", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["-t", "1", "-tb", "1", "-np", "4", "-c", "4096"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let server = LlamaServer {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // A separate process offers nothing to await: poll its health endpoint until it answers
    // 200 (the model is loaded), bounded.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = client.get(format!("{}/health", server.url)).send().await {
            if r.status().is_success() {
                return Some(server);
            }
        }
        assert!(
            Instant::now() < deadline,
            "llama-server did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn provider(server: &LlamaServer, kind: ProviderKind) -> Provider {
    Provider::new(
        EndpointConfig::new("llama", server.url.clone(), kind)
            .with_request_timeout(Duration::from_secs(120)),
    )
    .unwrap()
}

fn request() -> LlmRequest {
    let mut req = LlmRequest::chat(
        "smollm2",
        vec![
            Message::system("You are a helpful assistant."),
            Message::user("Name a colour."),
        ],
    );
    req.options.max_tokens = Some(8);
    req.options.temperature = Some(0.0);
    req
}

/// Checks what every real answer must have: text, both token counts, the endpoint.
fn check(r: &gleitzeit_llm::LlmResponse, streamed: bool) {
    assert!(!r.text.as_deref().unwrap_or("").trim().is_empty(), "{r:?}");
    assert!(r.prompt_tokens.unwrap_or(0) > 0, "{r:?}");
    let n = r.completion_tokens.unwrap_or(0);
    assert!((1..=8).contains(&n), "{r:?}");
    assert_eq!(r.endpoint, "llama");
    assert_eq!(r.ttft_ms.is_some(), streamed, "{r:?}");
}

#[tokio::test]
async fn openai_and_anthropic_against_llama_server() {
    let Some(server) = start().await else {
        return;
    };
    for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic] {
        let p = provider(&server, kind);
        for stream in [true, false] {
            let opts = CallOptions {
                stream,
                ..CallOptions::default()
            };
            // A client of its own per call: llama-server may close a kept-alive connection
            // just as a pooled client reuses it ("connection closed before message
            // completed"), a transport race this test is not about (the router treats it as
            // endpoint trouble and tries again).
            let r = provider(&server, kind)
                .call(&request(), &opts)
                .await
                .unwrap_or_else(|e| panic!("{kind} stream={stream}: {e}"));
            check(&r, stream);
        }
        let models = p.list_models().await.unwrap();
        assert!(
            models.iter().any(|m| m.name == "smollm2"),
            "{kind}: {models:?}"
        );
    }
}
