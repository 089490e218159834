//! The OpenAI-compatible API: `/v1/chat/completions` (server-sent events with
//! `choices[0].delta.content`, a usage chunk, `data: [DONE]`), `/v1/embeddings`, `/v1/models`.

use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{clean_message, json_error_message, LlmError};
use crate::http::{elapsed_ms, Http, Progress};
use crate::image::data_url;
use crate::lines::SseEvent;
use crate::types::{
    CallOptions, GenOptions, LlmRequest, LlmResponse, Message, ModelInfo, Op, OptionNames,
};

/// The path of an API resource below the base URL, which may or may not end in `/v1`.
pub(crate) fn path(http: &Http, resource: &str) -> String {
    if http.base_ends_with_v1() {
        format!("/{resource}")
    } else {
        format!("/v1/{resource}")
    }
}

/// Runs one request against an OpenAI-compatible endpoint.
pub(crate) async fn call(
    http: &Http,
    endpoint: &str,
    req: &LlmRequest,
    opts: &CallOptions,
    progress: &Progress,
    start: Instant,
) -> Result<LlmResponse, LlmError> {
    let messages = match &req.op {
        Op::Generate {
            prompt,
            system,
            images,
        } => {
            let mut msgs = Vec::with_capacity(2);
            if let Some(s) = system {
                msgs.push(json!({"role": "system", "content": s}));
            }
            msgs.push(json!({"role": "user", "content": content(prompt, images)}));
            msgs
        }
        Op::Chat { messages, system } => {
            let mut msgs = Vec::with_capacity(messages.len() + 1);
            if let Some(s) = system {
                msgs.push(json!({"role": "system", "content": s}));
            }
            msgs.extend(messages.iter().map(message));
            msgs
        }
        Op::Embed { inputs } => return embed(http, endpoint, req, inputs, progress, start).await,
    };
    let body = chat_body(req, messages, opts.stream);
    let resp = http
        .post_json(&path(http, "chat/completions"), &body, &req.model, progress)
        .await?;
    let mut asm = SseAssembler::default();
    if !opts.stream {
        let bytes = http.read_body(resp).await?;
        let chunk: ChatChunk = serde_json::from_slice(&bytes).map_err(|e| LlmError::Decode {
            message: e.to_string(),
        })?;
        if let Some(err) = &chunk.error {
            return Err(stream_error(err, http));
        }
        let text = chunk
            .choices
            .first()
            .and_then(|c| c.message.as_ref())
            .and_then(|m| m.content.clone())
            .ok_or_else(|| LlmError::Decode {
                message: "response has no choices[0].message".into(),
            })?;
        asm.text = text;
        asm.absorb_meta(&chunk);
        return Ok(asm.into_response(req, endpoint, start, false));
    }
    if http
        .read_sse(resp, |event| asm.event(event, start, http))
        .await?
    {
        return Ok(asm.into_response(req, endpoint, start, true));
    }
    Err(LlmError::Stream {
        message: "stream ended before data: [DONE]".into(),
    })
}

/// A user message's `content`: a string, or text and `image_url` parts when there are images.
fn content(text: &str, images: &[String]) -> Value {
    if images.is_empty() {
        return json!(text);
    }
    let mut parts = vec![json!({"type": "text", "text": text})];
    parts.extend(
        images
            .iter()
            .map(|i| json!({"type": "image_url", "image_url": {"url": data_url(i)}})),
    );
    Value::Array(parts)
}

fn message(m: &Message) -> Value {
    json!({"role": m.role, "content": content(&m.content, &m.images)})
}

pub(crate) fn chat_body(req: &LlmRequest, messages: Vec<Value>, stream: bool) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), json!(stream));
    if stream {
        // Without this the stream carries no token counts.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    apply_options(&mut body, &req.options);
    Value::Object(body)
}

fn apply_options(body: &mut Map<String, Value>, o: &GenOptions) {
    o.write_into(
        body,
        &OptionNames {
            max_tokens: Some("max_tokens"),
            seed: Some("seed"),
            stop: "stop",
        },
    );
    if o.json {
        body.insert("response_format".into(), json!({"type": "json_object"}));
    }
}

/// One chat completion chunk (or the whole non-streamed completion).
#[derive(Debug, Default, Deserialize)]
struct ChatChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Content>,
    #[serde(default)]
    message: Option<Content>,
}

#[derive(Debug, Default, Deserialize)]
struct Content {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

fn stream_error(err: &Value, http: &Http) -> LlmError {
    let wrapped = json!({ "error": err });
    let text = json_error_message(&wrapped).unwrap_or_else(|| err.to_string());
    LlmError::Stream {
        message: clean_message(&text, http.secret()),
    }
}

/// Assembles a completion from SSE events.
#[derive(Debug, Default)]
struct SseAssembler {
    text: String,
    model: Option<String>,
    usage: Usage,
    ttft_ms: Option<u64>,
}

impl SseAssembler {
    /// Feeds one event; `Ok(true)` at `[DONE]`.
    fn event(&mut self, event: &SseEvent, start: Instant, http: &Http) -> Result<bool, LlmError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if event.event.as_deref() == Some("error") {
            let message = serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| json_error_message(&v))
                .unwrap_or_else(|| data.to_owned());
            return Err(LlmError::Stream {
                message: clean_message(&message, http.secret()),
            });
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: ChatChunk = serde_json::from_str(data).map_err(|e| LlmError::Decode {
            message: format!("invalid stream event: {e}"),
        })?;
        if let Some(err) = &chunk.error {
            return Err(stream_error(err, http));
        }
        if let Some(piece) = chunk
            .choices
            .first()
            .and_then(|c| c.delta.as_ref())
            .and_then(|d| d.content.as_deref())
        {
            if !piece.is_empty() {
                if self.ttft_ms.is_none() {
                    self.ttft_ms = Some(elapsed_ms(start));
                }
                self.text.push_str(piece);
            }
        }
        self.absorb_meta(&chunk);
        Ok(false)
    }

    fn absorb_meta(&mut self, chunk: &ChatChunk) {
        if self.model.is_none() {
            self.model.clone_from(&chunk.model);
        }
        if let Some(u) = chunk.usage {
            self.usage = u;
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
            prompt_tokens: self.usage.prompt_tokens,
            completion_tokens: self.usage.completion_tokens,
            total_ms: elapsed_ms(start),
            load_ms: None,
            ttft_ms: if streamed { self.ttft_ms } else { None },
            budget: None,
        }
    }
}

async fn embed(
    http: &Http,
    endpoint: &str,
    req: &LlmRequest,
    inputs: &[String],
    progress: &Progress,
    start: Instant,
) -> Result<LlmResponse, LlmError> {
    #[derive(Deserialize)]
    struct Embeddings {
        data: Vec<Item>,
        #[serde(default)]
        model: Option<String>,
        #[serde(default)]
        usage: Option<Usage>,
    }
    #[derive(Deserialize)]
    struct Item {
        embedding: Vec<f32>,
        #[serde(default)]
        index: Option<usize>,
    }
    let body = json!({"model": req.model, "input": inputs});
    let resp = http
        .post_json(&path(http, "embeddings"), &body, &req.model, progress)
        .await?;
    let bytes = http.read_body(resp).await?;
    let mut parsed: Embeddings = serde_json::from_slice(&bytes).map_err(|e| LlmError::Decode {
        message: e.to_string(),
    })?;
    if parsed.data.len() != inputs.len() {
        return Err(LlmError::Decode {
            message: format!(
                "{} embeddings for {} inputs",
                parsed.data.len(),
                inputs.len()
            ),
        });
    }
    // `index` says which input a vector belongs to; servers need not answer in order.
    parsed.data.sort_by_key(|i| i.index.unwrap_or(usize::MAX));
    Ok(LlmResponse {
        text: None,
        embeddings: Some(parsed.data.into_iter().map(|i| i.embedding).collect()),
        model: parsed.model.unwrap_or_else(|| req.model.clone()),
        endpoint: endpoint.to_owned(),
        prompt_tokens: parsed.usage.and_then(|u| u.prompt_tokens),
        completion_tokens: None,
        total_ms: elapsed_ms(start),
        load_ms: None,
        ttft_ms: None,
        budget: None,
    })
}

/// `GET /v1/models`.
pub(crate) async fn list_models(
    http: &Http,
    progress: &Progress,
) -> Result<Vec<ModelInfo>, LlmError> {
    #[derive(Deserialize)]
    struct Models {
        data: Vec<Model>,
    }
    #[derive(Deserialize)]
    struct Model {
        id: String,
    }
    let resp = http.get(&path(http, "models"), progress).await?;
    let bytes = http.read_body(resp).await?;
    let models: Models = serde_json::from_slice(&bytes).map_err(|e| LlmError::Decode {
        message: e.to_string(),
    })?;
    Ok(models
        .data
        .into_iter()
        .map(|m| ModelInfo {
            name: m.id,
            size_bytes: None,
        })
        .collect())
}

/// A client for the unit tests of every provider module: they parse and assemble, and never
/// connect, so the URL only has to be well-formed.
#[cfg(test)]
pub(crate) fn test_http(url: &str, kind: crate::config::ProviderKind) -> Http {
    Http::new(&crate::config::EndpointConfig::new("t", url, kind)).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    fn http(url: &str) -> Http {
        test_http(url, ProviderKind::OpenAi)
    }

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    #[test]
    fn paths_with_and_without_v1() {
        assert_eq!(path(&http("http://h:1"), "models"), "/v1/models");
        assert_eq!(path(&http("http://h:1/"), "models"), "/v1/models");
        assert_eq!(path(&http("https://h/v1"), "models"), "/models");
        assert_eq!(path(&http("https://h/v1/"), "embeddings"), "/embeddings");
    }

    #[test]
    fn assembles_deltas_and_usage() {
        let h = http("http://h:1");
        let start = Instant::now();
        let mut asm = SseAssembler::default();
        for d in [
            r#"{"id":"c","model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c","model":"gpt","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c","model":"gpt","choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}]}"#,
            r#"{"id":"c","model":"gpt","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"c","model":"gpt","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#,
        ] {
            assert!(!asm.event(&ev(d), start, &h).unwrap());
        }
        assert!(asm.event(&ev("[DONE]"), start, &h).unwrap());
        let r = asm.into_response(&LlmRequest::generate("gpt", "x"), "ep", start, true);
        assert_eq!(r.text.as_deref(), Some("Hi there"));
        assert_eq!(r.prompt_tokens, Some(4));
        assert_eq!(r.completion_tokens, Some(2));
        assert!(r.ttft_ms.is_some());
        assert_eq!(r.model, "gpt");
    }

    #[test]
    fn error_events() {
        let h = http("http://h:1");
        let start = Instant::now();
        let mut asm = SseAssembler::default();
        let e = asm
            .event(
                &ev(r#"{"error":{"message":"server had an error","type":"server_error"}}"#),
                start,
                &h,
            )
            .unwrap_err();
        assert_eq!(
            e,
            LlmError::Stream {
                message: "server had an error".into()
            }
        );
        let e = asm
            .event(
                &SseEvent {
                    event: Some("error".into()),
                    data: r#"{"message":"overloaded"}"#.into(),
                },
                start,
                &h,
            )
            .unwrap_err();
        assert_eq!(
            e,
            LlmError::Stream {
                message: "overloaded".into()
            }
        );
        assert!(matches!(
            asm.event(&ev("{oops"), start, &h),
            Err(LlmError::Decode { .. })
        ));
    }

    #[test]
    fn body_mapping() {
        let mut req = LlmRequest::generate("m", "p");
        req.options = GenOptions {
            temperature: Some(0.1),
            top_p: None,
            top_k: None,
            max_tokens: Some(5),
            seed: Some(3),
            stop: vec!["x".into()],
            json: true,
        };
        let body = chat_body(&req, vec![json!({"role":"user","content":"p"})], true);
        assert_eq!(
            body,
            json!({
                "model":"m","messages":[{"role":"user","content":"p"}],"stream":true,
                "stream_options":{"include_usage":true},"temperature":0.1,"max_tokens":5,
                "seed":3,"stop":["x"],"response_format":{"type":"json_object"}
            })
        );
        assert_eq!(
            content("look", &["iVBORw0KGgo".into()]),
            json!([{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo"}}])
        );
    }
}
