//! The OpenAI-compatible API as the simulator speaks it: `/v1/chat/completions` (SSE chunks
//! with `choices[0].delta.content`, a usage chunk when `stream_options.include_usage`,
//! `data: [DONE]`), `/v1/embeddings`, `/v1/models`, and `{"error": {...}}` bodies.

use axum::http::Method;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::config::{SimConfig, SimOp, SimRequest};
use super::wire::{content_text, json, raw, unix_secs, Gen, Routed, Wire};

/// The OpenAI wire format.
pub(crate) struct OpenAi;

fn error_value(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Response {
    json(status, &error_value(message, kind, code))
}

fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

impl OpenAi {
    fn parse(&self, op: SimOp, body: &Value) -> Result<(SimRequest, bool), Box<Response>> {
        let model = match body.get("model").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ => {
                return Err(Box::new(error(
                    400,
                    "you must provide a model parameter",
                    "invalid_request_error",
                    None,
                )))
            }
        };
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let max_tokens = body
            .get("max_tokens")
            .or_else(|| body.get("max_completion_tokens"))
            .and_then(Value::as_u64);
        let mut req = SimRequest {
            op,
            model,
            prompt: String::new(),
            system: None,
            inputs: Vec::new(),
            images: 0,
            stream,
            max_tokens,
            body: body.clone(),
        };
        match op {
            SimOp::Chat | SimOp::Generate => {
                let Some(messages) = body.get("messages").and_then(Value::as_array) else {
                    return Err(Box::new(error(
                        400,
                        "Missing required parameter: 'messages'.",
                        "invalid_request_error",
                        None,
                    )));
                };
                for m in messages {
                    let (text, images) = content_text(m.get("content").unwrap_or(&Value::Null));
                    req.images += images;
                    match m.get("role").and_then(Value::as_str) {
                        Some("system") | Some("developer") => req.system = Some(text),
                        Some("user") => req.prompt = text,
                        _ => {}
                    }
                }
            }
            SimOp::Embed => {
                req.stream = false;
                req.inputs = match body.get("input") {
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect(),
                    _ => {
                        return Err(Box::new(error(
                            400,
                            "Missing required parameter: 'input'.",
                            "invalid_request_error",
                            None,
                        )))
                    }
                };
                req.prompt = req.inputs.join("\n");
            }
        }
        Ok((req, include_usage))
    }

    fn chunk(&self, g: &Gen, delta: Value, finish: Option<&str>) -> Value {
        let mut v = json!({
            "id": g.id,
            "object": "chat.completion.chunk",
            "created": g.created,
            "model": g.model,
            "system_fingerprint": "fp_gleitzeit_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if g.include_usage {
            if let Some(o) = v.as_object_mut() {
                o.insert("usage".into(), Value::Null);
            }
        }
        v
    }

    fn usage(g: &Gen) -> Value {
        json!({
            "prompt_tokens": g.prompt_tokens,
            "completion_tokens": g.completion_tokens,
            "total_tokens": g.prompt_tokens + g.completion_tokens,
        })
    }
}

impl Wire for OpenAi {
    fn route(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        cfg: &SimConfig,
        _loaded: &[String],
    ) -> Routed {
        let inference = |op| match body {
            Some(b) => match self.parse(op, b) {
                Ok((req, include_usage)) => Routed::Inference { req, include_usage },
                Err(resp) => Routed::Direct(*resp),
            },
            None => Routed::Direct(error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )),
        };
        match (method.as_str(), path) {
            ("POST", "/v1/chat/completions") => inference(SimOp::Chat),
            ("POST", "/v1/embeddings") => inference(SimOp::Embed),
            ("GET", "/v1/models") => {
                let data: Vec<Value> = cfg
                    .models
                    .iter()
                    .map(|m| json!({"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "gleitzeit-sim"}))
                    .collect();
                Routed::Direct(json(200, &json!({"object": "list", "data": data})))
            }
            _ => Routed::Direct(error(
                404,
                &format!("Invalid URL ({} {path})", method.as_str()),
                "invalid_request_error",
                None,
            )),
        }
    }

    fn unauthorized(&self, presented: Option<&str>) -> Response {
        // Deliberately echoes the whole key (the real API masks most of it): clients must
        // keep error bodies from leaking credentials either way.
        let message = match presented {
            Some(key) => format!("Incorrect API key provided: {key}. You can find your API key in your account settings."),
            None => "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).".to_owned(),
        };
        error(
            401,
            &message,
            "invalid_request_error",
            Some("invalid_api_key"),
        )
    }

    fn model_not_found(&self, model: &str) -> Response {
        error(
            404,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        )
    }

    fn rate_limited(&self, retry_after: Option<&str>) -> Response {
        let mut headers = vec![
            ("x-ratelimit-limit-requests".to_owned(), "60".to_owned()),
            ("x-ratelimit-remaining-requests".to_owned(), "0".to_owned()),
        ];
        if let Some(v) = retry_after {
            headers.push(("retry-after".to_owned(), v.to_owned()));
        }
        raw(
            429,
            "application/json; charset=utf-8",
            error_value(
                "Rate limit reached for requests. Please try again later.",
                "requests",
                Some("rate_limit_exceeded"),
            )
            .to_string(),
            &headers,
        )
    }

    fn overloaded(&self) -> Response {
        error(
            503,
            "The server is overloaded or not ready yet.",
            "server_error",
            None,
        )
    }

    fn stream_content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn stream_start(&self, g: &Gen) -> Vec<Bytes> {
        vec![event(&self.chunk(
            g,
            json!({"role": "assistant", "content": ""}),
            None,
        ))]
    }

    fn stream_token(&self, g: &Gen, token: &str) -> Bytes {
        event(&self.chunk(g, json!({"content": token}), None))
    }

    fn stream_end(&self, g: &Gen) -> Vec<Bytes> {
        let mut frames = vec![event(&self.chunk(g, json!({}), Some(g.finish_reason)))];
        if g.include_usage {
            frames.push(event(&json!({
                "id": g.id,
                "object": "chat.completion.chunk",
                "created": g.created,
                "model": g.model,
                "system_fingerprint": "fp_gleitzeit_sim",
                "choices": [],
                "usage": Self::usage(g),
            })));
        }
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        frames
    }

    fn stream_error(&self) -> Bytes {
        event(&self.error_object())
    }

    fn complete(&self, g: &Gen, text: &str) -> Value {
        json!({
            "id": g.id,
            "object": "chat.completion",
            "created": g.created,
            "model": g.model,
            "system_fingerprint": "fp_gleitzeit_sim",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": g.finish_reason,
            }],
            "usage": Self::usage(g),
        })
    }

    fn embeddings(&self, g: &Gen, vectors: Vec<Vec<f32>>) -> Value {
        let data: Vec<Value> = vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| json!({"object": "embedding", "embedding": v, "index": i}))
            .collect();
        json!({
            "object": "list",
            "data": data,
            "model": g.model,
            "usage": {"prompt_tokens": g.prompt_tokens, "total_tokens": g.prompt_tokens},
        })
    }

    fn error_object(&self) -> Value {
        error_value(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        )
    }
}

/// A completion id in OpenAI's style.
pub(crate) fn completion_id(n: u64) -> String {
    format!("chatcmpl-sim{n:012}")
}

/// Seconds since the epoch for `created`.
pub(crate) fn created() -> u64 {
    unix_secs()
}
