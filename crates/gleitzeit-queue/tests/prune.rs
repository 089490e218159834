//! Stale state: what `prune` finds, what it removes, and that it never loses work.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use gleitzeit_queue::{Priority, StaleHealth, WorkerRecord};

fn wall_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn on<'a>(name: &'a str, deps: &'a [u32], cap: &'a str) -> T<'a> {
    T {
        cap,
        ..t(name, deps)
    }
}

async fn consumers(env: &Env, stream: &str) -> Vec<String> {
    let v: Vec<Vec<deadpool_redis::redis::Value>> =
        env.cmd(&["XINFO", "CONSUMERS", stream, "workers"]).await;
    let mut names: Vec<String> = v
        .iter()
        .map(|c| match &c[1] {
            deadpool_redis::redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn consumers_of_gone_workers_go_unless_they_hold_work_and_live_ones_stay() {
    let env = env().await;
    let k = env.queue.keys().clone();
    let stream = k.stream(CAP, Priority::Normal);
    // gone-1 finished its task; gone-2 still holds one (pending); live-1 is a live worker.
    env.submit(&request("continue", &[t("A", &[])])).await;
    let mut gone1 = env.consumer("gone-1").await;
    let a = env.read_all(&mut gone1, CAP).await.remove(0);
    run_ok(&env, &a, "gone-1", "{}").await;
    env.submit(&request("continue", &[t("B", &[])])).await;
    let mut gone2 = env.consumer("gone-2").await;
    let b = env.read_all(&mut gone2, CAP).await.remove(0);
    begin_ok(&env, &b, "gone-2").await;
    env.submit(&request("continue", &[t("C", &[])])).await;
    let mut live = env.consumer("live-1").await;
    let c = env.read_all(&mut live, CAP).await.remove(0);
    run_ok(&env, &c, "live-1", "{}").await;
    let now = wall_ms() + 60_000;
    env.queue
        .publish_worker(
            &WorkerRecord {
                id: "live-1".into(),
                updated_ms: now,
                capabilities: vec![CAP.into()],
                ..WorkerRecord::default()
            },
            Duration::from_secs(15),
        )
        .await
        .unwrap();

    // A dry run reports and changes nothing.
    let found = env.queue.prune(Duration::ZERO, now, false).await.unwrap();
    let names: Vec<&str> = found
        .consumers
        .iter()
        .map(|c| c.consumer.as_str())
        .collect();
    assert_eq!(names, ["gone-1"]);
    assert_eq!(found.consumers[0].stream, stream);
    assert!(found.capabilities.is_empty(), "B is pending: {found:?}");
    assert_eq!(
        consumers(&env, &stream).await,
        ["gone-1", "gone-2", "live-1"]
    );

    let done = env.queue.prune(Duration::ZERO, now, true).await.unwrap();
    let names: Vec<&str> = done.consumers.iter().map(|c| c.consumer.as_str()).collect();
    assert_eq!(names, ["gone-1"]);
    assert_eq!(consumers(&env, &stream).await, ["gone-2", "live-1"]);
    // gone-2's task is still its own to finish (or to be reclaimed): nothing was lost.
    assert_eq!(env.pending(&stream).await, 1);
    env.queue.complete(&b, "gone-2", "{}", NOW).await.unwrap();

    // Idle for less than the threshold: not stale.
    let recent = env
        .queue
        .prune(Duration::from_secs(3_600), wall_ms(), false)
        .await
        .unwrap();
    assert!(recent.consumers.is_empty(), "{recent:?}");
}

#[tokio::test]
async fn an_idle_capability_goes_and_comes_back_when_a_waiting_task_is_released() {
    let env = env().await;
    let k = env.queue.keys().clone();
    // "llm:old" served its task long ago; B on "llm:later" waits for A.
    env.submit(&request("continue", &[on("Old", &[], "llm:old")]))
        .await;
    let mut c = env.consumer("w1").await;
    let old = env.read_all(&mut c, "llm:old").await.remove(0);
    run_ok(&env, &old, "w1", "{}").await;
    let id = env
        .submit(&request(
            "continue",
            &[t("A", &[]), on("B", &[0], "llm:later")],
        ))
        .await;
    let now = wall_ms() + 60_000;

    let found = env.queue.prune(Duration::ZERO, now, false).await.unwrap();
    assert_eq!(found.capabilities, ["llm:later", "llm:old"]);
    assert!(
        !found.capabilities.contains(&CAP.to_owned()),
        "A is queued on {CAP}"
    );
    let done = env.queue.prune(Duration::ZERO, now, true).await.unwrap();
    assert_eq!(done.capabilities, ["llm:later", "llm:old"]);
    assert!(done.kept.is_empty());
    assert_eq!(env.queue.capabilities().await.unwrap(), [CAP]);
    let exists: u64 = env
        .cmd(&["EXISTS", &k.stream("llm:old", Priority::Normal)])
        .await;
    assert_eq!(exists, 0, "the idle stream is gone");

    // A completes: B is released on the pruned capability, which is registered again and
    // delivered to a reader of it.
    let a = env.read_all(&mut c, CAP).await.remove(0);
    run_ok(&env, &a, "w1", "{}").await;
    assert_eq!(env.status(&id, 1).await, "ready");
    assert!(env
        .queue
        .capabilities()
        .await
        .unwrap()
        .contains(&"llm:later".to_owned()));
    let b = env.read_all(&mut c, "llm:later").await;
    assert_eq!(b.len(), 1, "B reaches a reader: {b:?}");
    assert_eq!(b[0].task, 1);
}

#[tokio::test]
async fn a_capability_a_live_worker_serves_stays() {
    let env = env().await;
    env.submit(&request("continue", &[on("Old", &[], "llm:old")]))
        .await;
    let mut c = env.consumer("w1").await;
    let old = env.read_all(&mut c, "llm:old").await.remove(0);
    run_ok(&env, &old, "w1", "{}").await;
    let now = wall_ms() + 60_000;
    env.queue
        .publish_worker(
            &WorkerRecord {
                id: "w1".into(),
                updated_ms: now,
                capabilities: vec!["llm:old".into()],
                ..WorkerRecord::default()
            },
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    let done = env.queue.prune(Duration::ZERO, now, true).await.unwrap();
    assert!(done.capabilities.is_empty(), "{done:?}");
    assert!(done.consumers.is_empty(), "w1 is live: {done:?}");
    assert_eq!(env.queue.capabilities().await.unwrap(), ["llm:old"]);
}

#[tokio::test]
async fn endpoints_nobody_reports_on_go_with_their_keys_and_old_views_are_dropped() {
    let env = env().await;
    let k = env.queue.keys().clone();
    let now = wall_ms();
    let old = now - 3_600_000;
    let view =
        |ms: u64| format!(r#"{{"state":"ok","latency_ms":10,"failures":0,"updated_ms":{ms}}}"#);
    let ttl = 600_000;
    // ep-old: only a gone worker's view. ep-live: a fresh view and a gone worker's.
    // ep-busy: a gone worker's view but a call still holds a lease.
    env.queue
        .endpoint_health_publish("ep-old", "gone", &view(old), ttl)
        .await
        .unwrap();
    env.queue
        .endpoint_health_publish("ep-live", "gone", &view(old), ttl)
        .await
        .unwrap();
    env.queue
        .endpoint_health_publish("ep-live", "w2", &view(now), ttl)
        .await
        .unwrap();
    env.queue
        .endpoint_health_publish("ep-busy", "gone", &view(old), ttl)
        .await
        .unwrap();
    let _: u64 = env
        .cmd(&[
            "ZADD",
            &k.endpoint_leases("ep-busy"),
            &(now + 60_000).to_string(),
            "w9|call-1",
        ])
        .await;
    let _: () = env.cmd(&["SET", &k.endpoint_hold("ep-old"), "1"]).await;

    let older_than = Duration::from_secs(60);
    let found = env.queue.prune(older_than, now, false).await.unwrap();
    assert_eq!(found.endpoints, ["ep-old"]);
    let gone = |e: &str| StaleHealth {
        endpoint: e.into(),
        worker: "gone".into(),
        updated_ms: Some(old),
    };
    assert_eq!(
        found.health,
        [gone("ep-busy"), gone("ep-live"), gone("ep-old")]
    );
    assert_eq!(
        env.queue.endpoint_names().await.unwrap(),
        ["ep-busy", "ep-live", "ep-old"],
        "a dry run changes nothing"
    );

    env.queue.prune(older_than, now, true).await.unwrap();
    assert_eq!(
        env.queue.endpoint_names().await.unwrap(),
        ["ep-busy", "ep-live"]
    );
    for key in [k.endpoint_health("ep-old"), k.endpoint_hold("ep-old")] {
        let exists: u64 = env.cmd(&["EXISTS", &key]).await;
        assert_eq!(exists, 0, "{key}");
    }
    let live = env.queue.endpoint_health("ep-live").await.unwrap();
    assert_eq!(live.keys().collect::<Vec<_>>(), ["w2"]);
    let busy = env.queue.endpoint_health("ep-busy").await.unwrap();
    assert!(busy.is_empty(), "its old view went, the endpoint stayed");
    assert!(env
        .queue
        .prune(older_than, now, false)
        .await
        .unwrap()
        .is_empty());
}
