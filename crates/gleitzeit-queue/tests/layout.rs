//! Workflows written in the earlier layouts still in flight when the fleet moves to this
//! version: one hash per task (`{ns}:wf:<wf>:t:<i>`, no `layout` field) and one field of the
//! workflow hash per task field (`layout` = `fields`). The scripts of this version finish them
//! exactly as they would their own (the packed layout), and the queries read them.
//!
//! The earlier versions' own scripts write them: `fixtures/task-hashes/` and
//! `fixtures/fields/` hold each version's `lib.lua`, `submit.lua` and `read.lua` as they
//! were, run here with EVAL (the helpers, then `use_prefix`, then the script's body, as that
//! version's function library ran them).

mod common;

use common::*;
use deadpool_redis::redis;
use gleitzeit_queue::{BeginOutcome, Consumer, Delivery, Priority, ScriptCode, SubmitRequest};

const GROUP: &str = "workers";

/// An earlier version, by the layout its submitter wrote.
#[derive(Debug, Clone, Copy)]
enum Old {
    /// One hash per task.
    TaskHashes,
    /// One workflow-hash field per task field (the state packed), `layout` = `fields`.
    Fields,
}

impl Old {
    fn lib(self) -> &'static str {
        match self {
            Old::TaskHashes => include_str!("fixtures/task-hashes/lib.lua"),
            Old::Fields => include_str!("fixtures/fields/lib.lua"),
        }
    }

    /// The version's script `body` as its function library ran it.
    fn script(self, body: &str) -> String {
        as_library_runs(self.lib(), body)
    }

    fn submit(self) -> String {
        self.script(match self {
            Old::TaskHashes => include_str!("fixtures/task-hashes/submit.lua"),
            Old::Fields => include_str!("fixtures/fields/submit.lua"),
        })
    }

    fn read(self) -> String {
        self.script(match self {
            Old::TaskHashes => include_str!("fixtures/task-hashes/read.lua"),
            Old::Fields => include_str!("fixtures/fields/read.lua"),
        })
    }

    /// Task `i`'s field `field` where this version keeps it.
    async fn field(self, env: &Env, id: &str, i: u32, field: &str) -> Option<String> {
        match self {
            Old::TaskHashes => env.hget(&env.queue.keys().task(id, i), field).await,
            Old::Fields => env.task_field(id, i, field).await,
        }
    }

    async fn status(self, env: &Env, id: &str, i: u32) -> Option<String> {
        self.field(env, id, i, "status").await
    }
}

/// A script `body` with the helpers `lib` as a function library runs it: the helpers, then
/// `use_prefix`, then the body.
fn as_library_runs(lib: &str, body: &str) -> String {
    format!("{lib}\nuse_prefix(ARGV[1])\n{body}")
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Submits `req` with the earlier version's submit.lua and its arguments (ten per task).
async fn submit_old(env: &Env, old: Old, req: &SubmitRequest) -> String {
    let k = env.queue.keys();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(old.submit())
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
    if let Old::Fields = old {
        cmd.arg("fields");
    }
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
async fn read_begin_old(env: &Env, old: Old, consumer: &str) -> Vec<Delivery> {
    let k = env.queue.keys();
    let stream = k.stream(CAP, Priority::Normal);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(old.read())
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

/// The root starts under `old` and ends under this version; the rest runs under this
/// version to the workflow's end, as it would for a workflow of its own.
async fn runs_to_its_end_under_this_version(old: Old) {
    let env = env().await;
    // Not watched, so that only the layout keeps its completions from being grouped.
    let mut req = small("fail_fast");
    req.watch = false;
    let id = submit_old(&env, old, &req).await;
    assert_eq!(old.status(&env, &id, 0).await.as_deref(), Some("ready"));
    assert_eq!(old.status(&env, &id, 3).await.as_deref(), Some("waiting"));

    let begun = read_begin_old(&env, old, "w1").await;
    assert_eq!(begun.len(), 1);
    assert_eq!(old.status(&env, &id, 0).await.as_deref(), Some("running"));
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
    // Released where the version keeps its tasks; nothing written in another layout.
    assert_eq!(old.status(&env, &id, 1).await.as_deref(), Some("ready"));
    assert_eq!(
        old.field(&env, &id, 3, "pending").await.as_deref(),
        Some("2")
    );
    assert_eq!(env.wf_field(&id, "1.d").await, None);
    if let Old::TaskHashes = old {
        assert_eq!(env.wf_field(&id, "1.s").await, None);
    }

    // The rest runs under this version; the join gets its references' names and results.
    // A and B complete together: one call (complete_many.lua), which completes each of a
    // workflow of this layout as complete.lua does.
    let mut c = env.consumer("w1").await;
    let ds = env.read_all(&mut c, CAP).await;
    assert_eq!(ds.len(), 2);
    for d in &ds {
        begin_ok(&env, d, "w1").await;
    }
    env.reset_stats().await;
    let queue = &env.queue;
    let codes = futures::future::join_all(ds.iter().map(|d| {
        let result = format!(r#""result of {}""#, d.task);
        async move { queue.complete(d, "w1", &result, NOW).await.unwrap() }
    }))
    .await;
    assert_eq!(codes, [ScriptCode::Ok, ScriptCode::Ok]);
    let (calls, stats) = env.command_calls().await;
    assert_eq!(calls.get("fcall"), Some(&1), "{stats}");
    assert_eq!(old.status(&env, &id, 3).await.as_deref(), Some("ready"));
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

    // The workflow ended once, and everything it owns got the retention.
    assert_eq!(
        env.wf_field(&id, "status").await.as_deref(),
        Some("completed")
    );
    assert_eq!(env.counters(&id).await, (0, 4, 0, 0, 0));
    let ttl: i64 = env.cmd(&["TTL", &env.queue.keys().workflow(&id)]).await;
    assert!(ttl > 0, "the workflow hash has a TTL after the end: {ttl}");
    if let Old::TaskHashes = old {
        for i in 0..4 {
            let ttl: i64 = env.cmd(&["TTL", &env.queue.keys().task(&id, i)]).await;
            assert!(ttl > 0, "task {i} hash has a TTL after the end: {ttl}");
        }
    }
    // The queries read the version's layout.
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
async fn a_workflow_of_task_hashes_runs_to_its_end_under_this_version() {
    runs_to_its_end_under_this_version(Old::TaskHashes).await;
}

#[tokio::test]
async fn a_workflow_of_the_fields_layout_runs_to_its_end_under_this_version() {
    runs_to_its_end_under_this_version(Old::Fields).await;
}

/// A failure with a retry (delayed, promoted, run again), then for good under fail_fast,
/// then a cancellation: each where `old` keeps its tasks.
async fn retries_fails_and_cancels_under_this_version(old: Old) {
    let env = env().await;
    let id = submit_old(&env, old, &small("fail_fast")).await;
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
    assert_eq!(old.status(&env, &id, 0).await.as_deref(), Some("retrying"));
    assert_eq!(env.queue.promote(NOW + 10, 100).await.unwrap().moved, 1);
    assert_eq!(old.status(&env, &id, 0).await.as_deref(), Some("ready"));
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
    assert_eq!(old.status(&env, &id, 0).await.as_deref(), Some("failed"));
    assert_eq!(
        old.field(&env, &id, 0, "attempts").await.as_deref(),
        Some("2")
    );
    for i in 1..4 {
        assert_eq!(old.status(&env, &id, i).await.as_deref(), Some("cancelled"));
    }
    assert_eq!(env.wf_field(&id, "status").await.as_deref(), Some("failed"));
    assert_eq!(env.wf_field(&id, "1.d").await, None);

    // Cancelling a running workflow closes every task where the version keeps it.
    let id = submit_old(&env, old, &small("continue")).await;
    assert_eq!(env.queue.cancel(&id, NOW).await.unwrap(), ScriptCode::Ok);
    for i in 0..4 {
        assert_eq!(old.status(&env, &id, i).await.as_deref(), Some("cancelled"));
    }
    assert_eq!(
        env.wf_field(&id, "status").await.as_deref(),
        Some("cancelled")
    );
}

#[tokio::test]
async fn a_workflow_of_task_hashes_retries_fails_and_cancels_under_this_version() {
    retries_fails_and_cancels_under_this_version(Old::TaskHashes).await;
}

#[tokio::test]
async fn a_workflow_of_the_fields_layout_retries_fails_and_cancels_under_this_version() {
    retries_fails_and_cancels_under_this_version(Old::Fields).await;
}

#[tokio::test]
async fn all_layouts_run_side_by_side_on_one_stream() {
    let env = env().await;
    let hashes = submit_old(&env, Old::TaskHashes, &small("fail_fast")).await;
    let fields = submit_old(&env, Old::Fields, &small("fail_fast")).await;
    let new = env.submit(&small("fail_fast")).await;
    // This version writes the packed layout: a task's definition, children and state are
    // one field each, its capability and priority fields of their own; a leaf has no
    // children field; no task hash.
    assert_eq!(
        env.wf_field(&new, "layout").await.as_deref(),
        Some("packed")
    );
    for f in ["0.d", "0.k", "0.s", "0.cap", "0.prio", "3.d", "3.s"] {
        assert!(env.wf_field(&new, f).await.is_some(), "{f} written");
    }
    for f in ["0.name", "0.spec", "0.children", "0.refs", "3.k"] {
        assert_eq!(env.wf_field(&new, f).await, None, "{f} not written");
    }
    assert_eq!(env.status(&new, 0).await, "ready");
    assert_eq!(
        env.task_field(&new, 3, "refs").await.as_deref(),
        Some("1,2")
    );
    assert_eq!(
        env.task_field(&new, 0, "children").await.as_deref(),
        Some("1,2")
    );
    assert_eq!(
        env.task_field(&new, 3, "children").await.as_deref(),
        Some("")
    );
    let exists: i64 = env.cmd(&["EXISTS", &env.queue.keys().task(&new, 0)]).await;
    assert_eq!(exists, 0);

    let mut c = env.consumer("w1").await;
    assert_eq!(run_rest(&env, &mut c).await, 12);
    let view = |ts: Vec<gleitzeit_queue::TaskInfo>| {
        ts.into_iter()
            .map(|t| (t.name, t.status, t.result_json, t.max_attempts))
            .collect::<Vec<_>>()
    };
    let expected = view(env.queue.tasks(&new).await.unwrap());
    assert_eq!(expected.len(), 4);
    for id in [&hashes, &fields, &new] {
        assert_eq!(
            env.wf_field(id, "status").await.as_deref(),
            Some("completed")
        );
        assert_eq!(env.counters(id).await, (0, 4, 0, 0, 0));
        assert_eq!(view(env.queue.tasks(id).await.unwrap()), expected, "{id}");
    }
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
    let state = env.wf_field(id, "0.s").await.is_some();
    let definition = env.wf_field(id, "0.d").await.is_some();
    let exists: i64 = env.cmd(&["EXISTS", &env.queue.keys().task(id, 0)]).await;
    match (state, definition, exists == 1) {
        (true, true, false) => "packed",
        (true, false, false) => "fields",
        (false, false, true) => "task hashes",
        other => panic!("workflow {id} in no layout or several: {other:?}"),
    }
}

#[tokio::test]
async fn a_submitter_writes_the_newest_layout_every_live_worker_runs() {
    let env = env().await;
    let ttl = std::time::Duration::from_secs(3600);
    // A rolling upgrade over two versions: a worker of each. Requests are stamped NOW
    // (common.rs), which the submitter takes as now when it asks the registry: all records
    // are live.
    for (id, layouts) in [
        ("old-1", &[][..]),
        ("mid-1", &["fields"][..]),
        ("new-1", &["packed", "fields"][..]),
    ] {
        env.queue
            .publish_worker(&worker(id, layouts), ttl)
            .await
            .unwrap();
    }
    // The oldest version's record has no `layouts` field at all.
    let _: i64 = env
        .cmd(&["HDEL", &env.queue.keys().worker("old-1"), "layouts"])
        .await;
    let first = env.submit(&small("fail_fast")).await;
    assert_eq!(layout_of(&env, &first).await, "task hashes");
    assert_eq!(env.wf_field(&first, "layout").await, None);

    // The oldest version's worker leaves (its drain removes its record): the fields layout.
    env.queue.remove_worker("old-1").await.unwrap();
    let second = env.submit(&small("fail_fast")).await;
    assert_eq!(layout_of(&env, &second).await, "fields");

    // Then the middle one: the packed layout, and the handle stops asking — a worker of an
    // earlier version that joins now is not seen (docs/operations.md: roll back by
    // draining first).
    env.queue.remove_worker("mid-1").await.unwrap();
    let third = env.submit(&small("fail_fast")).await;
    assert_eq!(layout_of(&env, &third).await, "packed");
    env.queue
        .publish_worker(&worker("old-2", &[]), ttl)
        .await
        .unwrap();
    let fourth = env.submit(&small("fail_fast")).await;
    assert_eq!(layout_of(&env, &fourth).await, "packed");

    // All run to their end under this version.
    let mut c = env.consumer("w1").await;
    assert_eq!(run_rest(&env, &mut c).await, 16);
    for id in [&first, &second, &third, &fourth] {
        assert_eq!(
            env.wf_field(id, "status").await.as_deref(),
            Some("completed")
        );
    }
}

/// Runs `body` with this version's helpers (lib.lua) on workflow `id` (KEYS[1] its hash,
/// ARGV[2] its id).
async fn with_helpers(env: &Env, id: &str, body: &str) -> redis::RedisResult<redis::Value> {
    let k = env.queue.keys();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(as_library_runs(include_str!("../../../lua/lib.lua"), body))
        .arg(1)
        .arg(k.workflow(id))
        .arg(k.prefix())
        .arg(id);
    let mut raw = env.raw.clone();
    cmd.query_async(&mut raw).await
}

/// A packed definition is written once, at submission: the helpers refuse to set, delete
/// or count up a field of it (an error naming the field, nothing written), while the same
/// helpers change the task's state and its other fields as before.
#[tokio::test]
async fn the_helpers_refuse_to_change_a_packed_definition() {
    let env = env().await;
    let id = env.submit(&small("fail_fast")).await;
    assert_eq!(layout_of(&env, &id).await, "packed");
    let wk = env.queue.keys().workflow(&id);
    let before: Vec<(String, String)> = env.cmd(&["HGETALL", &wk]).await;

    for (call, field) in [
        ("t_set(ARGV[2], '1', 'spec', 'changed')", "spec"),
        (
            "t_set(ARGV[2], '1', 'status', 'ready', 'name', 'x')",
            "name",
        ),
        ("t_del(ARGV[2], '1', 'refs')", "refs"),
        ("t_del(ARGV[2], '1', 'children')", "children"),
        ("t_incr(ARGV[2], '1', 'max_attempts', '1')", "max_attempts"),
    ] {
        let err = with_helpers(&env, &id, call).await.expect_err(call);
        assert!(
            err.to_string().contains(&format!(
                "task field {field} is part of the packed definition"
            )),
            "{call}: {err}"
        );
    }
    let after: Vec<(String, String)> = env.cmd(&["HGETALL", &wk]).await;
    assert_eq!(after, before, "nothing written");

    // The state and the fields outside the definition still change through them.
    let n = with_helpers(
        &env,
        &id,
        "t_set(ARGV[2], '1', 'status', 'cancelled', 'reason', 'r'); \
         return t_incr(ARGV[2], '1', 'deferrals', '2')",
    )
    .await
    .unwrap();
    assert_eq!(n, redis::Value::Int(2));
    assert_eq!(
        env.task_field(&id, 1, "status").await.as_deref(),
        Some("cancelled")
    );
    assert_eq!(env.task_field(&id, 1, "reason").await.as_deref(), Some("r"));
    assert_eq!(
        env.task_field(&id, 1, "name").await.as_deref(),
        Some("A"),
        "the definition is as submitted"
    );
}
