//! Workflows written in the earlier layout (one hash per task, `{ns}:wf:<wf>:t:<i>`) still
//! in flight when the fleet moves to this version: the scripts of this version finish them
//! exactly as they would their own, and the queries read them.
//!
//! The earlier version's own scripts write them: `fixtures/task-hashes/` holds its
//! `lib.lua`, `submit.lua` and `read.lua` as they were, run here with EVAL (the helpers, then
//! `use_prefix`, then the script's body, as that version's function library ran them).

mod common;

use common::*;
use deadpool_redis::redis;
use gleitzeit_queue::{BeginOutcome, Consumer, Delivery, Priority, ScriptCode, SubmitRequest};

const OLD_LIB: &str = include_str!("fixtures/task-hashes/lib.lua");
const OLD_SUBMIT: &str = include_str!("fixtures/task-hashes/submit.lua");
const OLD_READ: &str = include_str!("fixtures/task-hashes/read.lua");
const GROUP: &str = "workers";

fn old_script(body: &str) -> String {
    format!("{OLD_LIB}\nuse_prefix(ARGV[1])\n{body}")
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Submits `req` with the earlier version's submit.lua and its arguments (ten per task).
async fn submit_old(env: &Env, req: &SubmitRequest) -> String {
    let k = env.queue.keys();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(old_script(OLD_SUBMIT))
        .arg(1)
        .arg(k.workflow(&req.workflow_id))
        .arg(k.prefix())
        .arg(GROUP)
        .arg(&req.workflow_id)
        .arg(&req.name)
        .arg(req.idempotency_key.as_deref().unwrap_or(""))
        .arg(&req.digest)
        .arg(&req.policy)
        .arg(&req.input_json)
        .arg(req.now_ms)
        .arg(3600)
        .arg(1000)
        .arg(req.tasks.len())
        .arg(if req.watch { "1" } else { "" });
    for t in &req.tasks {
        cmd.arg(&t.name)
            .arg(&t.capability)
            .arg(t.priority.as_str())
            .arg(&t.spec_json)
            .arg(t.dependencies.len())
            .arg(join(&t.children))
            .arg(join(&t.refs))
            .arg(t.max_attempts)
            .arg(t.on_failure.as_deref().unwrap_or(""))
            .arg(0);
    }
    let mut raw = env.raw.clone();
    let (code, id): (i64, String) = cmd.query_async(&mut raw).await.expect("old submit");
    assert_eq!(code, 1, "old submit.lua: OK");
    id
}

/// Reads and begins what is ready on [`CAP`] with the earlier version's read.lua, as
/// `consumer`: deliveries of tasks that now run under the earlier version.
async fn read_begin_old(env: &Env, consumer: &str) -> Vec<Delivery> {
    let k = env.queue.keys();
    let stream = k.stream(CAP, Priority::Normal);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(old_script(OLD_READ))
        .arg(1)
        .arg(&stream)
        .arg(k.prefix())
        .arg(GROUP)
        .arg(consumer)
        .arg(100)
        .arg(NOW)
        .arg(1000)
        .arg("group");
    let mut raw = env.raw.clone();
    let (entries, _tails): (Vec<redis::Value>, Vec<String>) =
        cmd.query_async(&mut raw).await.expect("old read");
    let mut out = Vec::new();
    for e in entries.chunks(5) {
        let text = |v: &redis::Value| -> String { redis::from_redis_value_ref(v).unwrap() };
        let begun: Vec<redis::Value> = redis::from_redis_value_ref(&e[4]).unwrap();
        let code: i64 = redis::from_redis_value_ref(&begun[0]).unwrap();
        assert_eq!(code, 1, "old read.lua began the task");
        out.push(Delivery {
            stream: stream.clone(),
            capability: CAP.into(),
            priority: Priority::Normal,
            entry_id: text(&e[1]),
            workflow_id: text(&e[2]),
            task: text(&e[3]).parse().unwrap(),
            deliveries: 1,
        });
    }
    out
}

/// root → A, B → join, the join referencing A's and B's results.
fn small(policy: &str) -> SubmitRequest {
    let mut join = t("join", &[1, 2]);
    join.refs = &[1, 2];
    request(policy, &[t("root", &[]), t("A", &[0]), t("B", &[0]), join])
}

async fn task_hash_status(env: &Env, id: &str, i: u32) -> Option<String> {
    env.hget(&env.queue.keys().task(id, i), "status").await
}

/// Runs every ready task of [`CAP`] to completion with this version, as `w1`, until none is
/// left; returns how many ran.
async fn run_rest(env: &Env, c: &mut Consumer) -> usize {
    let mut ran = 0;
    loop {
        let ds = env.read_all(c, CAP).await;
        if ds.is_empty() {
            return ran;
        }
        for d in ds {
            let result = format!(r#""result of {}""#, d.task);
            run_ok(env, &d, "w1", &result).await;
            ran += 1;
        }
    }
}

#[tokio::test]
async fn a_workflow_of_task_hashes_runs_to_its_end_under_this_version() {
    let env = env().await;
    let req = small("fail_fast");
    let id = submit_old(&env, &req).await;
    // Written as the earlier version wrote it: task hashes, no `layout` field.
    assert_eq!(
        task_hash_status(&env, &id, 0).await.as_deref(),
        Some("ready")
    );
    assert_eq!(
        task_hash_status(&env, &id, 3).await.as_deref(),
        Some("waiting")
    );
    assert_eq!(env.wf_field(&id, "layout").await, None);

    // The root starts under the earlier version and ends under this one.
    let begun = read_begin_old(&env, "w1").await;
    assert_eq!(begun.len(), 1);
    assert_eq!(
        task_hash_status(&env, &id, 0).await.as_deref(),
        Some("running")
    );
    let d = &begun[0];
    // A stale completion (another consumer) is still fenced out.
    assert_eq!(
        env.queue.complete(d, "w2", "\"x\"", NOW).await.unwrap(),
        ScriptCode::Stale
    );
    assert_eq!(
        env.queue.complete(d, "w1", "\"root\"", NOW).await.unwrap(),
        ScriptCode::Ok
    );
    // Released in the task hashes, nothing moved into the workflow hash.
    assert_eq!(
        task_hash_status(&env, &id, 1).await.as_deref(),
        Some("ready")
    );
    assert_eq!(env.wf_field(&id, "1.s").await, None);
    assert_eq!(
        env.hget(&env.queue.keys().task(&id, 3), "pending")
            .await
            .as_deref(),
        Some("2")
    );

    // The rest runs under this version; the join gets its references' results.
    let mut c = env.consumer("w1").await;
    let ds = env.read_all(&mut c, CAP).await;
    assert_eq!(ds.len(), 2);
    for d in &ds {
        run_ok(&env, d, "w1", &format!(r#""result of {}""#, d.task)).await;
    }
    let ds = env.read_all(&mut c, CAP).await;
    assert_eq!(ds.len(), 1);
    match env.queue.begin(&ds[0], "w1", NOW).await.unwrap() {
        BeginOutcome::Run(ctx) => {
            let names: Vec<&str> = ctx.refs.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["A", "B"]);
            assert_eq!(ctx.refs[0].1, r#""result of 1""#);
        }
        other => panic!("begin join: {other:?}"),
    }
    assert_eq!(
        env.queue
            .complete(&ds[0], "w1", "\"joined\"", NOW)
            .await
            .unwrap(),
        ScriptCode::Ok
    );

    // The workflow ended once, and every task hash got the retention.
    assert_eq!(
        env.wf_field(&id, "status").await.as_deref(),
        Some("completed")
    );
    assert_eq!(env.counters(&id).await, (0, 4, 0, 0, 0));
    for i in 0..4 {
        let ttl: i64 = env.cmd(&["TTL", &env.queue.keys().task(&id, i)]).await;
        assert!(ttl > 0, "task {i} hash has a TTL after the end: {ttl}");
    }
    // The queries read the task hashes.
    let tasks = env.queue.tasks(&id).await.unwrap();
    assert_eq!(tasks.len(), 4);
    assert!(tasks.iter().all(|t| t.status == "completed"));
    assert_eq!(tasks[3].result_json.as_deref(), Some("\"joined\""));
    assert_eq!(
        env.queue.task_spec(&id, 2).await.unwrap().as_deref(),
        Some(r#"{"name":"B"}"#)
    );
    assert_eq!(run_rest(&env, &mut c).await, 0);
}

#[tokio::test]
async fn a_workflow_of_task_hashes_retries_fails_and_cancels_under_this_version() {
    let env = env().await;
    // A failure with a retry: delayed, promoted, run again, all in the task hash.
    let id = submit_old(&env, &small("fail_fast")).await;
    let mut c = env.consumer("w1").await;
    let d = env.read_all(&mut c, CAP).await.remove(0);
    begin_ok(&env, &d, "w1").await;
    assert_eq!(
        env.queue
            .fail(&d, "w1", &failure(Some(NOW + 10), None))
            .await
            .unwrap(),
        ScriptCode::RetryScheduled
    );
    assert_eq!(
        task_hash_status(&env, &id, 0).await.as_deref(),
        Some("retrying")
    );
    assert_eq!(env.queue.promote(NOW + 10, 100).await.unwrap().moved, 1);
    assert_eq!(
        task_hash_status(&env, &id, 0).await.as_deref(),
        Some("ready")
    );
    let d = env.read_all(&mut c, CAP).await.remove(0);
    begin_ok(&env, &d, "w1").await;
    // Now for good: fail_fast cancels what has not started and fails the workflow.
    assert_eq!(
        env.queue
            .fail(&d, "w1", &failure(None, None))
            .await
            .unwrap(),
        ScriptCode::Failed
    );
    assert_eq!(
        task_hash_status(&env, &id, 0).await.as_deref(),
        Some("failed")
    );
    assert_eq!(
        env.hget(&env.queue.keys().task(&id, 0), "attempts")
            .await
            .as_deref(),
        Some("2")
    );
    for i in 1..4 {
        assert_eq!(
            task_hash_status(&env, &id, i).await.as_deref(),
            Some("cancelled")
        );
    }
    assert_eq!(env.wf_field(&id, "status").await.as_deref(), Some("failed"));
    assert_eq!(env.wf_field(&id, "1.s").await, None);

    // Cancelling a running workflow of task hashes closes every task in its hash.
    let id = submit_old(&env, &small("continue")).await;
    assert_eq!(env.queue.cancel(&id, NOW).await.unwrap(), ScriptCode::Ok);
    for i in 0..4 {
        assert_eq!(
            task_hash_status(&env, &id, i).await.as_deref(),
            Some("cancelled")
        );
    }
    assert_eq!(
        env.wf_field(&id, "status").await.as_deref(),
        Some("cancelled")
    );
}

#[tokio::test]
async fn both_layouts_run_side_by_side_on_one_stream() {
    let env = env().await;
    let old = submit_old(&env, &small("fail_fast")).await;
    let new = env.submit(&small("fail_fast")).await;
    // This version writes the fields layout: no task hash.
    assert_eq!(
        env.wf_field(&new, "layout").await.as_deref(),
        Some("fields")
    );
    assert_eq!(env.status(&new, 0).await, "ready");
    let exists: i64 = env.cmd(&["EXISTS", &env.queue.keys().task(&new, 0)]).await;
    assert_eq!(exists, 0);

    let mut c = env.consumer("w1").await;
    assert_eq!(run_rest(&env, &mut c).await, 8);
    for id in [&old, &new] {
        assert_eq!(
            env.wf_field(id, "status").await.as_deref(),
            Some("completed")
        );
        assert_eq!(env.counters(id).await, (0, 4, 0, 0, 0));
    }
    let old_tasks = env.queue.tasks(&old).await.unwrap();
    let new_tasks = env.queue.tasks(&new).await.unwrap();
    let view = |ts: &[gleitzeit_queue::TaskInfo]| {
        ts.iter()
            .map(|t| (t.name.clone(), t.status.clone(), t.result_json.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&old_tasks), view(&new_tasks));
}

/// A worker's registry record as its version writes it: `layouts` empty for a version
/// before the fields layout.
fn worker(id: &str, layouts: &[&str]) -> gleitzeit_queue::WorkerRecord {
    gleitzeit_queue::WorkerRecord {
        id: id.into(),
        state: "running".into(),
        updated_ms: NOW,
        capabilities: vec![CAP.into()],
        layouts: layouts.iter().map(|l| (*l).to_owned()).collect(),
        ..gleitzeit_queue::WorkerRecord::default()
    }
}

async fn layout_of(env: &Env, id: &str) -> &'static str {
    let in_hash = env.wf_field(id, "0.s").await.is_some();
    let exists: i64 = env.cmd(&["EXISTS", &env.queue.keys().task(id, 0)]).await;
    match (in_hash, exists == 1) {
        (true, false) => "fields",
        (false, true) => "task hashes",
        other => panic!("workflow {id} in neither or both layouts: {other:?}"),
    }
}

#[tokio::test]
async fn a_submitter_writes_task_hashes_while_a_worker_of_an_earlier_version_is_live() {
    let env = env().await;
    let ttl = std::time::Duration::from_secs(3600);
    // A rolling upgrade: one worker of each version. Requests are stamped NOW (common.rs),
    // which the submitter takes as now when it asks the registry: both records are live.
    env.queue
        .publish_worker(&worker("old-1", &[]), ttl)
        .await
        .unwrap();
    env.queue
        .publish_worker(&worker("new-1", &["fields"]), ttl)
        .await
        .unwrap();
    let during = env.submit(&small("fail_fast")).await;
    assert_eq!(layout_of(&env, &during).await, "task hashes");
    assert_eq!(env.wf_field(&during, "layout").await, None);

    // The earlier version's worker leaves (its drain removes its record): the fleet runs the
    // fields layout, and so does the next submission.
    env.queue.remove_worker("old-1").await.unwrap();
    let after = env.submit(&small("fail_fast")).await;
    assert_eq!(layout_of(&env, &after).await, "fields");

    // Both run to their end under this version.
    let mut c = env.consumer("w1").await;
    assert_eq!(run_rest(&env, &mut c).await, 8);
    for id in [&during, &after] {
        assert_eq!(
            env.wf_field(id, "status").await.as_deref(),
            Some("completed")
        );
    }
}
