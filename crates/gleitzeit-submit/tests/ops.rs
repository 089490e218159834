//! The operations commands through the real binary against a real Redis: `queues`,
//! `dead list|inspect|requeue|purge`, `watch`, `fleet` and `endpoints`. Workflows are driven
//! through the queue API as a worker would (begin, then complete or fail — retries until
//! the attempts run out land the task in the dead letters).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use deadpool_redis::redis;
use gleitzeit_queue::{
    BeginOutcome, DeadLetterKind, FailRequest, Queue, StreamRef, TaskContext, WorkerRecord,
    WorkflowInfo,
};
use serde_json::{json, Value};

/// What the player does with a task it began.
enum Play {
    Complete,
    /// Fail the attempt asking for a retry: once the attempts are used up, the queue fails
    /// the task and writes an `exhausted` dead letter.
    Retry,
    /// Fail the task for good with a `poison` dead letter.
    Poison,
}

/// Plays a worker for workflow `id` until it ends.
async fn play(q: &Queue, id: &str, mut decide: impl FnMut(&TaskContext) -> Play) -> WorkflowInfo {
    let mut consumer = q.consumer("ops-player").unwrap();
    loop {
        let info = q.workflow(id).await.unwrap().expect("workflow exists");
        if info.is_finished() {
            return info;
        }
        q.promote(now_ms(), 100).await.unwrap();
        let streams: Vec<StreamRef> = q
            .capabilities()
            .await
            .unwrap()
            .iter()
            .flat_map(|cap| q.keys().stream_refs(cap))
            .collect();
        let deliveries = consumer
            .read(&streams, 16, Duration::from_millis(200))
            .await
            .unwrap();
        for d in deliveries {
            let BeginOutcome::Run(ctx) = q.begin(&d, consumer.name(), now_ms()).await.unwrap()
            else {
                continue;
            };
            let error = json!({"kind": "retryable", "message": format!("{} broke", ctx.name)});
            let poison = match decide(&ctx) {
                Play::Complete => {
                    let result = llm_result(&format!("{} done", ctx.name)).to_string();
                    q.complete(&d, consumer.name(), &result, now_ms())
                        .await
                        .unwrap();
                    continue;
                }
                Play::Retry => false,
                Play::Poison => true,
            };
            let req = FailRequest {
                error_json: error.to_string(),
                retry_at_ms: (!poison).then(now_ms),
                dead_letter: poison.then_some(DeadLetterKind::Poison),
                now_ms: now_ms(),
            };
            q.fail(&d, consumer.name(), &req).await.unwrap();
        }
    }
}

fn complete_everything(_: &TaskContext) -> Play {
    Play::Complete
}

/// Writes `yaml` to a file and submits it with the CLI; returns the id.
fn submit_yaml(url: &str, yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wf.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = cli(url, &["submit", path.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout.trim().to_owned()
}

fn redis_cmd(url: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn).unwrap()
}

fn spawn_cli(url: &str, args: &[&str]) -> Child {
    command(url)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> Out {
    let output = child.wait_with_output().unwrap();
    Out {
        code: output.status.code().expect("exited normally"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// stdout as JSON lines.
fn json_lines(out: &Out) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{out:?}")))
        .collect()
}

fn status_json(url: &str, id: &str) -> Value {
    cli(url, &["--json", "status", id]).json()
}

#[test]
fn an_exhausted_task_is_dead_lettered_requeued_and_its_workflow_completes() {
    let redis = start_redis();
    let url = redis.url();
    let out = cli(&url, &["submit", &example("analysis.yaml")]);
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();
    let rt = runtime();

    // The first task fails all three attempts; fail_fast cancels the two after it.
    let info = rt.block_on(async {
        let q = queue(&url).await;
        play(&q, &id, |_| Play::Retry).await
    });
    assert_eq!(info.status, "failed");
    assert_eq!((info.failed, info.cancelled), (1, 2));

    // dead list
    let out = cli(&url, &["dead", "list"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[0].starts_with("ID") && lines[0].contains("REASON"));
    assert!(
        lines[1].contains(&id)
            && lines[1].contains("Extract key points")
            && lines[1].contains("exhausted")
            && lines[1].contains("Extract key points broke")
            && !lines[1].contains("retryable"),
        "{}",
        lines[1]
    );
    let doc = cli(&url, &["--json", "dead", "list"]).json();
    let letters = doc.as_array().unwrap();
    assert_eq!(letters.len(), 1);
    let dead_id = letters[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(letters[0]["workflow_id"], id.as_str());
    assert_eq!(letters[0]["task"], 0);
    assert_eq!(letters[0]["capability"], "llm:smollm2");
    assert_eq!(letters[0]["kind"], "exhausted");
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["reason"]["kind"], "retryable");

    // dead inspect: the letter, the workflow, the task now and its definition
    let out = cli(&url, &["dead", "inspect", &dead_id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("kind        exhausted after 3 attempts"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("(failed, policy fail_fast): 3/3 done, 1 failed, 0 skipped, 2 cancelled"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\"prompt\""), "{}", out.stdout);
    let doc = cli(&url, &["--json", "dead", "inspect", &dead_id]).json();
    assert_eq!(doc["dead_letter"]["id"], dead_id.as_str());
    assert_eq!(doc["workflow"]["status"], "failed");
    assert_eq!(doc["task"]["status"], "failed");
    assert_eq!(doc["task"]["attempts"], 3);
    assert_eq!(doc["task"]["error"]["message"], "Extract key points broke");
    assert_eq!(doc["definition"]["type"], "text");

    // queues: the dead letter is counted under its capability
    let doc = cli(&url, &["--json", "queues"]).json();
    let cap = &doc["capabilities"][0];
    assert_eq!(cap["capability"], "llm:smollm2");
    assert_eq!(
        (cap["ready"].as_u64(), cap["dead"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(doc["totals"]["dead"], 1);

    // requeue: ready again with attempts reset, the cancelled tasks reopened (waiting), the
    // workflow running again, the dead letter gone
    let out = cli(&url, &["--json", "dead", "requeue", &dead_id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.json(),
        json!({"requeued": [{"id": dead_id, "workflow_id": id, "task": 0, "reopened": 2,
                              "workflow_reopened": true}], "refused": []})
    );
    let doc = status_json(&url, &id);
    assert_eq!(doc["status"], "running");
    assert_eq!(doc["finished_ms"], Value::Null);
    assert_eq!(
        (
            doc["open"].as_u64(),
            doc["failed"].as_u64(),
            doc["cancelled"].as_u64()
        ),
        (Some(3), Some(0), Some(0))
    );
    let tasks = doc["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["status"], "ready");
    assert_eq!(tasks[0]["attempts"], 0);
    assert_eq!(tasks[0]["error"], Value::Null);
    assert_eq!(tasks[1]["status"], "waiting");
    assert_eq!(tasks[2]["status"], "waiting");
    // The task is back in its stream.
    let doc = cli(&url, &["--json", "queues"]).json();
    let cap = &doc["capabilities"][0];
    assert_eq!(
        (cap["ready"].as_u64(), cap["dead"].as_u64()),
        (Some(1), Some(0))
    );
    let out = cli(&url, &["queues"]);
    assert!(
        out.stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("llm:smollm2  normal    1      0  "),
        "{}",
        out.stdout
    );
    assert_eq!(cli(&url, &["--json", "dead", "list"]).json(), json!([]));
    // The workflow's keys no longer expire while it runs again.
    let ttl = redis_cmd(&url, &["TTL", &format!("{{gleitzeit}}:wf:{id}")]);
    assert_eq!(ttl, redis::Value::Int(-1));

    // Someone watches while a worker completes the workflow: the history's earlier end
    // ("failed") does not stop the watch, the real end does.
    let watcher = spawn_cli(&url, &["--json", "watch", &id]);
    let info = rt.block_on(async {
        let q = queue(&url).await;
        play(&q, &id, complete_everything).await
    });
    assert_eq!(info.status, "completed");
    assert_eq!(info.completed, 3);
    let out = finish(watcher);
    assert_eq!(out.code, 0, "{out:?}");
    let lines = json_lines(&out);
    let end = lines.last().unwrap();
    assert_eq!(end["kind"], "end");
    assert_eq!(end["status"], "completed");
    assert_eq!(
        (end["done"].as_u64(), end["total"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(lines
        .iter()
        .any(|l| l["kind"] == "workflow" && l["status"] == "running"));

    // The same dead letter cannot be requeued twice: it is gone (exit 5).
    let out = cli(&url, &["--json", "dead", "requeue", &dead_id]);
    assert_eq!(out.code, 5, "{out:?}");
    assert_eq!(out.json()["error"]["kind"], "not_found");
}

const BRANCHES: &str = "\
name: Branches
failure_policy: continue
defaults: { model: smollm2, retry: { max_attempts: 1 } }
tasks:
  - { name: A, type: text, prompt: a }
  - { name: X, type: text, prompt: x }
  - { name: C, type: text, prompt: \"{{A.result}} {{X.result}}\" }
  - { name: D, type: text, prompt: d }
";

#[test]
fn requeue_all_reopens_skipped_dependents_only_once_no_dependency_is_failed() {
    let redis = start_redis();
    let url = redis.url();
    let id = submit_yaml(&url, BRANCHES);
    let rt = runtime();
    let info = rt.block_on(async {
        let q = queue(&url).await;
        play(&q, &id, |ctx| match ctx.name.as_str() {
            "A" | "X" => Play::Poison,
            _ => Play::Complete,
        })
        .await
    });
    assert_eq!(info.status, "failed");
    assert_eq!((info.failed, info.skipped, info.completed), (2, 1, 1));
    let letters = cli(&url, &["--json", "dead", "list"]).json();
    assert_eq!(letters.as_array().unwrap().len(), 2);
    assert!(letters
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["kind"] == "poison"));

    // Oldest first: A's letter reopens the workflow but not C (X is still failed); X's
    // letter then reopens C.
    let out = cli(&url, &["dead", "requeue", "--all"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].ends_with(&format!(
            "task #0 of workflow {id} (workflow running again)"
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with(&format!(
            "task #1 of workflow {id} (1 closed task reopened)"
        )),
        "{}",
        lines[1]
    );
    let doc = status_json(&url, &id);
    assert_eq!(doc["status"], "running");
    let states: Vec<&str> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["ready", "ready", "waiting", "completed"]);
    assert_eq!(
        (
            doc["open"].as_u64(),
            doc["skipped"].as_u64(),
            doc["failed"].as_u64()
        ),
        (Some(3), Some(0), Some(0))
    );

    let info = rt.block_on(async {
        let q = queue(&url).await;
        play(&q, &id, complete_everything).await
    });
    assert_eq!(info.status, "completed");
    assert_eq!(info.completed, 4);
    let results = cli(&url, &["--json", "results", &id]).json();
    assert_eq!(results["C"]["result"], "C done");
}

#[test]
fn requeue_refuses_cancelled_expired_and_no_longer_failed_tasks() {
    let redis = start_redis();
    let url = redis.url();
    let id = submit_yaml(&url, BRANCHES);
    let rt = runtime();
    // A fails for good; the workflow keeps running (continue), then a user cancels it.
    rt.block_on(async {
        let q = queue(&url).await;
        let mut consumer = q.consumer("ops-player").unwrap();
        let streams = q.keys().stream_refs("llm:smollm2");
        let deliveries = consumer
            .read(&streams, 16, Duration::from_secs(5))
            .await
            .unwrap();
        for d in deliveries {
            let BeginOutcome::Run(ctx) = q.begin(&d, consumer.name(), now_ms()).await.unwrap()
            else {
                panic!("not runnable")
            };
            if ctx.name == "A" {
                let req = FailRequest {
                    error_json: json!({"kind": "permanent", "message": "no"}).to_string(),
                    retry_at_ms: None,
                    dead_letter: Some(DeadLetterKind::Poison),
                    now_ms: now_ms(),
                };
                q.fail(&d, consumer.name(), &req).await.unwrap();
            }
        }
    });
    assert_eq!(status_json(&url, &id)["status"], "running");
    assert_eq!(cli(&url, &["cancel", &id]).code, 0);
    let dead_id = cli(&url, &["--json", "dead", "list"]).json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Dead letters that name a task which is not failed, and a workflow that is gone.
    let completed = submit_yaml(
        &url,
        "name: one\ntasks:\n  - { name: T, type: text, model: smollm2, prompt: t }\n",
    );
    rt.block_on(async {
        let q = queue(&url).await;
        play(&q, &completed, complete_everything).await
    });
    let not_failed = redis_cmd(
        &url,
        &[
            "XADD",
            "{gleitzeit}:dead",
            "*",
            "wf",
            &completed,
            "task",
            "0",
            "name",
            "T",
            "cap",
            "llm:smollm2",
            "kind",
            "poison",
            "reason",
            "{}",
            "attempts",
            "1",
            "at_ms",
            "1",
        ],
    );
    let gone = redis_cmd(
        &url,
        &[
            "XADD",
            "{gleitzeit}:dead",
            "*",
            "wf",
            "no-such-workflow",
            "task",
            "0",
            "name",
            "T",
            "cap",
            "llm:other",
            "kind",
            "exhausted",
            "reason",
            "{}",
            "attempts",
            "3",
            "at_ms",
            "1",
        ],
    );
    let id_of = |v: redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    let (not_failed, gone) = (id_of(not_failed), id_of(gone));

    for (letter, reason, text) in [
        (
            &dead_id,
            "cancelled",
            format!("workflow {id} was cancelled by a user"),
        ),
        (
            &not_failed,
            "not_failed",
            format!("task #0 of workflow {completed} is not failed any more"),
        ),
        (
            &gone,
            "expired",
            "workflow no-such-workflow no longer exists".to_owned(),
        ),
    ] {
        let out = cli(&url, &["--json", "dead", "requeue", letter]);
        assert_eq!(out.code, 8, "{out:?}");
        let doc = out.json();
        assert_eq!(doc["requeued"], json!([]));
        assert_eq!(doc["refused"][0]["reason"], reason);
        assert_eq!(doc["refused"][0]["id"], letter.as_str());
        let out = cli(&url, &["dead", "requeue", letter]);
        assert_eq!(out.code, 8, "{out:?}");
        assert!(
            out.stdout.starts_with(&format!("refused {letter}: {text}")),
            "{}",
            out.stdout
        );
    }
    // Nothing changed: every letter is still there, the workflows are as they were.
    assert_eq!(
        cli(&url, &["--json", "dead", "list"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(status_json(&url, &id)["status"], "cancelled");
    assert_eq!(status_json(&url, &completed)["status"], "completed");

    // --all with a capability filter picks only that capability's letters.
    let out = cli(
        &url,
        &[
            "--json",
            "dead",
            "requeue",
            "--all",
            "--capability",
            "llm:other",
        ],
    );
    assert_eq!(out.code, 8, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["refused"].as_array().unwrap().len(), 1);
    assert_eq!(doc["refused"][0]["id"], gone.as_str());

    // Unknown and malformed ids.
    let out = cli(&url, &["dead", "requeue", "1-1"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(
        out.stderr.contains("dead letter 1-1 not found"),
        "{}",
        out.stderr
    );
    let out = cli(&url, &["--json", "dead", "inspect", "nonsense"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.json()["error"]["kind"], "usage");

    // purge: one, refused without --yes, by capability, then all.
    let out = cli(&url, &["--json", "dead", "purge", &not_failed]);
    assert_eq!((out.code, out.json()), (0, json!({"purged": 1})));
    let out = cli(&url, &["dead", "purge", &not_failed]);
    assert_eq!(out.code, 5, "{out:?}");
    let out = cli(&url, &["dead", "purge", "--all"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    let out = cli(
        &url,
        &[
            "dead",
            "purge",
            "--all",
            "--capability",
            "llm:other",
            "--yes",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "purged 1 dead letter\n");
    let out = cli(&url, &["--json", "dead", "purge", "--all", "--yes"]);
    assert_eq!((out.code, out.json()), (0, json!({"purged": 1})));
    assert_eq!(cli(&url, &["dead", "list"]).stdout, "no dead letters\n");
    // Purge deleted dead letters and nothing else.
    assert_eq!(status_json(&url, &id)["status"], "cancelled");
    assert_eq!(status_json(&url, &completed)["status"], "completed");
}

#[test]
fn watch_follows_a_workflow_to_its_end() {
    let redis = start_redis();
    let url = redis.url();
    let out = cli(&url, &["submit", &example("analysis.yaml")]);
    let id = out.stdout.trim().to_owned();

    // A running workflow and a watch that gives up.
    let out = cli(&url, &["--json", "watch", &id, "--timeout", "0.3"]);
    assert_eq!(out.code, 7, "{out:?}");
    let end = json_lines(&out).pop().unwrap();
    assert_eq!(
        (end["kind"].as_str(), end["timed_out"].as_bool()),
        (Some("end"), Some(true))
    );
    assert_eq!(end["status"], "running");

    // For people: a bar and a line per finished task, exit 4 for a failed workflow.
    let watcher = spawn_cli(&url, &["watch", &id]);
    runtime().block_on(async {
        let q = queue(&url).await;
        play(&q, &id, |ctx| match ctx.name.as_str() {
            "Extract key points" => Play::Complete,
            _ => Play::Poison,
        })
        .await
    });
    let out = finish(watcher);
    assert_eq!(out.code, 4, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with(&format!("watching workflow {id}  Text analysis (3 tasks)")));
    // Each line: the bar, tasks ended of all, time since the workflow began, what happened.
    let has = |bar_and_count: &str, text: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(bar_and_count) && l.contains(" +") && l.contains(text))
    };
    assert!(
        has(
            "[######··············] [1/3] +",
            "Extract key points completed"
        ),
        "{}",
        out.stdout
    );
    assert!(
        has("", "[2/3] +") && has("", "Summarize failed after 1 attempt: Summarize broke"),
        "{}",
        out.stdout
    );
    assert!(has("", "Title cancelled"), "{}", out.stdout);
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("[####################] workflow failed"),
        "{}",
        out.stdout
    );

    // Unknown workflows.
    let out = cli(&url, &["--json", "watch", "nope"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert_eq!(out.json()["error"]["kind"], "not_found");
}

/// A workflow submitted without `--events` writes no `running` events while nobody
/// watches; `watch` asks for them before it reads the workflow, so every task that starts
/// after its first line shows as running.
#[test]
fn watch_asks_for_the_passing_states_of_a_workflow_submitted_unwatched() {
    let redis = start_redis();
    let url = redis.url();
    let id = cli(&url, &["submit", &example("analysis.yaml")])
        .stdout
        .trim()
        .to_owned();
    let mut watcher = spawn_cli(&url, &["watch", &id]);
    let mut stdout = BufReader::new(watcher.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("watching workflow"), "{first}");
    runtime().block_on(async {
        let q = queue(&url).await;
        play(&q, &id, |_| Play::Complete).await
    });
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = finish(watcher);
    assert_eq!(out.code, 0, "{out:?}\n{rest}");
    for task in ["Extract key points", "Summarize", "Title"] {
        assert!(
            rest.lines().any(|l| l.contains(&format!("{task} running"))),
            "no running line for {task}:\n{rest}"
        );
    }
}

#[test]
fn fleet_and_endpoints_show_what_workers_publish() {
    let redis = start_redis();
    let url = redis.url();
    let now = now_ms();
    // Two workers as their registry writes them; one of them stopped refreshing a minute ago.
    runtime().block_on(async {
        let q = queue(&url).await;
        let live = WorkerRecord {
            id: "host-a-11-0a0a0a0a".into(),
            host: "host-a".into(),
            pid: 11,
            version: "0.1.0".into(),
            state: "running".into(),
            started_ms: now - 125_000,
            updated_ms: now,
            concurrency: 8,
            in_flight: 3,
            capabilities: vec!["llm:smollm2".into()],
            completed: 40,
            failed: 2,
            ..WorkerRecord::default()
        };
        let gone = WorkerRecord {
            id: "host-b-12-0b0b0b0b".into(),
            updated_ms: now - 60_000,
            ..live.clone()
        };
        q.publish_worker(&gone, Duration::from_secs(15))
            .await
            .unwrap();
        // The next write of any worker drops members that expired.
        q.publish_worker(&live, Duration::from_secs(15))
            .await
            .unwrap();
    });
    // Endpoint state as workers publish it (docs/routing.md, "Shared endpoint state").
    let health = |state: &str, latency: &str, age: u64, w: &str| {
        format!(
            r#"{{"state":"{state}","latency_ms":{latency},"failures":1,"in_flight":2,"updated_ms":{},"worker":"{w}"}}"#,
            now - age
        )
    };
    redis_cmd(&url, &["SADD", "{gleitzeit}:endpoints", "gpu1", "gpu2"]);
    redis_cmd(
        &url,
        &[
            "HSET",
            "{gleitzeit}:ep:gpu1:health",
            "w1",
            &health("ok", "812.5", 2_000, "w1"),
            "w2",
            &health("rate_limited", "300.2", 1_000, "w2"),
        ],
    );
    redis_cmd(
        &url,
        &[
            "HSET",
            "{gleitzeit}:ep:gpu1:models",
            "loaded",
            r#"["smollm2","qwen2.5:0.5b"]"#,
        ],
    );
    let future = (now + 60_000).to_string();
    let past = (now - 1).to_string();
    redis_cmd(
        &url,
        &[
            "ZADD",
            "{gleitzeit}:ep:gpu1:leases",
            &future,
            "l1",
            &future,
            "l2",
            &past,
            "old",
        ],
    );
    redis_cmd(
        &url,
        &[
            "HSET",
            "{gleitzeit}:ep:gpu2:health",
            "w1",
            &health("ok", "null", 90_000, "w1"),
        ],
    );

    let doc = cli(&url, &["--json", "endpoints"]).json();
    let list = doc.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "gpu1");
    assert_eq!(list[0]["health"], "rate_limited");
    assert_eq!(list[0]["in_flight"], 2);
    assert_eq!(list[0]["latency_ms"], 300);
    assert_eq!(list[0]["reporters"], 2);
    assert_eq!(list[0]["models"], json!(["smollm2", "qwen2.5:0.5b"]));
    // gpu2's only view is stale: nobody vouches for it.
    assert_eq!(list[1]["health"], "unknown");
    assert_eq!(list[1]["reporters"], 0);
    let out = cli(&url, &["endpoints"]);
    assert_eq!(out.code, 0, "{out:?}");
    let row = out.stdout.lines().find(|l| l.starts_with("gpu1")).unwrap();
    assert!(
        row.contains("rate_limited")
            && row.contains("300ms")
            && row.contains("smollm2,qwen2.5:0.5b"),
        "{row}"
    );

    // fleet: the live worker only, with queue totals and the endpoint summary
    let id = cli(&url, &["submit", &example("analysis.yaml")])
        .stdout
        .trim()
        .to_owned();
    assert!(!id.is_empty());
    let doc = cli(&url, &["--json", "fleet"]).json();
    let workers = doc["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{doc}");
    assert_eq!(workers[0]["id"], "host-a-11-0a0a0a0a");
    assert_eq!(
        (
            workers[0]["in_flight"].as_u64(),
            workers[0]["concurrency"].as_u64()
        ),
        (Some(3), Some(8))
    );
    assert_eq!(
        doc["totals"],
        json!({"workers": 1, "concurrency": 8, "in_flight": 3, "completed": 40, "failed": 2})
    );
    assert_eq!(doc["queues"]["ready"], 1);
    assert_eq!(doc["queues"]["dead"], 0);
    assert_eq!(doc["endpoints"][0]["name"], "gpu1");
    let out = cli(&url, &["fleet"]);
    assert_eq!(out.code, 0, "{out:?}");
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("host-a-11"))
        .unwrap();
    assert!(
        row.contains("running") && row.contains("3/8") && row.contains("2m"),
        "{row}"
    );
    assert!(!out.stdout.contains("host-b"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("workers   1 live, 3/8 slots busy, 40 completed, 2 failed"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("queues    1 ready"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("endpoints gpu1 rate_limited (2 in flight), gpu2 unknown (0 in flight)"),
        "{}",
        out.stdout
    );
    // The expired worker's member was dropped by the writer.
    let members = redis_cmd(&url, &["ZCARD", "{gleitzeit}:workers"]);
    assert_eq!(members, redis::Value::Int(1));

    // Nothing published: clear messages, exit 0.
    let empty = start_redis();
    let out = cli(&empty.url(), &["fleet"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("no live workers"), "{}", out.stdout);
    assert_eq!(
        cli(&empty.url(), &["endpoints"]).stdout,
        "no endpoint state published (no worker with LLM endpoints has run)\n"
    );
    assert_eq!(
        cli(&empty.url(), &["queues"]).stdout,
        "no capability streams yet (nothing was submitted)\n"
    );
}

#[test]
fn prune_reports_then_removes_what_nobody_uses() {
    let redis = start_redis();
    let url = redis.url();
    let id = submit_yaml(
        &url,
        "name: once\ntasks:\n  - name: A\n    type: text\n    model: oldmodel\n    prompt: hi\n",
    );
    runtime().block_on(async {
        let q = queue(&url).await;
        play(&q, &id, complete_everything).await;
    });
    let old = (now_ms() - 7_200_000).to_string();
    redis_cmd(&url, &["SADD", "{gleitzeit}:endpoints", "gpu-old"]);
    redis_cmd(
        &url,
        &[
            "HSET",
            "{gleitzeit}:ep:gpu-old:health",
            "gone-worker",
            &format!(r#"{{"state":"ok","updated_ms":{old}}}"#),
        ],
    );

    // The report names what is stale, removes nothing and says how to remove it.
    let report = cli(&url, &["prune", "--older-than", "0s"]);
    assert_eq!(report.code, 0, "{report:?}");
    assert!(
        report.stdout.contains("stale endpoint   gpu-old"),
        "{}",
        report.stdout
    );
    assert!(
        report.stdout.contains("stale capability llm:oldmodel"),
        "{}",
        report.stdout
    );
    assert!(
        report.stdout.contains("run again with --yes"),
        "{}",
        report.stdout
    );
    let caps = |url: &str| match redis_cmd(url, &["SMEMBERS", "{gleitzeit}:caps"]) {
        redis::Value::Array(v) => v.len(),
        redis::Value::Set(v) => v.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(caps(&url), 1, "a report removes nothing");

    let out = cli(&url, &["--json", "prune", "--older-than", "0s", "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["applied"], true);
    assert_eq!(doc["endpoints"], json!(["gpu-old"]));
    assert_eq!(doc["capabilities"], json!(["llm:oldmodel"]));
    assert_eq!(doc["health"][0]["worker"], "gone-worker");
    assert_eq!(caps(&url), 0);
    // The finished workflow's results are untouched.
    let results = cli(&url, &["--json", "results", &id]);
    assert_eq!(results.json()["A"]["status"], "completed");
    assert_eq!(
        cli(&url, &["prune", "--older-than", "0s"]).stdout,
        "nothing stale (idle for 0s or more)\n"
    );
}
