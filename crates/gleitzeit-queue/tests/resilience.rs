//! Script cache loss, Redis outages and reconnection, operator statistics.

mod common;

use std::time::Duration;

use common::*;
use gleitzeit_queue::{Priority, Queue, QueueConfig, QueueError, ScriptCode};

#[tokio::test]
async fn scripts_survive_script_flush() {
    let env = env().await;
    let id = env
        .submit(&request("fail_fast", &[t("A", &[]), t("B", &[0])]))
        .await;
    let mut c = env.consumer("w1").await;
    let a = env.read_all(&mut c, CAP).await.remove(0);

    // Every script is loaded and cached now; drop the cache before each kind of call.
    let _: String = env.cmd(&["SCRIPT", "FLUSH"]).await;
    run_ok(&env, &a, "w1", "1").await;
    let _: String = env.cmd(&["SCRIPT", "FLUSH"]).await;
    let b = env.read_all(&mut c, CAP).await.remove(0);
    let _: String = env.cmd(&["SCRIPT", "FLUSH"]).await;
    assert!(env
        .queue
        .heartbeat("w1", std::slice::from_ref(&b))
        .await
        .unwrap()
        .is_empty());
    let _: String = env.cmd(&["SCRIPT", "FLUSH"]).await;
    run_ok(&env, &b, "w1", "2").await;
    let _: String = env.cmd(&["SCRIPT", "FLUSH"]).await;
    env.submit(&request("fail_fast", &[t("C", &[])])).await;
    let _: String = env.cmd(&["SCRIPT", "FLUSH"]).await;
    env.queue.promote(NOW, 10).await.unwrap();
    assert_eq!(
        env.queue.workflow(&id).await.unwrap().unwrap().status,
        "completed"
    );
}

#[tokio::test]
async fn operations_fail_retryably_while_redis_is_down_and_recover_after_restart() {
    let mut env = env_with(QueueConfig {
        response_timeout: Duration::from_secs(2),
        ..QueueConfig::default()
    })
    .await;
    let mut c = env.consumer("w1").await;
    let streams = env.queue.keys().stream_refs(CAP);
    assert!(c
        .read_prioritised(&streams, 1, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());

    env.server.kill();
    let err = env.queue.workflow("wf-x").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let err = c
        .read_prioritised(&streams, 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let err = env
        .queue
        .submit(&request("fail_fast", &[t("A", &[])]))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");

    env.server.restart().unwrap();
    // The pool and the consumer reconnect on their own (the data is gone: no persistence).
    let id = env.submit(&request("fail_fast", &[t("A", &[])])).await;
    let got = c
        .read_prioritised(&streams, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].workflow_id, id);
    assert_eq!(
        env.queue.begin(&got[0], "w1", NOW).await.map(|_| ()).ok(),
        Some(())
    );
    assert_eq!(
        env.queue.complete(&got[0], "w1", "1", NOW).await.unwrap(),
        ScriptCode::Ok
    );
}

#[tokio::test]
async fn connect_to_nothing_is_a_retryable_error() {
    let mut server = gleitzeit_testkit::redis::RedisServer::start().unwrap();
    let url = server.url();
    server.kill();
    let cfg = QueueConfig {
        response_timeout: Duration::from_secs(2),
        ..QueueConfig::default()
    };
    let err = Queue::connect(&url, cfg).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(!matches!(err, QueueError::InvalidArgument(_)));
}

#[tokio::test]
async fn stream_stats_count_ready_pending_and_consumers() {
    let env = env().await;
    let k = env.queue.keys().clone();
    let normal = k.stream_ref(CAP, Priority::Normal);
    let empty = env
        .queue
        .stream_stats(&k.stream_ref("llm:none", Priority::Low))
        .await
        .unwrap();
    assert_eq!(
        (
            empty.length,
            empty.pending,
            empty.consumers,
            empty.oldest_ready_age_ms
        ),
        (0, 0, 0, None)
    );

    env.submit(&request(
        "fail_fast",
        &[t("A", &[]), t("B", &[]), t("C", &[])],
    ))
    .await;
    let s = env.queue.stream_stats(&normal).await.unwrap();
    assert_eq!((s.length, s.pending, s.consumers), (3, 0, 0));
    assert!(s.oldest_ready_age_ms.is_some());

    let mut c = env.consumer("w1").await;
    let got = c
        .read_prioritised(std::slice::from_ref(&normal), 2, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let s = env.queue.stream_stats(&normal).await.unwrap();
    assert_eq!((s.length, s.pending, s.consumers), (3, 2, 1));
    assert!(
        s.oldest_ready_age_ms.is_some(),
        "one entry is still undelivered"
    );
    c.read_prioritised(std::slice::from_ref(&normal), 2, Duration::ZERO)
        .await
        .unwrap();
    let s = env.queue.stream_stats(&normal).await.unwrap();
    assert_eq!((s.length, s.pending, s.oldest_ready_age_ms), (3, 3, None));
}
