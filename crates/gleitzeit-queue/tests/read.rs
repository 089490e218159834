//! Reading: priority order, the total COUNT bound, blocking wake-up, missing groups.

mod common;

use std::time::Duration;

use common::*;
use gleitzeit_queue::{BeginOutcome, Consumer, Priority, ScriptCode, StreamRef};

/// [`one_entry_for_two_waiters`] on [`CAP`]'s streams, with a one-task workflow.
async fn one_entry_for_two_cap_waiters<T, F, Fut>(
    env: &Env,
    wait: F,
) -> (String, Vec<T>, tokio::task::JoinHandle<Vec<T>>)
where
    T: Send + 'static,
    F: Fn(gleitzeit_queue::Consumer, Vec<StreamRef>) -> Fut,
    Fut: std::future::Future<Output = Vec<T>> + Send + 'static,
{
    let streams = env.queue.keys().stream_refs(CAP).to_vec();
    one_entry_for_two_waiters(env, &streams, &request("fail_fast", &[t("A", &[])]), wait).await
}

fn prioritised(tasks: &mut [T<'_>]) {
    // Submitted low first, so entry order alone would read them low → normal → high.
    tasks[0].priority = Priority::Low;
    tasks[1].priority = Priority::Normal;
    tasks[2].priority = Priority::High;
}

#[tokio::test]
async fn high_is_read_before_normal_before_low() {
    let env = env().await;
    let mut tasks = [t("low", &[]), t("normal", &[]), t("high", &[])];
    prioritised(&mut tasks);
    let id = env.submit(&request("fail_fast", &tasks)).await;
    let mut c = env.consumer("w1").await;
    // Stream order given by the caller does not matter: priority decides.
    let mut streams = env.queue.keys().stream_refs(CAP).to_vec();
    streams.reverse();
    let mut order = Vec::new();
    for _ in 0..3 {
        let got = c
            .read_prioritised(&streams, 1, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].workflow_id, id);
        order.push((got[0].task, got[0].priority));
    }
    assert_eq!(
        order,
        vec![
            (2, Priority::High),
            (1, Priority::Normal),
            (0, Priority::Low)
        ]
    );
    assert!(c
        .read_prioritised(&streams, 1, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_total_never_exceeds_count_across_streams() {
    let env = env().await;
    let mut tasks = Vec::new();
    let names: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let mut spec = t(name, &[]);
        spec.priority = Priority::ALL[i % 3];
        tasks.push(spec);
    }
    env.submit(&request("fail_fast", &tasks)).await;
    let streams = env.queue.keys().stream_refs(CAP);
    let mut c = env.consumer("w1").await;
    let first = c
        .read_prioritised(&streams, 4, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.len(), 4);
    let prios: Vec<Priority> = first.iter().map(|d| d.priority).collect();
    assert_eq!(
        prios,
        vec![
            Priority::High,
            Priority::High,
            Priority::High,
            Priority::Normal
        ]
    );
    let second = c
        .read_prioritised(&streams, 4, Duration::ZERO)
        .await
        .unwrap();
    let prios: Vec<Priority> = second.iter().map(|d| d.priority).collect();
    assert_eq!(
        prios,
        vec![
            Priority::Normal,
            Priority::Normal,
            Priority::Low,
            Priority::Low
        ]
    );
    assert_eq!(
        c.read_prioritised(&streams, 4, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
    // Exactly what was handed out is pending.
    let mut total = 0;
    for s in &streams {
        total += env.pending(&s.key).await;
    }
    assert_eq!(total, 9);
}

#[tokio::test]
async fn a_blocked_read_wakes_when_work_arrives() {
    let env = env().await;
    let streams = env.queue.keys().stream_refs(CAP);
    let mut c = env.consumer("w1").await;
    // Nothing yet: a short block returns empty.
    assert!(c
        .read_prioritised(&streams, 5, Duration::from_millis(20))
        .await
        .unwrap()
        .is_empty());

    let reader = tokio::spawn(async move {
        let got = c
            .read_prioritised(&streams, 5, Duration::from_secs(30))
            .await;
        (c, got)
    });
    let id = env.submit(&request("fail_fast", &[t("A", &[])])).await;
    let (_c, got) = reader.await.unwrap();
    let got = got.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].workflow_id.as_str(), got[0].task), (id.as_str(), 0));
}

/// Two readers wait on the same streams and one entry arrives: both wake, one takes it. The
/// other does not come back empty-handed (and go round to a read of every stream): it waits
/// again within the same call, after what its read saw, and takes the next entry.
#[tokio::test]
async fn a_reader_that_loses_the_race_for_an_entry_waits_on_in_the_same_call() {
    let env = env().await;
    // Both wait in XREAD BLOCK (each found the streams empty first).
    let (first, got_first, other) =
        one_entry_for_two_cap_waiters(&env, |mut c, streams| async move {
            c.read_prioritised(&streams, 1, Duration::from_secs(60))
                .await
                .unwrap()
        })
        .await;
    assert_eq!(got_first.len(), 1);
    assert_eq!(got_first[0].workflow_id, first);

    let second = env.submit(&request("fail_fast", &[t("B", &[])])).await;
    let got_second = other.await.unwrap();
    assert_eq!(
        got_second.len(),
        1,
        "the other reader's call took the next entry"
    );
    assert_eq!(got_second[0].workflow_id, second);
}

/// A wait that runs out returns nothing, without reading the streams again.
#[tokio::test]
async fn a_wait_that_runs_out_reads_nothing_more() {
    let env = env().await;
    let streams = env.queue.keys().stream_refs(CAP);
    let mut c = env.consumer("w1").await;
    // A read first, so the function library is loaded and the groups exist.
    assert!(c
        .read_prioritised(&streams, 5, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    env.reset_stats().await;
    assert!(c
        .read_prioritised(&streams, 5, Duration::from_millis(20))
        .await
        .unwrap()
        .is_empty());
    // One read script call (before the wait), one XREAD, and no read after it.
    let (calls, stats) = env.command_calls().await;
    assert_eq!(calls.get("xread"), Some(&1), "{stats}");
    assert_eq!(calls.get("fcall"), Some(&1), "{stats}");
}

#[tokio::test]
async fn a_single_xreadgroup_over_several_streams() {
    let env = env().await;
    let mut tasks = [t("low", &[]), t("normal", &[]), t("high", &[])];
    prioritised(&mut tasks);
    env.submit(&request("fail_fast", &tasks)).await;
    let streams = env.queue.keys().stream_refs(CAP);
    let mut c = env.consumer("w1").await;
    let got = c.read(&streams, 10, Duration::ZERO).await.unwrap();
    let mut tasks: Vec<(u32, Priority, u64)> = got
        .iter()
        .map(|d| (d.task, d.priority, d.deliveries))
        .collect();
    tasks.sort();
    assert_eq!(
        tasks,
        vec![
            (0, Priority::Low, 1),
            (1, Priority::Normal, 1),
            (2, Priority::High, 1)
        ]
    );
    for d in &got {
        assert_eq!(d.stream, env.queue.keys().stream(CAP, d.priority));
        assert_eq!(d.capability, CAP);
    }
    assert!(c
        .read(&streams, 10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    // Blocking read returns when an entry arrives.
    let reader = tokio::spawn(async move { c.read(&streams, 10, Duration::from_secs(30)).await });
    env.submit(&request("fail_fast", &[t("late", &[])])).await;
    assert_eq!(reader.await.unwrap().unwrap().len(), 1);
}

#[tokio::test]
async fn missing_groups_are_created_from_id_zero_so_nothing_is_lost() {
    let env = env().await;
    let k = env.queue.keys().clone();
    let key = k.stream("llm:other", Priority::Normal);
    // An entry added to a stream before any group exists (e.g. the group was destroyed).
    let _: String = env.cmd(&["XADD", &key, "*", "wf", "wf-x", "t", "0"]).await;
    let stream = k.stream_ref("llm:other", Priority::Normal);
    let mut c = env.consumer("w1").await;
    let got = c
        .read(std::slice::from_ref(&stream), 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].workflow_id.as_str(), got[0].task), ("wf-x", 0));

    let key2 = k.stream("llm:third", Priority::High);
    let _: String = env.cmd(&["XADD", &key2, "*", "wf", "wf-y", "t", "3"]).await;
    let got = c
        .read_prioritised(
            &[k.stream_ref("llm:third", Priority::High)],
            10,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].workflow_id.as_str(), got[0].task), ("wf-y", 3));
    // Streams that never existed are created empty with the group, not an error.
    let none: StreamRef = k.stream_ref("llm:none", Priority::Low);
    assert!(c
        .read_prioritised(std::slice::from_ref(&none), 1, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    assert!(c.read(&[none], 1, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn entries_that_are_not_task_references_are_dropped() {
    let env = env().await;
    let k = env.queue.keys().clone();
    let stream = k.stream_ref(CAP, Priority::Normal);
    let _: String = env
        .cmd(&["XGROUP", "CREATE", &stream.key, "workers", "0", "MKSTREAM"])
        .await;
    let _: String = env.cmd(&["XADD", &stream.key, "*", "junk", "1"]).await;
    let _: String = env
        .cmd(&["XADD", &stream.key, "*", "wf", "wf-ok", "t", "1"])
        .await;
    let _: String = env
        .cmd(&["XADD", &stream.key, "*", "wf", "wf-bad", "t", "x"])
        .await;
    let mut c = env.consumer("w1").await;
    let got = c
        .read_prioritised(std::slice::from_ref(&stream), 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].workflow_id, "wf-ok");
    assert!(c
        .read_prioritised(std::slice::from_ref(&stream), 5, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    // The junk entries were acknowledged (the next trim removes them): only the valid
    // entry is pending, nothing is left to deliver.
    let s = env.queue.stream_stats(&stream).await.unwrap();
    assert_eq!((s.ready, s.pending), (0, 1), "only the valid entry remains");
    assert_eq!(env.pending(&stream.key).await, 1);

    let _: String = env.cmd(&["XADD", &stream.key, "*", "junk", "2"]).await;
    assert!(c
        .read(std::slice::from_ref(&stream), 5, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let s = env.queue.stream_stats(&stream).await.unwrap();
    assert_eq!((s.ready, s.pending), (0, 1));
}

/// `take` begins each entry in the read: the task is running with this consumer, its
/// context (spec, input, referenced results) comes back with it, and its completion is
/// fenced like any other (the delivery count is 1).
#[tokio::test]
async fn take_begins_each_entry_it_reads() {
    let env = env().await;
    let mut tasks = [t("a", &[]), t("b", &[0])];
    tasks[1].refs = &[0];
    let id = env.submit(&request("fail_fast", &tasks)).await;
    let mut c = env.consumer("w1").await;
    let streams = env.queue.keys().stream_refs(CAP).to_vec();
    let taken = c
        .take(&streams, 4, Duration::ZERO, || NOW + 5)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let BeginOutcome::Run(ctx) = &taken[0].begun else {
        panic!("{:?}", taken[0].begun)
    };
    assert_eq!(ctx.name, "a");
    assert_eq!(ctx.spec_json, r#"{"name":"a"}"#);
    assert_eq!(ctx.input_json, r#"{"text":"hello"}"#);
    // One task waits on it: the chain behind it, as submission recorded it.
    assert_eq!(ctx.chain_below, 1);
    assert_eq!(env.status(&id, 0).await, "running");
    assert_eq!(
        env.task_field(&id, 0, "consumer").await.as_deref(),
        Some("w1")
    );
    assert_eq!(
        env.task_field(&id, 0, "started_ms").await,
        Some((NOW + 5).to_string())
    );
    // Another consumer cannot complete it; this one can.
    let d = &taken[0].delivery;
    assert_eq!(
        env.queue.complete(d, "w2", r#""A""#, NOW).await.unwrap(),
        ScriptCode::Stale
    );
    assert_eq!(
        env.queue.complete(d, "w1", r#""A""#, NOW).await.unwrap(),
        ScriptCode::Ok
    );
    // The dependent comes with the result it references.
    let taken = c
        .take(&streams, 4, Duration::ZERO, || NOW + 6)
        .await
        .unwrap();
    let BeginOutcome::Run(ctx) = &taken[0].begun else {
        panic!("{:?}", taken[0].begun)
    };
    assert_eq!(ctx.refs, vec![("a".to_owned(), r#""A""#.to_owned())]);
    assert_eq!(ctx.chain_below, 0);
}

/// An entry whose task can no longer run is taken as `NotRunnable`, acknowledged and
/// deleted, without running (here: its workflow was cancelled after the entry was queued,
/// and the entry was added back by hand as a leftover would be).
#[tokio::test]
async fn take_reports_a_task_that_cannot_run_and_drops_its_entry() {
    let env = env().await;
    let id = env.submit(&request("fail_fast", &[t("a", &[])])).await;
    let key = env.queue.keys().stream(CAP, Priority::Normal);
    env.queue.cancel(&id, NOW).await.unwrap();
    let _: String = env.cmd(&["XADD", &key, "*", "wf", &id, "t", "0"]).await;
    let mut c = env.consumer("w1").await;
    let streams = env.queue.keys().stream_refs(CAP).to_vec();
    let taken = c.take(&streams, 4, Duration::ZERO, || NOW).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        taken[0].begun,
        BeginOutcome::NotRunnable {
            status: "cancelled".into()
        }
    );
    assert_eq!(env.status(&id, 0).await, "cancelled");
    assert_eq!(env.xlen(&key).await, 0);
    assert_eq!(env.pending(&key).await, 0);
}

/// Two takers that hold a slot per stream wait in the consumer group: a new entry goes to
/// one of them, begun, and the other sleeps on (it is not woken to find nothing) until the
/// next entry, which it takes. No `XREAD` wait and no tails are needed.
#[tokio::test]
async fn idle_takers_wait_in_the_group_and_one_wakes_per_entry() {
    let env = env().await;
    let (first, got_first, other) =
        one_entry_for_two_cap_waiters(&env, |mut c, streams| async move {
            c.take(&streams, streams.len(), Duration::from_secs(60), || NOW + 7)
                .await
                .unwrap()
        })
        .await;
    assert_took_begun(&got_first, &first);
    assert_eq!(env.status(&first, 0).await, "running");
    assert_eq!(
        env.task_field(&first, 0, "started_ms").await,
        Some((NOW + 7).to_string())
    );
    the_other_waiter_takes(&env, other, &request("fail_fast", &[t("B", &[])])).await;
    assert_no_xread_wait(&env).await;
}

/// A group wait that runs out begins nothing: one read script call before it, none after.
#[tokio::test]
async fn a_group_wait_that_runs_out_begins_nothing() {
    let env = env().await;
    let (streams, mut c) = counted_taker(&env).await;
    assert!(c
        .take(&streams, 5, Duration::from_millis(20), || NOW)
        .await
        .unwrap()
        .is_empty());
    let (calls, stats) = env.command_calls().await;
    assert_eq!(calls.get("fcall"), Some(&1), "{stats}");
    // The script's reads of the three streams and the wait itself.
    assert_eq!(calls.get("xreadgroup"), Some(&4), "{stats}");
    assert_eq!(calls.get("xread"), None, "{stats}");
    assert_eq!(calls.get("xrevrange"), None, "{stats}");
}

/// A consumer of CAP's streams after a first take, with `block`, that found nothing: the
/// function library is loaded and the groups exist; after a group wait that ran out
/// (`block` > 0) the consumer is idle.
async fn empty_taker(env: &Env, block: Duration) -> ([StreamRef; 3], Consumer) {
    let streams = env.queue.keys().stream_refs(CAP);
    let mut c = env.consumer("w1").await;
    assert!(c.take(&streams, 5, block, || NOW).await.unwrap().is_empty());
    (streams, c)
}

/// [`empty_taker`] without a wait, with the server's command statistics reset after it.
async fn counted_taker(env: &Env) -> ([StreamRef; 3], Consumer) {
    let taker = empty_taker(env, Duration::ZERO).await;
    env.reset_stats().await;
    taker
}

/// [`empty_taker`] after a group wait that found no backlog: idle.
async fn idle_taker(env: &Env) -> ([StreamRef; 3], Consumer) {
    empty_taker(env, Duration::from_millis(20)).await
}

/// After a group wait that found no backlog, the next take waits in the group at once: a
/// queued entry comes back from the wait itself, begun, with no read script call before it.
#[tokio::test]
async fn an_idle_taker_goes_straight_to_the_group_wait() {
    let env = env().await;
    let (streams, mut c) = idle_taker(&env).await;
    let id = env.submit(&request("fail_fast", &[t("A", &[])])).await;
    env.reset_stats().await;
    let taken = c
        .take(&streams, 30, Duration::from_secs(60), || NOW + 3)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].delivery.workflow_id, id);
    assert!(matches!(taken[0].begun, BeginOutcome::Run(_)));
    let (calls, stats) = env.command_calls().await;
    // The wait, then the one script call that begins what it delivered (fenced).
    assert_eq!(calls.get("xreadgroup"), Some(&1), "{stats}");
    assert_eq!(calls.get("fcall"), Some(&1), "{stats}");
    assert_eq!(calls.get("xpending"), Some(&1), "{stats}");
}

/// After `expect_entries` (the worker lingered while entries gathered), an idle taker reads
/// before it would wait: the entries queued meanwhile come back from one read script call,
/// begun without a fence of their own and with no group wait.
#[tokio::test]
async fn an_idle_taker_told_to_expect_entries_reads_them_in_one_call() {
    let env = env().await;
    let (streams, mut c) = idle_taker(&env).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(env.submit(&request("fail_fast", &[t("A", &[])])).await);
    }
    env.reset_stats().await;
    c.expect_entries();
    let taken = c
        .take(&streams, 30, Duration::from_secs(60), || NOW + 3)
        .await
        .unwrap();
    let mut got: Vec<String> = taken
        .iter()
        .map(|t| t.delivery.workflow_id.clone())
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    assert!(taken
        .iter()
        .all(|t| matches!(t.begun, BeginOutcome::Run(_))));
    for id in &ids {
        assert_eq!(env.status(id, 0).await, "running");
    }
    let (calls, stats) = env.command_calls().await;
    assert_eq!(calls.get("fcall"), Some(&1), "{stats}");
    assert_eq!(calls.get("xpending"), None, "no fence: {stats}");
    // The script's reads of the three streams (high and low are empty), no wait.
    assert_eq!(calls.get("xreadgroup"), Some(&3), "{stats}");
}

/// A take that may not wait (a sharded reader's first pass over its shards) and finds
/// nothing asks for no stream tails: they only serve an `XREAD` wait.
#[tokio::test]
async fn a_take_that_may_not_wait_asks_for_no_tails() {
    let env = env().await;
    let (streams, mut c) = counted_taker(&env).await;
    assert!(c
        .take(&streams, 5, Duration::ZERO, || NOW)
        .await
        .unwrap()
        .is_empty());
    let (calls, stats) = env.command_calls().await;
    assert_eq!(calls.get("fcall"), Some(&1), "{stats}");
    assert_eq!(calls.get("xreadgroup"), Some(&3), "{stats}");
    assert_eq!(calls.get("xrevrange"), None, "{stats}");
}
