//! `endpoints add|remove|published|strategy` through the real binary against a real Redis:
//! what is written, that a refused endpoint or strategy writes nothing (exit 2), that `add`
//! replaces, and that a value shaped like an API key is refused without being repeated.

mod common;

use common::*;
use serde_json::{json, Value};

const HASH: &str = "{gleitzeit}:published:endpoints";
const STRATEGY: &str = "{gleitzeit}:published:strategy";
const VERSION: &str = "{gleitzeit}:published:version";

fn add(url: &str, extra: &[&str]) -> Out {
    let mut args = vec!["--json", "endpoints", "add"];
    args.extend_from_slice(extra);
    cli(url, &args)
}

#[test]
fn add_publishes_in_the_file_shapes_and_replaces_by_name() {
    let redis = start_redis();
    let url = redis.url();
    let args = [
        "gpu",
        "--kind",
        "openai",
        "--url",
        "http://10.0.0.5:8000",
        "--models",
        "llama3.2,qwen",
        "--api-key-env",
        "OPENAI_API_KEY",
        "--priority",
        "2",
        "--gpu",
        "--max-concurrent",
        "4",
        "--memory-gb",
        "48",
        "--max-loaded",
        "2",
        "--tag",
        "fast",
        "--timeout",
        "2m",
    ];
    let out = add(&url, &args);
    assert_eq!(out.code, 0, "{out:?}");
    let entry = json!({
        "endpoint": {"name": "gpu", "kind": "openai", "url": "http://10.0.0.5:8000",
                     "api_key_env": "OPENAI_API_KEY", "models": ["llama3.2", "qwen"],
                     "timeout": "2m"},
        "routing": {"priority": 2, "max_concurrent": 4, "gpu": true, "memory_gb": 48.0,
                    "tags": ["fast"], "max_loaded": 2}
    });
    assert_eq!(
        out.json(),
        json!({"published": [entry.clone()], "strategy": null})
    );
    let stored: String = redis_cmd(&url, &["HGET", HASH, "gpu"]);
    assert_eq!(serde_json::from_str::<Value>(&stored).unwrap(), entry);
    assert_eq!(redis_cmd::<i64>(&url, &["GET", VERSION]), 1);

    // The same name again replaces it: still one endpoint, the version moves on.
    let again = add(&url, &args);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["published"].as_array().unwrap().len(), 1);
    let other = add(
        &url,
        &["gpu", "--kind", "ollama", "--url", "http://h:11434"],
    );
    assert_eq!(other.code, 0, "{other:?}");
    let list = other.json()["published"].clone();
    assert_eq!(
        list,
        json!([{"endpoint": {"name": "gpu", "kind": "ollama", "url": "http://h:11434",
                             "models": ["*"], "timeout": "5m"},
                "routing": {"priority": 0, "gpu": false}}])
    );
    assert_eq!(redis_cmd::<i64>(&url, &["HLEN", HASH]), 1);
    assert_eq!(redis_cmd::<i64>(&url, &["GET", VERSION]), 3);

    // Text output lists it too.
    let text = cli(&url, &["endpoints", "published"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("gpu") && text.stdout.contains("http://h:11434"));
    assert!(text.stdout.contains("strategy: not published"), "{text:?}");
    // Plain `endpoints` is still the health view.
    let health = cli(&url, &["endpoints"]);
    assert_eq!(health.code, 0, "{health:?}");
    assert!(health.stdout.contains("no endpoint state"), "{health:?}");
}

#[test]
fn refused_endpoints_exit_2_and_write_nothing() {
    let redis = start_redis();
    let url = redis.url();
    let cases: [(&[&str], &str); 6] = [
        (
            &["a", "--kind", "ollama", "--url", "ftp://h"],
            "endpoint.url",
        ),
        (
            &["a", "--kind", "bedrock", "--url", "http://h"],
            "endpoint.kind",
        ),
        (
            &[
                "a", "--kind", "ollama", "--url", "http://h", "--models", "a b",
            ],
            "endpoint.models[0]",
        ),
        (
            &[
                "a",
                "--kind",
                "ollama",
                "--url",
                "http://h",
                "--timeout",
                "0s",
            ],
            "endpoint.timeout",
        ),
        (
            &[
                "a",
                "--kind",
                "ollama",
                "--url",
                "http://h",
                "--max-concurrent",
                "0",
            ],
            "routing.max_concurrent",
        ),
        (
            &[" ", "--kind", "ollama", "--url", "http://h"],
            "endpoint.name",
        ),
    ];
    for (args, field) in cases {
        let out = add(&url, args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        let doc = out.json();
        assert_eq!(doc["error"]["kind"], "invalid", "{doc}");
        let fields: Vec<&str> = doc["error"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["path"].as_str())
            .collect();
        assert_eq!(fields, [field], "{args:?}");
        assert_eq!(dbsize(&url), 0, "{args:?} wrote something");
    }
    // The same message as the worker's configuration file gives for the field.
    let out = add(&url, &["a", "--kind", "ollama", "--url", "ftp://h"]);
    assert!(
        out.stderr
            .contains("endpoint.url: must be an http(s) URL with a host, got scheme \"ftp\""),
        "{out:?}"
    );

    let bad = cli(&url, &["--json", "endpoints", "strategy", "fastest_ever"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("unknown routing strategy"), "{bad:?}");
    assert_eq!(dbsize(&url), 0);
}

#[test]
fn an_argument_that_looks_like_a_key_is_refused_and_never_echoed() {
    let redis = start_redis();
    let url = redis.url();
    for key in [
        "sk-proj-Q1w2E3r4T5y6U7i8O9p0",
        "sk_live_51H8abcdefghijklmnop",
        "AbCdEfGh12345678IjKlMnOpQr",
    ] {
        let out = add(
            &url,
            &[
                "cloud",
                "--kind",
                "openai",
                "--url",
                "https://api.example.com",
                "--api-key-env",
                key,
            ],
        );
        assert_eq!(out.code, 2, "{out:?}");
        assert_eq!(
            out.json()["error"]["errors"][0]["path"],
            "endpoint.api_key_env"
        );
        assert!(
            !out.stdout.contains(key) && !out.stderr.contains(key),
            "the key was printed: {out:?}"
        );
        assert_eq!(dbsize(&url), 0);
    }
}

#[test]
fn remove_and_strategy_change_what_is_published() {
    let redis = start_redis();
    let url = redis.url();
    for name in ["a", "b"] {
        let out = add(&url, &[name, "--kind", "ollama", "--url", "http://h:11434"]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let out = cli(&url, &["--json", "endpoints", "strategy", "priority"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["strategy"], "priority");
    assert_eq!(redis_cmd::<String>(&url, &["GET", STRATEGY]), "priority");

    let out = cli(&url, &["--json", "endpoints", "remove", "a"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let names: Vec<&str> = doc["published"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["endpoint"]["name"].as_str())
        .collect();
    assert_eq!(names, ["b"]);
    assert_eq!(doc["strategy"], "priority");
    assert_eq!(redis_cmd::<i64>(&url, &["GET", VERSION]), 4);

    // Removing what is not published changes nothing and says so.
    let out = cli(&url, &["--json", "endpoints", "remove", "a"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("no endpoint \"a\" was published"),
        "{out:?}"
    );
    let listed = cli(&url, &["--json", "endpoints", "published"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert_eq!(listed.json(), doc);
}
