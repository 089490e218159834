//! JSON shapes of the types stored in Redis: task specs, results and failures.

use std::time::Duration;

use gleitzeit_core::{
    Action, Backoff, FailureKind, FailurePolicy, LlmOptions, Priority, ResultMeta, RetryPolicy,
    Role, Task, TaskFailure, TaskResult, TaskType, UnknownPriority,
};
use serde_json::{json, Value};

#[test]
fn task_result_shapes() {
    let plain = TaskResult::new(json!("text"));
    assert_eq!(
        serde_json::to_value(&plain).unwrap(),
        json!({ "value": "text" })
    );
    let with_meta = TaskResult {
        value: json!([0.5, 1.0]),
        meta: Some(ResultMeta {
            model: Some("smollm2".into()),
            prompt_tokens: Some(12),
            duration_ms: Some(340),
            ..ResultMeta::default()
        }),
    };
    let v = serde_json::to_value(&with_meta).unwrap();
    assert_eq!(
        v,
        json!({ "value": [0.5, 1.0], "meta": { "model": "smollm2", "prompt_tokens": 12, "duration_ms": 340 } })
    );
    assert_eq!(serde_json::from_value::<TaskResult>(v).unwrap(), with_meta);
    let decoded: TaskResult = serde_json::from_str(r#"{"value": {"a": 1}}"#).unwrap();
    assert_eq!(decoded.meta, None);
}

#[test]
fn task_failure_shapes() {
    let f = TaskFailure::new(FailureKind::Timeout, "took too long");
    assert_eq!(
        serde_json::to_value(&f).unwrap(),
        json!({ "kind": "timeout", "message": "took too long" })
    );
    assert_eq!(f.to_string(), "timeout: took too long");
    let with_detail = TaskFailure {
        detail: Some(json!({ "status": 503 })),
        ..TaskFailure::new(FailureKind::Retryable, "overloaded")
    };
    let v = serde_json::to_value(&with_detail).unwrap();
    assert_eq!(v["detail"]["status"], json!(503));
    assert_eq!(
        serde_json::from_value::<TaskFailure>(v).unwrap(),
        with_detail
    );
    for (kind, word, retry) in [
        (FailureKind::Retryable, "retryable", true),
        (FailureKind::Permanent, "permanent", false),
        (FailureKind::Timeout, "timeout", true),
        (FailureKind::Poison, "poison", false),
        (FailureKind::Cancelled, "cancelled", false),
    ] {
        assert_eq!(kind.as_str(), word);
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(word));
        assert_eq!(kind.is_retryable(), retry);
    }
}

#[test]
fn spec_decoding_is_lenient_about_durations_and_defaults() {
    let t: Task = serde_json::from_value(json!({
        "name": "A", "type": "text", "model": "m", "prompt": "p", "timeout": 90,
        "retry": { "max_attempts": 2, "base_delay": 0.5 }
    }))
    .unwrap();
    assert_eq!(t.timeout, Duration::from_secs(90));
    assert_eq!(
        t.retry,
        RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(500),
            ..RetryPolicy::default()
        }
    );
    assert_eq!(t.priority, Priority::Normal);
    assert!(t.dependencies.is_empty());
    let minimal: Task = serde_json::from_value(json!({
        "name": "B", "type": "external", "service": "S", "function": "f"
    }))
    .unwrap();
    assert_eq!(minimal.timeout, Duration::from_secs(300));
    assert_eq!(minimal.retry, RetryPolicy::default());
    assert!(serde_json::from_value::<Task>(json!({"name": "C", "type": "poem"})).is_err());
    assert!(serde_json::from_value::<Task>(
        json!({"name": "C", "type": "text", "model": "m", "prompt": "p", "timeout": "-1s"})
    )
    .is_err());
}

#[test]
fn spec_encoding_omits_unset_options() {
    let t = Task {
        name: "A".into(),
        action: Action::Chat {
            model: "m".into(),
            messages: vec![gleitzeit_core::ChatMessage {
                role: Role::Assistant,
                content: "c".into(),
            }],
            system: None,
            options: LlmOptions::default(),
        },
        dependencies: vec![],
        retry: RetryPolicy {
            backoff: Backoff::Fixed,
            ..RetryPolicy::default()
        },
        timeout: Duration::from_millis(1500),
        priority: Priority::Low,
        on_failure: Some(FailurePolicy::FailFast),
        routing: None,
    };
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(
        v,
        json!({
            "name": "A", "type": "chat", "model": "m",
            "messages": [{ "role": "assistant", "content": "c" }],
            "retry": { "max_attempts": 3, "backoff": "fixed", "base_delay": "1s", "max_delay": "1m", "jitter": true, "wait_limit": "1h" },
            "timeout": "1s 500ms", "priority": "low", "on_failure": "fail_fast"
        })
    );
    assert_eq!(serde_json::from_value::<Task>(v).unwrap(), t);
}

#[test]
fn action_accessors() {
    let embed = Action::Embed {
        model: "e".into(),
        prompt: "p".into(),
        options: LlmOptions {
            seed: Some(1),
            ..Default::default()
        },
    };
    assert_eq!(embed.kind(), TaskType::Embed);
    assert_eq!(embed.model(), Some("e"));
    assert_eq!(embed.options().and_then(|o| o.seed), Some(1));
    let ext = Action::External {
        service: "S".into(),
        function: "f".into(),
        args: vec![],
        kwargs: Default::default(),
    };
    assert_eq!(ext.kind(), TaskType::External);
    assert_eq!(ext.model(), None);
    assert_eq!(ext.options(), None);
    for t in TaskType::ALL {
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            Value::String(t.as_str().into())
        );
        assert_eq!(t.is_llm(), t != TaskType::External);
    }
    for p in [Priority::High, Priority::Normal, Priority::Low] {
        assert_eq!(
            serde_json::to_value(p).unwrap(),
            Value::String(p.to_string())
        );
    }
    for f in [FailurePolicy::FailFast, FailurePolicy::Continue] {
        assert_eq!(
            serde_json::to_value(f).unwrap(),
            Value::String(f.to_string())
        );
    }
    for r in [Role::System, Role::User, Role::Assistant] {
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            Value::String(r.as_str().into())
        );
    }
    assert!(LlmOptions::default().is_default());
    assert!(!LlmOptions {
        json: true,
        ..Default::default()
    }
    .is_default());
}

#[test]
fn priority_round_trip() {
    for p in Priority::ALL {
        assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
        assert_eq!(p.to_string(), p.as_str());
    }
    assert_eq!(
        "urgent".parse::<Priority>(),
        Err(UnknownPriority("urgent".to_owned()))
    );
    assert_eq!(Priority::default(), Priority::Normal);
    assert!(Priority::High < Priority::Normal && Priority::Normal < Priority::Low);
}
