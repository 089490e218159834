//! Retention and memory: a workflow's own retention, the index trimmed once workflows expired,
//! and a full Redis (maxmemory, noeviction) refusing new work while accepted work finishes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gleitzeit_queue::{Priority, QueueConfig, QueueError, ScriptCode};

/// Waits until Redis itself has expired `key` (it has a real TTL of about a second).
async fn until_expired(env: &Env, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.cmd::<i64>(&["EXISTS", key]).await == 1 {
        assert!(Instant::now() < deadline, "{key} never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs every task of the single-capability workflows queued so far, in release order.
async fn run_everything(env: &Env) {
    let mut c = env.consumer("w1").await;
    loop {
        let batch = env.read_all(&mut c, CAP).await;
        if batch.is_empty() {
            break;
        }
        for d in &batch {
            run_ok(env, d, "w1", "\"ok\"").await;
        }
    }
}

#[tokio::test]
async fn a_workflows_own_retention_wins_over_the_queue_default() {
    let env = env_with(QueueConfig {
        retention: Duration::from_secs(3600),
        ..QueueConfig::default()
    })
    .await;
    let mut own = request("fail_fast", &[t("A", &[])]);
    own.retention = Some(Duration::from_millis(119_500));
    let own_id = env.submit(&own).await;
    let default_id = env.submit(&request("fail_fast", &[t("A", &[])])).await;
    assert_eq!(
        env.wf_field(&own_id, "retention").await.as_deref(),
        Some("120")
    );
    assert_eq!(
        env.wf_field(&default_id, "retention").await.as_deref(),
        Some("3600")
    );
    run_everything(&env).await;

    let k = env.queue.keys().clone();
    let ttl: i64 = env.cmd(&["TTL", &k.workflow(&own_id)]).await;
    assert!(ttl > 100 && ttl <= 120, "own retention: ttl {ttl}");
    // The task lives in the workflow hash (whose TTL is the one above), not in a key of its own.
    let exists: i64 = env.cmd(&["EXISTS", &k.task(&own_id, 0)]).await;
    assert_eq!(exists, 0, "the task has a hash of its own");
    let ttl: i64 = env.cmd(&["TTL", &k.workflow(&default_id)]).await;
    assert!(ttl > 3500, "default retention: ttl {ttl}");
    // Both ended workflows wait in {ns}:expiring at their expiry (from the `now` of the end).
    let score: Option<f64> = env.cmd(&["ZSCORE", &k.expiring(), &own_id]).await;
    assert_eq!(score, Some((NOW + 120_000) as f64));
    let score: Option<f64> = env.cmd(&["ZSCORE", &k.expiring(), &default_id]).await;
    assert_eq!(score, Some((NOW + 3_600_000) as f64));
}

#[tokio::test]
async fn a_zero_retention_is_refused_before_anything_is_written() {
    let env = env().await;
    let mut req = request("fail_fast", &[t("A", &[])]);
    req.retention = Some(Duration::ZERO);
    let err = env.queue.submit(&req).await.unwrap_err();
    assert!(
        matches!(&err, QueueError::InvalidArgument(m) if m.contains("retention")),
        "{err:?}"
    );
    assert_eq!(env.cmd::<u64>(&["DBSIZE"]).await, 0);
}

#[tokio::test]
async fn the_promoter_trims_the_index_once_a_workflow_expired() {
    let env = env().await;
    let mut short = request("fail_fast", &[t("A", &[])]);
    short.retention = Some(Duration::from_secs(1));
    let short_id = env.submit(&short).await;
    let mut long = request("fail_fast", &[t("A", &[])]);
    long.retention = Some(Duration::from_secs(3600));
    let long_id = env.submit(&long).await;
    let running_id = env.submit(&request("fail_fast", &[t("A", &[])])).await;
    // The first two end; the third stays running (its task is begun, never completed).
    let mut c = env.consumer("w1").await;
    let batch = env.read_all(&mut c, CAP).await;
    assert_eq!(batch.len(), 3);
    for d in &batch {
        if d.workflow_id == running_id {
            begin_ok(&env, d, "w1").await;
        } else {
            run_ok(&env, d, "w1", "\"ok\"").await;
        }
    }
    let k = env.queue.keys().clone();
    assert_eq!(env.cmd::<u64>(&["ZCARD", &k.workflows()]).await, 3);
    assert_eq!(env.cmd::<u64>(&["ZCARD", &k.expiring()]).await, 2);

    // Before the expiry, the promoter leaves the index alone.
    let p = env.queue.promote(NOW, 100).await.unwrap();
    assert_eq!(p.trimmed, 0);
    assert_eq!(env.cmd::<u64>(&["ZCARD", &k.workflows()]).await, 3);

    until_expired(&env, &k.workflow(&short_id)).await;
    let p = env.queue.promote(NOW + 5_000, 100).await.unwrap();
    assert_eq!(p.trimmed, 1);
    let mut index: Vec<String> = env.cmd(&["ZRANGE", &k.workflows(), "0", "-1"]).await;
    index.sort();
    let mut expected = vec![long_id.clone(), running_id.clone()];
    expected.sort();
    assert_eq!(index, expected);
    let expiring: Vec<String> = env.cmd(&["ZRANGE", &k.expiring(), "0", "-1"]).await;
    assert_eq!(expiring, vec![long_id.clone()]);

    // A member that is due by the caller's clock while Redis still holds the keys (clocks
    // disagree) is moved to the keys' real expiry, not dropped.
    let p = env.queue.promote(NOW + 7_200_000, 100).await.unwrap();
    assert_eq!(p.trimmed, 0);
    assert_eq!(env.cmd::<u64>(&["ZCARD", &k.workflows()]).await, 2);
    let score: f64 = env
        .cmd::<Option<f64>>(&["ZSCORE", &k.expiring(), &long_id])
        .await
        .expect("still expiring");
    assert!(score > (NOW + 7_200_000) as f64, "rescored to {score}");
    // `list` still shows what exists.
    let listed = env.queue.list(10).await.unwrap();
    assert_eq!(listed.len(), 2);
}

#[tokio::test]
async fn a_full_redis_refuses_new_work_while_accepted_work_finishes() {
    let env = env().await;
    let accepted = env.submit(&diamond("fail_fast")).await;
    let cancelled = env.submit(&diamond("fail_fast")).await;
    let c = env.consumer("w1").await;
    drop(c);
    let policy: Vec<String> = env.cmd(&["CONFIG", "GET", "maxmemory-policy"]).await;
    assert_eq!(policy[1], "noeviction");
    // Any used memory is now above maxmemory.
    let _: () = env.cmd(&["CONFIG", "SET", "maxmemory", "1"]).await;
    let keys_before: u64 = env.cmd(&["DBSIZE"]).await;

    let err = env.queue.submit(&diamond("fail_fast")).await.unwrap_err();
    assert!(matches!(err, QueueError::OutOfMemory), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("Redis is full"), "{err}");
    assert_eq!(
        env.cmd::<u64>(&["DBSIZE"]).await,
        keys_before,
        "nothing written"
    );

    // Accepted work: read, begin, complete, release, end with its retention; cancel.
    assert_eq!(
        env.queue.cancel(&cancelled, NOW).await.unwrap(),
        ScriptCode::Ok
    );
    run_everything(&env).await;
    let info = env.queue.workflow(&accepted).await.unwrap().unwrap();
    assert_eq!(info.status, "completed");
    let k = env.queue.keys().clone();
    assert!(env.cmd::<i64>(&["TTL", &k.workflow(&accepted)]).await > 0);
    let p = env.queue.promote(NOW, 100).await.unwrap();
    assert_eq!(p.moved, 0);
    assert_eq!(env.xlen(&k.stream(CAP, Priority::Normal)).await, 0);

    // Memory back: submissions are accepted again.
    let _: () = env.cmd(&["CONFIG", "SET", "maxmemory", "0"]).await;
    env.submit(&diamond("fail_fast")).await;
}
