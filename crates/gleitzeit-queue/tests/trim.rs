//! Trimming the ready streams: a finished task's entry is only acknowledged, and
//! `trim.lua` removes the finished head of each stream in bulk. Nothing pending and nothing
//! undelivered is ever removed, and the ready counts never depend on the trim.

mod common;

use std::time::Duration;

use common::*;
use gleitzeit_queue::{Priority, ScriptCode};

/// Four independent tasks: A, B and C delivered, A and C finished, B still running, D not
/// delivered yet.
async fn four_roots() -> (Env, String, Vec<gleitzeit_queue::Delivery>) {
    let (env, id, mut c) = with_workflow(&request(
        "continue",
        &[t("A", &[]), t("B", &[]), t("C", &[]), t("D", &[])],
    ))
    .await;
    let stream = env.queue.keys().stream_ref(CAP, Priority::Normal);
    let got = c
        .read_prioritised(std::slice::from_ref(&stream), 3, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|d| d.task).collect::<Vec<_>>(), [0, 1, 2]);
    run_ok(&env, &got[0], "w1", "{}").await;
    begin_ok(&env, &got[1], "w1").await;
    run_ok(&env, &got[2], "w1", "{}").await;
    (env, id, got)
}

#[tokio::test]
async fn a_trim_removes_finished_entries_up_to_the_oldest_pending_one_and_never_more() {
    let (env, _id, got) = four_roots().await;
    let stream = env.queue.keys().stream_ref(CAP, Priority::Normal);
    assert_eq!(
        env.raw_xlen(&stream.key).await,
        4,
        "finishing a task only acknowledges its entry"
    );
    let s = env.queue.stream_stats(&stream).await.unwrap();
    assert_eq!(
        (s.ready, s.pending),
        (1, 1),
        "counts do not wait for a trim"
    );

    // A goes; B is pending, so B and everything after it (C finished, D ready) stays.
    assert_eq!(env.queue.trim_streams(None).await.unwrap(), Some(1));
    let left: Vec<Vec<deadpool_redis::redis::Value>> =
        env.cmd(&["XRANGE", &stream.key, "-", "+"]).await;
    assert_eq!(left.len(), 3);
    let ids: Vec<String> = got.iter().map(|d| d.entry_id.clone()).collect();
    let first: String = match &left[0][0] {
        deadpool_redis::redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(first, ids[1], "the pending entry is the new head");

    // A group that has read nothing yet needs every entry: nothing more goes.
    let _: String = env
        .cmd(&["XGROUP", "CREATE", &stream.key, "audit", "0"])
        .await;
    assert_eq!(
        env.queue.complete(&got[1], "w1", "{}", NOW).await.unwrap(),
        ScriptCode::Ok
    );
    assert_eq!(env.queue.trim_streams(None).await.unwrap(), Some(0));
    assert_eq!(env.raw_xlen(&stream.key).await, 3);

    // Without it, B and C go and D, never delivered, stays.
    let _: u64 = env.cmd(&["XGROUP", "DESTROY", &stream.key, "audit"]).await;
    assert_eq!(env.queue.trim_streams(None).await.unwrap(), Some(2));
    assert_eq!(env.raw_xlen(&stream.key).await, 1);
    let s = env.queue.stream_stats(&stream).await.unwrap();
    assert_eq!((s.length, s.ready, s.pending), (1, 1, 0));
    let mut c = env.consumer("w2").await;
    let d = env.read_all(&mut c, CAP).await;
    assert_eq!(d.iter().map(|d| d.task).collect::<Vec<_>>(), [3]);
}

#[tokio::test]
async fn one_trim_per_interval_runs_in_the_fleet() {
    let (env, _id, _got) = four_roots().await;
    let every = Some(Duration::from_secs(60));
    assert_eq!(env.queue.trim_streams(every).await.unwrap(), Some(1));
    assert_eq!(
        env.queue.trim_streams(every).await.unwrap(),
        None,
        "another worker's trim within the interval skips"
    );
    // Unlocked (an operator, a test) it runs anyway.
    assert_eq!(env.queue.trim_streams(None).await.unwrap(), Some(0));
}

#[tokio::test]
async fn ready_counts_hold_when_a_cancellation_deleted_an_entry_ahead_of_the_group() {
    let env = env().await;
    let stream = env.queue.keys().stream_ref(CAP, Priority::Normal);
    env.submit(&request(
        "continue",
        &[t("A", &[]), t("B", &[]), t("C", &[])],
    ))
    .await;
    let other = env.submit(&request("continue", &[t("X", &[])])).await;
    env.submit(&request("continue", &[t("E", &[])])).await;
    let mut c = env.consumer("w1").await;
    let got = c
        .read_prioritised(std::slice::from_ref(&stream), 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    // X's ready entry is deleted ahead of the group: Redis can no longer tell the group's
    // lag, and the count falls back to reading the entries after the group's position.
    assert_eq!(env.queue.cancel(&other, NOW).await.unwrap(), ScriptCode::Ok);
    let lag: Vec<deadpool_redis::redis::Value> = env.cmd(&["XINFO", "GROUPS", &stream.key]).await;
    let fields = match &lag[0] {
        deadpool_redis::redis::Value::Array(f) => f.clone(),
        other => panic!("{other:?}"),
    };
    let at = fields
        .iter()
        .position(|v| matches!(v, deadpool_redis::redis::Value::BulkString(b) if b == b"lag"))
        .expect("Redis 7 reports the lag");
    assert_eq!(fields[at + 1], deadpool_redis::redis::Value::Nil);
    let s = env.queue.stream_stats(&stream).await.unwrap();
    assert_eq!((s.ready, s.pending), (3, 1), "B, C and E are ready");
    // Demand counts A too: delivered, not begun.
    let d = env.queue.demand(&[CAP], 10).await.unwrap();
    assert_eq!((d[0].ready, d[0].running), (4, 0));
}
