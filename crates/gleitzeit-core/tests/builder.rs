//! The builder produces the same workflow as the equivalent file; workflows round-trip
//! through their JSON and YAML serialisations.

mod common;

use std::time::Duration;

use common::{find, show, valid};
use gleitzeit_core::{
    digest, load_str, plan, validate, Backoff, ChatMessage, ErrorKind, FailurePolicy, Format,
    Limits, LlmOptions, Priority, RetryPolicy, Role, Workflow, WorkflowBuilder,
};
use serde_json::{json, Map};

const FILE: &str = r#"
name: Text analysis
description: Builder and file agree
input:
  text: "Gleitzeit runs LLM workflows"
failure_policy: continue
defaults:
  model: llama3.2
  timeout: 2m
  priority: low
tasks:
  - name: Summarize
    type: text
    prompt: "Summarize: {{input.text}}"
    system: Be brief.
    options: { temperature: 0.5, max_tokens: 64 }
  - name: Talk
    type: chat
    model: smollm2
    messages:
      - { role: system, content: Friendly. }
      - { role: user, content: "Hi {{Summarize.result}}" }
    priority: high
  - name: Look
    type: vision
    model: llava
    prompt: What is this?
    images: ["aGVsbG8="]
    timeout: 45s
  - name: Vector
    type: embed
    model: nomic-embed-text
    prompt: "{{Summarize.result}}"
  - name: Process
    type: external
    service: Python Tasks
    function: process_data
    args: ["{{Summarize.result}}", 3]
    kwargs: { mode: fast }
    dependencies: [Look]
    retry: { max_attempts: 5, backoff: fixed, base_delay: 2s, max_delay: 2s, jitter: false }
    on_failure: fail_fast
"#;

fn built() -> Workflow {
    let mut wf = WorkflowBuilder::new("Text analysis")
        .description("Builder and file agree")
        .input("text", json!("Gleitzeit runs LLM workflows"))
        .failure_policy(FailurePolicy::Continue)
        .default_model("llama3.2")
        .default_timeout(Duration::from_secs(120))
        .default_priority(Priority::Low);
    wf.add_text_task("Summarize", "", "Summarize: {{input.text}}")
        .system("Summarize", "Be brief.")
        .options(
            "Summarize",
            LlmOptions {
                temperature: Some(0.5),
                max_tokens: Some(64),
                ..LlmOptions::default()
            },
        )
        .add_chat_task(
            "Talk",
            "smollm2",
            vec![
                ChatMessage {
                    role: Role::System,
                    content: "Friendly.".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "Hi {{Summarize.result}}".into(),
                },
            ],
        )
        .priority("Talk", Priority::High)
        .add_vision_task("Look", "llava", "What is this?", vec!["aGVsbG8=".into()])
        .timeout("Look", Duration::from_secs(45))
        .add_embed_task("Vector", "nomic-embed-text", "{{Summarize.result}}")
        .add_external_task(
            "Process",
            "Python Tasks",
            "process_data",
            vec![json!("{{Summarize.result}}"), json!(3)],
        )
        .kwargs(
            "Process",
            json!({ "mode": "fast" }).as_object().cloned().unwrap(),
        )
        .depends_on("Process", &["Look"])
        .retry(
            "Process",
            RetryPolicy {
                max_attempts: 5,
                backoff: Backoff::Fixed,
                base_delay: Duration::from_secs(2),
                max_delay: Duration::from_secs(2),
                jitter: false,
                ..RetryPolicy::default()
            },
        )
        .on_failure("Process", FailurePolicy::FailFast);
    wf.build(&Limits::default())
        .unwrap_or_else(|e| panic!("{}", show(&e)))
}

#[test]
fn builder_equals_file() {
    let from_file = valid(FILE);
    let from_builder = built();
    assert_eq!(from_builder, from_file);
    assert_eq!(digest(&from_builder), digest(&from_file));
    assert_eq!(plan(&from_builder).unwrap(), plan(&from_file).unwrap());
}

#[test]
fn builder_brief_example() {
    let mut wf = WorkflowBuilder::new("Text analysis").input("text", json!("..."));
    wf.add_text_task("Summarize", "llama3.2", "Summarize: {{input.text}}")
        .add_external_task(
            "Process",
            "Python Tasks",
            "process_data",
            vec![json!("{{Summarize.result}}")],
        )
        .depends_on("Process", &["Summarize"]);
    let workflow = wf.build(&Limits::default()).unwrap();
    assert_eq!(workflow.tasks.len(), 2);
    assert_eq!(workflow.tasks[1].dependencies, vec!["Summarize"]);
    assert_eq!(workflow.tasks[0].timeout, Duration::from_secs(300));
}

#[test]
fn builder_runs_the_same_validation() {
    let mut wf = WorkflowBuilder::new("bad");
    wf.add_text_task("A", "", "{{B.result}}")
        .add_text_task("A", "m", "p")
        .timeout("Nope", Duration::from_secs(1))
        .retry(
            "A",
            RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::default()
            },
        );
    let errs = wf.build(&Limits::default()).unwrap_err();
    let e = find(&errs, ErrorKind::UnknownTask, "timeout(\"Nope\")");
    assert!(e.message.contains("no task named \"Nope\""), "{e}");
    find(&errs, ErrorKind::MissingField, "tasks[0] (A).model");
    find(
        &errs,
        ErrorKind::UnknownTaskReference,
        "tasks[0] (A).prompt",
    );
    find(&errs, ErrorKind::DuplicateName, "tasks[1] (A).name");
    // Adjustments apply to the most recently added task of that name.
    find(
        &errs,
        ErrorKind::InvalidMaxAttempts,
        "tasks[1] (A).retry.max_attempts",
    );
    assert_eq!(errs.len(), 5, "{}", show(&errs));
}

#[test]
fn builder_document_is_the_file_format() {
    let mut wf = WorkflowBuilder::new("doc").input("x", json!(1));
    wf.add_embed_task("E", "m", "{{input.x}}");
    assert_eq!(
        wf.to_value(),
        json!({
            "name": "doc",
            "input": { "x": 1 },
            "tasks": [{ "name": "E", "type": "embed", "model": "m", "prompt": "{{input.x}}" }]
        })
    );
}

#[test]
fn workflows_round_trip_through_json_and_yaml() {
    for wf in [valid(FILE), built()] {
        let json = wf.to_json();
        let again = load_str(&json, Format::Json, None, &Map::new(), &Limits::default()).unwrap();
        assert_eq!(again, wf);
        let pretty = wf.to_json_pretty();
        let again = load_str(&pretty, Format::Auto, None, &Map::new(), &Limits::default()).unwrap();
        assert_eq!(again, wf);
        let yaml = wf.to_yaml().unwrap();
        let again = load_str(&yaml, Format::Yaml, None, &Map::new(), &Limits::default()).unwrap();
        assert_eq!(again, wf);
        assert_eq!(digest(&again), digest(&wf));
        // Serde decoding (what workers do with specs) agrees with validation.
        let decoded: Workflow = serde_json::from_str(&json).unwrap();
        assert_eq!(decoded, wf);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            validate(&value, &Map::new(), &Limits::default()).unwrap(),
            wf
        );
    }
}
