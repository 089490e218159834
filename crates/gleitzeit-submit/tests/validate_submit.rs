//! `validate` and `submit` through the real binary: examples validate without Redis, invalid
//! workflows report every problem and write nothing, submissions land in Redis with the right
//! task statuses, idempotency and conflicts, unreachable Redis.

mod common;

use common::*;
use gleitzeit_core::{load_file, Limits};
use serde_json::Value;

const EXAMPLES: [&str; 3] = ["analysis.yaml", "pipeline.yaml", "fanout.yaml"];

#[test]
fn every_example_validates_without_redis() {
    // Nothing listens at this URL: validate must not need it.
    let url = dead_url();
    for name in EXAMPLES {
        let out = cli(&url, &["validate", &example(name)]);
        assert_eq!(out.code, 0, "{name}: {out:?}");
        assert!(out.stdout.starts_with("valid: "), "{name}: {}", out.stdout);
        assert!(out.stderr.is_empty(), "{name}: {}", out.stderr);
    }
    let out = cli(&url, &["validate", &example("fanout.yaml")]);
    assert_eq!(
        out.stdout,
        "valid: Fan-out review — 6 tasks; roots: Outline; capabilities: llm:smollm2\n"
    );
}

#[test]
fn validate_json_summarises_tasks_roots_and_capabilities() {
    let out = cli(
        &dead_url(),
        &["--json", "validate", &example("pipeline.yaml")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.json(),
        serde_json::json!({
            "valid": true,
            "name": "Data pipeline",
            "tasks": 2,
            "roots": ["Process"],
            "capabilities": ["ext:Python Tasks", "llm:smollm2"],
            "warnings": []
        })
    );
}

#[test]
fn invalid_files_print_every_problem_and_exit_2() {
    for file in invalid_examples() {
        let expected = load_file(std::path::Path::new(&file), &Limits::default())
            .expect_err("the invalid examples are invalid");
        let out = cli(&dead_url(), &["validate", &file]);
        assert_eq!(out.code, 2, "{file}: {out:?}");
        assert!(out.stdout.is_empty(), "{file}: {}", out.stdout);
        let lines: Vec<&str> = out.stderr.lines().collect();
        // One line per problem, then the summary.
        assert_eq!(lines.len(), expected.len() + 1, "{file}:\n{}", out.stderr);
        for problem in &expected {
            assert!(
                lines.contains(&problem.to_string().as_str()),
                "{file}: missing {problem}\n{}",
                out.stderr
            );
        }
        assert!(
            lines.last().unwrap().contains("is not a valid workflow"),
            "{}",
            out.stderr
        );

        let json = cli(&dead_url(), &["--json", "validate", &file]);
        assert_eq!(json.code, 2);
        let doc = json.json();
        assert_eq!(doc["error"]["kind"], "invalid");
        assert_eq!(doc["error"]["exit_code"], 2);
        let errors = doc["error"]["errors"].as_array().unwrap();
        assert_eq!(errors.len(), expected.len(), "{file}");
        for (got, want) in errors.iter().zip(&expected) {
            assert_eq!(got["path"], want.path.as_str());
            assert_eq!(got["message"], want.message.as_str());
            assert_eq!(got["kind"], serde_json::to_value(want.kind).unwrap());
        }
    }
}

#[test]
fn bad_fields_example_reports_several_problems_at_once() {
    let out = cli(
        &dead_url(),
        &["validate", &example("invalid/bad_fields.yaml")],
    );
    assert_eq!(out.code, 2);
    // The file has many problems; they are all listed, not just the first.
    assert!(out.stderr.lines().count() >= 6, "{}", out.stderr);
    assert!(out.stderr.contains("colour"), "{}", out.stderr);
    assert!(out.stderr.contains("tasks[0] (Write)"), "{}", out.stderr);
}

#[test]
fn submitting_invalid_workflows_writes_nothing() {
    let redis = start_redis();
    let url = redis.url();
    for file in invalid_examples() {
        let out = cli(&url, &["submit", &file]);
        assert_eq!(out.code, 2, "{file}: {out:?}");
        assert!(out.stdout.is_empty());
        assert_eq!(dbsize(&url), 0, "{file} wrote to Redis");
    }
    // An input key the workflow does not declare is refused the same way.
    let out = cli(
        &url,
        &[
            "submit",
            &example("analysis.yaml"),
            "--input",
            "colour=blue",
        ],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("colour"), "{}", out.stderr);
    // A malformed --input too.
    let out = cli(
        &url,
        &["submit", &example("analysis.yaml"), "--input", "novalue"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("key=value"), "{}", out.stderr);
    assert_eq!(dbsize(&url), 0);
}

#[test]
fn submit_prints_an_id_and_writes_the_workflow() {
    let redis = start_redis();
    let url = redis.url();
    let out = cli(&url, &["submit", &example("analysis.yaml")]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();
    assert_eq!(out.stdout, format!("{id}\n"), "the id alone on a line");
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(uuid.get_version_num(), 7);

    let rt = runtime();
    rt.block_on(async {
        let q = queue(&url).await;
        let info = q.workflow(&id).await.unwrap().unwrap();
        assert_eq!(info.name, "Text analysis");
        assert_eq!(info.status, "running");
        assert_eq!(info.policy, "fail_fast");
        assert_eq!((info.total, info.open), (3, 3));
        let tasks = q.tasks(&id).await.unwrap();
        let statuses: Vec<(&str, &str)> = tasks
            .iter()
            .map(|t| (t.name.as_str(), t.status.as_str()))
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("Extract key points", "ready"),
                ("Summarize", "waiting"),
                ("Title", "waiting"),
            ]
        );
        assert!(tasks
            .iter()
            .all(|t| t.capability == "llm:smollm2" && t.max_attempts == 3));
        let listed = q.list(10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
    });
}

#[test]
fn submit_from_stdin_with_json_output_and_inputs() {
    let redis = start_redis();
    let url = redis.url();
    // The Python package's call: workflow JSON on stdin, one JSON document back.
    let workflow = serde_json::json!({
        "name": "From Python",
        "input": {"text": "default", "n": 1},
        "tasks": [
            {"name": "Echo", "type": "text", "model": "smollm2", "prompt": "{{input.text}} x{{input.n}}"},
            {"name": "Embed", "type": "embed", "model": "nomic-embed-text", "prompt": "{{Echo.result}}"}
        ]
    });
    let out = cli_stdin(
        &url,
        &[
            "submit",
            "-",
            "--json",
            "--input",
            "text=hello world",
            "--input",
            "n=3",
        ],
        Some(&workflow.to_string()),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["status"], "running");
    assert_eq!(doc["existing"], false);
    let id = doc["id"].as_str().unwrap().to_owned();

    let rt = runtime();
    rt.block_on(async {
        let q = queue(&url).await;
        let tasks = q.tasks(&id).await.unwrap();
        assert_eq!(tasks[0].status, "ready");
        assert_eq!(tasks[1].status, "waiting");
        assert_eq!(tasks[1].capability, "llm:nomic-embed-text");
        // The overrides reached the stored input, typed: a string and a number.
        let mut seen_input = None;
        drive(&q, &id, |ctx| {
            if ctx.name == "Echo" {
                seen_input = Some(serde_json::from_str::<Value>(&ctx.input_json).unwrap());
            }
            Act::Complete(llm_result("ok"))
        })
        .await;
        assert_eq!(
            seen_input.unwrap(),
            serde_json::json!({"text": "hello world", "n": 3})
        );
    });

    // YAML on stdin with an explicit format validates too.
    let yaml = "name: Y\ntasks:\n  - name: A\n    type: text\n    model: smollm2\n    prompt: hi\n";
    let out = cli_stdin(&url, &["validate", "-", "--format", "yaml"], Some(yaml));
    assert_eq!(out.code, 0, "{out:?}");
    // And a syntax error on stdin names its line.
    let out = cli_stdin(
        &url,
        &["validate", "-", "--format", "json"],
        Some("{\"name\": }"),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("line 1"), "{}", out.stderr);
}

#[test]
fn idempotent_resubmit_returns_the_same_id_and_conflicts_exit_6() {
    let redis = start_redis();
    let url = redis.url();
    let file = example("analysis.yaml");
    let first = cli(&url, &["submit", &file, "--idempotency-key", "order-42"]);
    assert_eq!(first.code, 0, "{first:?}");
    let id = first.stdout.trim().to_owned();
    let keys_after_first = dbsize(&url);

    let again = cli(&url, &["submit", &file, "--idempotency-key", "order-42"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.stdout.trim(), id);
    assert!(
        again.stderr.contains("already submitted"),
        "{}",
        again.stderr
    );

    let json = cli(
        &url,
        &["--json", "submit", &file, "--idempotency-key", "order-42"],
    );
    assert_eq!(json.code, 0);
    let doc = json.json();
    assert_eq!(
        (&doc["id"], &doc["status"], &doc["existing"]),
        (
            &serde_json::json!(id),
            &serde_json::json!("running"),
            &serde_json::json!(true)
        )
    );
    // No worker runs in this test, which the document says.
    assert_eq!(doc["notices"][0]["capability"], "");
    assert_eq!(dbsize(&url), keys_after_first, "resubmits write nothing");

    // Same key, different body (another input): refused, nothing written.
    let conflict = cli(
        &url,
        &[
            "submit",
            &file,
            "--idempotency-key",
            "order-42",
            "--input",
            "text=other",
        ],
    );
    assert_eq!(conflict.code, 6, "{conflict:?}");
    assert!(conflict.stdout.is_empty());
    assert!(conflict.stderr.contains(&id), "{}", conflict.stderr);
    assert!(conflict.stderr.contains("order-42"), "{}", conflict.stderr);
    let conflict_json = cli(
        &url,
        &[
            "--json",
            "submit",
            &file,
            "--idempotency-key",
            "order-42",
            "--input",
            "text=other",
        ],
    );
    assert_eq!(conflict_json.code, 6);
    let doc = conflict_json.json();
    assert_eq!(doc["error"]["kind"], "conflict");
    assert_eq!(doc["error"]["existing_id"], id.as_str());
    assert_eq!(dbsize(&url), keys_after_first, "a conflict writes nothing");

    // Without a key every submit is a new workflow.
    let other = cli(&url, &["submit", &file]);
    assert_eq!(other.code, 0);
    assert_ne!(other.stdout.trim(), id);
}

#[test]
fn unreachable_redis_exits_3_with_a_clear_message() {
    let url = dead_url();
    let port = url
        .trim_start_matches("redis://127.0.0.1:")
        .trim_end_matches('/');
    let secret_url = format!("redis://:hunter2@127.0.0.1:{port}/");
    for args in [
        vec!["submit".to_owned(), example("analysis.yaml")],
        vec![
            "status".to_owned(),
            "0190b8e4-0000-7000-8000-000000000000".to_owned(),
        ],
        vec!["list".to_owned()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli(&secret_url, &args);
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(out.stdout.is_empty());
        assert!(
            out.stderr
                .contains(&format!("redis://:***@127.0.0.1:{port}/")),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
        assert!(out.stderr.contains("redis-server"), "{}", out.stderr);
    }
    // The flag wins over the environment, and --json gives the error document.
    let mut cmd = command("redis://127.0.0.1:1/");
    let output = cmd
        .args(["--redis-url", &url, "--json", "list"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "unreachable");
    assert_eq!(doc["error"]["exit_code"], 3);
    assert!(doc["error"]["message"].as_str().unwrap().contains(&url));
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    let url = dead_url();
    let out = cli(&url, &["submit"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = cli(
        &url,
        &["submit", &example("analysis.yaml"), "--timeout", "5s"],
    );
    assert_eq!(out.code, 2, "--timeout needs --wait: {out:?}");
    let out = cli(&url, &["--namespace", "bad{ns}", "list"]);
    assert_eq!(out.code, 2, "{out:?}");
    let help = cli(&url, &["--help"]);
    assert_eq!(help.code, 0);
    for line in [
        "3  cannot reach Redis",
        "6  idempotency key",
        "7  --wait or watch timed out",
        "8  refused by the current state",
    ] {
        assert!(help.stdout.contains(line), "{}", help.stdout);
    }
    let help = cli(&url, &["submit", "--help"]);
    assert!(
        help.stdout
            .contains("5  not found (workflow or dead letter)"),
        "{}",
        help.stdout
    );
}

#[test]
fn help_never_shows_the_password_of_the_redis_url() {
    let url = "redis://gleitzeit:s3cret-pw@127.0.0.1:1/";
    let subcommands: &[&[&str]] = &[
        &["--help"],
        &["submit", "--help"],
        &["status", "--help"],
        &["watch", "--help"],
        &["dead", "--help"],
        &["acl", "--help"],
        &["endpoints", "--help"],
    ];
    for args in subcommands {
        let help = cli(url, args);
        assert_eq!(help.code, 0, "{args:?}: {help:?}");
        assert!(help.stdout.contains("--redis-url"), "{args:?}");
        assert!(
            !help.stdout.contains("s3cret") && !help.stderr.contains("s3cret"),
            "{args:?} shows the password:\n{}",
            help.stdout
        );
    }
}

#[test]
fn single_brace_placeholders_warn_without_failing() {
    let redis = start_redis();
    let url = redis.url();
    let doc = serde_json::json!({
        "name": "Braces",
        "input": {"text": "t"},
        "tasks": [
            {"name": "Extract", "type": "text", "model": "smollm2",
             "prompt": "Extract key points from: {input}"},
            {"name": "Title", "type": "text", "model": "smollm2",
             "prompt": "Title for {Extract.result}, as JSON {\"title\": \"…\"}",
             "dependencies": ["Extract"]}
        ]
    })
    .to_string();
    let out = cli_stdin(&url, &["--json", "validate", "-"], Some(&doc));
    assert_eq!(out.code, 0, "{out:?}");
    let warnings = out.json()["warnings"].as_array().unwrap().clone();
    let paths: Vec<&str> = warnings
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec!["tasks[0] (Extract).prompt", "tasks[1] (Title).prompt"]
    );
    let message = warnings[0]["message"].as_str().unwrap();
    assert!(message.contains("`{{input}}`"), "{message}");

    let text = cli_stdin(&url, &["validate", "-"], Some(&doc));
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout
            .contains("warning: tasks[1] (Title).prompt: `{Extract.result}` is sent to the model literally; write `{{Extract.result}}`"),
        "{}",
        text.stdout
    );

    // Submitting says the same on stderr and goes ahead.
    let sub = cli_stdin(&url, &["submit", "-"], Some(&doc));
    assert_eq!(sub.code, 0, "{sub:?}");
    assert_eq!(sub.stderr.matches("warning: ").count(), 2, "{}", sub.stderr);
    assert!(dbsize(&url) > 0, "the workflow was written");
}

#[test]
fn an_unreadable_file_is_said_to_be_unreadable_not_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let missing = missing.to_str().unwrap();
    let out = cli(&dead_url(), &["validate", missing]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!("error: {missing}: cannot read the workflow file: no such file")
    );
    let out = cli(&dead_url(), &["submit", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("it is a directory"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("not a valid workflow"),
        "{}",
        out.stderr
    );
}
