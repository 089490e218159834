//! Mapping between tasks and the provider-neutral requests and results.

use gleitzeit_core::{Action, ChatMessage, LlmOptions, ResultMeta, Role, Task, TaskResult};
use gleitzeit_llm::{GenOptions, LlmRequest, LlmResponse, Message, Op};
use serde_json::{json, Value};

use crate::executor::ExecFailure;

fn gen_options(o: &LlmOptions) -> GenOptions {
    GenOptions {
        temperature: o.temperature,
        top_p: o.top_p,
        top_k: o.top_k,
        max_tokens: o.max_tokens,
        seed: o.seed,
        stop: o.stop.clone(),
        json: o.json,
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn message(m: &ChatMessage) -> Message {
    Message {
        role: role(m.role).to_owned(),
        content: m.content.clone(),
        images: Vec::new(),
    }
}

/// Maps a rendered task to the provider-neutral request.
pub(crate) fn to_request(task: &Task) -> Result<LlmRequest, ExecFailure> {
    let (model, op, options) = match &task.action {
        Action::Text {
            model,
            prompt,
            system,
            options,
        } => (
            model,
            Op::Generate {
                prompt: prompt.clone(),
                system: system.clone(),
                images: Vec::new(),
            },
            options,
        ),
        Action::Vision {
            model,
            prompt,
            images,
            system,
            options,
        } => (
            model,
            Op::Generate {
                prompt: prompt.clone(),
                system: system.clone(),
                images: images.clone(),
            },
            options,
        ),
        Action::Chat {
            model,
            messages,
            system,
            options,
        } => (
            model,
            Op::Chat {
                messages: messages.iter().map(message).collect(),
                system: system.clone(),
            },
            options,
        ),
        Action::Embed {
            model,
            prompt,
            options,
        } => (
            model,
            Op::Embed {
                inputs: vec![prompt.clone()],
            },
            options,
        ),
        Action::External {
            service, function, ..
        } => {
            return Err(ExecFailure::permanent(format!(
                "external task {service}/{function} cannot run on an LLM endpoint"
            )))
        }
    };
    Ok(LlmRequest {
        model: model.clone(),
        op,
        options: gen_options(options),
        keep_alive: None,
    })
}

/// The stored result: the text (or the embedding vector) plus call metadata.
pub(crate) fn to_result(
    resp: LlmResponse,
    endpoint: &str,
    embed: bool,
) -> Result<TaskResult, ExecFailure> {
    let value = if embed {
        let vector = resp
            .embeddings
            .and_then(|mut e| {
                if e.is_empty() {
                    None
                } else {
                    Some(e.swap_remove(0))
                }
            })
            .ok_or_else(|| {
                ExecFailure::retryable(format!("endpoint {endpoint} returned no embedding"))
            })?;
        json!(vector)
    } else {
        Value::String(resp.text.unwrap_or_default())
    };
    Ok(TaskResult {
        value,
        meta: Some(ResultMeta {
            model: Some(resp.model),
            endpoint: Some(endpoint.to_owned()),
            prompt_tokens: resp.prompt_tokens,
            completion_tokens: resp.completion_tokens,
            duration_ms: Some(resp.total_ms),
            load_ms: resp.load_ms,
            ttft_ms: resp.ttft_ms,
        }),
    })
}
