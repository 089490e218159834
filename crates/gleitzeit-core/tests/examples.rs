//! The workflow files in `examples/` load and validate (and the invalid ones do not).

mod common;

use std::path::PathBuf;

use common::show;
use gleitzeit_core::{load_file, plan, Action, ErrorKind, FailurePolicy, Limits};
use serde_json::json;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

fn load(name: &str) -> gleitzeit_core::Workflow {
    load_file(&example(name), &Limits::default())
        .unwrap_or_else(|e| panic!("{name}:\n{}", show(&e)))
}

#[test]
fn analysis_is_an_llm_chain_on_smollm2() {
    let wf = load("analysis.yaml");
    let names: Vec<&str> = wf.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Extract key points", "Summarize", "Title"]);
    assert!(wf.tasks.iter().all(|t| t.action.model() == Some("smollm2")));
    assert!(wf.input.contains_key("text"));
    let p = plan(&wf).unwrap();
    let deps: Vec<Vec<u32>> = p.tasks.iter().map(|t| t.dependencies.clone()).collect();
    assert_eq!(deps, vec![vec![], vec![0], vec![1]]);
    assert_eq!(p.capabilities(), vec!["llm:smollm2"]);
}

#[test]
fn pipeline_feeds_an_external_result_into_an_llm() {
    let wf = load("pipeline.yaml");
    match &wf.tasks[0].action {
        Action::External {
            service, function, ..
        } => {
            assert_eq!(service, "Python Tasks");
            assert_eq!(function, "process_data");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(wf.tasks[1].dependencies, vec!["Process"]);
    assert_eq!(wf.tasks[1].action.model(), Some("smollm2"));
    let p = plan(&wf).unwrap();
    assert_eq!(p.capabilities(), vec!["ext:Python Tasks", "llm:smollm2"]);
    assert_eq!(p.tasks[1].refs, vec![0]);
    assert_eq!(wf.input["numbers"], json!([3, 1, 4, 1, 5, 9, 2, 6]));
}

#[test]
fn fanout_has_one_root_four_branches_and_a_join() {
    let wf = load("fanout.yaml");
    assert_eq!(wf.failure_policy, FailurePolicy::Continue);
    let p = plan(&wf).unwrap();
    assert_eq!(p.tasks.len(), 6);
    assert_eq!(p.roots().count(), 1);
    assert_eq!(p.tasks[0].children, vec![1, 2, 3, 4]);
    for t in &p.tasks[1..5] {
        assert_eq!(t.dependencies, vec![0]);
        assert_eq!(t.children, vec![5]);
    }
    assert_eq!(p.tasks[5].dependencies, vec![1, 2, 3, 4]);
    assert!(wf.tasks.iter().all(|t| t.action.model() == Some("smollm2")));
}

#[test]
fn invalid_examples_fail_with_their_documented_problems() {
    let expect: [(&str, &[ErrorKind]); 5] = [
        (
            "invalid/cycle.yaml",
            &[ErrorKind::Cycle, ErrorKind::UnknownDependency],
        ),
        (
            "invalid/bad_fields.yaml",
            &[
                ErrorKind::UnknownField,
                ErrorKind::FieldNotForType,
                ErrorKind::MissingField,
                ErrorKind::DuplicateName,
                ErrorKind::OptionOutOfRange,
                ErrorKind::InvalidMaxAttempts,
            ],
        ),
        (
            "invalid/bad_templates.yaml",
            &[
                ErrorKind::UnknownTaskReference,
                ErrorKind::UnknownInputKey,
                ErrorKind::MalformedTemplate,
                ErrorKind::ReferenceCycle,
            ],
        ),
        ("invalid/syntax.yaml", &[ErrorKind::Syntax]),
        (
            "invalid/empty_tasks.json",
            &[ErrorKind::EmptyTasks, ErrorKind::InvalidValue],
        ),
    ];
    for (file, kinds) in expect {
        let errs = load_file(&example(file), &Limits::default()).unwrap_err();
        for kind in kinds {
            assert!(
                errs.iter().any(|e| e.kind == *kind),
                "{file}: no {kind:?} in\n{}",
                show(&errs)
            );
        }
        assert!(
            errs.iter().all(|e| kinds.contains(&e.kind)),
            "{file}: unexpected\n{}",
            show(&errs)
        );
    }
}
