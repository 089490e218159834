//! Planning: indices, dependencies, children, refs, capabilities, specs and digests.

mod common;

use common::valid;
use gleitzeit_core::{
    canonical_json, capability, digest, load_str, plan, Action, FailurePolicy, Format, Limits,
    PlanError, Priority, Task, Workflow,
};
use serde_json::{json, Map};

const DIAMOND: &str = r#"
name: Diamond
input: { topic: queues }
tasks:
  - name: Root
    type: text
    model: smollm2
    prompt: "About {{input.topic}}"
    priority: high
  - name: Left
    type: text
    model: smollm2
    prompt: "Left of {{Root.result}}"
  - name: Right
    type: external
    service: Python Tasks
    function: right
    dependencies: [Root]
    retry: { max_attempts: 5 }
    on_failure: continue
  - name: Vector
    type: embed
    model: "llama3.2:3b"
    prompt: "{{Left.result}}"
    priority: low
  - name: Join
    type: chat
    model: smollm2
    messages: [{ role: user, content: "{{Left.result}} {{Right.result.value}}" }]
    dependencies: [Vector]
"#;

#[test]
fn plan_lays_out_indices_children_refs_and_capabilities() {
    let wf = valid(DIAMOND);
    let p = plan(&wf).unwrap();
    assert_eq!(p.tasks.len(), 5);
    for (i, t) in p.tasks.iter().enumerate() {
        assert_eq!(t.index as usize, i);
        assert_eq!(t.name, wf.tasks[i].name);
    }
    let deps: Vec<Vec<u32>> = p.tasks.iter().map(|t| t.dependencies.clone()).collect();
    assert_eq!(deps, vec![vec![], vec![0], vec![0], vec![1], vec![1, 2, 3]]);
    let children: Vec<Vec<u32>> = p.tasks.iter().map(|t| t.children.clone()).collect();
    assert_eq!(
        children,
        vec![vec![1, 2], vec![3, 4], vec![4], vec![4], vec![]]
    );
    // refs: only the results templates read, not every dependency.
    let refs: Vec<Vec<u32>> = p.tasks.iter().map(|t| t.refs.clone()).collect();
    assert_eq!(refs, vec![vec![], vec![0], vec![], vec![1], vec![1, 2]]);
    let caps: Vec<&str> = p.tasks.iter().map(|t| t.capability.as_str()).collect();
    assert_eq!(
        caps,
        [
            "llm:smollm2",
            "llm:smollm2",
            "ext:Python Tasks",
            "llm:llama3.2:3b",
            "llm:smollm2"
        ]
    );
    assert_eq!(
        p.capabilities(),
        vec!["ext:Python Tasks", "llm:llama3.2:3b", "llm:smollm2"]
    );
    assert_eq!(p.roots().map(|t| t.index).collect::<Vec<_>>(), vec![0]);
    assert_eq!(p.tasks[0].priority, Priority::High);
    assert_eq!(p.tasks[3].priority, Priority::Low);
    assert_eq!(p.tasks[1].priority, Priority::Normal);
    assert_eq!(p.tasks[2].max_attempts, 5);
    assert_eq!(p.tasks[0].max_attempts, 3);
    assert_eq!(p.tasks[2].on_failure, Some(FailurePolicy::Continue));
    assert_eq!(p.tasks[0].on_failure, None);
    assert_eq!(p.digest.len(), 64);
    assert!(p.digest.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn spec_json_decodes_to_the_task() {
    let wf = valid(DIAMOND);
    let p = plan(&wf).unwrap();
    for (t, planned) in wf.tasks.iter().zip(&p.tasks) {
        let decoded: Task = serde_json::from_str(&planned.spec_json).unwrap();
        assert_eq!(&decoded, t);
    }
    // The spec is the file format with defaults filled in.
    let spec: serde_json::Value = serde_json::from_str(&p.tasks[2].spec_json).unwrap();
    assert_eq!(
        spec,
        json!({
            "name": "Right",
            "type": "external",
            "service": "Python Tasks",
            "function": "right",
            "dependencies": ["Root"],
            "retry": { "max_attempts": 5, "backoff": "exponential", "base_delay": "1s",
                       "max_delay": "1m", "jitter": true, "wait_limit": "1h" },
            "timeout": "5m",
            "priority": "normal",
            "on_failure": "continue"
        })
    );
}

#[test]
fn capability_names() {
    let text = Action::Text {
        model: "llama3.2:3b".into(),
        prompt: "p".into(),
        system: None,
        options: Default::default(),
    };
    assert_eq!(capability(&text), "llm:llama3.2:3b");
    let ext = Action::External {
        service: "Python Tasks".into(),
        function: "f".into(),
        args: vec![],
        kwargs: Map::new(),
    };
    assert_eq!(capability(&ext), "ext:Python Tasks");
}

#[test]
fn digest_is_stable_for_the_same_workflow() {
    let a = valid(DIAMOND);
    let b = valid(DIAMOND);
    assert_eq!(digest(&a), digest(&b));
    assert_eq!(plan(&a).unwrap().digest, digest(&a));
    // The same workflow written as JSON with keys in another order.
    let json = a.to_json();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let reordered = {
        let obj = v.as_object_mut().unwrap();
        let tasks = obj.remove("tasks").unwrap();
        let mut m = Map::new();
        m.insert("tasks".into(), tasks);
        for (k, val) in obj.iter() {
            m.insert(k.clone(), val.clone());
        }
        serde_json::Value::Object(m).to_string()
    };
    let c = load_str(
        &reordered,
        Format::Json,
        None,
        &Map::new(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(digest(&c), digest(&a));
}

#[test]
fn digest_changes_with_any_change() {
    let base = valid(DIAMOND);
    let d0 = digest(&base);
    let variants: Vec<(&str, String)> = vec![
        ("name", DIAMOND.replace("name: Diamond", "name: Diamond 2")),
        ("input", DIAMOND.replace("topic: queues", "topic: streams")),
        ("prompt", DIAMOND.replace("Left of", "Left from")),
        (
            "model",
            DIAMOND.replace("\"llama3.2:3b\"", "\"llama3.2:1b\""),
        ),
        (
            "priority",
            DIAMOND.replace("priority: low", "priority: normal"),
        ),
        (
            "retry",
            DIAMOND.replace("max_attempts: 5", "max_attempts: 4"),
        ),
        (
            "policy",
            DIAMOND.replace("on_failure: continue", "on_failure: fail_fast"),
        ),
        (
            "dependency",
            DIAMOND.replace("dependencies: [Vector]", "dependencies: [Vector, Root]"),
        ),
        (
            "timeout",
            DIAMOND.replace("priority: high", "priority: high\n    timeout: 301s"),
        ),
        (
            "workflow policy",
            format!("failure_policy: continue\n{DIAMOND}"),
        ),
        ("description", format!("description: x\n{DIAMOND}")),
    ];
    let mut seen = vec![d0.clone()];
    for (what, text) in variants {
        assert_ne!(
            text, DIAMOND,
            "{what}: the replacement must change the text"
        );
        let d = digest(&valid(&text));
        assert!(!seen.contains(&d), "{what}: digest did not change");
        seen.push(d);
    }
    // Input overrides are part of the digest too.
    let mut over = Map::new();
    over.insert("topic".into(), json!("other"));
    let o = load_str(DIAMOND, Format::Yaml, None, &over, &Limits::default()).unwrap();
    assert_ne!(digest(&o), d0);
    // So is the order of tasks.
    let mut swapped = base.clone();
    swapped.tasks.swap(1, 2);
    assert_ne!(digest(&swapped), d0);
}

#[test]
fn canonical_json_sorts_keys_at_every_level() {
    let v = json!({ "b": [ { "z": 1, "a": 2 } ], "a": "x\"y", "c": null });
    assert_eq!(
        canonical_json(&v),
        r#"{"a":"x\"y","b":[{"a":2,"z":1}],"c":null}"#
    );
}

fn hand_built() -> Workflow {
    valid("name: h\ndefaults: { model: m }\ntasks:\n  - { name: A, type: text, prompt: p }\n  - { name: B, type: text, prompt: '{{A.result}}' }\n")
}

#[test]
fn plan_rejects_inconsistent_hand_built_workflows() {
    let mut wf = hand_built();
    wf.tasks.clear();
    assert_eq!(plan(&wf), Err(PlanError::NoTasks));

    let mut wf = hand_built();
    wf.tasks[1].name = "A".into();
    assert_eq!(plan(&wf), Err(PlanError::DuplicateTask("A".into())));

    let mut wf = hand_built();
    wf.tasks[1].dependencies = vec!["Ghost".into()];
    assert_eq!(
        plan(&wf),
        Err(PlanError::UnknownDependency {
            task: "B".into(),
            dependency: "Ghost".into()
        })
    );

    let mut wf = hand_built();
    wf.tasks[1].dependencies.clear();
    assert_eq!(
        plan(&wf),
        Err(PlanError::ReferenceNotDependency {
            task: "B".into(),
            reference: "A".into()
        })
    );

    let mut wf = hand_built();
    wf.tasks[0].dependencies = vec!["B".into()];
    assert_eq!(plan(&wf), Err(PlanError::Cycle("A".into())));

    let mut wf = hand_built();
    wf.tasks[0].dependencies = vec!["A".into()];
    assert_eq!(plan(&wf), Err(PlanError::Cycle("A".into())));

    assert!(plan(&hand_built()).is_ok());
}
