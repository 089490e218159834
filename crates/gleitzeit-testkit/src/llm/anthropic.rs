//! Anthropic's Messages API as the simulator speaks it: `POST /v1/messages` (requires
//! `anthropic-version` and `max_tokens`; the key in `x-api-key`), SSE events `message_start`,
//! `content_block_start`, `ping`, `content_block_delta`, `content_block_stop`,
//! `message_delta`, `message_stop`, errors as `{"type": "error", "error": {type, message}}`,
//! 529 when overloaded, and `GET /v1/models`.

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::config::{SimConfig, SimOp, SimRequest};
use super::wire::{json, raw, Gen, Routed, Wire};

/// The Anthropic wire format.
pub(crate) struct Anthropic;

fn error_value(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn error(status: u16, kind: &str, message: &str) -> Response {
    json(status, &error_value(kind, message))
}

fn event(kind: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {v}\n\n"))
}

/// The text of a `content` that is a string or a list of blocks, and its image count.
fn content_text(content: &Value) -> Result<(String, usize), String> {
    match content {
        Value::String(s) => Ok((s.clone(), 0)),
        Value::Array(blocks) => {
            let mut text = Vec::new();
            let mut images = 0;
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = b.get("text").and_then(Value::as_str) {
                            text.push(t);
                        }
                    }
                    Some("image") => {
                        let source = b.get("source");
                        let kind = source.and_then(|s| s.get("type")).and_then(Value::as_str);
                        let ok = match kind {
                            Some("base64") => {
                                source
                                    .and_then(|s| s.get("media_type"))
                                    .and_then(Value::as_str)
                                    .is_some_and(|m| m.starts_with("image/"))
                                    && source
                                        .and_then(|s| s.get("data"))
                                        .and_then(Value::as_str)
                                        .is_some()
                            }
                            Some("url") => source
                                .and_then(|s| s.get("url"))
                                .and_then(Value::as_str)
                                .is_some(),
                            _ => false,
                        };
                        if !ok {
                            return Err(
                                "image source must be base64 (media_type, data) or url".to_owned()
                            );
                        }
                        images += 1;
                    }
                    other => return Err(format!("unsupported content block type {other:?}")),
                }
            }
            Ok((text.join("\n"), images))
        }
        _ => Err("content must be a string or a list of blocks".to_owned()),
    }
}

impl Anthropic {
    fn parse(&self, body: &Value) -> Result<SimRequest, Box<Response>> {
        let invalid = |m: &str| Box::new(error(400, "invalid_request_error", m));
        let model = match body.get("model").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ => return Err(invalid("model: Field required")),
        };
        let Some(max_tokens) = body.get("max_tokens").and_then(Value::as_u64) else {
            return Err(invalid("max_tokens: Field required"));
        };
        let Some(messages) = body.get("messages").and_then(Value::as_array) else {
            return Err(invalid("messages: Field required"));
        };
        let system = match body.get("system") {
            None | Some(Value::Null) => None,
            Some(v) => Some(content_text(v).map_err(|m| invalid(&m))?.0),
        };
        let mut req = SimRequest {
            op: SimOp::Chat,
            model,
            prompt: String::new(),
            system,
            inputs: Vec::new(),
            images: 0,
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            max_tokens: Some(max_tokens),
            body: body.clone(),
        };
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str);
            if !matches!(role, Some("user") | Some("assistant")) {
                return Err(invalid(&format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
            let (text, images) = content_text(m.get("content").unwrap_or(&Value::Null))
                .map_err(|e| invalid(&format!("messages.{i}.content: {e}")))?;
            req.images += images;
            if role == Some("user") {
                req.prompt = text;
            }
        }
        Ok(req)
    }

    fn stop_reason(g: &Gen) -> &'static str {
        if g.finish_reason == "length" {
            "max_tokens"
        } else {
            "end_turn"
        }
    }
}

impl Wire for Anthropic {
    fn route(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        cfg: &SimConfig,
        _loaded: &[String],
    ) -> Routed {
        match (method.as_str(), path) {
            ("POST", "/v1/messages") => match body {
                Some(b) => match self.parse(b) {
                    Ok(req) => Routed::Inference {
                        req,
                        include_usage: true,
                    },
                    Err(resp) => Routed::Direct(*resp),
                },
                None => Routed::Direct(error(
                    400,
                    "invalid_request_error",
                    "There was an issue with the format or content of your request.",
                )),
            },
            ("GET", "/v1/models") => {
                let data: Vec<Value> = cfg
                    .models
                    .iter()
                    .map(|m| {
                        json!({"type": "model", "id": m, "display_name": m,
                               "created_at": "2025-01-01T00:00:00Z"})
                    })
                    .collect();
                Routed::Direct(json(
                    200,
                    &json!({"data": data, "has_more": false,
                            "first_id": cfg.models.first(), "last_id": cfg.models.last()}),
                ))
            }
            _ => Routed::Direct(error(404, "not_found_error", "Not Found")),
        }
    }

    fn credential(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    fn check_headers(&self, headers: &HeaderMap) -> Option<Response> {
        if headers.contains_key("anthropic-version") {
            None
        } else {
            Some(error(
                400,
                "invalid_request_error",
                "anthropic-version: header is required",
            ))
        }
    }

    fn unauthorized(&self, _presented: Option<&str>) -> Response {
        error(401, "authentication_error", "invalid x-api-key")
    }

    fn model_not_found(&self, model: &str) -> Response {
        error(404, "not_found_error", &format!("model: {model}"))
    }

    fn rate_limited(&self, retry_after: Option<&str>) -> Response {
        let mut headers = vec![
            (
                "anthropic-ratelimit-requests-limit".to_owned(),
                "50".to_owned(),
            ),
            (
                "anthropic-ratelimit-requests-remaining".to_owned(),
                "0".to_owned(),
            ),
        ];
        if let Some(v) = retry_after {
            headers.push(("retry-after".to_owned(), v.to_owned()));
        }
        raw(
            429,
            "application/json",
            error_value(
                "rate_limit_error",
                "Number of requests has exceeded your rate limit.",
            )
            .to_string(),
            &headers,
        )
    }

    fn overloaded(&self) -> Response {
        error(529, "overloaded_error", "Overloaded")
    }

    fn stream_content_type(&self) -> &'static str {
        "text/event-stream; charset=utf-8"
    }

    fn stream_start(&self, g: &Gen) -> Vec<Bytes> {
        vec![
            event(
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": g.id, "type": "message", "role": "assistant", "content": [],
                    "model": g.model, "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": g.prompt_tokens, "output_tokens": 1}
                }}),
            ),
            event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", &json!({"type": "ping"})),
        ]
    }

    fn stream_token(&self, _g: &Gen, token: &str) -> Bytes {
        event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": token}}),
        )
    }

    fn stream_end(&self, g: &Gen) -> Vec<Bytes> {
        vec![
            event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ),
            event(
                "message_delta",
                &json!({"type": "message_delta",
                        "delta": {"stop_reason": Self::stop_reason(g), "stop_sequence": null},
                        "usage": {"output_tokens": g.completion_tokens}}),
            ),
            event("message_stop", &json!({"type": "message_stop"})),
        ]
    }

    fn stream_error(&self) -> Bytes {
        event("error", &error_value("overloaded_error", "Overloaded"))
    }

    fn complete(&self, g: &Gen, text: &str) -> Value {
        json!({
            "id": g.id,
            "type": "message",
            "role": "assistant",
            "model": g.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": Self::stop_reason(g),
            "stop_sequence": null,
            "usage": {"input_tokens": g.prompt_tokens, "output_tokens": g.completion_tokens},
        })
    }

    fn embeddings(&self, _g: &Gen, _vectors: Vec<Vec<f32>>) -> Value {
        // Never reached: no route of this API parses as an embedding request.
        error_value("invalid_request_error", "embeddings are not supported")
    }

    fn error_object(&self) -> Value {
        error_value("api_error", "Internal server error")
    }
}
