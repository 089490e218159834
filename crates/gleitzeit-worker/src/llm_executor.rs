//! The production executor: runs text, chat, vision and embedding tasks on the configured LLM
//! endpoints through `gleitzeit-llm`, and classifies provider errors for the retry decision.
//!
//! Routing is deliberately simple for now — the first endpoint (in configuration order) whose
//! models include the task's model — and lives in [`LlmExecutor::route`], the one place a
//! multi-endpoint router will replace.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use gleitzeit_core::{
    Action, ChatMessage, FailureKind, LlmOptions, ResultMeta, Role, Task, TaskResult,
};
use gleitzeit_llm::{
    CallOptions, EndpointConfig, ErrorClass, GenOptions, LlmError, LlmRequest, LlmResponse,
    Message, Op, Provider, ProviderKind,
};
use serde_json::{json, Value};

use crate::config::{EndpointKind, ResolvedEndpoint};
use crate::executor::{ExecContext, ExecFailure, Executor};
use crate::runtime::WorkerError;

/// Capability prefix of LLM task streams.
const LLM_PREFIX: &str = "llm:";

struct Route {
    name: String,
    models: Vec<String>,
    provider: Arc<Provider>,
}

impl Route {
    fn serves_model(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }
}

/// Executes LLM tasks on the configured endpoints.
pub struct LlmExecutor {
    routes: Vec<Route>,
}

impl std::fmt::Debug for LlmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmExecutor")
            .field(
                "endpoints",
                &self.routes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl LlmExecutor {
    /// Builds one client per endpoint (connection pools are per endpoint and kept for the
    /// process lifetime).
    pub fn new(endpoints: &[ResolvedEndpoint]) -> Result<LlmExecutor, WorkerError> {
        let mut routes = Vec::with_capacity(endpoints.len());
        for ep in endpoints {
            let kind = match ep.kind {
                EndpointKind::Ollama => ProviderKind::Ollama,
                EndpointKind::OpenAi => ProviderKind::OpenAi,
            };
            let mut cfg = EndpointConfig::new(ep.name.clone(), ep.url.clone(), kind);
            cfg.api_key = ep.api_key.clone();
            cfg.request_timeout = ep.timeout;
            let provider = Provider::new(cfg).map_err(|e| WorkerError::Endpoint {
                endpoint: ep.name.clone(),
                message: e.to_string(),
            })?;
            routes.push(Route {
                name: ep.name.clone(),
                models: ep.models.clone(),
                provider: Arc::new(provider),
            });
        }
        Ok(LlmExecutor { routes })
    }

    /// The endpoint that runs `model`: the first one configured to serve it.
    fn route(&self, model: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.serves_model(model))
    }

    async fn run(&self, task: &Task) -> Result<TaskResult, ExecFailure> {
        let model = task.action.model().ok_or_else(|| {
            ExecFailure::permanent(format!(
                "{:?} tasks are not executed by LLM endpoints",
                task.action.kind()
            ))
        })?;
        let route = self.route(model).ok_or_else(|| {
            ExecFailure::permanent(format!("no configured endpoint serves model {model:?}"))
        })?;
        let request = to_request(task)?;
        let embed = matches!(task.action, Action::Embed { .. });
        match route.provider.call(&request, &CallOptions::default()).await {
            Ok(resp) => to_result(resp, &route.name, embed),
            Err(e) => Err(classify(&e, &route.name)),
        }
    }
}

impl Executor for LlmExecutor {
    fn serves(&self, capability: &str) -> bool {
        capability
            .strip_prefix(LLM_PREFIX)
            .is_some_and(|model| self.route(model).is_some())
    }

    fn execute<'a>(
        &'a self,
        task: &'a Task,
        _ctx: &'a ExecContext,
    ) -> BoxFuture<'a, Result<TaskResult, ExecFailure>> {
        self.run(task).boxed()
    }
}

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

/// Retry / RetryAfter → retryable (RetryAfter sets the minimum delay); Fatal → permanent.
pub(crate) fn classify(err: &LlmError, endpoint: &str) -> ExecFailure {
    let message = format!("endpoint {endpoint}: {err}");
    let (name, status) = error_name(err);
    let mut detail = json!({ "endpoint": endpoint, "error": name });
    if let Some(status) = status {
        detail["status"] = json!(status);
    }
    match err.class() {
        // The endpoint's own request limit expired: recorded as a timeout (still retried).
        ErrorClass::Retry if matches!(err, LlmError::Timeout { .. }) => ExecFailure {
            kind: FailureKind::Timeout,
            message,
            detail: Some(detail),
            min_retry_delay: None,
        },
        ErrorClass::Retry => ExecFailure::retryable(message).with_detail(detail),
        ErrorClass::RetryAfter(d) => {
            detail["retry_after_ms"] = json!(d.as_millis() as u64);
            let mut f = ExecFailure::retryable(message).with_detail(detail);
            f.min_retry_delay = Some(d);
            f
        }
        ErrorClass::Fatal => ExecFailure::permanent(message).with_detail(detail),
    }
}

/// A stable name (and the HTTP status, when there is one) for the stored error detail.
fn error_name(err: &LlmError) -> (&'static str, Option<u16>) {
    match err {
        LlmError::Config { .. } => ("config", None),
        LlmError::InvalidRequest { .. } => ("invalid_request", None),
        LlmError::Connect { .. } => ("connect", None),
        LlmError::Timeout { .. } => ("timeout", None),
        LlmError::Overloaded { status, .. } => ("overloaded", Some(*status)),
        LlmError::RateLimited { .. } => ("rate_limited", Some(429)),
        LlmError::Auth { status, .. } => ("auth", Some(*status)),
        LlmError::ModelNotFound { .. } => ("model_not_found", None),
        LlmError::ContextTooLong { .. } => ("context_too_long", None),
        LlmError::BadRequest { status, .. } => ("bad_request", Some(*status)),
        LlmError::Stream { .. } => ("stream", None),
        LlmError::Decode { .. } => ("decode", None),
        LlmError::ResponseTooLarge { .. } => ("response_too_large", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleitzeit_core::RetryPolicy;
    use std::time::Duration;

    fn endpoint(name: &str, models: &[&str]) -> ResolvedEndpoint {
        ResolvedEndpoint {
            name: name.to_owned(),
            kind: EndpointKind::OpenAi,
            url: "http://127.0.0.1:9".to_owned(),
            api_key: None,
            models: models.iter().map(|m| m.to_string()).collect(),
            timeout: Duration::from_secs(5),
        }
    }

    fn task(action: Action) -> Task {
        Task {
            name: "T".to_owned(),
            action,
            dependencies: Vec::new(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(5),
            priority: gleitzeit_core::Priority::Normal,
            on_failure: None,
        }
    }

    #[test]
    fn routes_to_the_first_endpoint_serving_the_model() {
        let ex =
            LlmExecutor::new(&[endpoint("small", &["smollm2"]), endpoint("any", &["*"])]).unwrap();
        assert_eq!(ex.route("smollm2").unwrap().name, "small");
        assert_eq!(ex.route("llama3.2").unwrap().name, "any");
        assert!(ex.serves("llm:smollm2"));
        assert!(ex.serves("llm:whatever"));
        assert!(!ex.serves("ext:Python Tasks"));

        let only = LlmExecutor::new(&[endpoint("small", &["smollm2"])]).unwrap();
        assert!(only.serves("llm:smollm2"));
        assert!(!only.serves("llm:llama3.2"));
        assert!(!only.serves("smollm2"));
    }

    #[test]
    fn maps_every_llm_action() {
        let options = LlmOptions {
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(40),
            max_tokens: Some(64),
            seed: Some(7),
            stop: vec!["\n\n".to_owned()],
            json: true,
        };
        let req = to_request(&task(Action::Text {
            model: "m".into(),
            prompt: "p".into(),
            system: Some("s".into()),
            options: options.clone(),
        }))
        .unwrap();
        assert_eq!(req.model, "m");
        assert_eq!(
            req.op,
            Op::Generate {
                prompt: "p".into(),
                system: Some("s".into()),
                images: vec![]
            }
        );
        assert_eq!(
            req.options,
            GenOptions {
                temperature: Some(0.5),
                top_p: Some(0.9),
                top_k: Some(40),
                max_tokens: Some(64),
                seed: Some(7),
                stop: vec!["\n\n".to_owned()],
                json: true,
            }
        );

        let req = to_request(&task(Action::Chat {
            model: "m".into(),
            messages: vec![
                ChatMessage {
                    role: Role::System,
                    content: "a".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "b".into(),
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: "c".into(),
                },
            ],
            system: None,
            options: LlmOptions::default(),
        }))
        .unwrap();
        assert_eq!(
            req.op,
            Op::Chat {
                messages: vec![
                    Message::system("a"),
                    Message::user("b"),
                    Message::assistant("c")
                ],
                system: None,
            }
        );

        let req = to_request(&task(Action::Vision {
            model: "llava".into(),
            prompt: "what?".into(),
            images: vec!["aGVsbG8=".into()],
            system: None,
            options: LlmOptions::default(),
        }))
        .unwrap();
        assert_eq!(
            req.op,
            Op::Generate {
                prompt: "what?".into(),
                system: None,
                images: vec!["aGVsbG8=".into()]
            }
        );

        let req = to_request(&task(Action::Embed {
            model: "e".into(),
            prompt: "text".into(),
            options: LlmOptions::default(),
        }))
        .unwrap();
        assert_eq!(
            req.op,
            Op::Embed {
                inputs: vec!["text".into()]
            }
        );

        let err = to_request(&task(Action::External {
            service: "Python Tasks".into(),
            function: "f".into(),
            args: vec![],
            kwargs: Default::default(),
        }))
        .unwrap_err();
        assert_eq!(err.kind, FailureKind::Permanent);
    }

    fn response(text: Option<&str>, embeddings: Option<Vec<Vec<f32>>>) -> LlmResponse {
        LlmResponse {
            text: text.map(str::to_owned),
            embeddings,
            model: "m".into(),
            endpoint: "e".into(),
            prompt_tokens: Some(3),
            completion_tokens: Some(5),
            total_ms: 12,
            load_ms: Some(1),
            ttft_ms: Some(4),
        }
    }

    #[test]
    fn results_carry_value_and_meta() {
        let r = to_result(response(Some("hi"), None), "local", false).unwrap();
        assert_eq!(r.value, json!("hi"));
        assert_eq!(
            r.meta,
            Some(ResultMeta {
                model: Some("m".into()),
                endpoint: Some("local".into()),
                prompt_tokens: Some(3),
                completion_tokens: Some(5),
                duration_ms: Some(12),
                load_ms: Some(1),
                ttft_ms: Some(4),
            })
        );
        let r = to_result(response(None, Some(vec![vec![0.5, -1.0]])), "local", true).unwrap();
        assert_eq!(r.value, json!([0.5, -1.0]));
        let err = to_result(response(None, Some(vec![])), "local", true).unwrap_err();
        assert_eq!(err.kind, FailureKind::Retryable);
    }

    #[test]
    fn errors_are_classified_for_retry() {
        let f = classify(
            &LlmError::Overloaded {
                status: 503,
                message: "busy".into(),
            },
            "e",
        );
        assert_eq!(f.kind, FailureKind::Retryable);
        assert_eq!(f.min_retry_delay, None);
        assert_eq!(f.detail.as_ref().unwrap()["status"], json!(503));
        assert!(f.message.contains("busy") && f.message.contains("endpoint e"));

        let f = classify(
            &LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
                message: "slow down".into(),
            },
            "e",
        );
        assert_eq!(f.kind, FailureKind::Retryable);
        assert_eq!(f.min_retry_delay, Some(Duration::from_secs(3)));

        for fatal in [
            LlmError::Auth {
                status: 401,
                message: "no".into(),
            },
            LlmError::BadRequest {
                status: 400,
                message: "bad".into(),
            },
            LlmError::ModelNotFound { model: "m".into() },
            LlmError::ContextTooLong {
                message: "long".into(),
            },
        ] {
            let f = classify(&fatal, "e");
            assert_eq!(f.kind, FailureKind::Permanent, "{fatal:?}");
            assert!(!f.is_retryable());
        }
        let f = classify(
            &LlmError::Timeout {
                before_first_byte: true,
            },
            "e",
        );
        assert!(f.is_retryable());
        assert_eq!(f.kind, FailureKind::Timeout);
        assert_eq!(f.detail.unwrap()["error"], json!("timeout"));
    }
}
