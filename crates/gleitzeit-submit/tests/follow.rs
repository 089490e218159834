//! `status`, `results`, `cancel`, `list` and `submit --wait` through the real binary, on
//! workflows the test drives itself through the queue API (begin/complete/fail), as a worker
//! would.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};

use common::*;
use serde_json::{json, Value};

/// Submits `file` with the CLI and returns the id.
fn submit(url: &str, file: &str) -> String {
    cli_exit(url, &["submit", &example(file)], 0)
        .stdout
        .trim()
        .to_owned()
}

/// Completes every task of the workflow with `"<name> done"`.
fn complete_all(url: &str, id: &str) {
    runtime().block_on(async {
        let q = queue(url).await;
        let info = drive(&q, id, |ctx| {
            Act::Complete(llm_result(&format!("{} done", ctx.name)))
        })
        .await;
        assert_eq!(info.status, "completed");
    });
}

/// Runs the CLI with `args` and asserts that it exits with `code`.
#[track_caller]
fn cli_exit(url: &str, args: &[&str], code: i32) -> Out {
    let out = cli(url, args);
    assert_eq!(out.code, code, "{out:?}");
    out
}

/// Asserts that `text` (a command's stdout or stderr) contains `needle`, showing all of it when
/// it does not.
#[track_caller]
fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{text}");
}

/// A progress line without its leading bar (`[######··············] `); asserts the bar is
/// there and well formed.
/// A progress line without its bar and without the time since the workflow began (which
/// varies run to run): `[1/3] +19ms A completed` → `[1/3] A completed`.
fn plain(line: &str) -> String {
    let barred = line.starts_with('[')
        && line
            .split_once("] ")
            .is_some_and(|(bar, _)| bar[1..].chars().all(|c| c == '#' || c == '·'));
    if !barred {
        return line.to_owned();
    }
    let rest = unbar(line);
    match rest.split_once("] +") {
        Some((count, timed)) => match timed.split_once(' ') {
            Some((_, text)) => format!("{count}] {text}"),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    }
}

fn unbar(line: &str) -> &str {
    let (bar, rest) = line
        .split_once("] ")
        .unwrap_or_else(|| panic!("no progress bar: {line:?}"));
    assert!(
        bar.starts_with('[') && bar[1..].chars().all(|c| c == '#' || c == '·'),
        "no progress bar: {line:?}"
    );
    rest
}

#[test]
fn status_results_list_and_cancel_of_a_completed_workflow() {
    let redis = start_redis();
    let url = redis.url();
    let id = submit(&url, "analysis.yaml");
    complete_all(&url, &id);

    // status, for people
    let out = cli_exit(&url, &["status", &id], 0);
    assert_has(&out.stdout, &format!("Workflow {id}  Text analysis"));
    assert_has(&out.stdout, "status    completed (policy fail_fast)");
    assert_has(&out.stdout, "progress  3/3 done: 3 completed, 0 failed");
    assert_has(&out.stdout, "finished  ");
    for name in ["Extract key points", "Summarize", "Title"] {
        let row = out.stdout.lines().find(|l| l.contains(name)).unwrap();
        assert!(
            row.contains("completed") && row.contains("1/3") && row.contains("llm:smollm2"),
            "{row}"
        );
    }

    // status --json
    let doc = cli(&url, &["--json", "status", &id]).json();
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["status"], "completed");
    assert_eq!(
        (
            doc["total"].as_u64(),
            doc["open"].as_u64(),
            doc["completed"].as_u64()
        ),
        (Some(3), Some(0), Some(3))
    );
    assert!(doc["finished_ms"].as_u64().unwrap() >= doc["created_ms"].as_u64().unwrap());
    let tasks = doc["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[1]["name"], "Summarize");
    assert_eq!(tasks[1]["status"], "completed");
    assert_eq!(tasks[1]["attempts"], 0);
    assert_eq!(tasks[1]["max_attempts"], 3);
    assert_eq!(tasks[1]["error"], Value::Null);

    // results, for people: text as is, with meta
    let out = cli_exit(&url, &["results", &id], 0);
    assert_has(&out.stdout, "=== Summarize (completed) — model smollm2 · 15 tokens (10 prompt + 5 completion) · 1.5s\nSummarize done\n");
    // results --json
    let out = cli_exit(&url, &["--json", "results", &id], 0);
    let doc = out.json();
    assert_eq!(
        doc["Title"],
        json!({
            "status": "completed",
            "result": "Title done",
            "error": null,
            "meta": {"model": "smollm2", "prompt_tokens": 10, "completion_tokens": 5, "duration_ms": 1500},
            "reason": null
        })
    );
    // Tasks appear in workflow order.
    let order: Vec<usize> = ["Extract key points", "Summarize", "Title"]
        .iter()
        .map(|n| out.stdout.find(&format!("\"{n}\"")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", out.stdout);

    // list, for people and JSON; newest first
    let second = submit(&url, "fanout.yaml");
    let out = cli_exit(&url, &["list"], 0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with("ID") && lines[0].contains("PROGRESS"));
    assert!(
        lines[1].starts_with(&second)
            && lines[1].contains("Fan-out review")
            && lines[1].contains("running")
            && lines[1].contains("0/6"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(&id) && lines[2].contains("completed") && lines[2].contains("3/3"),
        "{}",
        lines[2]
    );
    let doc = cli(&url, &["--json", "list", "--limit", "1"]).json();
    let listed = doc.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], second.as_str());
    assert_eq!(listed[0]["total"], 6);

    // cancel of a finished workflow says so and changes nothing
    let out = cli_exit(&url, &["cancel", &id], 0);
    assert_has(&out.stdout, "already finished (completed)");
    let doc = cli(&url, &["--json", "cancel", &id]).json();
    assert_eq!(
        doc,
        json!({"id": id, "outcome": "already_finished", "status": "completed"})
    );
}

#[test]
fn cancel_a_running_workflow() {
    let redis = start_redis();
    let url = redis.url();
    let id = submit(&url, "fanout.yaml");
    let out = cli_exit(&url, &["cancel", &id], 0);
    assert_eq!(out.stdout, format!("cancelled workflow {id}\n"));
    let doc = cli(&url, &["--json", "status", &id]).json();
    assert_eq!(doc["status"], "cancelled");
    assert_eq!(doc["cancelled"], 6);
    assert!(doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "cancelled"));
    // A cancelled workflow's results exit 4.
    let out = cli_exit(&url, &["results", &id], 4);
    assert_has(&out.stdout, "=== Outline (cancelled)");
    let id2 = submit(&url, "analysis.yaml");
    let doc = cli(&url, &["--json", "cancel", &id2]).json();
    assert_eq!(
        doc,
        json!({"id": id2, "outcome": "cancelled", "status": "cancelled"})
    );
}

#[test]
fn unknown_workflows_exit_5() {
    let redis = start_redis();
    let url = redis.url();
    let missing = "0190b8e4-0000-7000-8000-000000000000";
    for cmd in ["status", "results", "cancel"] {
        let out = cli(&url, &[cmd, missing]);
        assert_eq!(out.code, 5, "{cmd}: {out:?}");
        assert_has(&out.stderr, &format!("workflow {missing} not found"));
        let doc = cli(&url, &["--json", cmd, missing]).json();
        assert_eq!(doc["error"]["kind"], "not_found");
        assert_eq!(doc["error"]["exit_code"], 5);
    }
    let out = cli_exit(&url, &["list"], 0);
    assert_eq!(out.stdout, "no workflows\n");
    assert_eq!(cli(&url, &["--json", "list"]).json(), json!([]));
}

#[test]
fn failed_workflow_results_show_the_reason_and_exit_4() {
    let redis = start_redis();
    let url = redis.url();
    let id = submit(&url, "analysis.yaml");
    runtime().block_on(async {
        let q = queue(&url).await;
        let info = drive(&q, &id, |ctx| match ctx.name.as_str() {
            "Summarize" => Act::Fail {
                error: json!({"kind": "permanent", "message": "model refused the prompt"}),
                retry: false,
            },
            _ => Act::Complete(llm_result("fine")),
        })
        .await;
        assert_eq!(info.status, "failed");
    });
    let out = cli_exit(&url, &["results", &id], 4);
    assert_has(&out.stdout, "=== Extract key points (completed)");
    assert_has(
        &out.stdout,
        "=== Summarize (failed)\nerror: permanent: model refused the prompt\n",
    );
    assert_has(&out.stdout, "=== Title (cancelled)");
    let out = cli_exit(&url, &["--json", "results", &id], 4);
    let doc = out.json();
    assert_eq!(doc["Summarize"]["status"], "failed");
    assert_eq!(doc["Summarize"]["result"], Value::Null);
    assert_eq!(
        doc["Summarize"]["error"]["message"],
        "model refused the prompt"
    );
    let status = cli(&url, &["status", &id]);
    assert_eq!(status.code, 0, "status reports, it does not judge");
    let row = status
        .stdout
        .lines()
        .find(|l| l.contains("Summarize"))
        .unwrap();
    assert!(
        row.contains("failed")
            && row.contains("1/3")
            && row.ends_with("permanent: model refused the prompt"),
        "{row}"
    );
}

/// A `submit --wait` under way: the process, and its output read so far.
struct Waiting {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: BufReader<std::process::ChildStderr>,
    /// The stderr lines read before the test went on.
    stderr_seen: String,
}

/// Starts `submit --wait` and returns it with the id it printed first, once it has looked
/// at the workflow (its "waiting for workflow" line), so a test that drives the workflow
/// from then on is sure the wait saw it unfinished.
fn spawn_wait(url: &str, file: &str, extra: &[&str]) -> (Waiting, String) {
    let mut child = command(url)
        .args(["submit", &example(file), "--wait"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut stderr_seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        stderr_seen.push_str(&line);
        if line.starts_with("waiting for workflow") {
            break;
        }
    }
    let waiting = Waiting {
        child,
        stdout,
        stderr,
        stderr_seen,
    };
    (waiting, first.trim().to_owned())
}

fn finish(w: Waiting) -> Out {
    let Waiting {
        mut child,
        mut stdout,
        mut stderr,
        stderr_seen,
    } = w;
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut tail = String::new();
    stderr.read_to_string(&mut tail).unwrap();
    let status = child.wait().unwrap();
    Out {
        code: status.code().unwrap(),
        stdout: rest,
        stderr: stderr_seen + &tail,
    }
}

#[test]
fn wait_follows_progress_and_exits_0_when_completed() {
    let redis = start_redis();
    let url = redis.url();
    let (waiting, id) = spawn_wait(&url, "analysis.yaml", &[]);
    uuid::Uuid::parse_str(&id).unwrap();
    let mut failed_once = false;
    runtime().block_on(async {
        let q = queue(&url).await;
        drive(&q, &id, |ctx| {
            if ctx.name == "Summarize" && !failed_once {
                failed_once = true;
                return Act::Fail {
                    error: json!({"kind": "retryable", "message": "connection refused"}),
                    retry: true,
                };
            }
            Act::Complete(llm_result(&format!("{} text", ctx.name)))
        })
        .await;
    });
    let out = finish(waiting);
    assert_eq!(out.code, 0, "{out:?}");
    // The driver plays the worker without registering one, which the wait says once.
    assert!(
        out.stderr.contains("note: no live worker in namespace"),
        "{}",
        out.stderr
    );
    let progress: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with("note: "))
        .collect();
    assert!(
        progress[0].starts_with(&format!("waiting for workflow {id}")),
        "{}",
        out.stderr
    );
    // One line per change of state: each start, each end, the failed attempt and the retry.
    let expected_prefixes = [
        "[0/3] Extract key points running",
        "[1/3] Extract key points completed in ",
        "[1/3] Summarize running",
        "[1/3] Summarize failed (attempt 1/3), will retry: connection refused",
        "[1/3] Summarize running (attempt 2/3)",
        "[2/3] Summarize completed in ",
        "[2/3] Title running",
        "[3/3] Title completed in ",
        "workflow completed in ",
    ];
    assert_eq!(
        progress.len(),
        expected_prefixes.len() + 1,
        "{}",
        out.stderr
    );
    for (line, prefix) in progress[1..].iter().zip(expected_prefixes) {
        assert!(
            plain(line).starts_with(prefix),
            "{line:?} should start with {prefix:?}\n{}",
            out.stderr
        );
    }
    assert_has(&out.stdout, "=== Title (completed) — model smollm2");
    assert_has(&out.stdout, "\nTitle text\n");
}

/// A workflow that had ended before `--wait` looked (here an idempotent resubmission of a
/// completed one) still shows its history, then its results.
#[test]
fn wait_on_a_workflow_that_already_ended_replays_its_progress() {
    let redis = start_redis();
    let url = redis.url();
    let args = [
        "submit",
        &example("analysis.yaml"),
        "--idempotency-key",
        "k1",
    ];
    let id = cli_exit(&url, &args, 0).stdout.trim().to_owned();
    complete_all(&url, &id);
    let mut again = args.to_vec();
    again.push("--wait");
    let out = cli_exit(&url, &again, 0);
    let lines: Vec<String> = out.stderr.lines().map(plain).collect();
    for prefix in [
        "[1/3] Extract key points completed in ",
        "[3/3] Title completed in ",
        "workflow completed in ",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(prefix)),
            "no line starts with {prefix:?}:\n{}",
            out.stderr
        );
    }
    assert_has(&out.stdout, "\nTitle done\n");
}

#[test]
fn a_task_waiting_for_the_same_reason_is_one_line_and_uses_no_attempt() {
    let redis = start_redis();
    let url = redis.url();
    let (waiting, id) = spawn_wait(&url, "analysis.yaml", &[]);
    let mut deferrals = 0;
    runtime().block_on(async {
        let q = queue(&url).await;
        drive(&q, &id, |ctx| {
            if ctx.name == "Summarize" && deferrals < 4 {
                deferrals += 1;
                return Act::Defer {
                    error: json!({"kind": "retryable", "message": "ep0: connection refused"}),
                };
            }
            Act::Complete(llm_result(&format!("{} text", ctx.name)))
        })
        .await;
    });
    let out = finish(waiting);
    assert_eq!(out.code, 0, "{out:?}");
    let waits: Vec<String> = out
        .stderr
        .lines()
        .filter(|l| l.contains("Summarize waits"))
        .map(plain)
        .collect();
    assert_eq!(
        waits,
        vec!["[1/3] Summarize waits (no attempt used): ep0: connection refused"],
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("failed (attempt"), "{}", out.stderr);
}

#[test]
fn wait_exits_4_when_a_task_fails() {
    let redis = start_redis();
    let url = redis.url();
    let (waiting, id) = spawn_wait(&url, "analysis.yaml", &[]);
    runtime().block_on(async {
        let q = queue(&url).await;
        drive(&q, &id, |ctx| match ctx.name.as_str() {
            "Extract key points" => Act::Fail {
                error: json!({"kind": "permanent", "message": "bad request"}),
                retry: false,
            },
            _ => Act::Complete(llm_result("never")),
        })
        .await;
    });
    let out = finish(waiting);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.lines().any(|l| plain(l)
            == "[1/3] Extract key points failed after 1 attempt: permanent: bad request"),
        "{}",
        out.stderr
    );
    assert_has(&out.stderr, "Summarize cancelled");
    assert!(
        out.stderr
            .lines()
            .last()
            .map(unbar)
            .unwrap()
            .starts_with("workflow failed"),
        "{}",
        out.stderr
    );
    assert_has(
        &out.stdout,
        "=== Extract key points (failed)\nerror: permanent: bad request\n",
    );
}

#[test]
fn wait_json_gives_one_document_with_results() {
    let redis = start_redis();
    let url = redis.url();
    let mut child = command(&url)
        .args([
            "--json",
            "submit",
            &example("pipeline.yaml"),
            "--wait",
            "--idempotency-key",
            "p1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // In JSON mode the id only comes at the end; find the workflow through the index.
    let id = runtime().block_on(async {
        let q = queue(&url).await;
        let mut consumer = q.consumer("finder").unwrap();
        let streams = q.keys().stream_refs("ext:Python Tasks");
        let ready = consumer
            .read(&streams, 1, std::time::Duration::from_secs(30))
            .await
            .unwrap();
        let id = ready[0].workflow_id.clone();
        // Hand the entry back by completing it as the finder consumer.
        let gleitzeit_queue::BeginOutcome::Run(_) =
            q.begin(&ready[0], consumer.name(), now_ms()).await.unwrap()
        else {
            panic!("root task not runnable")
        };
        q.complete(
            &ready[0],
            consumer.name(),
            &json!({"value": {"sum": 31}}).to_string(),
            now_ms(),
        )
        .await
        .unwrap();
        drive(&q, &id, |_| Act::Complete(llm_result("explained"))).await;
        id
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}\n{stdout}\n{stderr}");
    // Progress still goes to stderr; stdout holds only the document.
    assert!(
        stderr
            .lines()
            .any(|l| plain(l).starts_with("[2/2] Explain completed")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .last()
            .map(unbar)
            .unwrap()
            .starts_with("workflow completed"),
        "{stderr}"
    );
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["status"], "completed");
    assert_eq!(doc["existing"], false);
    assert_eq!(doc["timed_out"], false);
    assert_eq!(doc["results"]["Process"]["result"], json!({"sum": 31}));
    assert_eq!(doc["results"]["Process"]["meta"], Value::Null);
    assert_eq!(doc["results"]["Explain"]["result"], "explained");

    // Waiting again on the finished workflow (same key) returns at once with the same answer.
    let again = cli(
        &url,
        &[
            "--json",
            "submit",
            &example("pipeline.yaml"),
            "--wait",
            "--idempotency-key",
            "p1",
        ],
    );
    assert_eq!(again.code, 0, "{again:?}");
    let doc2 = again.json();
    assert_eq!(doc2["id"], id.as_str());
    assert_eq!(doc2["existing"], true);
    assert_eq!(doc2["results"], doc["results"]);
}

#[test]
fn wait_timeout_exits_7_and_leaves_the_workflow_running() {
    let redis = start_redis();
    let url = redis.url();
    // No worker: the workflow cannot finish within the timeout.
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
    let id = out.stdout.lines().next().unwrap().to_owned();
    assert_has(&out.stderr, "timed out after 1.0s");
    assert_has(&out.stderr, "still running");
    assert_has(&out.stdout, "=== Extract key points (ready)");
    let doc = cli(&url, &["--json", "status", &id]).json();
    assert_eq!(doc["status"], "running");

    let out = cli(
        &url,
        &[
            "--json",
            "submit",
            &example("analysis.yaml"),
            "--wait",
            "--timeout",
            "500ms",
        ],
    );
    assert_eq!(out.code, 7, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["timed_out"], true);
    assert_eq!(doc["status"], "running");
    assert_eq!(doc["results"]["Title"]["status"], "waiting");
}
