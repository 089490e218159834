//! Provider-neutral request and response types.
//!
//! These describe *what* to ask a model, independent of the wire format; each provider module
//! maps them to its API. They carry no endpoint, so a router can send one request to any
//! endpoint serving the model.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ratelimit::RateBudget;

/// One call to a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmRequest {
    /// Model name as the endpoint knows it (for example `llama3.2:3b`).
    pub model: String,
    /// What to do.
    pub op: Op,
    /// Sampling and output options.
    #[serde(default)]
    pub options: GenOptions,
    /// Ollama's `keep_alive` (how long the model stays loaded, for example `"5m"`); other APIs
    /// ignore it.
    #[serde(default)]
    pub keep_alive: Option<String>,
}

impl LlmRequest {
    /// A text generation request with default options.
    pub fn generate(model: impl Into<String>, prompt: impl Into<String>) -> LlmRequest {
        LlmRequest {
            model: model.into(),
            op: Op::Generate {
                prompt: prompt.into(),
                system: None,
                images: Vec::new(),
            },
            options: GenOptions::default(),
            keep_alive: None,
        }
    }

    /// A chat request with default options.
    pub fn chat(model: impl Into<String>, messages: Vec<Message>) -> LlmRequest {
        LlmRequest {
            model: model.into(),
            op: Op::Chat {
                messages,
                system: None,
            },
            options: GenOptions::default(),
            keep_alive: None,
        }
    }

    /// An embedding request (one vector per input).
    pub fn embed(model: impl Into<String>, inputs: Vec<String>) -> LlmRequest {
        LlmRequest {
            model: model.into(),
            op: Op::Embed { inputs },
            options: GenOptions::default(),
            keep_alive: None,
        }
    }
}

/// The operation of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Op {
    /// Complete one prompt, optionally with images (vision).
    Generate {
        /// The prompt.
        prompt: String,
        /// System prompt.
        #[serde(default)]
        system: Option<String>,
        /// Images, base64 (a `data:` URL is accepted too).
        #[serde(default)]
        images: Vec<String>,
    },
    /// Continue a conversation.
    Chat {
        /// The conversation so far.
        messages: Vec<Message>,
        /// System prompt, sent before the messages.
        #[serde(default)]
        system: Option<String>,
    },
    /// Embed each input.
    Embed {
        /// Texts to embed.
        inputs: Vec<String>,
    },
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
    /// Images attached to this message, base64 (a `data:` URL is accepted too).
    #[serde(default)]
    pub images: Vec<String>,
}

impl Message {
    /// A message with the given role and no images.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            images: Vec::new(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new("assistant", content)
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::new("system", content)
    }
}

/// Sampling and output options; `None` leaves the server's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenOptions {
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k sampling. Ollama's `options.top_k`; sent as `top_k` to OpenAI-compatible servers
    /// (llama.cpp and vLLM accept it, OpenAI itself rejects it), so only set it when wanted.
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Most tokens to generate (Ollama: `num_predict`).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Ask for a JSON object as output.
    #[serde(default)]
    pub json: bool,
}

/// What a provider's API calls the sampling options; `None` = the API has no such option
/// (or the provider writes it itself).
pub(crate) struct OptionNames {
    /// Name of the output-token limit.
    pub max_tokens: Option<&'static str>,
    /// Name of the seed.
    pub seed: Option<&'static str>,
    /// Name of the stop sequences.
    pub stop: &'static str,
}

impl GenOptions {
    /// Writes every option that is set into `map` under the API's names, so the server's
    /// defaults stay in force for the rest. `json` is provider-specific and left to the caller.
    pub(crate) fn write_into(
        &self,
        map: &mut serde_json::Map<String, serde_json::Value>,
        names: &OptionNames,
    ) {
        use serde_json::json;
        if let Some(v) = self.temperature {
            map.insert("temperature".into(), json!(v));
        }
        if let Some(v) = self.top_p {
            map.insert("top_p".into(), json!(v));
        }
        if let Some(v) = self.top_k {
            map.insert("top_k".into(), json!(v));
        }
        if let (Some(v), Some(name)) = (self.max_tokens, names.max_tokens) {
            map.insert(name.into(), json!(v));
        }
        if let (Some(v), Some(name)) = (self.seed, names.seed) {
            map.insert(name.into(), json!(v));
        }
        if !self.stop.is_empty() {
            map.insert(names.stop.into(), json!(self.stop));
        }
    }
}

/// Per-call settings that are not part of what is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOptions {
    /// Overrides the endpoint's `request_timeout` for this call.
    pub timeout: Option<Duration>,
    /// Stream the response (default). Streaming gives time-to-first-token and lets the server
    /// start sending before generation ends; `false` asks for one JSON body.
    pub stream: bool,
    /// The longest chain of tasks waiting on the one making this call (0: none, or not a
    /// workflow task). `model_affinity` sends a call with a chain behind it to the fastest
    /// of the endpoints that are otherwise equal for it (the critical path first).
    pub chain_below: u32,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            timeout: None,
            stream: true,
            chain_below: 0,
        }
    }
}

/// What a call returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmResponse {
    /// Generated text (generate and chat).
    pub text: Option<String>,
    /// One vector per input (embed).
    pub embeddings: Option<Vec<Vec<f32>>>,
    /// The model that answered, as the server reports it.
    pub model: String,
    /// Name of the endpoint that answered.
    pub endpoint: String,
    /// Tokens in the prompt, when the server reports them.
    pub prompt_tokens: Option<u64>,
    /// Tokens generated, when the server reports them.
    pub completion_tokens: Option<u64>,
    /// Wall-clock time of the whole call, measured here.
    pub total_ms: u64,
    /// Time the server spent loading the model (Ollama reports it).
    pub load_ms: Option<u64>,
    /// Time from the start of the call to the first content chunk (streaming calls only).
    pub ttft_ms: Option<u64>,
    /// The rate-limit budget the endpoint's headers reported left after this call
    /// (OpenAI-style `x-ratelimit-*`, Anthropic's `anthropic-ratelimit-*`); `None` when it
    /// reported none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RateBudget>,
}

/// A model an endpoint offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The name to put in [`LlmRequest::model`].
    pub name: String,
    /// Size on disk (Ollama `/api/tags`) or in memory (Ollama `/api/ps`), when known.
    pub size_bytes: Option<u64>,
}

/// What Ollama's `/api/show` says about a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDetails {
    /// The model asked about.
    pub name: String,
    /// Parameter count as the server writes it (`"70.6B"`).
    pub parameter_size: Option<String>,
    /// Parameter count as a number, when `parameter_size` could be read.
    pub parameters: Option<u64>,
    /// Context window, tokens.
    pub context_length: Option<u64>,
    /// Model family (`llama`, `qwen2`, …).
    pub family: Option<String>,
    /// Quantisation (`Q4_K_M`, …).
    pub quantization: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_options_stream_by_default() {
        assert!(CallOptions::default().stream);
        assert_eq!(CallOptions::default().timeout, None);
    }

    #[test]
    fn request_round_trips_through_json() {
        let mut req = LlmRequest::chat("m", vec![Message::user("hi"), Message::assistant("yo")]);
        req.options.temperature = Some(0.5);
        let json = serde_json::to_string(&req).unwrap();
        let back: LlmRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, req);
    }
}
