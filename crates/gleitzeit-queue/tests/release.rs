//! Release on completion: exactly once, in dependency order; workflow end, events and
//! retention.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use gleitzeit_queue::{BeginOutcome, Priority, QueueConfig, ScriptCode};

#[tokio::test]
async fn diamond_releases_each_child_once_and_the_join_after_all_four() {
    let (env, id, mut c) = with_workflow(&diamond("fail_fast")).await;

    let roots = env.read_all(&mut c, CAP).await;
    assert_eq!(roots.len(), 1);
    assert_eq!(
        (
            roots[0].workflow_id.as_str(),
            roots[0].task,
            roots[0].deliveries
        ),
        (id.as_str(), 0, 1)
    );
    // Nothing else is ready before the root completes.
    assert!(env.read_all(&mut c, CAP).await.is_empty());
    run_ok(&env, &roots[0], "w1", r#"{"value":"root"}"#).await;

    let middle = env.read_all(&mut c, CAP).await;
    let got: HashSet<u32> = middle.iter().map(|d| d.task).collect();
    assert_eq!(got, HashSet::from([1, 2, 3, 4]));
    assert_eq!(middle.len(), 4, "each child queued exactly once");
    for i in 1..=4 {
        assert_eq!(env.status(&id, i).await, "ready");
    }
    assert_eq!(env.status(&id, 5).await, "waiting");

    // Completing three of the four leaves the join waiting with pending 1.
    for d in &middle[..3] {
        run_ok(&env, d, "w1", r#"{"value":"mid"}"#).await;
        assert!(env.read_all(&mut c, CAP).await.is_empty());
        assert_eq!(env.status(&id, 5).await, "waiting");
    }
    assert_eq!(
        env.task_field(&id, 5, "pending").await.as_deref(),
        Some("1")
    );
    run_ok(&env, &middle[3], "w1", r#"{"value":"mid"}"#).await;

    let join = env.read_all(&mut c, CAP).await;
    assert_eq!(join.len(), 1);
    assert_eq!(join[0].task, 5);
    assert_eq!(
        env.task_field(&id, 5, "pending").await.as_deref(),
        Some("0")
    );
    assert_eq!(
        env.queue.workflow(&id).await.unwrap().unwrap().status,
        "running"
    );
    run_ok(&env, &join[0], "w1", r#"{"value":"done"}"#).await;

    let info = env.queue.workflow(&id).await.unwrap().unwrap();
    assert_eq!(info.status, "completed");
    assert_eq!(info.finished_ms, Some(NOW));
    assert_eq!(env.counters(&id).await, (0, 6, 0, 0, 0));
    // Streams hold only ready and pending entries: everything was acked and deleted.
    let stream = env.queue.keys().stream(CAP, Priority::Normal);
    assert_eq!(env.xlen(&stream).await, 0);
    assert_eq!(env.pending(&stream).await, 0);
    let tasks = env.queue.tasks(&id).await.unwrap();
    assert!(tasks
        .iter()
        .all(|t| t.status == "completed" && t.result_json.is_some()));
}

#[tokio::test]
async fn begin_returns_spec_input_and_referenced_results() {
    let mut req = request("fail_fast", &[t("Summarize", &[]), t("Title", &[0])]);
    req.tasks[1].refs = vec![0];
    let (env, id, mut c) = with_workflow(&req).await;
    let d = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &d, "w1", r#"{"value":"a summary"}"#).await;
    let d = env.read_all(&mut c, CAP).await.remove(0);
    let BeginOutcome::Run(ctx) = env.queue.begin(&d, "w1", NOW + 5).await.unwrap() else {
        panic!("runnable");
    };
    assert_eq!(ctx.name, "Title");
    assert_eq!(ctx.spec_json, r#"{"name":"Title"}"#);
    assert_eq!(ctx.input_json, r#"{"text":"hello"}"#);
    assert_eq!((ctx.attempts, ctx.max_attempts), (0, 3));
    // Released by its dependency's completion at NOW: that is when it became ready.
    assert_eq!((ctx.ready_ms, ctx.deferrals), (Some(NOW), 0));
    assert_eq!(
        ctx.refs,
        vec![(
            "Summarize".to_owned(),
            r#"{"value":"a summary"}"#.to_owned()
        )]
    );
    assert_eq!(env.status(&id, 1).await, "running");
    assert_eq!(
        env.task_field(&id, 1, "started_ms").await,
        Some((NOW + 5).to_string())
    );
    assert_eq!(
        env.task_field(&id, 1, "consumer").await.as_deref(),
        Some("w1")
    );
}

#[tokio::test]
async fn events_follow_every_status_change() {
    let (env, id, mut c) = with_workflow(&request("fail_fast", &[t("A", &[]), t("B", &[0])])).await;
    let a = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &a, "w1", "1").await;
    let b = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &b, "w1", "2").await;

    let events = env.queue.events(&id, "0", Duration::ZERO).await.unwrap();
    let seen: Vec<(String, Option<String>, String)> = events
        .iter()
        .map(|e| (e.kind.clone(), e.task.clone(), e.status.clone()))
        .collect();
    let task = |n: &str, s: &str| ("task".to_owned(), Some(n.to_owned()), s.to_owned());
    assert_eq!(
        seen,
        vec![
            ("workflow".to_owned(), None, "submitted".to_owned()),
            task("A", "running"),
            task("A", "completed"),
            task("B", "ready"),
            task("B", "running"),
            task("B", "completed"),
            ("workflow".to_owned(), None, "completed".to_owned()),
        ]
    );
    assert!(events.last().unwrap().is_workflow_end());
    assert_eq!(events[1].attempt, Some(1));
    assert_eq!(events[1].index, Some(0));
    // Reading after the last id returns nothing new.
    let last = &events.last().unwrap().id;
    assert!(env
        .queue
        .events(&id, last, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
}

/// Unwatched, a workflow's events are its own (the task hashes hold the rest); from the
/// moment a watcher asks (`Queue::watch`), every transition of its tasks is an event too.
#[tokio::test]
async fn task_transitions_are_events_only_while_watched() {
    let mut req = request("fail_fast", &[t("A", &[]), t("B", &[0]), t("C", &[1])]);
    req.watch = false;
    let (env, id, mut c) = with_workflow(&req).await;
    let seen = |events: &[gleitzeit_queue::Event]| -> Vec<(Option<String>, String)> {
        events
            .iter()
            .map(|e| (e.task.clone(), e.status.clone()))
            .collect()
    };
    let task = |n: &str, s: &str| (Some(n.to_owned()), s.to_owned());
    let a = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &a, "w1", "1").await;
    let events = env.queue.events(&id, "0", Duration::ZERO).await.unwrap();
    assert_eq!(
        seen(&events),
        [(None, "submitted".to_owned())],
        "no running or completed of A, no ready of B"
    );

    env.queue.watch(&id, Duration::from_secs(60)).await.unwrap();
    let b = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &b, "w1", "2").await;
    let cc = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &cc, "w1", "3").await;
    let after = &events.last().unwrap().id;
    let events = env.queue.events(&id, after, Duration::ZERO).await.unwrap();
    assert_eq!(
        seen(&events),
        [
            task("B", "running"),
            task("B", "completed"),
            task("C", "ready"),
            task("C", "running"),
            task("C", "completed"),
            (None, "completed".to_owned()),
        ]
    );
    // The watch key ends with the workflow's other keys.
    let ttl: i64 = env.cmd(&["TTL", &env.queue.keys().watch(&id)]).await;
    let retention: i64 = env.cmd(&["TTL", &env.queue.keys().workflow(&id)]).await;
    assert!(
        ttl > 60 && ttl <= retention,
        "watch key TTL {ttl}, workflow {retention}"
    );
}

/// The scripts ask for the watch key only of a workflow whose `watch` field says somebody
/// watched it (`Queue::watch` sets both in one step); the key still decides: once it is gone
/// (the watcher's lease ended), transitions are no events again. A watch of an unknown id
/// creates no workflow.
#[tokio::test]
async fn a_watch_lasts_as_long_as_its_key() {
    let mut req = request("fail_fast", &[t("A", &[]), t("B", &[0]), t("C", &[1])]);
    req.watch = false;
    let (env, id, mut c) = with_workflow(&req).await;
    assert_eq!(env.wf_field(&id, "watch").await, None);
    env.queue.watch(&id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(env.wf_field(&id, "watch").await.as_deref(), Some("1"));
    let a = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &a, "w1", "1").await;
    let events = env.queue.events(&id, "0", Duration::ZERO).await.unwrap();
    let seen: Vec<(Option<String>, String)> = events
        .iter()
        .map(|e| (e.task.clone(), e.status.clone()))
        .collect();
    let task = |n: &str, s: &str| (Some(n.to_owned()), s.to_owned());
    assert_eq!(
        seen,
        [
            (None, "submitted".to_owned()),
            task("A", "running"),
            task("A", "completed"),
            task("B", "ready"),
        ]
    );

    // The lease ends (the key expires): the field stays, the key is asked for and missed.
    let _: i64 = env.cmd(&["DEL", &env.queue.keys().watch(&id)]).await;
    let b = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &b, "w1", "2").await;
    let after = &events.last().unwrap().id;
    assert!(
        env.queue
            .events(&id, after, Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "no task events once the watch key is gone"
    );

    env.queue
        .watch("no-such-workflow", Duration::from_secs(60))
        .await
        .unwrap();
    let exists: i64 = env
        .cmd(&["EXISTS", &env.queue.keys().workflow("no-such-workflow")])
        .await;
    assert_eq!(exists, 0, "a watch creates no workflow hash");
    let ttl: i64 = env
        .cmd(&["PTTL", &env.queue.keys().watch("no-such-workflow")])
        .await;
    assert!(ttl > 0, "the unknown id's watch key expires: {ttl}");
}

#[tokio::test]
async fn blocking_events_wake_on_the_next_change() {
    let env = env().await;
    let id = env.submit(&request("fail_fast", &[t("A", &[])])).await;
    let first = env.queue.events(&id, "0", Duration::ZERO).await.unwrap();
    let after = first.last().unwrap().id.clone();

    let q = env.queue.clone();
    let wid = id.clone();
    let waiter = tokio::spawn(async move { q.events(&wid, &after, Duration::from_secs(30)).await });
    let mut c = env.consumer("w1").await;
    let a = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &a, "w1", "1").await;
    let got = waiter.await.unwrap().unwrap();
    assert!(!got.is_empty());
    assert_eq!(got[0].task.as_deref(), Some("A"));
    // A block that times out returns nothing (no events will come for a finished workflow).
    let last = env
        .queue
        .events(&id, "0", Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .id;
    assert!(env
        .queue
        .events(&id, &last, Duration::from_millis(50))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn retention_ttl_is_set_on_every_key_when_the_workflow_ends() {
    let env = env_with(QueueConfig {
        retention: Duration::from_secs(3600),
        ..QueueConfig::default()
    })
    .await;
    let mut req = request("fail_fast", &[t("A", &[]), t("B", &[0])]);
    req.idempotency_key = Some("ttl-key".into());
    let id = env.submit(&req).await;
    let k = env.queue.keys().clone();
    // The tasks live in the workflow hash: no task hashes to expire (checked at the end too).
    let task_hashes = [k.task(&id, 0), k.task(&id, 1)];
    for key in &task_hashes {
        assert_eq!(env.cmd::<i64>(&["EXISTS", key]).await, 0, "{key} exists");
    }
    let keys = [k.workflow(&id), k.events(&id), k.idem("ttl-key")];
    for key in &keys {
        assert_eq!(
            env.cmd::<i64>(&["TTL", key]).await,
            -1,
            "{key} has no TTL while running"
        );
    }
    let mut c = env.consumer("w1").await;
    let a = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &a, "w1", "1").await;
    for key in &keys {
        assert_eq!(
            env.cmd::<i64>(&["TTL", key]).await,
            -1,
            "{key} still running"
        );
    }
    let b = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &b, "w1", "2").await;
    for key in &keys {
        let ttl: i64 = env.cmd(&["TTL", key]).await;
        assert!(ttl > 3500 && ttl <= 3600, "{key}: ttl {ttl}");
    }
    for key in &task_hashes {
        assert_eq!(env.cmd::<i64>(&["EXISTS", key]).await, 0, "{key} exists");
    }
    // Streams and global keys never expire.
    assert_eq!(
        env.cmd::<i64>(&["TTL", &k.stream(CAP, Priority::Normal)])
            .await,
        -1
    );
    assert_eq!(env.cmd::<i64>(&["TTL", &k.workflows()]).await, -1);
}

#[tokio::test]
async fn list_is_newest_first_and_drops_expired_workflows() {
    let env = env().await;
    let mut ids = Vec::new();
    for n in 0..5u64 {
        let mut req = request("fail_fast", &[t("A", &[])]);
        req.now_ms = NOW + n;
        ids.push(env.submit(&req).await);
    }
    let listed: Vec<String> = env
        .queue
        .list(3)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(listed, vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    // Expire two workflows (as their TTL would): the index entries go away on the next list.
    let k = env.queue.keys().clone();
    let _: i64 = env.cmd(&["DEL", &k.workflow(&ids[4])]).await;
    let _: i64 = env.cmd(&["DEL", &k.workflow(&ids[2])]).await;
    let listed: Vec<String> = env
        .queue
        .list(10)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(listed, vec![ids[3].clone(), ids[1].clone(), ids[0].clone()]);
    assert_eq!(env.cmd::<u64>(&["ZCARD", &k.workflows()]).await, 3);
    let listed: Vec<String> = env
        .queue
        .list(2)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(listed, vec![ids[3].clone(), ids[1].clone()]);
}

#[tokio::test]
async fn completing_a_task_that_was_never_begun_changes_nothing() {
    let (env, id, mut c) = with_workflow(&request("fail_fast", &[t("A", &[])])).await;
    let a = env.read_all(&mut c, CAP).await.remove(0);
    assert_eq!(
        env.queue.complete(&a, "w1", "1", NOW).await.unwrap(),
        ScriptCode::NotRunning
    );
    assert_eq!(env.status(&id, 0).await, "ready");
    assert_eq!(env.counters(&id).await, (1, 0, 0, 0, 0));
}

#[tokio::test]
async fn only_the_completion_that_ends_a_workflow_reports_its_end() {
    let (env, id, mut c) = with_workflow(&diamond("fail_fast")).await;
    let complete = |d: gleitzeit_queue::Delivery, at: u64| {
        let q = env.queue.clone();
        async move { q.complete_recorded(&d, "w1", "r", NOW + at).await.unwrap() }
    };
    let root = env.read_all(&mut c, CAP).await.remove(0);
    begin_ok(&env, &root, "w1").await;
    let r = complete(root, 10).await;
    assert_eq!((r.code, r.ended), (ScriptCode::Ok, None));
    for d in env.read_all(&mut c, CAP).await {
        begin_ok(&env, &d, "w1").await;
        let r = complete(d, 20).await;
        assert_eq!((r.code, r.ended), (ScriptCode::Ok, None));
    }
    let join = env.read_all(&mut c, CAP).await.remove(0);
    begin_ok(&env, &join, "w1").await;
    let r = complete(join.clone(), 250).await;
    assert_eq!(r.code, ScriptCode::Ok);
    assert_eq!(
        r.ended,
        Some(gleitzeit_queue::WorkflowEnd {
            status: "completed".into(),
            duration_ms: 250,
        })
    );
    assert_eq!(
        env.wf_field(&id, "status").await.as_deref(),
        Some("completed")
    );
    // A repeated completion changes nothing and reports no end a second time.
    let again = complete(join, 300).await;
    assert_eq!((again.code, again.ended), (ScriptCode::Duplicate, None));
}

/// The hot path rewrites a task's state (`<i>.s`, nine parts) from the parts it captures
/// (lib.lua's BPAT, CPAT, LPAT, LRPAT): each step changes exactly its own parts and keeps
/// every other one as it was — also values a fresh task would not have (a requeued task's
/// attempts, its last consumer and times), which are planted here.
#[tokio::test]
async fn a_task_state_changes_only_in_the_parts_each_step_owns() {
    let mut req = request("fail_fast", &[t("A", &[]), t("B", &[]), t("C", &[0, 1])]);
    req.watch = false;
    let (env, id, mut c) = with_workflow(&req).await;
    let key = env.queue.keys().workflow(&id);
    let state = |i: u32| {
        let (env, key) = (&env, key.clone());
        async move {
            env.hget(&key, &format!("{i}.s"))
                .await
                .expect("a state field")
        }
    };
    let set = |i: u32, parts: [&str; 9]| {
        let (env, key) = (&env, key.clone());
        let v = parts.join("\u{1f}");
        async move {
            let _: i64 = env.cmd(&["HSET", &key, &format!("{i}.s"), &v]).await;
        }
    };
    let a_entry = env.task_field(&id, 0, "entry").await.expect("A queued");
    let now = NOW.to_string();
    set(0, ["ready", "0", "1", &a_entry, "", "", &now, "", "9"]).await;
    set(2, ["waiting", "2", "2", "", "old", "3", "4", "5", "6"]).await;

    let ds = env.read_all(&mut c, CAP).await;
    let (a, b) = (&ds[0], &ds[1]);
    assert_eq!(a.task, 0);
    begin_ok(&env, a, "w1").await;
    let (t1, t2) = ((NOW + 1).to_string(), (NOW + 2).to_string());
    // Begin: status, consumer, delivery, started_ms.
    let begun = ["running", "0", "1", &a_entry, "w1", "1", &now, &now, "9"].join("\u{1f}");
    assert_eq!(state(0).await, begun);
    // Complete: status, finished_ms; the child's pending only.
    assert_eq!(
        env.queue.complete(a, "w1", "\"a\"", NOW + 1).await.unwrap(),
        ScriptCode::Ok
    );
    let done = ["completed", "0", "1", &a_entry, "w1", "1", &now, &now, &t1].join("\u{1f}");
    assert_eq!(state(0).await, done);
    let one_left = ["waiting", "1", "2", "", "old", "3", "4", "5", "6"].join("\u{1f}");
    assert_eq!(state(2).await, one_left);
    // The last parent: the child becomes ready with its new entry and ready_ms, the rest
    // kept.
    begin_ok(&env, b, "w1").await;
    assert_eq!(
        env.queue.complete(b, "w1", "\"b\"", NOW + 2).await.unwrap(),
        ScriptCode::Ok
    );
    let c_entry = env.task_field(&id, 2, "entry").await.expect("C queued");
    let ready = ["ready", "0", "2", &c_entry, "old", "3", &t2, "5", "6"].join("\u{1f}");
    assert_eq!(state(2).await, ready);
    let ds = env.read_all(&mut c, CAP).await;
    assert_eq!((ds.len(), ds[0].task), (1, 2), "C is on its stream");
}
