//! Case 6: every kind of bad input gets its error from `gleitzeit-submit validate` and from
//! `submit`, exit code 2, and Redis stays empty (DBSIZE 0) — submission is all or nothing.

use std::path::{Path, PathBuf};

use gleitzeit_e2e::cli::yaml_file;
use gleitzeit_e2e::Deployment;

/// A bad input and the fragments its error report must contain.
struct Case {
    label: &'static str,
    /// Arguments after the command (`validate`/`submit`); `{file}` is the workflow path.
    args: Vec<String>,
    stdin: Option<String>,
    expect: Vec<&'static str>,
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

fn file_case(label: &'static str, path: PathBuf, expect: Vec<&'static str>) -> Case {
    Case {
        label,
        args: vec![path.to_str().unwrap().to_owned()],
        stdin: None,
        expect,
    }
}

async fn check(dep: &Deployment, case: &Case) {
    for command in ["validate", "submit"] {
        let mut args: Vec<&str> = vec![command];
        args.extend(case.args.iter().map(String::as_str));
        let out = dep.cli.run_with_stdin(&args, case.stdin.as_deref()).await;
        assert_eq!(
            out.code, 2,
            "{}: {command} must exit 2:\n{out:?}",
            case.label
        );
        let text = out.all_output();
        for fragment in &case.expect {
            assert!(
                text.contains(fragment),
                "{}: {command} does not report {fragment:?}:\n{out:?}",
                case.label
            );
        }
        assert!(
            !looks_like_id(&out.stdout),
            "{}: {command} printed a workflow id:\n{out:?}",
            case.label
        );
        assert_eq!(
            dep.store.dbsize().await,
            0,
            "{}: {command} wrote to Redis: {:?}",
            case.label,
            dep.store.all_keys().await
        );
    }
}

fn looks_like_id(text: &str) -> bool {
    text.split_whitespace()
        .any(|w| uuid::Uuid::parse_str(w).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_with_exit_2_and_nothing_written() {
    let dep = Deployment::start().await;
    assert_eq!(dep.store.dbsize().await, 0);

    let inline = yaml_file(
        "name: Inline\ntasks:\n  - name: Bad.name\n    type: text\n    model: m\n    prompt: x\n  - name: Odd\n    type: telepathy\n    model: m\n  - name: Loop\n    type: text\n    model: \"m x\"\n    prompt: y\n    dependencies: [Loop]\n",
    );
    let empty = yaml_file("");
    let not_json_input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_json_input.path(), "not json").unwrap();
    let analysis = example("analysis.yaml").to_str().unwrap().to_owned();

    let cases = vec![
        file_case(
            "bad_fields.yaml",
            example("invalid/bad_fields.yaml"),
            vec![
                "colour: unknown field",
                "tasks[0] (Write).messages",
                "tasks[0] (Write).options.temperature",
                "tasks[1] (Talk).model",
                "tasks[2] (Run).prompt",
                "tasks[3] (Write).retry.max_attempts",
                "duplicate task name \"Write\"",
                "7 problems",
            ],
        ),
        file_case(
            "bad_templates.yaml",
            example("invalid/bad_templates.yaml"),
            vec![
                "`{{input.txt}}`",
                "no task is named \"Missing\"",
                "tasks[2] (Third).prompt",
                "First → Second → First",
                "4 problems",
            ],
        ),
        file_case(
            "cycle.yaml",
            example("invalid/cycle.yaml"),
            vec![
                "tasks[3] (D).dependencies[0]: unknown dependency \"Nope\"",
                "A → B → C → A",
            ],
        ),
        file_case(
            "empty_tasks.json",
            example("invalid/empty_tasks.json"),
            vec!["\"retry_forever\"", "tasks: the task list is empty"],
        ),
        file_case(
            "syntax.yaml",
            example("invalid/syntax.yaml"),
            vec!["line 8", "invalid YAML"],
        ),
        file_case(
            "names, types and self-dependency",
            inline.path().to_path_buf(),
            vec![
                "tasks[0] (Bad.name).name",
                "tasks[1] (Odd).type: invalid value \"telepathy\"",
                "tasks[2] (Loop).model",
                "depends on itself",
            ],
        ),
        file_case(
            "empty document",
            empty.path().to_path_buf(),
            vec!["expected a mapping with `name` and `tasks`"],
        ),
        file_case(
            "missing file",
            PathBuf::from("/nonexistent/workflow.yaml"),
            vec!["cannot read the workflow file"],
        ),
        Case {
            label: "JSON on stdin with a wrong type",
            args: vec!["-".into(), "--format".into(), "json".into()],
            stdin: Some(r#"{"name": "x", "tasks": "nope"}"#.into()),
            expect: vec!["tasks: expected a list of tasks"],
        },
        Case {
            label: "undeclared input override",
            args: vec![analysis.clone(), "--input".into(), "nope=1".into()],
            stdin: None,
            expect: vec!["input.nope", "not declared"],
        },
        Case {
            label: "malformed input override",
            args: vec![analysis.clone(), "--input".into(), "nope".into()],
            stdin: None,
            expect: vec!["key=value"],
        },
        Case {
            label: "input file that is not JSON",
            args: vec![
                analysis.clone(),
                "--input-file".into(),
                not_json_input.path().to_str().unwrap().into(),
            ],
            stdin: None,
            expect: vec!["not valid JSON"],
        },
    ];
    for case in &cases {
        check(&dep, case).await;
    }

    // The same CLI against the same Redis does write a valid workflow: the refusals above
    // were about the input, not about an unusable connection.
    let out = dep.cli.run(&["submit", &analysis]).await;
    out.assert_code(0);
    assert!(dep.store.dbsize().await > 0);
}
