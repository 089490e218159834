//! Ollama's native API as the simulator speaks it: `/api/generate`, `/api/chat` (NDJSON
//! streams, `done` chunk with nanosecond durations), `/api/embed`, `/api/tags`, `/api/ps`,
//! `/api/show`, `/api/pull`, `/api/version`, explicit load and unload (`/api/generate`
//! without a prompt, `keep_alive: 0`), and `{"error": "..."}` bodies.

use std::time::{Duration, SystemTime};

use axum::http::Method;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::config::{SimConfig, SimOp, SimRequest};
use super::wire::{json, raw, rfc3339, Gen, Routed, Wire};

/// The Ollama wire format.
pub(crate) struct Ollama;

fn error(status: u16, message: &str) -> Response {
    json(status, &json!({ "error": message }))
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Parameters (billions) named by a model tag such as `llama3.1:70b` or `qwen2.5:0.5b`.
fn tag_billions(name: &str) -> Option<f64> {
    let tag = name.rsplit_once(':')?.1.to_ascii_lowercase();
    let number = tag.split(['-', '_']).next()?.strip_suffix('b')?;
    number
        .parse::<f64>()
        .ok()
        .filter(|b| b.is_finite() && *b > 0.0)
}

fn model_entry(name: &str) -> Value {
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    // A stable, plausible size: about 0.6 bytes per parameter (4-bit quantisation) when the
    // tag names the parameter count, else about 1 GB derived from the name.
    let size = match tag_billions(name) {
        Some(b) => (b * 0.6e9) as u64,
        None => {
            1_000_000_000
                + u64::from_le_bytes([
                    digest.as_bytes()[0],
                    digest.as_bytes()[1],
                    digest.as_bytes()[2],
                    0,
                    0,
                    0,
                    0,
                    0,
                ])
        }
    };
    let parameter_size = tag_billions(name).map_or_else(|| "3.2B".to_owned(), |b| format!("{b}B"));
    json!({
        "name": name,
        "model": name,
        "modified_at": rfc3339(SystemTime::now()),
        "size": size,
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": parameter_size,
            "quantization_level": "Q4_K_M"
        }
    })
}

/// Whether a request asks to unload its model afterwards (`keep_alive` 0, "0", "0s", "0m").
pub(crate) fn keep_alive_zero(body: &Value) -> bool {
    match body.get("keep_alive") {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => {
            let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            digits.parse::<f64>().is_ok_and(|n| n == 0.0)
        }
        _ => false,
    }
}

/// The reply to an explicit load or unload.
pub(crate) fn load_reply(model: &str, unload: bool) -> Response {
    json(
        200,
        &json!({
            "model": model,
            "created_at": rfc3339(SystemTime::now()),
            "response": "",
            "done": true,
            "done_reason": if unload { "unload" } else { "load" },
        }),
    )
}

/// The reply to a pull (`stream: false`).
pub(crate) fn pull_reply() -> Response {
    json(200, &json!({"status": "success"}))
}

/// The images of a message or request.
fn image_count(v: &Value) -> usize {
    v.get("images")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl Ollama {
    fn parse(&self, op: SimOp, body: &Value) -> Result<SimRequest, Box<Response>> {
        let model = match body.get("model").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ => return Err(Box::new(error(400, "model is required"))),
        };
        // Ollama streams unless told not to.
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(true);
        let max_tokens = body
            .get("options")
            .and_then(|o| o.get("num_predict"))
            .and_then(Value::as_i64)
            .and_then(|n| u64::try_from(n).ok());
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
            SimOp::Generate => {
                req.prompt = str_field(body, "prompt").unwrap_or_default();
                req.system = str_field(body, "system");
                req.images = image_count(body);
            }
            SimOp::Chat => {
                let Some(messages) = body.get("messages").and_then(Value::as_array) else {
                    return Err(Box::new(error(400, "messages is required")));
                };
                for m in messages {
                    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
                    let content = str_field(m, "content").unwrap_or_default();
                    req.images += image_count(m);
                    match role {
                        "system" => req.system = Some(content),
                        "user" => req.prompt = content,
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
                    _ => return Err(Box::new(error(400, "input is required"))),
                };
                req.prompt = req.inputs.join("\n");
            }
        }
        Ok(req)
    }
}

impl Wire for Ollama {
    fn route(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        cfg: &SimConfig,
        loaded: &[String],
    ) -> Routed {
        let inference = |op| match body {
            Some(b) => match self.parse(op, b) {
                Ok(req) => Routed::Inference {
                    req,
                    include_usage: false,
                },
                Err(resp) => Routed::Direct(*resp),
            },
            None => Routed::Direct(error(400, "invalid JSON body")),
        };
        match (method.as_str(), path) {
            // With a model and nothing to generate, `/api/generate` loads (or, with
            // `keep_alive: 0`, unloads) the model.
            ("POST", "/api/generate")
                if body.is_some_and(|b| b.get("prompt").is_none() && b.get("images").is_none()) =>
            {
                match body.and_then(|b| b.get("model")).and_then(Value::as_str) {
                    Some(m) if !m.is_empty() => Routed::Load {
                        model: m.to_owned(),
                        unload: body.is_some_and(keep_alive_zero),
                    },
                    _ => Routed::Direct(error(400, "model is required")),
                }
            }
            ("POST", "/api/pull") => {
                match body
                    .and_then(|b| b.get("model").or_else(|| b.get("name")))
                    .and_then(Value::as_str)
                {
                    Some(m) if !m.is_empty() => Routed::Pull {
                        model: m.to_owned(),
                    },
                    _ => Routed::Direct(error(400, "model is required")),
                }
            }
            ("POST", "/api/generate") => inference(SimOp::Generate),
            ("POST", "/api/chat") => inference(SimOp::Chat),
            ("POST", "/api/embed") => inference(SimOp::Embed),
            ("GET", "/api/tags") => Routed::Direct(json(
                200,
                &json!({ "models": cfg.models.iter().map(|m| model_entry(m)).collect::<Vec<_>>() }),
            )),
            ("GET", "/api/ps") => {
                let expires = rfc3339(SystemTime::now() + Duration::from_secs(300));
                let models: Vec<Value> = loaded
                    .iter()
                    .map(|m| {
                        let mut e = model_entry(m);
                        if let Some(o) = e.as_object_mut() {
                            o.remove("modified_at");
                            o.insert("expires_at".into(), json!(expires));
                            let size = o.get("size").cloned().unwrap_or(json!(0));
                            o.insert("size_vram".into(), size);
                        }
                        e
                    })
                    .collect();
                Routed::Direct(json(200, &json!({ "models": models })))
            }
            ("POST", "/api/show") => {
                let name = body
                    .and_then(|b| b.get("model").or_else(|| b.get("name")))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if name.is_empty() || !cfg.serves(name) {
                    return Routed::Direct(self.model_not_found(name));
                }
                let entry = model_entry(name);
                Routed::Direct(json(
                    200,
                    &json!({
                        "modelfile": format!("FROM {name}\n"),
                        "parameters": "stop \"<|eot_id|>\"",
                        "template": "{{ .Prompt }}",
                        "details": entry["details"],
                        "model_info": { "general.architecture": "llama", "llama.context_length": 8192 },
                        "capabilities": ["completion", "vision", "embedding"],
                        "modified_at": entry["modified_at"],
                    }),
                ))
            }
            ("GET", "/api/version") => Routed::Direct(json(200, &json!({"version": "0.6.0-sim"}))),
            ("GET" | "HEAD", "/") => Routed::Direct(raw(
                200,
                "text/plain; charset=utf-8",
                "Ollama is running",
                &[],
            )),
            _ => Routed::Direct(raw(
                404,
                "text/plain; charset=utf-8",
                "404 page not found",
                &[],
            )),
        }
    }

    fn unauthorized(&self, _presented: Option<&str>) -> Response {
        error(401, "unauthorized")
    }

    fn model_not_found(&self, model: &str) -> Response {
        error(
            404,
            &format!("model \"{model}\" not found, try pulling it first"),
        )
    }

    fn rate_limited(&self, retry_after: Option<&str>) -> Response {
        let headers: Vec<(String, String)> = retry_after
            .map(|v| vec![("retry-after".to_owned(), v.to_owned())])
            .unwrap_or_default();
        raw(
            429,
            "application/json; charset=utf-8",
            json!({"error": "too many requests"}).to_string(),
            &headers,
        )
    }

    fn overloaded(&self) -> Response {
        error(
            503,
            "server busy, please try again.  maximum pending requests exceeded",
        )
    }

    fn stream_content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn stream_start(&self, _g: &Gen) -> Vec<Bytes> {
        Vec::new()
    }

    fn stream_token(&self, g: &Gen, token: &str) -> Bytes {
        let created_at = rfc3339(SystemTime::now());
        match g.op {
            SimOp::Chat => line(&json!({
                "model": g.model,
                "created_at": created_at,
                "message": {"role": "assistant", "content": token},
                "done": false
            })),
            _ => line(&json!({
                "model": g.model,
                "created_at": created_at,
                "response": token,
                "done": false
            })),
        }
    }

    fn stream_end(&self, g: &Gen) -> Vec<Bytes> {
        vec![line(&self.complete(g, ""))]
    }

    fn stream_error(&self) -> Bytes {
        line(&json!({"error": "an error was encountered while running the model: unexpected EOF"}))
    }

    fn complete(&self, g: &Gen, text: &str) -> Value {
        let mut v = json!({
            "model": g.model,
            "created_at": rfc3339(SystemTime::now()),
            "done": true,
            "done_reason": g.finish_reason,
            "total_duration": g.total_ns(),
            "load_duration": g.load_ns,
            "prompt_eval_count": g.prompt_tokens,
            "prompt_eval_duration": g.prompt_tokens * 100_000,
            "eval_count": g.completion_tokens,
            "eval_duration": g.eval_ns(),
        });
        if let Some(o) = v.as_object_mut() {
            match g.op {
                SimOp::Chat => {
                    o.insert(
                        "message".into(),
                        json!({"role": "assistant", "content": text}),
                    );
                }
                _ => {
                    o.insert("response".into(), json!(text));
                    o.insert("context".into(), json!([1, 2, 3]));
                }
            }
        }
        v
    }

    fn embeddings(&self, g: &Gen, vectors: Vec<Vec<f32>>) -> Value {
        json!({
            "model": g.model,
            "embeddings": vectors,
            "total_duration": g.total_ns(),
            "load_duration": g.load_ns,
            "prompt_eval_count": g.prompt_tokens,
        })
    }

    fn error_object(&self) -> Value {
        json!({"error": "an error was encountered while running the model: unexpected EOF"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_parameter_tag() {
        assert_eq!(tag_billions("llama3.1:70b"), Some(70.0));
        assert_eq!(tag_billions("qwen2.5:0.5b-instruct"), Some(0.5));
        assert_eq!(tag_billions("llama3.2"), None);
        assert_eq!(tag_billions("x:latest"), None);
        assert_eq!(
            model_entry("llama3.1:70b")["size"],
            json!(42_000_000_000u64)
        );
        assert_eq!(
            model_entry("llama3.1:70b")["details"]["parameter_size"],
            json!("70B")
        );
        let s = model_entry("llama3.2")["size"].as_u64().unwrap();
        assert!((1_000_000_000..1_020_000_000).contains(&s));
    }
}
