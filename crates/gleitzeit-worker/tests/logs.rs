//! Secrets and structured logs: the worker binary runs with an endpoint API key that is a
//! random canary, debug logging and JSON lines, against one simulator that refuses the key
//! with 401 (echoing it in the error body, as some providers do) and one that accepts it.
//! The canary must appear in no log line, in no Redis value and not in the metrics; the JSON
//! lines about a task carry its workflow id, task name and, once known, the endpoint.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{queue_config, submit, wait_end, PATIENCE};
use deadpool_redis::redis;
use gleitzeit_queue::Queue;
use gleitzeit_testkit::llm::{MockOpenAi, SimConfig};
use gleitzeit_testkit::redis::RedisServer;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const KEY_VAR: &str = "GZT_LOG_TEST_API_KEY";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Every key of the database with every value, whatever its type, as text.
async fn dump_redis(url: &str) -> String {
    let client = redis::Client::open(url).expect("redis client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(!keys.is_empty(), "the run wrote nothing to Redis");
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let value: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).query_async(&mut conn).await,
            "hash" => redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await,
            "list" => {
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
            }
            "set" => {
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            }
            "zset" => {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
            }
            "stream" => {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
            }
            other => panic!("unexpected type {other} of {key}"),
        }
        .expect("reading a value");
        out.push_str(&format!("{key} ({kind}): {value:?}\n"));
        if kind == "stream" {
            // Consumer groups and their consumers hold names too.
            let groups: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("XINFO GROUPS");
            out.push_str(&format!("{key} groups: {groups:?}\n"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_leaks_and_task_lines_carry_their_context() {
    let canary = format!("canary-{:032x}", rand::random::<u128>());
    let redis_server = RedisServer::start().expect("redis-server");
    // `locked` wants another key, so it refuses the canary with 401 and echoes it back.
    let locked = MockOpenAi::start(SimConfig {
        api_key: Some("the-right-key".to_owned()),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let open = MockOpenAi::start(SimConfig::default())
        .await
        .expect("simulator");

    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("worker.yaml");
    // `priority` routing tries `locked` first, so the refusal happens on the task path.
    let config = json!({
        "redis_url": redis_server.url(),
        "namespace": common::NS,
        "concurrency": 2,
        "caps_refresh": "100ms",
        "promote_interval_max": "50ms",
        "metrics_addr": format!("127.0.0.1:{port}"),
        "metrics": { "fleet_interval": "100ms" },
        "endpoints": [
            { "name": "locked", "kind": "openai", "url": locked.url(), "models": ["*"],
              "api_key_env": KEY_VAR },
            { "name": "open", "kind": "openai", "url": open.url(), "models": ["*"],
              "api_key_env": KEY_VAR },
        ],
        "routing": {
            "strategy": "priority",
            "endpoints": { "locked": { "priority": 0 }, "open": { "priority": 1 } },
        },
    });
    std::fs::write(&config_path, config.to_string()).expect("writing the config");

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gleitzeit-worker"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GLEITZEIT_") {
            cmd.env_remove(&key);
        }
    }
    let mut child = cmd
        .arg("--config")
        .arg(&config_path)
        .arg("--log-json")
        .env("RUST_LOG", "debug")
        .env(KEY_VAR, &canary)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning gleitzeit-worker");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let lines = lines.clone();
        readers.push(tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        }));
    }

    let queue = Queue::connect(&redis_server.url(), queue_config())
        .await
        .expect("queue");
    let id = submit(
        &queue,
        r#"
name: canary
defaults: { model: tiny }
tasks:
  - { name: first, type: text, prompt: "hello" }
  - { name: second, type: text, prompt: "again {{first.result}}" }
"#,
    )
    .await;
    let info = wait_end(&queue, &id).await;
    assert_eq!(info.status, "completed");
    assert!(
        locked.hits("/v1/chat/completions") >= 1,
        "the locked endpoint was never asked"
    );

    // The metrics, once the run is in them.
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let metrics = loop {
        let text = reqwest::get(&metrics_url)
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape body");
        if text.contains("gleitzeit_endpoint_requests_total{endpoint=\"locked\"") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no endpoint metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(metrics.contains("outcome=\"auth\""), "{metrics}");
    assert!(!metrics.contains(&canary), "the metrics hold the API key");

    // Graceful stop, so every line is written.
    let pid = child.id().expect("pid");
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("worker did not stop")
        .expect("worker exit");
    assert!(exit.success(), "worker exited with {exit}");
    for r in readers {
        r.await.expect("log reader");
    }

    let redis_dump = dump_redis(&redis_server.url()).await;
    assert!(
        !redis_dump.contains(&canary),
        "the API key is stored in Redis"
    );

    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("\"DEBUG\"")),
        "debug logging was not on"
    );
    for line in &lines {
        assert!(
            !line.contains(&canary),
            "a log line holds the API key: {line}"
        );
    }

    // JSON lines about the tasks: workflow id and task name always, the endpoint once
    // an endpoint answered.
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let mut completed = Vec::new();
    for v in &parsed {
        let Some(span) = v.get("span").filter(|s| s["name"] == "task") else {
            continue;
        };
        assert_eq!(span["wf"], json!(id), "task line without its workflow: {v}");
        if v["fields"]["message"] == "task completed" {
            completed.push((span["task_name"].clone(), span["endpoint"].clone()));
        }
    }
    completed.sort_by_key(|(name, _)| name.to_string());
    assert_eq!(
        completed,
        vec![
            (json!("first"), json!("open")),
            (json!("second"), json!("open")),
        ],
        "the completion lines must name task and endpoint"
    );
    // The refusal itself is logged, naming the endpoint (without the key, checked above).
    assert!(
        parsed
            .iter()
            .any(|v| v["fields"]["endpoint"] == "locked" || v["span"]["endpoint"] == "locked"),
        "no line names the refusing endpoint"
    );
}
