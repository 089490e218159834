//! Fencing: stale and duplicate completions, reclaim with delivery counts, heartbeats.

mod common;

use std::time::Duration;

use common::*;
use gleitzeit_queue::keys::{task_field, STATE_FIELD};
use gleitzeit_queue::{BeginOutcome, Delivery, FailRequest, Priority, ScriptCode};

const IDLE: Duration = Duration::from_secs(60);

/// Reclaims, as `consumer`, up to `count` entries of the test capability's stream idle for
/// longer than [`IDLE`].
async fn reclaim(env: &Env, consumer: &str, count: usize) -> Vec<Delivery> {
    let stream = env.queue.keys().stream_ref(CAP, Priority::Normal);
    env.queue
        .reclaim(consumer, &stream, IDLE, count)
        .await
        .unwrap()
}

/// Asserts that `new` is `old`'s stream entry delivered again, now for the `deliveries`th time.
#[track_caller]
fn assert_redelivered(new: &Delivery, old: &Delivery, deliveries: u64) {
    assert_eq!(
        (new.entry_id.as_str(), new.deliveries),
        (old.entry_id.as_str(), deliveries)
    );
}

/// A failure without retry or dead letter: all a fenced-off call needs to carry.
fn final_fail() -> FailRequest {
    FailRequest {
        error_json: "{}".into(),
        retry_at_ms: None,
        dead_letter: None,
        now_ms: NOW,
    }
}

#[tokio::test]
async fn completion_after_another_consumer_reclaimed_is_stale_and_changes_nothing() {
    let env = env().await;
    let id = env
        .submit(&request("fail_fast", &[t("A", &[]), t("B", &[0])]))
        .await;
    let mut a = env.consumer("worker-a").await;
    let da = env.read_all(&mut a, CAP).await.remove(0);
    begin_ok(&env, &da, "worker-a").await;

    // worker-a stalls; its entry is idle long enough to be reclaimed by worker-b.
    env.age_entry(&da, "worker-a", 120_000).await;
    let claimed = reclaim(&env, "worker-b", 10).await;
    assert_eq!(claimed.len(), 1);
    let db = &claimed[0];
    assert_redelivered(db, &da, 2);

    // worker-a wakes up: everything it tries is stale and changes nothing.
    let snapshot = snapshot_now(&env, &id).await;
    assert_eq!(
        env.queue
            .complete(&da, "worker-a", "late", NOW)
            .await
            .unwrap(),
        ScriptCode::Stale
    );
    let fail = final_fail();
    assert_eq!(
        env.queue.fail(&da, "worker-a", &fail).await.unwrap(),
        ScriptCode::Stale
    );
    assert_eq!(
        env.queue.begin(&da, "worker-a", NOW).await.unwrap(),
        BeginOutcome::Stale
    );
    assert_eq!(snapshot, snapshot_now(&env, &id).await);
    assert_eq!(env.task_field(&id, 0, "result").await, None);

    // worker-b's delivery is the valid one.
    run_ok(&env, db, "worker-b", "on time").await;
    assert_eq!(
        env.task_field(&id, 0, "result").await.as_deref(),
        Some("on time")
    );
    assert_eq!(env.status(&id, 1).await, "ready");
}

/// Everything a stale call could have touched.
async fn snapshot_now(env: &Env, id: &str) -> Vec<String> {
    let k = env.queue.keys();
    let mut out = Vec::new();
    // The workflow hash holds every task's fields (`<i>.<field>`) too.
    let key = k.workflow(id);
    let mut v: Vec<(String, String)> = env.cmd(&["HGETALL", &key]).await;
    v.sort();
    let total: u32 = v
        .iter()
        .find(|(f, _)| f == "total")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} has no total: {v:?}"));
    for i in 0..total {
        let state = task_field(i, STATE_FIELD);
        assert!(
            v.iter().any(|(f, _)| *f == state),
            "{key} holds no {state}: {v:?}"
        );
    }
    out.push(format!("{key}: {v:?}"));
    let stream = k.stream(CAP, Priority::Normal);
    out.push(format!(
        "len {} pending {}",
        env.xlen(&stream).await,
        env.pending(&stream).await
    ));
    let events: u64 = env.xlen(&k.events(id)).await;
    out.push(format!("events {events}"));
    out
}

#[tokio::test]
async fn duplicate_completion_is_reported_and_changes_nothing() {
    let (env, id, mut c) = with_workflow(&request("fail_fast", &[t("A", &[]), t("B", &[0])])).await;
    let d = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &d, "w1", "first").await;
    let before = snapshot_now(&env, &id).await;
    assert_eq!(
        env.queue.complete(&d, "w1", "second", NOW).await.unwrap(),
        ScriptCode::Duplicate
    );
    let fail = final_fail();
    assert_eq!(
        env.queue.fail(&d, "w1", &fail).await.unwrap(),
        ScriptCode::Duplicate
    );
    assert_eq!(before, snapshot_now(&env, &id).await);
    assert_eq!(
        env.task_field(&id, 0, "result").await.as_deref(),
        Some("first")
    );
    // B was released once, not twice.
    assert_eq!(env.read_all(&mut c, CAP).await.len(), 1);
}

#[tokio::test]
async fn reclaim_returns_current_delivery_counts_and_skips_busy_entries() {
    let env = env().await;
    env.submit(&request("fail_fast", &[t("A", &[]), t("B", &[])]))
        .await;
    let mut a = env.consumer("worker-a").await;
    let ds = env.read_all(&mut a, CAP).await;
    assert_eq!(ds.len(), 2);
    assert!(ds.iter().all(|d| d.deliveries == 1));

    // Nothing is idle long enough yet.
    assert!(reclaim(&env, "worker-b", 10).await.is_empty());

    // Only the aged entry is taken.
    env.age_entry(&ds[0], "worker-a", 120_000).await;
    let got = reclaim(&env, "worker-b", 10).await;
    assert_eq!(got.len(), 1);
    assert_redelivered(&got[0], &ds[0], 2);
    assert_eq!(
        (got[0].workflow_id.as_str(), got[0].task),
        (ds[0].workflow_id.as_str(), ds[0].task)
    );

    // Taken again by a third consumer: the count keeps growing.
    env.age_entry(&got[0], "worker-b", 120_000).await;
    env.age_entry(&ds[1], "worker-a", 120_000).await;
    let again = reclaim(&env, "worker-c", 1).await;
    assert_eq!(again.len(), 1, "count bounds the claim");
    let rest = reclaim(&env, "worker-c", 10).await;
    assert_eq!(rest.len(), 1);
    let mut counts: Vec<(String, u64)> = again
        .iter()
        .chain(&rest)
        .map(|d| (d.entry_id.clone(), d.deliveries))
        .collect();
    counts.sort();
    let mut expected = vec![(ds[0].entry_id.clone(), 3), (ds[1].entry_id.clone(), 2)];
    expected.sort();
    assert_eq!(counts, expected);
}

#[tokio::test]
async fn reclaim_drops_entries_deleted_while_pending() {
    let env = env().await;
    let id = env
        .submit(&request("fail_fast", &[t("A", &[]), t("B", &[])]))
        .await;
    let stream = env.queue.keys().stream_ref(CAP, Priority::Normal);
    let mut a = env.consumer("worker-a").await;
    let ds = env.read_all(&mut a, CAP).await;
    // Cancelling deletes the ready entries that were delivered but not begun.
    env.queue.cancel(&id, NOW).await.unwrap();
    for d in &ds {
        env.age_entry(d, "worker-a", 120_000).await;
    }
    assert!(reclaim(&env, "worker-b", 10).await.is_empty());
    assert_eq!(
        env.pending(&stream.key).await,
        0,
        "XAUTOCLAIM removed the deleted entries"
    );
}

#[tokio::test]
async fn heartbeat_keeps_an_entry_from_being_reclaimed() {
    let env = env().await;
    env.submit(&request("fail_fast", &[t("A", &[])])).await;
    let mut a = env.consumer("worker-a").await;
    let d = env.read_all(&mut a, CAP).await.remove(0);
    begin_ok(&env, &d, "worker-a").await;

    env.age_entry(&d, "worker-a", 120_000).await;
    let lost = env
        .queue
        .heartbeat("worker-a", std::slice::from_ref(&d))
        .await
        .unwrap();
    assert!(lost.is_empty());
    assert!(
        reclaim(&env, "worker-b", 10).await.is_empty(),
        "a heartbeat resets the idle time"
    );
    // The heartbeat did not count as a delivery: completion with the original count works.
    assert_eq!(
        env.queue.complete(&d, "worker-a", "ok", NOW).await.unwrap(),
        ScriptCode::Ok
    );
}

#[tokio::test]
async fn heartbeat_never_steals_a_reclaimed_entry() {
    let env = env().await;
    env.submit(&request("fail_fast", &[t("A", &[]), t("B", &[])]))
        .await;
    let stream = env.queue.keys().stream_ref(CAP, Priority::Normal);
    let mut a = env.consumer("worker-a").await;
    let ds = env.read_all(&mut a, CAP).await;
    env.age_entry(&ds[0], "worker-a", 120_000).await;
    let taken = reclaim(&env, "worker-b", 10).await;
    assert_eq!(taken.len(), 1);

    let lost = env.queue.heartbeat("worker-a", &ds).await.unwrap();
    assert_eq!(
        lost,
        vec![ds[0].clone()],
        "only the reclaimed entry is reported"
    );
    // worker-b still owns it, with its own delivery count, and can complete it.
    let v: deadpool_redis::redis::Value = env
        .cmd(&[
            "XPENDING",
            &stream.key,
            "workers",
            &ds[0].entry_id,
            &ds[0].entry_id,
            "1",
        ])
        .await;
    assert!(format!("{v:?}").contains("worker-b"));
    run_ok(&env, &taken[0], "worker-b", "b").await;
    // A heartbeat for an entry that is finished reports it lost too.
    let lost = env.queue.heartbeat("worker-b", &taken).await.unwrap();
    assert_eq!(lost.len(), 1);
}

#[tokio::test]
async fn a_newer_delivery_to_the_same_consumer_fences_the_older_one() {
    let env = env().await;
    let id = env.submit(&request("fail_fast", &[t("A", &[])])).await;
    let mut a = env.consumer("worker-a").await;
    let old = env.read_all(&mut a, CAP).await.remove(0);
    begin_ok(&env, &old, "worker-a").await;
    // The same process's reclaimer takes its own stalled entry back: a new delivery.
    env.age_entry(&old, "worker-a", 120_000).await;
    let new = reclaim(&env, "worker-a", 10).await.remove(0);
    assert_redelivered(&new, &old, 2);

    let before = snapshot_now(&env, &id).await;
    assert_eq!(
        env.queue
            .complete(&old, "worker-a", "old", NOW)
            .await
            .unwrap(),
        ScriptCode::Stale
    );
    assert_eq!(
        env.queue.begin(&old, "worker-a", NOW).await.unwrap(),
        BeginOutcome::Stale
    );
    assert_eq!(
        env.queue
            .heartbeat("worker-a", std::slice::from_ref(&old))
            .await
            .unwrap(),
        vec![old.clone()]
    );
    assert_eq!(before, snapshot_now(&env, &id).await);
    assert!(env
        .queue
        .heartbeat("worker-a", std::slice::from_ref(&new))
        .await
        .unwrap()
        .is_empty());
    run_ok(&env, &new, "worker-a", "new").await;
    assert_eq!(
        env.task_field(&id, 0, "result").await.as_deref(),
        Some("new")
    );
}

/// A reclaim frees the endpoint leases of the consumer whose entries it takes over (members
/// `<owner>|<id>`), and only those: a live worker's lease and this worker's own stay.
#[tokio::test]
async fn reclaiming_a_consumers_entries_frees_its_endpoint_leases() {
    use gleitzeit_queue::{lease_member, LeaseCandidate, LeasePick};
    let env = env().await;
    env.submit(&request("fail_fast", &[t("A", &[])])).await;
    let mut dead = env.consumer("worker-dead").await;
    let d = env.read_all(&mut dead, CAP).await.remove(0);
    begin_ok(&env, &d, "worker-dead").await;
    // The endpoint is known to the fleet (a worker published its health view).
    env.queue
        .endpoint_health_publish("gpu-1", "worker-live", "{}", 60_000)
        .await
        .unwrap();
    let gpu = [LeaseCandidate {
        endpoint: "gpu-1",
        max: 0,
    }];
    for (n, owner) in ["worker-dead", "worker-dead", "worker-live", "worker-b"]
        .into_iter()
        .enumerate()
    {
        let id = format!("lease-{n}");
        env.queue
            .lease_acquire(
                &gpu,
                LeasePick::InOrder,
                &lease_member(owner, &id),
                0,
                NOW,
                NOW + 3_600_000,
            )
            .await
            .unwrap();
    }
    assert_eq!(env.queue.lease_counts(&["gpu-1"], NOW).await.unwrap(), [4]);

    env.age_entry(&d, "worker-dead", 120_000).await;
    let claimed = reclaim(&env, "worker-b", 10).await;
    assert_eq!(claimed.len(), 1);
    let leases = env.queue.keys().endpoint_leases("gpu-1");
    let left: Vec<String> = env.cmd(&["ZRANGE", &leases, "0", "-1"]).await;
    let owners: Vec<&str> = left.iter().map(|m| m.split('|').next().unwrap()).collect();
    assert_eq!(owners.len(), 2, "{left:?}");
    assert!(
        owners.contains(&"worker-live") && owners.contains(&"worker-b"),
        "{left:?}"
    );

    // Nothing idle to take over: a reclaim frees nothing.
    assert!(reclaim(&env, "worker-c", 10).await.is_empty());
    assert_eq!(env.queue.lease_counts(&["gpu-1"], NOW).await.unwrap(), [2]);
}
