//! Retention chosen per workflow and per submitter, and a full Redis refusing submissions with
//! its own exit code while nothing is written.

mod common;

use common::*;
use serde_json::json;

/// Submits `doc` (JSON on stdin) with extra arguments and environment; returns the stored
/// `retention` field (seconds) of the new workflow.
fn stored_retention(
    url: &str,
    doc: &serde_json::Value,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let mut cmd = command(url);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut all = vec!["--json", "submit", "-"];
    all.extend_from_slice(args);
    let out = run(cmd, &all, Some(&doc.to_string()));
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.json()["id"].as_str().unwrap().to_owned();
    let key = format!("{{gleitzeit}}:wf:{id}");
    redis_cmd::<Option<String>>(url, &["HGET", &key, "retention"]).expect("retention stored")
}

fn workflow(retention: Option<&str>) -> serde_json::Value {
    let mut doc = json!({
        "name": "kept",
        "tasks": [{"name": "A", "type": "text", "model": "smollm2", "prompt": "hi"}]
    });
    if let Some(r) = retention {
        doc["retention"] = json!(r);
    }
    doc
}

#[test]
fn retention_comes_from_the_file_then_the_submitter_then_the_default() {
    let redis = start_redis();
    let url = redis.url();
    assert_eq!(stored_retention(&url, &workflow(None), &[], &[]), "86400");
    assert_eq!(
        stored_retention(&url, &workflow(None), &["--retention", "30m"], &[]),
        "1800"
    );
    assert_eq!(
        stored_retention(
            &url,
            &workflow(None),
            &[],
            &[("GLEITZEIT_RETENTION", "90s")]
        ),
        "90"
    );
    // The workflow's own value wins over the submitter's.
    assert_eq!(
        stored_retention(&url, &workflow(Some("2h")), &["--retention", "30m"], &[]),
        "7200"
    );
}

#[test]
fn a_bad_retention_is_refused_with_its_place_and_nothing_written() {
    let redis = start_redis();
    let url = redis.url();
    let out = cli_stdin(
        &url,
        &["submit", "-"],
        Some(&workflow(Some("500ms")).to_string()),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("retention") && out.stderr.contains("at least 1s"),
        "{}",
        out.stderr
    );
    let out = cli_stdin(
        &url,
        &["submit", "-"],
        Some(&workflow(Some("400d")).to_string()),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("exceeds the limit"), "{}", out.stderr);
    let out = cli_stdin(
        &url,
        &["submit", "-", "--retention", "0"],
        Some(&workflow(None).to_string()),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--retention"), "{}", out.stderr);
    assert_eq!(dbsize(&url), 0);
}

#[test]
fn a_full_redis_exits_11_writes_nothing_and_accepts_again_once_memory_is_back() {
    let redis = start_redis();
    let url = redis.url();
    let first = cli_stdin(&url, &["submit", "-"], Some(&workflow(None).to_string()));
    assert_eq!(first.code, 0, "{first:?}");
    let _: () = redis_cmd(&url, &["CONFIG", "SET", "maxmemory", "1"]);
    let before = dbsize(&url);

    let out = cli_stdin(&url, &["submit", "-"], Some(&workflow(None).to_string()));
    assert_eq!(out.code, 11, "{out:?}");
    assert!(out.stderr.contains("Redis is full"), "{}", out.stderr);
    let out = cli_stdin(
        &url,
        &["--json", "submit", "-"],
        Some(&workflow(None).to_string()),
    );
    assert_eq!(out.code, 11, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["error"]["kind"], "redis_full");
    assert_eq!(doc["error"]["exit_code"], 11);
    assert_eq!(dbsize(&url), before, "nothing written");
    // Reading what was accepted still works.
    let id = first.stdout.trim();
    let status = cli(&url, &["status", id]);
    assert_eq!(status.code, 0, "{status:?}");

    let _: () = redis_cmd(&url, &["CONFIG", "SET", "maxmemory", "0"]);
    let again = cli_stdin(&url, &["submit", "-"], Some(&workflow(None).to_string()));
    assert_eq!(again.code, 0, "{again:?}");
}
