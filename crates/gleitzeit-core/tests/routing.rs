//! The per-task routing override: parsed, validated with paths, kept in the task's spec.

mod common;

use common::{find, invalid, one_task, only, valid};
use gleitzeit_core::{ErrorKind, TaskRouting, ROUTING_STRATEGIES};

#[test]
fn a_task_may_name_a_routing_strategy() {
    let wf = valid(&one_task(
        "    type: text\n    model: m\n    prompt: p\n    routing: {strategy: model_affinity}\n",
    ));
    assert_eq!(
        wf.tasks[0].routing,
        Some(TaskRouting {
            strategy: Some("model_affinity".into())
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
        let wf = valid(&one_task(&format!(
            "    type: embed\n    model: m\n    prompt: p\n    routing: {{strategy: {s}}}\n"
        )));
        assert_eq!(
            wf.tasks[0].routing.as_ref().unwrap().strategy.as_deref(),
            Some(*s)
        );
    }
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
