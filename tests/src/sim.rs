//! Provider simulators for the tests and what they recorded.

use gleitzeit_testkit::llm::{MockOpenAi, Reply, SimConfig, SimServer};
use serde_json::Value;

/// An OpenAI-compatible simulator that echoes `"{model}: {prompt}"` without truncation, so
/// results passed along a chain can be asserted exactly.
pub async fn echo_openai() -> MockOpenAi {
    openai(SimConfig::default().with_reply(Reply::Echo {
        max_chars: 1_000_000,
    }))
    .await
}

/// An OpenAI-compatible simulator with this configuration.
pub async fn openai(cfg: SimConfig) -> MockOpenAi {
    MockOpenAi::start(cfg)
        .await
        .expect("starting the OpenAI simulator")
}

/// The prompts of every inference request received, in arrival order: the last user message
/// of chat requests (text parts joined), the `prompt` of Ollama generate requests.
pub fn prompts(server: &SimServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter_map(|r| {
            let body = r.body?;
            if let Some(messages) = body.get("messages").and_then(Value::as_array) {
                return messages
                    .iter()
                    .rev()
                    .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                    .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)));
            }
            body.get("prompt")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

/// The prompts that start with `prefix`.
pub fn prompts_starting_with(server: &SimServer, prefix: &str) -> Vec<String> {
    prompts(server)
        .into_iter()
        .filter(|p| p.starts_with(prefix))
        .collect()
}

/// Message content as text: a string, or the `text` parts of a content array.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}
