//! The per-task routing settings (strategy, tag and provider selection): parsed, validated
//! with paths, kept in the task's spec.

mod common;

use common::{find, invalid, one_task, only, valid};
use gleitzeit_core::{ErrorKind, TaskRouting, ROUTING_PROVIDERS, ROUTING_STRATEGIES};

#[test]
fn a_task_may_name_a_routing_strategy() {
    let wf = valid(&one_task(
        "    type: text\n    model: m\n    prompt: p\n    routing: {strategy: model_affinity}\n",
    ));
    assert_eq!(
        wf.tasks[0].routing,
        Some(TaskRouting {
            strategy: Some("model_affinity".into()),
            ..TaskRouting::default()
        })
    );
    // The spec (what workers read) carries it, and validates back to itself.
    let spec = serde_json::to_value(&wf.tasks[0]).unwrap();
    assert_eq!(spec["routing"]["strategy"], "model_affinity");
    let again = valid(&wf.to_yaml().unwrap());
    assert_eq!(again, wf);
    // Without it, nothing is written.
    let plain = valid(&one_task("    type: text\n    model: m\n    prompt: p\n"));
    assert_eq!(plain.tasks[0].routing, None);
    assert!(serde_json::to_value(&plain.tasks[0])
        .unwrap()
        .get("routing")
        .is_none());
    for s in ROUTING_STRATEGIES {
        let r = routing_of(&format!("strategy: {s}"));
        assert_eq!(r.strategy.as_deref(), Some(*s));
    }
}

/// The routing settings of a valid embed task whose `routing` mapping holds `fields`.
fn routing_of(fields: &str) -> TaskRouting {
    let wf = valid(&one_task(&format!(
        "    type: embed\n    model: m\n    prompt: p\n    routing: {{{fields}}}\n"
    )));
    wf.tasks[0].routing.clone().expect("routing")
}

#[test]
fn unknown_strategies_and_fields_are_reported_with_their_path() {
    let e = only(
        &one_task(
            "    type: text\n    model: m\n    prompt: p\n    routing: {strategy: closest}\n",
        ),
        ErrorKind::InvalidValue,
        "tasks[0] (A).routing.strategy",
    );
    assert!(e.message.contains("model_affinity"), "{e}");
    only(
        &one_task("    type: text\n    model: m\n    prompt: p\n    routing: {strategy: 3}\n"),
        ErrorKind::WrongType,
        "tasks[0] (A).routing.strategy",
    );
    only(
        &one_task("    type: text\n    model: m\n    prompt: p\n    routing: {stratgy: fastest}\n"),
        ErrorKind::UnknownField,
        "tasks[0] (A).routing.stratgy",
    );
    only(
        &one_task("    type: text\n    model: m\n    prompt: p\n    routing: fastest\n"),
        ErrorKind::WrongType,
        "tasks[0] (A).routing",
    );
    let errs = invalid(&one_task(
        "    type: external\n    service: s\n    function: f\n    routing: {strategy: fastest}\n",
    ));
    find(&errs, ErrorKind::FieldNotForType, "tasks[0] (A).routing");
}

#[test]
fn a_task_may_select_endpoints_by_tag_and_provider() {
    let wf = valid(&one_task(
        "    type: chat\n    model: m\n    messages: [{role: user, content: hi}]\n    routing: {tag: gpu, provider: openai, strategy: fastest}\n",
    ));
    assert_eq!(
        wf.tasks[0].routing,
        Some(TaskRouting {
            strategy: Some("fastest".into()),
            tag: Some("gpu".into()),
            provider: Some("openai".into()),
        })
    );
    // The spec carries the selection and validates back to itself.
    let spec = serde_json::to_value(&wf.tasks[0]).unwrap();
    assert_eq!(
        spec["routing"],
        serde_json::json!({"strategy": "fastest", "tag": "gpu", "provider": "openai"})
    );
    assert_eq!(valid(&wf.to_yaml().unwrap()), wf);
    // Each alone is enough; unset fields are not written.
    let wf = valid(&one_task(
        "    type: text\n    model: m\n    prompt: p\n    routing: {tag: \"big memory\"}\n",
    ));
    let r = wf.tasks[0].routing.as_ref().unwrap();
    assert_eq!(
        (
            r.tag.as_deref(),
            r.provider.as_deref(),
            r.strategy.as_deref()
        ),
        (Some("big memory"), None, None)
    );
    assert_eq!(
        serde_json::to_value(&wf.tasks[0]).unwrap()["routing"],
        serde_json::json!({"tag": "big memory"})
    );
    for p in ROUTING_PROVIDERS {
        let r = routing_of(&format!("provider: {p}"));
        assert_eq!(r.provider.as_deref(), Some(*p));
    }
}

#[test]
fn bad_providers_and_tags_are_reported_with_their_path() {
    let e = only(
        &one_task("    type: text\n    model: m\n    prompt: p\n    routing: {provider: OpenAI}\n"),
        ErrorKind::InvalidValue,
        "tasks[0] (A).routing.provider",
    );
    for p in ROUTING_PROVIDERS {
        assert!(e.message.contains(p), "{e}");
    }
    assert!(e.message.contains("\"OpenAI\""), "{e}");
    only(
        &one_task("    type: text\n    model: m\n    prompt: p\n    routing: {provider: vllm}\n"),
        ErrorKind::InvalidValue,
        "tasks[0] (A).routing.provider",
    );
    only(
        &one_task(
            "    type: text\n    model: m\n    prompt: p\n    routing: {provider: [ollama]}\n",
        ),
        ErrorKind::WrongType,
        "tasks[0] (A).routing.provider",
    );
    only(
        &one_task("    type: text\n    model: m\n    prompt: p\n    routing: {tag: [gpu]}\n"),
        ErrorKind::WrongType,
        "tasks[0] (A).routing.tag",
    );
    let e = only(
        &one_task("    type: text\n    model: m\n    prompt: p\n    routing: {tag: \"  \"}\n"),
        ErrorKind::InvalidValue,
        "tasks[0] (A).routing.tag",
    );
    assert!(e.message.contains("blank"), "{e}");
    only(
        &one_task("    type: text\n    model: m\n    prompt: p\n    routing: {tag: \"a\\tb\"}\n"),
        ErrorKind::InvalidValue,
        "tasks[0] (A).routing.tag",
    );
    // Every problem of one mapping is reported, not only the first.
    let errs = invalid(&one_task(
        "    type: text\n    model: m\n    prompt: p\n    routing: {provider: x, tag: \"\", strategy: y, host: z}\n",
    ));
    for path in ["provider", "tag", "strategy"] {
        find(
            &errs,
            ErrorKind::InvalidValue,
            &format!("tasks[0] (A).routing.{path}"),
        );
    }
    find(&errs, ErrorKind::UnknownField, "tasks[0] (A).routing.host");
    assert_eq!(errs.len(), 4, "{errs:?}");
}
