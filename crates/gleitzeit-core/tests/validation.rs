//! Every validation rule, one test (or more) each, plus the merge of defaults.

mod common;

use std::time::Duration;

use common::{find, invalid, load, one_task, only, show, valid};
use gleitzeit_core::{
    load_str, parse_workflow, validate, Action, Backoff, ChatMessage, ErrorKind, FailurePolicy,
    Format, Limits, LlmOptions, Priority, RetryPolicy, Role,
};
use serde_json::{json, Map, Value};

const FULL: &str = r#"
name: Text analysis
description: optional text
input:
  text: "Gleitzeit runs LLM workflows"
failure_policy: continue
defaults:
  model: llama3.2
  timeout: 120s
  retry: { max_attempts: 3, backoff: exponential, base_delay: 1s, max_delay: 30s, jitter: true }
  priority: normal
  options: { temperature: 0.2 }
tasks:
  - name: Summarize
    type: text
    model: llama3.2
    prompt: "Summarize: {{input.text}}"
    system: Be brief.
    options: { temperature: 0.7, top_p: 0.9, top_k: 40, max_tokens: 256, seed: 1, stop: ["\n\n"], json: false }
    retry: { max_attempts: 5 }
    timeout: 30s
    priority: high
    on_failure: continue
  - name: Talk
    type: chat
    model: llama3.2
    messages: [{ role: user, content: "Hi {{Summarize.result}}" }]
  - name: Look
    type: vision
    model: llava
    prompt: "What is in the image?"
    images: ["aGVsbG8="]
  - name: Vector
    type: embed
    model: nomic-embed-text
    prompt: "text to embed {{Summarize.result}}"
  - name: Process
    type: external
    service: Python Tasks
    function: process_data
    args: ["{{Summarize.result}}", 3]
    kwargs: { mode: fast, data: "{{input}}" }
    dependencies: [Look]
"#;

#[test]
fn full_example_validates_with_defaults_merged() {
    let wf = valid(FULL);
    assert_eq!(wf.name, "Text analysis");
    assert_eq!(wf.description.as_deref(), Some("optional text"));
    assert_eq!(wf.input["text"], json!("Gleitzeit runs LLM workflows"));
    assert_eq!(wf.failure_policy, FailurePolicy::Continue);
    assert_eq!(wf.tasks.len(), 5);

    let s = &wf.tasks[0];
    assert_eq!(s.timeout, Duration::from_secs(30));
    assert_eq!(s.priority, Priority::High);
    assert_eq!(s.on_failure, Some(FailurePolicy::Continue));
    assert_eq!(
        s.retry,
        RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Exponential,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            jitter: true,
            wait_limit: Duration::from_secs(3600),
        }
    );
    assert_eq!(
        s.action,
        Action::Text {
            model: "llama3.2".into(),
            prompt: "Summarize: {{input.text}}".into(),
            system: Some("Be brief.".into()),
            options: LlmOptions {
                temperature: Some(0.7),
                top_p: Some(0.9),
                top_k: Some(40),
                max_tokens: Some(256),
                seed: Some(1),
                stop: vec!["\n\n".into()],
                json: false
            }
        }
    );
    assert!(s.dependencies.is_empty());

    let talk = &wf.tasks[1];
    assert_eq!(talk.timeout, Duration::from_secs(120), "defaults.timeout");
    assert_eq!(talk.priority, Priority::Normal);
    assert_eq!(talk.retry.max_attempts, 3);
    assert_eq!(talk.retry.max_delay, Duration::from_secs(30));
    assert_eq!(talk.dependencies, vec!["Summarize"]);
    match &talk.action {
        Action::Chat {
            messages, options, ..
        } => {
            assert_eq!(
                messages,
                &vec![ChatMessage {
                    role: Role::User,
                    content: "Hi {{Summarize.result}}".into()
                }]
            );
            assert_eq!(options.temperature, Some(0.2), "defaults.options");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(wf.tasks[2].action.model(), Some("llava"));
    assert_eq!(wf.tasks[3].dependencies, vec!["Summarize"]);

    let p = &wf.tasks[4];
    // explicit ∪ implied, in file order of the tasks.
    assert_eq!(p.dependencies, vec!["Summarize", "Look"]);
    match &p.action {
        Action::External {
            service,
            function,
            args,
            kwargs,
        } => {
            assert_eq!(service, "Python Tasks");
            assert_eq!(function, "process_data");
            assert_eq!(args, &vec![json!("{{Summarize.result}}"), json!(3)]);
            assert_eq!(kwargs["mode"], json!("fast"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn builtin_defaults_apply_without_defaults_section() {
    let wf = valid(&one_task("    type: text\n    model: m\n    prompt: p\n"));
    let t = &wf.tasks[0];
    assert_eq!(t.timeout, Duration::from_secs(300));
    assert_eq!(t.retry, RetryPolicy::default());
    assert_eq!(t.priority, Priority::Normal);
    assert_eq!(t.on_failure, None);
    assert_eq!(wf.failure_policy, FailurePolicy::FailFast);
    assert!(wf.input.is_empty());
}

#[test]
fn partial_retry_merges_over_defaults_then_builtin() {
    let wf = valid(
        "name: t\ndefaults:\n  retry: { base_delay: 2s, backoff: linear }\ntasks:\n  - name: A\n    type: text\n    model: m\n    prompt: p\n    retry: { max_attempts: 7, jitter: false }\n  - name: B\n    type: text\n    model: m\n    prompt: p\n",
    );
    assert_eq!(
        wf.tasks[0].retry,
        RetryPolicy {
            max_attempts: 7,
            backoff: Backoff::Linear,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            jitter: false,
            wait_limit: Duration::from_secs(3600),
        }
    );
    assert_eq!(
        wf.tasks[1].retry,
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Linear,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            jitter: true,
            wait_limit: Duration::from_secs(3600),
        }
    );
}

#[test]
fn the_wait_limit_for_capacity_merges_like_the_other_retry_settings() {
    let wf = valid(
        "name: t\ndefaults:\n  retry: { wait_limit: 10m }\ntasks:\n  - name: A\n    type: text\n    model: m\n    prompt: p\n    retry: { wait_limit: 0s }\n  - name: B\n    type: text\n    model: m\n    prompt: p\n",
    );
    assert_eq!(wf.tasks[0].retry.wait_limit, Duration::ZERO);
    assert_eq!(wf.tasks[1].retry.wait_limit, Duration::from_secs(600));
    assert_eq!(wf.tasks[1].retry.max_attempts, 3);
}

#[test]
fn options_merge_field_by_field() {
    let wf = valid(
        "name: t\ndefaults:\n  options: { temperature: 0.1, seed: 9, stop: [x] }\ntasks:\n  - name: A\n    type: text\n    model: m\n    prompt: p\n    options: { temperature: 1.5, json: true }\n",
    );
    assert_eq!(
        wf.tasks[0].action.options(),
        Some(&LlmOptions {
            temperature: Some(1.5),
            seed: Some(9),
            stop: vec!["x".into()],
            json: true,
            ..LlmOptions::default()
        })
    );
}

#[test]
fn defaults_do_not_touch_external_tasks() {
    let wf = valid(
        "name: t\ndefaults:\n  model: m\n  options: { temperature: 1 }\n  priority: low\n  timeout: 5s\ntasks:\n  - name: A\n    type: external\n    service: S\n    function: f\n",
    );
    let t = &wf.tasks[0];
    assert_eq!(t.action.model(), None);
    assert_eq!(t.priority, Priority::Low);
    assert_eq!(t.timeout, Duration::from_secs(5));
}

#[test]
fn durations_accept_strings_and_seconds() {
    let wf = valid(&one_task(
        "    type: text\n    model: m\n    prompt: p\n    timeout: 1.5\n    retry: { base_delay: 250ms, max_delay: 2 }\n",
    ));
    assert_eq!(wf.tasks[0].timeout, Duration::from_millis(1500));
    assert_eq!(wf.tasks[0].retry.base_delay, Duration::from_millis(250));
    assert_eq!(wf.tasks[0].retry.max_delay, Duration::from_secs(2));
}

#[test]
fn null_optional_fields_count_as_absent() {
    let wf = valid("name: t\ndescription:\ninput:\ndefaults:\ntasks:\n  - name: A\n    type: text\n    model: m\n    prompt: p\n    dependencies:\n    system:\n");
    assert_eq!(wf.description, None);
    assert!(wf.tasks[0].dependencies.is_empty());
}

// ---- syntax -------------------------------------------------------------------------------

#[test]
fn syntax_errors_stop_with_location() {
    let errs = invalid(include_str!("../../../examples/invalid/syntax.yaml"));
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    assert_eq!(errs[0].kind, ErrorKind::Syntax);
    assert!(errs[0].path.starts_with("line "), "{}", errs[0]);
    let json = load_str(
        "{\"name\": ",
        Format::Json,
        None,
        &Map::new(),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(json[0].kind, ErrorKind::Syntax);
    assert_eq!(json[0].path, "line 1, column 9");
}

// ---- wrong types --------------------------------------------------------------------------

#[test]
fn root_must_be_a_mapping() {
    for text in ["[1, 2]", "just text", ""] {
        let errs = invalid(text);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].kind, ErrorKind::WrongType);
        assert_eq!(errs[0].path, "workflow");
    }
}

#[test]
fn wrong_types_are_all_reported_with_paths() {
    let errs = invalid(
        r#"
name: 5
description: [x]
input: text
failure_policy: 1
defaults: { model: 3, timeout: true, retry: 3, options: [] }
tasks:
  - 7
  - name: A
    type: text
    model: m
    prompt: 5
    system: [s]
    dependencies: B
    timeout: [1]
    priority: 2
    retry: { max_attempts: 2.5, jitter: "yes", backoff: 1 }
    options: { temperature: hot, stop: x, json: 1, top_k: 1.5, seed: "s" }
  - name: C
    type: external
    service: 1
    function: f
    args: { a: 1 }
    kwargs: [1]
  - name: D
    type: chat
    model: m
    messages: hi
  - name: E
    type: chat
    model: m
    messages: [hi, { role: user, content: 3 }]
  - name: F
    type: vision
    model: m
    prompt: p
    images: x
  - name: G
    type: vision
    model: m
    prompt: p
    images: [1]
  - name: 9
    type: text
    model: m
    prompt: p
    dependencies: [1]
"#,
    );
    let wt = ErrorKind::WrongType;
    for path in [
        "name",
        "description",
        "input",
        "failure_policy",
        "defaults.model",
        "defaults.timeout",
        "defaults.retry",
        "defaults.options",
        "tasks[0]",
        "tasks[1] (A).prompt",
        "tasks[1] (A).system",
        "tasks[1] (A).dependencies",
        "tasks[1] (A).timeout",
        "tasks[1] (A).priority",
        "tasks[1] (A).retry.max_attempts",
        "tasks[1] (A).retry.jitter",
        "tasks[1] (A).retry.backoff",
        "tasks[1] (A).options.temperature",
        "tasks[1] (A).options.stop",
        "tasks[1] (A).options.json",
        "tasks[1] (A).options.top_k",
        "tasks[1] (A).options.seed",
        "tasks[2] (C).service",
        "tasks[2] (C).args",
        "tasks[2] (C).kwargs",
        "tasks[3] (D).messages",
        "tasks[4] (E).messages[0]",
        "tasks[4] (E).messages[1].content",
        "tasks[5] (F).images",
        "tasks[6] (G).images[0]",
        "tasks[7].name",
        "tasks[7].dependencies[0]",
    ] {
        let e = find(&errs, wt, path);
        assert!(e.message.starts_with("expected "), "{e}");
    }
    let e = find(&errs, wt, "tasks[1] (A).prompt");
    assert_eq!(e.message, "expected a string, found a number");
    assert_eq!(
        e.to_string(),
        "tasks[1] (A).prompt: expected a string, found a number"
    );
}

#[test]
fn tasks_must_be_a_list() {
    only("name: t\ntasks: { a: 1 }\n", ErrorKind::WrongType, "tasks");
}

// ---- invalid values -----------------------------------------------------------------------

#[test]
fn invalid_words_list_the_allowed_ones() {
    let errs = invalid(
        r#"
name: t
failure_policy: sometimes
defaults: { priority: urgent }
tasks:
  - name: A
    type: poem
  - name: B
    type: chat
    model: m
    messages: [{ role: robot, content: hi }]
    on_failure: explode
    retry: { backoff: random }
"#,
    );
    let iv = ErrorKind::InvalidValue;
    let e = find(&errs, iv, "tasks[0] (A).type");
    assert!(
        e.message.contains("text, chat, vision, embed, external"),
        "{e}"
    );
    find(&errs, iv, "failure_policy");
    find(&errs, iv, "defaults.priority");
    let e = find(&errs, iv, "tasks[1] (B).messages[0].role");
    assert!(e.message.contains("system, user, assistant"), "{e}");
    find(&errs, iv, "tasks[1] (B).on_failure");
    let e = find(&errs, iv, "tasks[1] (B).retry.backoff");
    assert!(e.message.contains("fixed, linear, exponential"), "{e}");
    assert_eq!(errs.len(), 6, "{}", show(&errs));
}

// ---- unknown fields / fields not for the type -----------------------------------------------

#[test]
fn unknown_fields_name_the_field_and_the_allowed_ones() {
    let errs = invalid(
        r#"
name: t
colour: blue
defaults: { modle: m }
tasks:
  - name: A
    type: text
    model: m
    prompt: p
    promt: typo
    retry: { attempts: 3 }
    options: { temp: 1 }
  - name: B
    type: chat
    model: m
    messages: [{ role: user, content: hi, name: x }]
  - name: C
    bogus: 1
"#,
    );
    let uf = ErrorKind::UnknownField;
    let e = find(&errs, uf, "colour");
    assert!(
        e.message.contains("`colour`")
            && e.message
                .contains("name, description, input, failure_policy, retention, defaults, tasks"),
        "{e}"
    );
    find(&errs, uf, "defaults.modle");
    let e = find(&errs, uf, "tasks[0] (A).promt");
    assert!(e.message.contains("`promt`"), "{e}");
    assert!(e.message.contains("model, prompt, system, options"), "{e}");
    assert!(
        !e.message.contains("messages"),
        "only the text task's fields: {e}"
    );
    let e = find(&errs, uf, "tasks[0] (A).retry.attempts");
    assert!(
        e.message
            .contains("max_attempts, backoff, base_delay, max_delay, jitter"),
        "{e}"
    );
    let e = find(&errs, uf, "tasks[0] (A).options.temp");
    assert!(
        e.message
            .contains("temperature, top_p, top_k, max_tokens, seed, stop, json"),
        "{e}"
    );
    find(&errs, uf, "tasks[1] (B).messages[0].name");
    // Without a type, the allowed list covers every type.
    let e = find(&errs, uf, "tasks[2] (C).bogus");
    assert!(e.message.contains("kwargs"), "{e}");
}

#[test]
fn fields_not_valid_for_the_type() {
    let errs = invalid(
        r#"
name: t
tasks:
  - name: A
    type: text
    model: m
    prompt: p
    messages: [{ role: user, content: hi }]
    service: S
  - name: B
    type: external
    service: S
    function: f
    prompt: p
    options: { temperature: 1 }
    model: m
  - name: C
    type: embed
    model: m
    prompt: p
    system: s
  - name: D
    type: chat
    model: m
    messages: [{ role: user, content: hi }]
    images: [aGk=]
"#,
    );
    let nt = ErrorKind::FieldNotForType;
    let e = find(&errs, nt, "tasks[0] (A).messages");
    assert!(e.message.contains("not valid for a text task"), "{e}");
    find(&errs, nt, "tasks[0] (A).service");
    find(&errs, nt, "tasks[1] (B).prompt");
    find(&errs, nt, "tasks[1] (B).options");
    find(&errs, nt, "tasks[1] (B).model");
    find(&errs, nt, "tasks[2] (C).system");
    find(&errs, nt, "tasks[3] (D).images");
    assert_eq!(errs.len(), 7, "{}", show(&errs));
}

// ---- missing fields -----------------------------------------------------------------------

#[test]
fn missing_fields_by_type() {
    let errs = invalid(
        r#"
description: no name
tasks:
  - type: text
    model: m
    prompt: p
  - name: NoType
  - name: NoModel
    type: text
    prompt: p
  - name: NoPrompt
    type: text
    model: m
  - name: NoMessages
    type: chat
    model: m
  - name: NoImages
    type: vision
    model: m
    prompt: p
  - name: NoService
    type: external
    function: f
  - name: NoFunction
    type: external
    service: S
  - name: BadMessage
    type: chat
    model: m
    messages: [{ content: hi }, { role: user }]
  - name: NoEmbedPrompt
    type: embed
    model: m
"#,
    );
    let mf = ErrorKind::MissingField;
    for path in [
        "name",
        "tasks[0].name",
        "tasks[1] (NoType).type",
        "tasks[2] (NoModel).model",
        "tasks[3] (NoPrompt).prompt",
        "tasks[4] (NoMessages).messages",
        "tasks[5] (NoImages).images",
        "tasks[6] (NoService).service",
        "tasks[7] (NoFunction).function",
        "tasks[8] (BadMessage).messages[0].role",
        "tasks[8] (BadMessage).messages[1].content",
        "tasks[9] (NoEmbedPrompt).prompt",
    ] {
        find(&errs, mf, path);
    }
    assert_eq!(errs.len(), 12, "{}", show(&errs));
    let e = find(&errs, mf, "tasks[2] (NoModel).model");
    assert!(e.message.contains("defaults.model"), "{e}");
}

#[test]
fn missing_tasks() {
    only("name: t\n", ErrorKind::MissingField, "tasks");
}

#[test]
fn default_model_satisfies_llm_tasks() {
    let wf = valid("name: t\ndefaults: { model: smollm2 }\ntasks:\n  - name: A\n    type: embed\n    prompt: p\n");
    assert_eq!(wf.tasks[0].action.model(), Some("smollm2"));
}

#[test]
fn invalid_default_model_is_reported_once() {
    let errs = invalid("name: t\ndefaults: { model: 'a b' }\ntasks:\n  - name: A\n    type: text\n    prompt: p\n  - name: B\n    type: text\n    prompt: p\n");
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    find(&errs, ErrorKind::InvalidModelName, "defaults.model");
}

#[test]
fn empty_values() {
    let errs = invalid(
        "name: t\ntasks:\n  - name: A\n    type: text\n    model: m\n    prompt: ''\n  - name: B\n    type: chat\n    model: m\n    messages: []\n  - name: C\n    type: vision\n    model: m\n    prompt: p\n    images: []\n",
    );
    let ev = ErrorKind::EmptyValue;
    find(&errs, ev, "tasks[0] (A).prompt");
    find(&errs, ev, "tasks[1] (B).messages");
    find(&errs, ev, "tasks[2] (C).images");
    assert_eq!(errs.len(), 3);
}

#[test]
fn empty_task_list() {
    let e = only("name: t\ntasks: []\n", ErrorKind::EmptyTasks, "tasks");
    assert_eq!(e.message, "the task list is empty");
}

// ---- names --------------------------------------------------------------------------------

#[test]
fn duplicate_names_name_both_indices() {
    let e = only(
        "name: t\ndefaults: { model: m }\ntasks:\n  - { name: A, type: text, prompt: p }\n  - { name: B, type: text, prompt: p }\n  - { name: A, type: text, prompt: q }\n",
        ErrorKind::DuplicateName,
        "tasks[2] (A).name",
    );
    assert!(
        e.message.contains("tasks[0]") && e.message.contains("tasks[2]"),
        "{e}"
    );
}

#[test]
fn forbidden_task_names() {
    let long = "x".repeat(129);
    for (name, path) in [
        ("'a.b'", "tasks[0] (a.b).name"),
        ("'a{b'", "tasks[0] (a{b).name"),
        ("'a}b'", "tasks[0] (a}b).name"),
        ("' lead'", "tasks[0] ( lead).name"),
        ("'trail '", "tasks[0] (trail ).name"),
        ("\"tab\\there\"", "tasks[0] (tab\\there).name"),
        ("input", "tasks[0] (input).name"),
        ("''", "tasks[0] ().name"),
        (long.as_str(), &format!("tasks[0] ({long}).name")),
    ] {
        let text = format!(
            "name: t\ntasks:\n  - name: {name}\n    type: text\n    model: m\n    prompt: p\n"
        );
        only(&text, ErrorKind::InvalidName, path);
    }
}

#[test]
fn workflow_name_rules() {
    let long = "w".repeat(129);
    for name in ["''", long.as_str(), "\"bell\\a\""] {
        let text =
            format!("name: {name}\ntasks:\n  - {{ name: A, type: text, model: m, prompt: p }}\n");
        only(&text, ErrorKind::InvalidName, "name");
    }
    valid("name: Release 1.2 {draft}\ntasks:\n  - { name: A, type: text, model: m, prompt: p }\n");
}

#[test]
fn model_service_and_function_names() {
    let errs = invalid(
        r#"
name: t
tasks:
  - { name: A, type: text, model: "llama 3", prompt: p }
  - { name: B, type: text, model: "{{input.model}}", prompt: p }
  - { name: C, type: text, model: "", prompt: p }
  - { name: D, type: external, service: "{svc}", function: f }
  - { name: E, type: external, service: "S\u0001", function: f }
  - { name: F, type: external, service: S, function: "" }
  - { name: G, type: external, service: S, function: "f\n" }
"#,
    );
    find(&errs, ErrorKind::InvalidModelName, "tasks[0] (A).model");
    find(&errs, ErrorKind::InvalidModelName, "tasks[1] (B).model");
    find(&errs, ErrorKind::InvalidModelName, "tasks[2] (C).model");
    find(&errs, ErrorKind::InvalidServiceName, "tasks[3] (D).service");
    find(&errs, ErrorKind::InvalidServiceName, "tasks[4] (E).service");
    find(
        &errs,
        ErrorKind::InvalidFunctionName,
        "tasks[5] (F).function",
    );
    find(
        &errs,
        ErrorKind::InvalidFunctionName,
        "tasks[6] (G).function",
    );
    assert_eq!(errs.len(), 7, "{}", show(&errs));
}

// ---- dependencies and cycles --------------------------------------------------------------

#[test]
fn unknown_and_self_dependencies() {
    let errs = invalid(
        "name: t\ndefaults: { model: m }\ntasks:\n  - { name: A, type: text, prompt: p, dependencies: [B, Nope, A] }\n  - { name: B, type: text, prompt: p }\n",
    );
    let e = find(
        &errs,
        ErrorKind::UnknownDependency,
        "tasks[0] (A).dependencies[1]",
    );
    assert!(e.message.contains("\"Nope\""), "{e}");
    find(
        &errs,
        ErrorKind::SelfDependency,
        "tasks[0] (A).dependencies[2]",
    );
    assert_eq!(errs.len(), 2, "{}", show(&errs));
}

#[test]
fn duplicate_explicit_dependencies_are_merged() {
    let wf = valid("name: t\ndefaults: { model: m }\ntasks:\n  - { name: A, type: text, prompt: p }\n  - { name: B, type: text, prompt: p }\n  - { name: C, type: text, prompt: '{{A.result}}', dependencies: [B, A, B] }\n");
    assert_eq!(wf.tasks[2].dependencies, vec!["A", "B"]);
}

#[test]
fn cycles_are_named() {
    let errs = invalid(include_str!("../../../examples/invalid/cycle.yaml"));
    let e = find(&errs, ErrorKind::Cycle, "tasks[0] (A).dependencies");
    assert!(e.message.contains("A → B → C → A"), "{e}");
    find(
        &errs,
        ErrorKind::UnknownDependency,
        "tasks[3] (D).dependencies[0]",
    );
    assert_eq!(errs.len(), 2, "{}", show(&errs));
}

#[test]
fn every_independent_cycle_is_reported() {
    let errs = invalid(
        "name: t\ndefaults: { model: m }\ntasks:\n  - { name: A, type: text, prompt: p, dependencies: [B] }\n  - { name: B, type: text, prompt: p, dependencies: [A] }\n  - { name: C, type: text, prompt: p }\n  - { name: D, type: text, prompt: p, dependencies: [E, C] }\n  - { name: E, type: text, prompt: p, dependencies: [D] }\n",
    );
    let e = find(&errs, ErrorKind::Cycle, "tasks[0] (A).dependencies");
    assert!(e.message.contains("A → B → A"), "{e}");
    let e = find(&errs, ErrorKind::Cycle, "tasks[3] (D).dependencies");
    assert!(e.message.contains("D → E → D"), "{e}");
    assert_eq!(errs.len(), 2, "{}", show(&errs));
}

#[test]
fn long_chains_do_not_overflow_and_validate() {
    let mut text = String::from(
        "name: chain\ndefaults: { model: m }\ntasks:\n  - { name: T0, type: text, prompt: p }\n",
    );
    for i in 1..1000 {
        text.push_str(&format!(
            "  - {{ name: T{i}, type: text, prompt: '{{{{T{}.result}}}}' }}\n",
            i - 1
        ));
    }
    let wf = valid(&text);
    assert_eq!(wf.tasks[999].dependencies, vec!["T998"]);
    // Close the chain into one big cycle through a reference.
    text = text.replacen("prompt: p }", "prompt: '{{T999.result}}' }", 1);
    let errs = invalid(&text);
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    assert_eq!(errs[0].kind, ErrorKind::ReferenceCycle);
    assert!(errs[0].message.contains("T0 → T999 → T998"), "{}", errs[0]);
}

// ---- templates ----------------------------------------------------------------------------

#[test]
fn template_errors_in_every_templated_field() {
    let errs = invalid(include_str!("../../../examples/invalid/bad_templates.yaml"));
    let e = find(
        &errs,
        ErrorKind::UnknownTaskReference,
        "tasks[1] (Second).prompt",
    );
    assert!(e.message.contains("{{Missing.result}}"), "{e}");
    let e = find(&errs, ErrorKind::UnknownInputKey, "tasks[0] (First).prompt");
    assert!(
        e.message.contains("`txt`") && e.message.contains("declared: text"),
        "{e}"
    );
    let e = find(
        &errs,
        ErrorKind::MalformedTemplate,
        "tasks[2] (Third).prompt",
    );
    assert!(e.message.contains("not closed"), "{e}");
    let e = find(&errs, ErrorKind::ReferenceCycle, "tasks[0] (First).prompt");
    assert!(e.message.contains("First → Second → First"), "{e}");
    assert_eq!(errs.len(), 4, "{}", show(&errs));
}

#[test]
fn malformed_templates() {
    for (prompt, needle) in [
        ("'{{}}'", "empty template"),
        ("'{{ }}'", "empty template"),
        ("'{{A}}'", "is not a reference"),
        ("'{{A.output}}'", "is not a reference"),
        ("'{{input..x}}'", "empty name"),
        ("'{{A.result.}}'", "empty name"),
        ("'open {{input'", "not closed"),
        ("'{{ {input} }}'", "unexpected brace"),
    ] {
        let text = format!("name: t\ninput: {{ x: 1 }}\ntasks:\n  - {{ name: A, type: text, model: m, prompt: p }}\n  - {{ name: B, type: text, model: m, prompt: {prompt} }}\n");
        let e = only(&text, ErrorKind::MalformedTemplate, "tasks[1] (B).prompt");
        assert!(e.message.contains(needle), "{prompt}: {e}");
    }
}

#[test]
fn template_fields_are_all_checked() {
    let errs = invalid(
        r#"
name: t
tasks:
  - name: Chat
    type: chat
    model: m
    system: "{{X.result}}"
    messages: [{ role: user, content: ok }, { role: assistant, content: "{{Y.result}}" }]
  - name: Vision
    type: vision
    model: m
    prompt: p
    images: ["{{Z.result}}"]
  - name: Ext
    type: external
    service: S
    function: f
    args: [1, ["{{input.a}}"]]
    kwargs: { deep: { list: [{ v: "{{W.result}}" }] } }
"#,
    );
    find(
        &errs,
        ErrorKind::UnknownTaskReference,
        "tasks[0] (Chat).system",
    );
    find(
        &errs,
        ErrorKind::UnknownTaskReference,
        "tasks[0] (Chat).messages[1].content",
    );
    find(
        &errs,
        ErrorKind::UnknownTaskReference,
        "tasks[1] (Vision).images[0]",
    );
    find(
        &errs,
        ErrorKind::UnknownInputKey,
        "tasks[2] (Ext).args[1][0]",
    );
    find(
        &errs,
        ErrorKind::UnknownTaskReference,
        "tasks[2] (Ext).kwargs.deep.list[0].v",
    );
    assert_eq!(errs.len(), 5, "{}", show(&errs));
}

#[test]
fn references_imply_dependencies_in_file_order() {
    let wf = valid(
        "name: t\ndefaults: { model: m }\ntasks:\n  - { name: A, type: text, prompt: p }\n  - { name: B, type: text, prompt: p }\n  - { name: C, type: text, prompt: '{{B.result}} {{A.result.x}} {{B.result}}' }\n",
    );
    assert_eq!(wf.tasks[2].dependencies, vec!["A", "B"]);
}

#[test]
fn references_to_later_tasks_are_fine_when_acyclic() {
    let wf = valid(
        "name: t\ndefaults: { model: m }\ntasks:\n  - { name: Late, type: text, prompt: '{{Early.result}}' }\n  - { name: Early, type: text, prompt: p }\n",
    );
    assert_eq!(wf.tasks[0].dependencies, vec!["Early"]);
}

#[test]
fn self_reference_is_a_reference_cycle() {
    let e = only(
        &one_task("    type: text\n    model: m\n    prompt: '{{A.result}}'\n"),
        ErrorKind::ReferenceCycle,
        "tasks[0] (A).prompt",
    );
    assert!(e.message.contains("own result"), "{e}");
}

#[test]
fn reference_against_explicit_dependency_is_a_reference_cycle() {
    let e = only(
        "name: t\ndefaults: { model: m }\ntasks:\n  - { name: A, type: text, prompt: '{{C.result}}' }\n  - { name: B, type: text, prompt: p, dependencies: [A] }\n  - { name: C, type: text, prompt: p, dependencies: [B] }\n",
        ErrorKind::ReferenceCycle,
        "tasks[0] (A).prompt",
    );
    assert!(e.message.contains("A → C → B → A"), "{e}");
}

#[test]
fn input_references_check_nested_keys() {
    let text = "name: t\ninput: { user: { name: Ada, langs: [en, de] } }\ntasks:\n  - { name: A, type: text, model: m, prompt: '{{input.user.name}} {{input.user.langs.1}} {{input}}' }\n";
    valid(text);
    let e = only(
        &text.replace("user.name", "user.age"),
        ErrorKind::UnknownInputKey,
        "tasks[0] (A).prompt",
    );
    assert!(e.message.contains("`user.age`"), "{e}");
}

#[test]
fn input_keys_without_input_say_so() {
    let e = only(
        &one_task("    type: text\n    model: m\n    prompt: '{{input.q}}'\n"),
        ErrorKind::UnknownInputKey,
        "tasks[0] (A).prompt",
    );
    assert!(e.message.contains("declares no input"), "{e}");
}

#[test]
fn input_overrides_replace_declared_keys_only() {
    let value = parse_workflow(
        "name: t\ninput: { text: default, n: 1 }\ntasks:\n  - { name: A, type: text, model: m, prompt: '{{input.text}}' }\n",
        Format::Yaml,
    )
    .unwrap();
    let mut over = Map::new();
    over.insert("text".into(), json!("override"));
    let wf = validate(&value, &over, &Limits::default()).unwrap();
    assert_eq!(wf.input["text"], json!("override"));
    assert_eq!(wf.input["n"], json!(1));

    over.insert("extra".into(), json!(true));
    let errs = validate(&value, &over, &Limits::default()).unwrap_err();
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    let e = find(&errs, ErrorKind::UnknownInputOverride, "input.extra");
    assert!(
        e.message.contains("declared: n, text") || e.message.contains("declared: text, n"),
        "{e}"
    );
}

// ---- limits -------------------------------------------------------------------------------

fn with_limits(text: &str, limits: &Limits) -> Vec<gleitzeit_core::ValidationError> {
    load_str(text, Format::Yaml, None, &Map::new(), limits).unwrap_err()
}

#[test]
fn too_many_tasks() {
    let limits = Limits {
        max_tasks: 2,
        ..Limits::default()
    };
    let text = "name: t\ndefaults: { model: m }\ntasks:\n  - { name: A, type: text, prompt: p }\n  - { name: B, type: text, prompt: p }\n  - { name: C, type: text, prompt: p }\n";
    let errs = with_limits(text, &limits);
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    let e = find(&errs, ErrorKind::TooManyTasks, "tasks");
    assert!(
        e.message.contains("3 tasks") && e.message.contains("at most 2"),
        "{e}"
    );
    assert!(load(text).is_ok());
}

#[test]
fn fan_in_and_fan_out_limits_count_implied_dependencies() {
    let limits = Limits {
        max_dependencies: 2,
        max_dependents: 2,
        ..Limits::default()
    };
    let text = "name: t\ndefaults: { model: m }\ntasks:\n  - { name: R, type: text, prompt: p }\n  - { name: A, type: text, prompt: '{{R.result}}' }\n  - { name: B, type: text, prompt: p, dependencies: [R] }\n  - { name: C, type: text, prompt: '{{R.result}}' }\n  - { name: J, type: text, prompt: '{{A.result}}{{B.result}}', dependencies: [C] }\n";
    let errs = with_limits(text, &limits);
    let e = find(&errs, ErrorKind::TooManyDependents, "tasks[0] (R)");
    assert!(e.message.contains("3 tasks depend"), "{e}");
    let e = find(
        &errs,
        ErrorKind::TooManyDependencies,
        "tasks[4] (J).dependencies",
    );
    assert!(e.message.contains("depends on 3 tasks"), "{e}");
    assert_eq!(errs.len(), 2, "{}", show(&errs));
    assert!(load(text).is_ok());
}

#[test]
fn task_spec_size_limit() {
    let limits = Limits {
        max_task_bytes: 300,
        ..Limits::default()
    };
    let big = "x".repeat(400);
    let text = format!("name: t\ntasks:\n  - {{ name: Small, type: text, model: m, prompt: p }}\n  - {{ name: Big, type: text, model: m, prompt: {big} }}\n");
    let errs = with_limits(&text, &limits);
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    find(&errs, ErrorKind::TaskTooLarge, "tasks[1] (Big)");
}

#[test]
fn workflow_text_size_limit() {
    let limits = Limits {
        max_workflow_bytes: 64,
        ..Limits::default()
    };
    let text = format!("name: t\ndescription: {}\ntasks: []\n", "d".repeat(64));
    let errs = with_limits(&text, &limits);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].kind, ErrorKind::WorkflowTooLarge);
    assert_eq!(errs[0].path, "workflow");
}

// ---- durations, timeouts, retries ---------------------------------------------------------

#[test]
fn timeouts_must_be_positive_and_bounded() {
    for (value, needle) in [
        ("0", "positive"),
        ("0s", "positive"),
        ("-5", "positive"),
        ("'-1s'", "positive"),
        ("25h", "exceeds the limit of 1day"),
        ("86401", "exceeds"),
    ] {
        let e = only(
            &one_task(&format!(
                "    type: text\n    model: m\n    prompt: p\n    timeout: {value}\n"
            )),
            ErrorKind::InvalidTimeout,
            "tasks[0] (A).timeout",
        );
        assert!(e.message.contains(needle), "{value}: {e}");
    }
    valid(&one_task(
        "    type: text\n    model: m\n    prompt: p\n    timeout: 24h\n",
    ));
    only(
        "name: t\ndefaults: { timeout: 0 }\ntasks:\n  - { name: A, type: text, model: m, prompt: p }\n",
        ErrorKind::InvalidTimeout,
        "defaults.timeout",
    );
}

#[test]
fn retention_is_optional_bounded_and_round_trips() {
    let task = "tasks:\n  - { name: A, type: text, model: m, prompt: p }\n";
    assert_eq!(valid(&format!("name: t\n{task}")).retention, None);
    let wf = valid(&format!("name: t\nretention: 2h\n{task}"));
    assert_eq!(wf.retention, Some(Duration::from_secs(7200)));
    // Serialised back to the file format, it validates to the same workflow.
    let again = load(&wf.to_json()).unwrap();
    assert_eq!(again, wf);
    assert_eq!(
        valid(&format!("name: t\nretention: 90\n{task}")).retention,
        Some(Duration::from_secs(90))
    );
    for (value, needle) in [
        ("0", "at least 1s"),
        ("500ms", "at least 1s"),
        ("'-1s'", "at least 1s"),
        ("366d", "exceeds the limit of 365 days"),
    ] {
        let e = only(
            &format!("name: t\nretention: {value}\n{task}"),
            ErrorKind::InvalidRetention,
            "retention",
        );
        assert!(e.message.contains(needle), "{value}: {e}");
    }
    only(
        &format!("name: t\nretention: soon\n{task}"),
        ErrorKind::InvalidDuration,
        "retention",
    );
}

#[test]
fn malformed_durations() {
    let errs = invalid(&one_task(
        "    type: text\n    model: m\n    prompt: p\n    timeout: 5 parsecs\n    retry: { base_delay: soon, max_delay: -3 }\n",
    ));
    find(&errs, ErrorKind::InvalidDuration, "tasks[0] (A).timeout");
    find(
        &errs,
        ErrorKind::InvalidDuration,
        "tasks[0] (A).retry.base_delay",
    );
    let e = find(
        &errs,
        ErrorKind::InvalidDuration,
        "tasks[0] (A).retry.max_delay",
    );
    assert!(e.message.contains("negative"), "{e}");
    assert_eq!(errs.len(), 3, "{}", show(&errs));
}

#[test]
fn max_attempts_bounds() {
    for (value, ok) in [
        ("0", false),
        ("-1", false),
        ("21", false),
        ("1", true),
        ("20", true),
    ] {
        let text = one_task(&format!(
            "    type: text\n    model: m\n    prompt: p\n    retry: {{ max_attempts: {value} }}\n"
        ));
        if ok {
            let wf = valid(&text);
            assert_eq!(wf.tasks[0].retry.max_attempts.to_string(), value);
        } else {
            let e = only(
                &text,
                ErrorKind::InvalidMaxAttempts,
                "tasks[0] (A).retry.max_attempts",
            );
            assert!(e.message.contains("between 1 and 20"), "{e}");
        }
    }
    let limits = Limits {
        max_attempts: 5,
        ..Limits::default()
    };
    let errs = with_limits(
        &one_task("    type: text\n    model: m\n    prompt: p\n    retry: { max_attempts: 6 }\n"),
        &limits,
    );
    find(
        &errs,
        ErrorKind::InvalidMaxAttempts,
        "tasks[0] (A).retry.max_attempts",
    );
}

#[test]
fn base_delay_must_not_exceed_max_delay() {
    only(
        &one_task("    type: text\n    model: m\n    prompt: p\n    retry: { base_delay: 10s, max_delay: 1s }\n"),
        ErrorKind::DelayOrder,
        "tasks[0] (A).retry",
    );
    // Against the defaults' max_delay, reported at the task that set base_delay.
    only(
        "name: t\ndefaults: { retry: { max_delay: 5s } }\ntasks:\n  - { name: A, type: text, model: m, prompt: p, retry: { base_delay: 6s } }\n  - { name: B, type: text, model: m, prompt: p }\n",
        ErrorKind::DelayOrder,
        "tasks[0] (A).retry",
    );
    // A bad defaults pair is reported once, at the defaults.
    only(
        "name: t\ndefaults: { retry: { base_delay: 2m } }\ntasks:\n  - { name: A, type: text, model: m, prompt: p }\n  - { name: B, type: text, model: m, prompt: p, retry: { max_attempts: 2 } }\n",
        ErrorKind::DelayOrder,
        "defaults.retry",
    );
}

// ---- options ------------------------------------------------------------------------------

#[test]
fn option_ranges() {
    let errs = invalid(
        r#"
name: t
defaults: { model: m, options: { top_p: 1.01 } }
tasks:
  - { name: A, type: text, prompt: p, options: { temperature: 2.5 } }
  - { name: B, type: text, prompt: p, options: { temperature: -0.1 } }
  - { name: C, type: text, prompt: p, options: { top_p: -1 } }
  - { name: D, type: text, prompt: p, options: { top_k: 0 } }
  - { name: E, type: text, prompt: p, options: { max_tokens: -5 } }
  - { name: F, type: text, prompt: p, options: { max_tokens: 4294967296 } }
  - { name: G, type: text, prompt: p, options: { seed: 18446744073709551615 } }
  - { name: H, type: text, prompt: p, options: { stop: ["", ok] } }
"#,
    );
    let r = ErrorKind::OptionOutOfRange;
    find(&errs, r, "defaults.options.top_p");
    let e = find(&errs, r, "tasks[0] (A).options.temperature");
    assert!(e.message.contains("between 0 and 2"), "{e}");
    find(&errs, r, "tasks[1] (B).options.temperature");
    find(&errs, r, "tasks[2] (C).options.top_p");
    find(&errs, r, "tasks[3] (D).options.top_k");
    find(&errs, r, "tasks[4] (E).options.max_tokens");
    find(&errs, r, "tasks[5] (F).options.max_tokens");
    find(&errs, r, "tasks[6] (G).options.seed");
    find(&errs, r, "tasks[7] (H).options.stop[0]");
    assert_eq!(errs.len(), 9, "{}", show(&errs));
    valid("name: t\ntasks:\n  - { name: A, type: text, model: m, prompt: p, options: { temperature: 0, top_p: 1, top_k: 1, seed: -3, max_tokens: 1 } }\n");
    valid("name: t\ntasks:\n  - { name: A, type: text, model: m, prompt: p, options: { temperature: 2, top_p: 0 } }\n");
}

// ---- images -------------------------------------------------------------------------------

#[test]
fn images_must_be_base64_and_are_normalised() {
    let wf = valid(&one_task(
        "    type: vision\n    model: llava\n    prompt: p\n    images: ['aGVsbG8', 'data:image/png;base64,aGVs\n bG8=', '{{input}}']\n",
    ));
    match &wf.tasks[0].action {
        Action::Vision { images, .. } => {
            assert_eq!(images, &vec!["aGVsbG8=", "aGVsbG8=", "{{input}}"]);
        }
        other => panic!("{other:?}"),
    }
    let errs = invalid(&one_task(
        "    type: vision\n    model: llava\n    prompt: p\n    images: ['not base64!', photo.png]\n",
    ));
    find(&errs, ErrorKind::InvalidBase64, "tasks[0] (A).images[0]");
    let e = find(&errs, ErrorKind::InvalidBase64, "tasks[0] (A).images[1]");
    assert!(e.message.contains("file path"), "{e}");
    assert_eq!(errs.len(), 2);
}

// ---- everything at once -------------------------------------------------------------------

#[test]
fn every_problem_is_reported_at_once() {
    let errs = invalid(include_str!("../../../examples/invalid/bad_fields.yaml"));
    find(&errs, ErrorKind::UnknownField, "colour");
    find(
        &errs,
        ErrorKind::FieldNotForType,
        "tasks[0] (Write).messages",
    );
    find(
        &errs,
        ErrorKind::OptionOutOfRange,
        "tasks[0] (Write).options.temperature",
    );
    find(&errs, ErrorKind::MissingField, "tasks[1] (Talk).model");
    find(&errs, ErrorKind::FieldNotForType, "tasks[2] (Run).prompt");
    find(&errs, ErrorKind::DuplicateName, "tasks[3] (Write).name");
    find(
        &errs,
        ErrorKind::InvalidMaxAttempts,
        "tasks[3] (Write).retry.max_attempts",
    );
    assert_eq!(errs.len(), 7, "{}", show(&errs));
}

#[test]
fn empty_tasks_json_example() {
    let text = include_str!("../../../examples/invalid/empty_tasks.json");
    let errs = load_str(text, Format::Json, None, &Map::new(), &Limits::default()).unwrap_err();
    find(&errs, ErrorKind::EmptyTasks, "tasks");
    find(&errs, ErrorKind::InvalidValue, "failure_policy");
    assert_eq!(errs.len(), 2, "{}", show(&errs));
}

#[test]
fn errors_serialise_for_machine_output() {
    let errs = invalid("name: t\ntasks: []\n");
    let v: Value = serde_json::to_value(&errs).unwrap();
    assert_eq!(
        v,
        json!([{"path": "tasks", "kind": "empty_tasks", "message": "the task list is empty"}])
    );
}
