//! Never a silent wait: `submit`, `submit --wait` and `watch` say at once when no live worker
//! serves a workflow's capability or no instance of its service is registered.

mod common;

use std::time::Duration;

use common::*;
use gleitzeit_queue::WorkerRecord;

/// A live worker as its registry writes it, configured with `patterns`.
fn publish(url: &str, patterns: &[&str]) {
    runtime().block_on(async {
        let q = queue(url).await;
        let rec = WorkerRecord {
            id: "host-a-11-0a0a0a0a".into(),
            host: "host-a".into(),
            state: "running".into(),
            updated_ms: now_ms(),
            concurrency: 4,
            patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
            ..WorkerRecord::default()
        };
        q.publish_worker(&rec, Duration::from_secs(60))
            .await
            .unwrap();
    });
}

fn notes(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("note: "))
        .collect()
}

#[test]
fn without_any_worker_submit_says_the_workflow_waits_for_one() {
    let redis = start_redis();
    let url = redis.url();
    let out = cli(&url, &["submit", &example("analysis.yaml")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        notes(&out.stderr),
        vec![
            "no live worker in namespace \"gleitzeit\": the workflow waits until a \
             gleitzeit-worker starts there"
        ],
        "{}",
        out.stderr
    );
}

#[test]
fn an_unserved_capability_and_a_missing_service_are_named() {
    let redis = start_redis();
    let url = redis.url();
    publish(&url, &["llm:*"]);
    // pipeline.yaml: an external task of "Python Tasks", then an LLM task.
    let out = cli(&url, &["--json", "submit", &example("pipeline.yaml")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        notes(&out.stderr),
        vec![
            "no live worker serves ext:Python Tasks; live workers serve: llm:*. Its tasks wait \
             until one does"
        ]
    );
    let doc = out.json();
    assert_eq!(doc["notices"][0]["capability"], "ext:Python Tasks");
    let id = doc["id"].as_str().unwrap().to_owned();

    // A worker that serves external tasks, but no instance of the service is registered.
    publish(&url, &["llm:*", "ext:*"]);
    let out = cli(&url, &["watch", &id, "--timeout", "1s"]);
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(
        notes(&out.stderr),
        vec![
            "no instance of service \"Python Tasks\" is registered; its tasks wait until one \
             registers (gleitzeit-service, or start_task_service() in Python)"
        ],
        "{}",
        out.stderr
    );
    let out = cli(
        &url,
        &[
            "submit",
            &example("analysis.yaml"),
            "--wait",
            "--timeout",
            "1s",
        ],
    );
    assert_eq!(out.code, 7, "{out:?}");
    assert!(
        notes(&out.stderr).is_empty(),
        "llm:* serves it: {}",
        out.stderr
    );
}
