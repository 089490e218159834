//! Unit tests of the executor: served models, selections, request/result mapping, error
//! classification.

use super::*;
use std::time::Duration;

use gleitzeit_core::{Action, ChatMessage, FailureKind, LlmOptions, ResultMeta, Role, Task};
use gleitzeit_llm::router::Selection;
use gleitzeit_llm::{
    GenOptions, LlmError, LlmResponse, Message, Op, ProviderKind, RouteError, Strategy,
};
use serde_json::json;

use crate::config::{EndpointKind, ResolvedEndpoint};
use crate::executor::Executor;

use super::failure::{classify, classify_route};
use super::mapping::{to_request, to_result};
use super::LlmExecutor;

/// A task of `action` as the tests below run it: 10 s timeout, no retry or routing settings.
pub(super) fn test_task(action: Action) -> Task {
    Task {
        name: "T".to_owned(),
        action,
        dependencies: Vec::new(),
        retry: gleitzeit_core::RetryPolicy::default(),
        timeout: Duration::from_secs(10),
        priority: gleitzeit_core::Priority::Normal,
        on_failure: None,
        routing: None,
    }
}

/// The text task "hi" for model `m`, with the given routing settings.
pub(super) fn hi_task(routing: Option<gleitzeit_core::TaskRouting>) -> Task {
    Task {
        routing,
        ..test_task(Action::Text {
            model: "m".into(),
            prompt: "hi".into(),
            system: None,
            options: LlmOptions::default(),
        })
    }
}

fn endpoint(name: &str, models: &[&str]) -> ResolvedEndpoint {
    ResolvedEndpoint {
        name: name.to_owned(),
        kind: EndpointKind::OpenAi,
        url: "http://127.0.0.1:9".to_owned(),
        api_key: None,
        models: models.iter().map(|m| m.to_string()).collect(),
        timeout: Duration::from_secs(5),
        routing: Default::default(),
    }
}

#[test]
fn serves_the_models_of_its_endpoints() {
    let ex = LlmExecutor::new(&[endpoint("small", &["smollm2"]), endpoint("any", &["*"])]).unwrap();
    assert!(ex.serves("llm:smollm2"));
    assert!(ex.serves("llm:whatever"));
    assert!(!ex.serves("ext:Python Tasks"));
    assert!(!ex.saturated("llm:smollm2"));

    let only = LlmExecutor::new(&[endpoint("small", &["smollm2"])]).unwrap();
    assert!(only.serves("llm:smollm2"));
    assert!(!only.serves("llm:llama3.2"));
    assert!(!only.serves("smollm2"));
}

#[test]
fn route_failures_map_to_retry_decisions() {
    let f = classify_route(&RouteError::NoEndpoint {
        model: "m".into(),
        tag: None,
        provider: None,
    });
    assert_eq!(f.kind, FailureKind::Permanent);
    assert_eq!(f.detail.unwrap(), json!({"error": "no_endpoint"}));
    // A selection that matched nothing: permanent, and the detail says what was asked.
    let f = classify_route(&RouteError::NoEndpoint {
        model: "m".into(),
        tag: Some("gpu".into()),
        provider: Some(ProviderKind::OpenAi),
    });
    assert_eq!(f.kind, FailureKind::Permanent);
    assert!(f.message.contains(r#"tag "gpu""#), "{}", f.message);
    assert_eq!(
        f.detail.unwrap(),
        json!({"error": "no_endpoint", "tag": "gpu", "provider": "openai"})
    );
    let f = classify_route(&RouteError::Unavailable {
        model: "m".into(),
        retry_after: Duration::from_secs(9),
    });
    assert!(f.is_retryable());
    assert_eq!(f.min_retry_delay, Some(Duration::from_secs(9)));
    let f = classify_route(&RouteError::Saturated {
        model: "m".into(),
        waited: Duration::from_secs(1),
    });
    assert!(f.is_retryable());
    let f = classify_route(&RouteError::Call {
        endpoint: "e".into(),
        error: LlmError::Auth {
            status: 401,
            message: "no".into(),
        },
        earlier: Vec::new(),
        retry_in: None,
    });
    assert_eq!(f.kind, FailureKind::Permanent);
    assert_eq!(f.detail.unwrap()["endpoint"], json!("e"));

    // Only endpoint trouble (refused, rate limited): deferred, waiting at least until the
    // router expects an endpoint to be usable again, every endpoint named in the message and
    // the detail.
    let trouble = |retry_in| RouteError::Call {
        endpoint: "b".into(),
        error: LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(55)),
            message: "slow down".into(),
        },
        earlier: vec![(
            "a".into(),
            LlmError::Connect {
                message: "connection refused".into(),
            },
        )],
        retry_in,
    };
    // "a" may be back any moment: no floor beyond the task's backoff.
    assert_eq!(classify_route(&trouble(None)).min_retry_delay, None);
    let f = classify_route(&trouble(Some(Duration::from_secs(50))));
    assert!(f.deferred, "{f:?}");
    assert_eq!(f.min_retry_delay, Some(Duration::from_secs(50)));
    assert!(
        f.message
            .contains("a: connection failed: connection refused"),
        "{}",
        f.message
    );
    assert!(f.message.contains("b: rate limited"), "{}", f.message);
    let detail = f.detail.unwrap();
    assert_eq!(detail["error"], json!("endpoint_trouble"));
    assert_eq!(detail["endpoints"][0]["endpoint"], json!("a"));
    assert_eq!(detail["endpoints"][1]["status"], json!(429));

    // Trouble at one endpoint, a real failure at the other: the attempt counts.
    let f = classify_route(&RouteError::Call {
        endpoint: "b".into(),
        error: LlmError::Overloaded {
            status: 500,
            message: "internal".into(),
        },
        earlier: vec![(
            "a".into(),
            LlmError::Connect {
                message: "connection refused".into(),
            },
        )],
        retry_in: None,
    });
    assert!(!f.deferred && f.is_retryable(), "{f:?}");
}

#[test]
fn a_tasks_routing_settings_become_the_call_selection() {
    assert_eq!(
        task_selection(&hi_task(None)).unwrap(),
        Selection::default()
    );
    let routing = |strategy: Option<&str>, tag: Option<&str>, provider: Option<&str>| {
        Some(gleitzeit_core::TaskRouting {
            strategy: strategy.map(Into::into),
            tag: tag.map(Into::into),
            provider: provider.map(Into::into),
        })
    };
    for (name, kind) in [
        ("ollama", ProviderKind::Ollama),
        ("openai", ProviderKind::OpenAi),
        ("anthropic", ProviderKind::Anthropic),
    ] {
        let t = hi_task(routing(Some("fastest"), Some("gpu"), Some(name)));
        assert_eq!(
            task_selection(&t).unwrap(),
            Selection {
                strategy: Some(Strategy::Fastest),
                tag: Some("gpu".into()),
                provider: Some(kind),
            }
        );
    }
    // Every name validation admits is one this worker knows.
    for name in gleitzeit_core::ROUTING_PROVIDERS {
        assert!(provider_named(name).is_some(), "{name}");
    }
    // An unknown strategy falls back to the deployment's; the tag is kept.
    let t = hi_task(routing(Some("closest"), Some("gpu"), None));
    assert_eq!(
        task_selection(&t).unwrap(),
        Selection {
            tag: Some("gpu".into()),
            ..Selection::default()
        }
    );
    // An unknown provider fails the task instead of running it anywhere.
    let t = hi_task(routing(None, None, Some("vllm")));
    let f = task_selection(&t).unwrap_err();
    assert_eq!(f.kind, FailureKind::Permanent);
    assert!(f.message.contains("\"vllm\""), "{}", f.message);
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
    let req = to_request(&test_task(Action::Text {
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

    let req = to_request(&test_task(Action::Chat {
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

    let req = to_request(&test_task(Action::Vision {
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

    let req = to_request(&test_task(Action::Embed {
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

    let err = to_request(&test_task(Action::External {
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
        budget: None,
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
