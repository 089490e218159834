//! Ollama's native API: `/api/generate` and `/api/chat` (NDJSON streaming, durations in
//! nanoseconds on the final `done` chunk), `/api/embed`, `/api/tags`, `/api/ps`, and model
//! management: `/api/show`, `/api/pull`, explicit load and unload through `/api/generate`.

use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{clean_message, LlmError};
use crate::http::{elapsed_ms, Http, Progress};
use crate::image::bare_base64;
use crate::lines::LineBuffer;
use crate::types::{
    CallOptions, GenOptions, LlmRequest, LlmResponse, Message, ModelDetails, ModelInfo, Op,
    OptionNames,
};

/// Runs one request against an Ollama endpoint.
pub(crate) async fn call(
    http: &Http,
    endpoint: &str,
    req: &LlmRequest,
    opts: &CallOptions,
    progress: &Progress,
    start: Instant,
) -> Result<LlmResponse, LlmError> {
    match &req.op {
        Op::Generate {
            prompt,
            system,
            images,
        } => {
            let body = generate_body(req, prompt, system.as_deref(), images, opts.stream);
            let resp = http
                .post_json("/api/generate", &body, &req.model, progress)
                .await?;
            let done = read_generation(http, resp, opts.stream, start).await?;
            Ok(done.into_response(req, endpoint, start))
        }
        Op::Chat { messages, system } => {
            let body = chat_body(req, messages, system.as_deref(), opts.stream);
            let resp = http
                .post_json("/api/chat", &body, &req.model, progress)
                .await?;
            let done = read_generation(http, resp, opts.stream, start).await?;
            Ok(done.into_response(req, endpoint, start))
        }
        Op::Embed { inputs } => {
            let body = embed_body(req, inputs);
            let resp = http
                .post_json("/api/embed", &body, &req.model, progress)
                .await?;
            let bytes = http.read_body(resp).await?;
            let parsed: EmbedResponse = decode(&bytes)?;
            if parsed.embeddings.len() != inputs.len() {
                return Err(LlmError::Decode {
                    message: format!(
                        "{} embeddings for {} inputs",
                        parsed.embeddings.len(),
                        inputs.len()
                    ),
                });
            }
            Ok(LlmResponse {
                text: None,
                embeddings: Some(parsed.embeddings),
                model: parsed.model.unwrap_or_else(|| req.model.clone()),
                endpoint: endpoint.to_owned(),
                prompt_tokens: parsed.prompt_eval_count,
                completion_tokens: None,
                total_ms: elapsed_ms(start),
                load_ms: parsed.load_duration.map(ns_to_ms),
                ttft_ms: None,
                budget: None,
            })
        }
    }
}

/// `GET /api/tags`: the models the server has pulled.
pub(crate) async fn list_models(
    http: &Http,
    progress: &Progress,
) -> Result<Vec<ModelInfo>, LlmError> {
    models_at(http, "/api/tags", progress).await
}

/// `GET /api/ps`: the models loaded in memory right now.
pub(crate) async fn loaded_models(
    http: &Http,
    progress: &Progress,
) -> Result<Vec<ModelInfo>, LlmError> {
    models_at(http, "/api/ps", progress).await
}

/// `POST /api/show`: a model's details (parameter size, context length, family).
pub(crate) async fn show(
    http: &Http,
    model: &str,
    progress: &Progress,
) -> Result<ModelDetails, LlmError> {
    let resp = http
        .post_json("/api/show", &json!({ "model": model }), model, progress)
        .await?;
    let bytes = http.read_body(resp).await?;
    let v: Value = decode(&bytes)?;
    Ok(details_of(model, &v))
}

/// Reads `/api/show`'s answer: `details.parameter_size` ("70.6B", "500M"), `details.family`
/// and the `<arch>.context_length` entry of `model_info`.
pub(crate) fn details_of(model: &str, v: &Value) -> ModelDetails {
    let details = v.get("details");
    let text = |k: &str| {
        details
            .and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let parameter_size = text("parameter_size");
    let parameters = parameter_size.as_deref().and_then(parse_parameter_size);
    let context_length = v
        .get("model_info")
        .and_then(Value::as_object)
        .and_then(|info| {
            info.iter()
                .find(|(k, _)| k.ends_with(".context_length"))
                .and_then(|(_, n)| n.as_u64())
        });
    ModelDetails {
        name: model.to_owned(),
        parameter_size,
        parameters,
        context_length,
        family: text("family"),
        quantization: text("quantization_level"),
    }
}

/// "70.6B" → 70.6e9, "500M" → 5e8, "8x7B" is not understood (None).
fn parse_parameter_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()?.to_ascii_uppercase() {
        'B' => (&s[..s.len() - 1], 1e9),
        'M' => (&s[..s.len() - 1], 1e6),
        'K' => (&s[..s.len() - 1], 1e3),
        _ => (s, 1.0),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n > 0.0).then_some((n * mult) as u64)
}

/// `POST /api/pull` with `stream: false`: downloads a model; returns when the server has it.
pub(crate) async fn pull(http: &Http, model: &str, progress: &Progress) -> Result<(), LlmError> {
    let body = json!({ "model": model, "stream": false });
    let resp = http.post_json("/api/pull", &body, model, progress).await?;
    let bytes = http.read_body(resp).await?;
    let v: Value = decode(&bytes)?;
    if let Some(e) = v.get("error") {
        return Err(LlmError::Stream {
            message: e.as_str().unwrap_or("pull failed").to_owned(),
        });
    }
    Ok(())
}

/// Loads (`keep_alive` = how long it stays, server default when `None`) or unloads
/// (`keep_alive: 0`) a model: `/api/generate` with the model and no prompt.
pub(crate) async fn load(
    http: &Http,
    model: &str,
    keep_alive: Option<&str>,
    unload: bool,
    progress: &Progress,
) -> Result<(), LlmError> {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("stream".into(), json!(false));
    if unload {
        body.insert("keep_alive".into(), json!(0));
    } else if let Some(k) = keep_alive {
        body.insert("keep_alive".into(), json!(k));
    }
    let resp = http
        .post_json("/api/generate", &Value::Object(body), model, progress)
        .await?;
    http.read_body(resp).await?;
    Ok(())
}

async fn models_at(
    http: &Http,
    path: &str,
    progress: &Progress,
) -> Result<Vec<ModelInfo>, LlmError> {
    #[derive(Deserialize)]
    struct Tags {
        #[serde(default)]
        models: Vec<Tag>,
    }
    #[derive(Deserialize)]
    struct Tag {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        model: Option<String>,
        #[serde(default)]
        size: Option<u64>,
    }
    let resp = http.get(path, progress).await?;
    let bytes = http.read_body(resp).await?;
    let tags: Tags = decode(&bytes)?;
    Ok(tags
        .models
        .into_iter()
        .filter_map(|t| {
            t.name.or(t.model).map(|name| ModelInfo {
                name,
                size_bytes: t.size,
            })
        })
        .collect())
}

/// The `options` object and the top-level `format` / `keep_alive` fields.
fn apply_common(body: &mut Map<String, Value>, req: &LlmRequest) {
    if let Some(options) = options(&req.options) {
        body.insert("options".into(), options);
    }
    if req.options.json {
        body.insert("format".into(), json!("json"));
    }
    if let Some(k) = &req.keep_alive {
        body.insert("keep_alive".into(), json!(k));
    }
}

/// Ollama's `options`: only what was set, so the model's defaults stay in force otherwise.
fn options(o: &GenOptions) -> Option<Value> {
    let mut m = Map::new();
    o.write_into(
        &mut m,
        &OptionNames {
            max_tokens: Some("num_predict"),
            seed: Some("seed"),
            stop: "stop",
        },
    );
    (!m.is_empty()).then_some(Value::Object(m))
}

fn images_json(images: &[String]) -> Value {
    Value::Array(images.iter().map(|i| json!(bare_base64(i))).collect())
}

pub(crate) fn generate_body(
    req: &LlmRequest,
    prompt: &str,
    system: Option<&str>,
    images: &[String],
    stream: bool,
) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert("prompt".into(), json!(prompt));
    body.insert("stream".into(), json!(stream));
    if let Some(s) = system {
        body.insert("system".into(), json!(s));
    }
    if !images.is_empty() {
        body.insert("images".into(), images_json(images));
    }
    apply_common(&mut body, req);
    Value::Object(body)
}

pub(crate) fn chat_body(
    req: &LlmRequest,
    messages: &[Message],
    system: Option<&str>,
    stream: bool,
) -> Value {
    let mut msgs = Vec::with_capacity(messages.len() + 1);
    if let Some(s) = system {
        msgs.push(json!({"role": "system", "content": s}));
    }
    for m in messages {
        let mut msg = Map::new();
        msg.insert("role".into(), json!(m.role));
        msg.insert("content".into(), json!(m.content));
        if !m.images.is_empty() {
            msg.insert("images".into(), images_json(&m.images));
        }
        msgs.push(Value::Object(msg));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert("messages".into(), Value::Array(msgs));
    body.insert("stream".into(), json!(stream));
    apply_common(&mut body, req);
    Value::Object(body)
}

pub(crate) fn embed_body(req: &LlmRequest, inputs: &[String]) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert("input".into(), json!(inputs));
    if let Some(options) = options(&req.options) {
        body.insert("options".into(), options);
    }
    if let Some(k) = &req.keep_alive {
        body.insert("keep_alive".into(), json!(k));
    }
    Value::Object(body)
}

/// One NDJSON chunk of `/api/generate` or `/api/chat` (or the whole non-streamed body).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Chunk {
    #[serde(default)]
    model: Option<String>,
    /// `/api/generate` text.
    #[serde(default)]
    response: Option<String>,
    /// `/api/chat` text.
    #[serde(default)]
    message: Option<ChunkMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    load_duration: Option<u64>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct ChunkMessage {
    #[serde(default)]
    content: Option<String>,
}

impl Chunk {
    fn content(&self) -> &str {
        self.response
            .as_deref()
            .or_else(|| self.message.as_ref().and_then(|m| m.content.as_deref()))
            .unwrap_or("")
    }
}

/// A finished generation: the text and the `done` chunk's counters.
#[derive(Debug)]
pub(crate) struct Finished {
    text: String,
    last: Chunk,
    ttft_ms: Option<u64>,
}

impl Finished {
    fn into_response(self, req: &LlmRequest, endpoint: &str, start: Instant) -> LlmResponse {
        LlmResponse {
            text: Some(self.text),
            embeddings: None,
            model: self.last.model.unwrap_or_else(|| req.model.clone()),
            endpoint: endpoint.to_owned(),
            prompt_tokens: self.last.prompt_eval_count,
            completion_tokens: self.last.eval_count,
            total_ms: elapsed_ms(start),
            load_ms: self.last.load_duration.map(ns_to_ms),
            ttft_ms: self.ttft_ms,
            budget: None,
        }
    }
}

/// Assembles a generation from NDJSON lines.
#[derive(Debug, Default)]
pub(crate) struct NdjsonAssembler {
    text: String,
    ttft_ms: Option<u64>,
}

impl NdjsonAssembler {
    /// Feeds one line; returns the finished generation at the `done` chunk. An `error` line
    /// fails the whole call (partial text is dropped).
    pub(crate) fn line(
        &mut self,
        line: &str,
        start: Instant,
        http: &Http,
    ) -> Result<Option<Finished>, LlmError> {
        if line.trim().is_empty() {
            return Ok(None);
        }
        let chunk: Chunk = serde_json::from_str(line).map_err(|e| LlmError::Decode {
            message: format!("invalid NDJSON chunk: {e}"),
        })?;
        if let Some(err) = &chunk.error {
            let text = match err {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            return Err(LlmError::Stream {
                message: clean_message(&text, http.secret()),
            });
        }
        let content = chunk.content();
        if !content.is_empty() {
            if self.ttft_ms.is_none() {
                self.ttft_ms = Some(elapsed_ms(start));
            }
            self.text.push_str(content);
        }
        if chunk.done {
            return Ok(Some(Finished {
                text: std::mem::take(&mut self.text),
                last: chunk,
                ttft_ms: self.ttft_ms,
            }));
        }
        Ok(None)
    }
}

async fn read_generation(
    http: &Http,
    resp: reqwest::Response,
    stream: bool,
    start: Instant,
) -> Result<Finished, LlmError> {
    if !stream {
        let bytes = http.read_body(resp).await?;
        let text = std::str::from_utf8(&bytes).map_err(|_| LlmError::Decode {
            message: "response is not UTF-8".into(),
        })?;
        let mut asm = NdjsonAssembler::default();
        let finished = asm
            .line(text, start, http)?
            .ok_or_else(|| LlmError::Decode {
                message: "response is not a finished generation (done is not true)".into(),
            })?;
        // Not streamed: there is no first token to time.
        return Ok(Finished {
            ttft_ms: None,
            ..finished
        });
    }
    let mut reader = http.reader(resp)?;
    let mut lines = LineBuffer::default();
    let mut asm = NdjsonAssembler::default();
    let not_utf8 = |_| LlmError::Decode {
        message: "stream line is not UTF-8".into(),
    };
    while let Some(chunk) = reader.next().await? {
        for line in lines.push(&chunk).map_err(not_utf8)? {
            if let Some(done) = asm.line(&line, start, http)? {
                reader.finish().await;
                return Ok(done);
            }
        }
    }
    if let Some(line) = lines.finish().map_err(not_utf8)? {
        if let Some(done) = asm.line(&line, start, http)? {
            return Ok(done);
        }
    }
    Err(LlmError::Stream {
        message: "stream ended before the final (done) chunk".into(),
    })
}

#[derive(Debug, Deserialize)]
struct EmbedResponse {
    #[serde(default)]
    model: Option<String>,
    embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    load_duration: Option<u64>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, LlmError> {
    serde_json::from_slice(bytes).map_err(|e| LlmError::Decode {
        message: e.to_string(),
    })
}

fn ns_to_ms(ns: u64) -> u64 {
    ns / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    fn http() -> Http {
        crate::openai::test_http("http://127.0.0.1:1", ProviderKind::Ollama)
    }

    #[test]
    fn assembles_text_and_final_counters() {
        let http = http();
        let start = Instant::now();
        let mut asm = NdjsonAssembler::default();
        assert!(asm
            .line(
                r#"{"model":"m","response":"Hel","done":false}"#,
                start,
                &http
            )
            .unwrap()
            .is_none());
        assert!(asm.line("", start, &http).unwrap().is_none());
        assert!(asm
            .line(
                r#"{"model":"m","response":"lo","done":false}"#,
                start,
                &http
            )
            .unwrap()
            .is_none());
        let done = asm
            .line(
                r#"{"model":"m","response":"","done":true,"done_reason":"stop","total_duration":5000000,"load_duration":2000000,"prompt_eval_count":3,"eval_count":2}"#,
                start,
                &http,
            )
            .unwrap()
            .unwrap();
        assert_eq!(done.text, "Hello");
        assert!(done.ttft_ms.is_some());
        let r = done.into_response(&LlmRequest::generate("m", "x"), "ep", start);
        assert_eq!(r.load_ms, Some(2));
        assert_eq!(r.prompt_tokens, Some(3));
        assert_eq!(r.completion_tokens, Some(2));
    }

    #[test]
    fn chat_chunks_carry_message_content() {
        let http = http();
        let start = Instant::now();
        let mut asm = NdjsonAssembler::default();
        asm.line(
            r#"{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}"#,
            start,
            &http,
        )
        .unwrap();
        let done = asm
            .line(
                r#"{"model":"m","message":{"role":"assistant","content":""},"done":true}"#,
                start,
                &http,
            )
            .unwrap()
            .unwrap();
        assert_eq!(done.text, "Hi");
    }

    #[test]
    fn error_line_fails_the_stream() {
        let http = http();
        let mut asm = NdjsonAssembler::default();
        let start = Instant::now();
        asm.line(r#"{"response":"partial","done":false}"#, start, &http)
            .unwrap();
        let err = asm
            .line(r#"{"error":"out of memory"}"#, start, &http)
            .unwrap_err();
        assert_eq!(
            err,
            LlmError::Stream {
                message: "out of memory".into()
            }
        );
        assert!(matches!(
            asm.line("{not json", start, &http),
            Err(LlmError::Decode { .. })
        ));
    }

    #[test]
    fn option_mapping() {
        let mut req = LlmRequest::generate("m", "p");
        assert_eq!(
            generate_body(&req, "p", None, &[], true),
            json!({"model":"m","prompt":"p","stream":true})
        );
        req.options = GenOptions {
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(40),
            max_tokens: Some(12),
            seed: Some(7),
            stop: vec!["\n".into()],
            json: true,
        };
        req.keep_alive = Some("5m".into());
        let body = generate_body(
            &req,
            "p",
            Some("sys"),
            &["data:image/png;base64,AAA".into()],
            false,
        );
        assert_eq!(
            body,
            json!({
                "model":"m","prompt":"p","stream":false,"system":"sys","images":["AAA"],
                "options":{"temperature":0.5,"top_p":0.9,"top_k":40,"num_predict":12,"seed":7,"stop":["\n"]},
                "format":"json","keep_alive":"5m"
            })
        );
    }

    #[test]
    fn show_details_are_read() {
        let v = json!({
            "details": {"family": "llama", "parameter_size": "70.6B", "quantization_level": "Q4_K_M"},
            "model_info": {"general.architecture": "llama", "llama.context_length": 131072}
        });
        let d = details_of("m", &v);
        assert_eq!(d.parameters, Some(70_600_000_000));
        assert_eq!(d.context_length, Some(131_072));
        assert_eq!(d.family.as_deref(), Some("llama"));
        assert_eq!(parse_parameter_size("500M"), Some(500_000_000));
        assert_eq!(parse_parameter_size("8x7B"), None);
        assert_eq!(details_of("m", &json!({})).parameters, None);
    }
}
