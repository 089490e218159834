//! Anthropic's Messages API: `POST /v1/messages` with `x-api-key` and `anthropic-version`,
//! the system prompt as a top-level `system`, content blocks (text and base64 images),
//! streaming as server-sent events (`message_start`, `content_block_delta`, `message_delta`,
//! `message_stop`, `error`), token counts in `usage.input_tokens` / `usage.output_tokens`.
//!
//! The API has no embeddings and requires `max_tokens`; [`DEFAULT_MAX_TOKENS`] is sent when a
//! request leaves it open. It has no JSON mode and no seed, so those options are not sent.

use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{clean_message, json_error_message, LlmError};
use crate::http::{elapsed_ms, Http, Progress};
use crate::image::{bare_base64, media_type};
use crate::lines::SseEvent;
use crate::types::{
    CallOptions, GenOptions, LlmRequest, LlmResponse, Message, ModelInfo, Op, OptionNames,
};
// The Messages API lives under the same `/v1/` prefix as the OpenAI API.
use crate::openai::path;

/// `max_tokens` sent when the request does not limit the output (the API requires a value).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Runs one request against a Messages endpoint.
pub(crate) async fn call(
    http: &Http,
    endpoint: &str,
    req: &LlmRequest,
    opts: &CallOptions,
    progress: &Progress,
    start: Instant,
) -> Result<LlmResponse, LlmError> {
    let body = request_body(req, opts.stream)?;
    let resp = http
        .post_json(&path(http, "messages"), &body, &req.model, progress)
        .await?;
    let mut asm = Assembler::default();
    if !opts.stream {
        let bytes = http.read_body(resp).await?;
        let msg: Value = serde_json::from_slice(&bytes).map_err(|e| LlmError::Decode {
            message: e.to_string(),
        })?;
        if msg.get("type").and_then(Value::as_str) == Some("error") {
            return Err(stream_error(&msg, http));
        }
        let msg: MessageBody = serde_json::from_value(msg).map_err(|e| LlmError::Decode {
            message: e.to_string(),
        })?;
        asm.model = msg.model;
        asm.text = msg
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect();
        asm.absorb_usage(msg.usage.as_ref());
        return Ok(asm.into_response(req, endpoint, start, false));
    }
    if http
        .read_sse(resp, |event| asm.event(event, start, http))
        .await?
    {
        return Ok(asm.into_response(req, endpoint, start, true));
    }
    Err(LlmError::Stream {
        message: "stream ended before message_stop".into(),
    })
}

/// The JSON body of a Messages request. Embeddings are refused: the API has none.
pub(crate) fn request_body(req: &LlmRequest, stream: bool) -> Result<Value, LlmError> {
    let mut system_parts: Vec<String> = Vec::new();
    let messages: Vec<Value> = match &req.op {
        Op::Generate {
            prompt,
            system,
            images,
        } => {
            system_parts.extend(system.iter().cloned());
            vec![json!({"role": "user", "content": blocks(prompt, images)})]
        }
        Op::Chat { messages, system } => {
            system_parts.extend(system.iter().cloned());
            let mut out = Vec::with_capacity(messages.len());
            for m in messages {
                // The API accepts only user and assistant turns; system text moves to `system`.
                if m.role == "system" {
                    system_parts.push(m.content.clone());
                } else {
                    out.push(message(m));
                }
            }
            out
        }
        Op::Embed { .. } => {
            return Err(LlmError::InvalidRequest {
                message: "Anthropic endpoints do not offer embeddings".into(),
            })
        }
    };
    if messages.is_empty() {
        return Err(LlmError::InvalidRequest {
            message: "a Messages request needs at least one user or assistant message".into(),
        });
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert(
        "max_tokens".into(),
        json!(req.options.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if !system_parts.is_empty() {
        body.insert("system".into(), json!(system_parts.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), json!(stream));
    apply_options(&mut body, &req.options);
    Ok(Value::Object(body))
}

fn message(m: &Message) -> Value {
    json!({"role": m.role, "content": blocks(&m.content, &m.images)})
}

/// A turn's content: a plain string, or image blocks followed by a text block (the order
/// Anthropic recommends: images before the question about them).
fn blocks(text: &str, images: &[String]) -> Value {
    if images.is_empty() {
        return json!(text);
    }
    let mut parts: Vec<Value> = images.iter().map(|i| image_block(i)).collect();
    parts.push(json!({"type": "text", "text": text}));
    Value::Array(parts)
}

fn image_block(image: &str) -> Value {
    if image.starts_with("https://") || image.starts_with("http://") {
        return json!({"type": "image", "source": {"type": "url", "url": image}});
    }
    let data = bare_base64(image);
    // A data URL names its media type; bare base64 is recognised by its first bytes.
    let media = image
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .map(|(m, _)| m.to_owned())
        .unwrap_or_else(|| media_type(data).to_owned());
    json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
}

fn apply_options(body: &mut Map<String, Value>, o: &GenOptions) {
    // `max_tokens` is required and written by the caller; the Messages API has no seed.
    o.write_into(
        body,
        &OptionNames {
            max_tokens: None,
            seed: None,
            stop: "stop_sequences",
        },
    );
}

/// A whole (non-streamed) message.
#[derive(Debug, Deserialize)]
struct MessageBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Block {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// `{"type": "error", "error": {"type": ..., "message": ...}}` met inside a 200 response.
fn stream_error(v: &Value, http: &Http) -> LlmError {
    let text = json_error_message(v).unwrap_or_else(|| v.to_string());
    LlmError::Stream {
        message: clean_message(&text, http.secret()),
    }
}

/// Assembles a message from stream events.
#[derive(Debug, Default)]
struct Assembler {
    text: String,
    model: Option<String>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    ttft_ms: Option<u64>,
}

impl Assembler {
    /// Feeds one event; `Ok(true)` at `message_stop`.
    fn event(&mut self, event: &SseEvent, start: Instant, http: &Http) -> Result<bool, LlmError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(false);
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(_) if event.event.as_deref() == Some("error") => {
                return Err(LlmError::Stream {
                    message: clean_message(data, http.secret()),
                })
            }
            Err(e) => {
                return Err(LlmError::Decode {
                    message: format!("invalid stream event: {e}"),
                })
            }
        };
        // The `type` in the data is authoritative; the `event:` line repeats it.
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or("");
        match kind {
            "message_start" => {
                if let Some(m) = v.get("message") {
                    if let Some(model) = m.get("model").and_then(Value::as_str) {
                        self.model = Some(model.to_owned());
                    }
                    self.absorb_usage_value(m.get("usage"));
                }
            }
            "content_block_start" => {
                if let Some(t) = v
                    .get("content_block")
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                    .and_then(|b| b.get("text"))
                    .and_then(Value::as_str)
                {
                    self.push(t, start);
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta");
                if delta.and_then(|d| d.get("type")).and_then(Value::as_str) == Some("text_delta") {
                    if let Some(t) = delta.and_then(|d| d.get("text")).and_then(Value::as_str) {
                        self.push(t, start);
                    }
                }
            }
            "message_delta" => self.absorb_usage_value(v.get("usage")),
            "message_stop" => return Ok(true),
            "error" => return Err(stream_error(&v, http)),
            // `ping`, `content_block_stop` and event types added later carry no text.
            _ => {}
        }
        Ok(false)
    }

    fn push(&mut self, piece: &str, start: Instant) {
        if piece.is_empty() {
            return;
        }
        if self.ttft_ms.is_none() {
            self.ttft_ms = Some(elapsed_ms(start));
        }
        self.text.push_str(piece);
    }

    fn absorb_usage_value(&mut self, usage: Option<&Value>) {
        if let Some(u) = usage.and_then(|u| Usage::deserialize(u).ok()) {
            self.absorb_usage(Some(&u));
        }
    }

    /// Counts arrive in pieces (`message_start` has the input, `message_delta` the final
    /// output); a later value replaces an earlier one.
    fn absorb_usage(&mut self, usage: Option<&Usage>) {
        if let Some(u) = usage {
            if u.input_tokens.is_some() {
                self.prompt_tokens = u.input_tokens;
            }
            if u.output_tokens.is_some() {
                self.completion_tokens = u.output_tokens;
            }
        }
    }

    fn into_response(
        self,
        req: &LlmRequest,
        endpoint: &str,
        start: Instant,
        streamed: bool,
    ) -> LlmResponse {
        LlmResponse {
            text: Some(self.text),
            embeddings: None,
            model: self.model.unwrap_or_else(|| req.model.clone()),
            endpoint: endpoint.to_owned(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_ms: elapsed_ms(start),
            load_ms: None,
            ttft_ms: if streamed { self.ttft_ms } else { None },
            budget: None,
        }
    }
}

/// `GET /v1/models` (`data[].id`, the same listing as OpenAI's).
pub(crate) async fn list_models(
    http: &Http,
    progress: &Progress,
) -> Result<Vec<ModelInfo>, LlmError> {
    crate::openai::list_models(http, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    fn http() -> Http {
        crate::openai::test_http("http://h:1", ProviderKind::Anthropic)
    }

    fn ev(kind: &str, data: Value) -> SseEvent {
        SseEvent {
            event: Some(kind.into()),
            data: data.to_string(),
        }
    }

    #[test]
    fn assembles_a_stream() {
        let h = http();
        let start = Instant::now();
        let mut asm = Assembler::default();
        let events = [
            ev(
                "message_start",
                json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"usage":{"input_tokens":7,"output_tokens":1}}}),
            ),
            ev(
                "content_block_start",
                json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            ),
            ev("ping", json!({"type":"ping"})),
            ev(
                "content_block_delta",
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}),
            ),
            ev(
                "content_block_delta",
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}),
            ),
            ev(
                "content_block_stop",
                json!({"type":"content_block_stop","index":0}),
            ),
            ev(
                "message_delta",
                json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}),
            ),
        ];
        for e in &events {
            assert!(!asm.event(e, start, &h).unwrap());
        }
        assert!(asm
            .event(
                &ev("message_stop", json!({"type":"message_stop"})),
                start,
                &h
            )
            .unwrap());
        let r = asm.into_response(&LlmRequest::generate("claude", "x"), "ep", start, true);
        assert_eq!(r.text.as_deref(), Some("Hello there"));
        assert_eq!(r.model, "claude-x");
        assert_eq!(r.prompt_tokens, Some(7));
        assert_eq!(r.completion_tokens, Some(2));
        assert!(r.ttft_ms.is_some());
    }

    #[test]
    fn error_events_fail_the_stream() {
        let h = http();
        let mut asm = Assembler::default();
        let e = asm
            .event(
                &ev(
                    "error",
                    json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
                ),
                Instant::now(),
                &h,
            )
            .unwrap_err();
        assert_eq!(
            e,
            LlmError::Stream {
                message: "Overloaded".into()
            }
        );
        assert!(e.is_retryable());
        assert!(matches!(
            asm.event(
                &SseEvent {
                    event: None,
                    data: "{oops".into()
                },
                Instant::now(),
                &h
            ),
            Err(LlmError::Decode { .. })
        ));
    }

    #[test]
    fn body_mapping() {
        let mut req = LlmRequest::chat(
            "claude",
            vec![
                Message::system("be brief"),
                Message::user("hi"),
                Message::assistant("yo"),
                Message {
                    role: "user".into(),
                    content: "what is this?".into(),
                    images: vec![
                        "iVBORw0KGgo".into(),
                        "data:image/jpeg;base64,/9j/4AAQ".into(),
                    ],
                },
            ],
        );
        if let Op::Chat { system, .. } = &mut req.op {
            *system = Some("you are helpful".into());
        }
        req.options = GenOptions {
            temperature: Some(0.2),
            top_p: None,
            top_k: Some(5),
            max_tokens: None,
            seed: Some(1),
            stop: vec!["END".into()],
            json: true,
        };
        let body = request_body(&req, true).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "system": "you are helpful\n\nbe brief",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                    {"role": "user", "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo"}},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                        {"type": "text", "text": "what is this?"}
                    ]}
                ],
                "stream": true,
                "temperature": 0.2,
                "top_k": 5,
                "stop_sequences": ["END"]
            })
        );
        assert!(matches!(
            request_body(&LlmRequest::embed("m", vec!["x".into()]), false),
            Err(LlmError::InvalidRequest { .. })
        ));
        assert!(matches!(
            request_body(&LlmRequest::chat("m", vec![Message::system("only")]), false),
            Err(LlmError::InvalidRequest { .. })
        ));
    }
}
