//! A queue on a `redis+sentinel://` URL: it finds the primary through the sentinels, and
//! after a failover the same handle and consumer go on against the promoted replica.

mod common;

use std::time::Duration;

use common::*;
use gleitzeit_queue::{Delivery, Queue, QueueConfig, ScriptCode};
use gleitzeit_testkit::sentinel::SentinelGroup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_follows_a_failover_to_the_promoted_replica() {
    let group = SentinelGroup::start(1, 3).expect("sentinel group");
    let cfg = QueueConfig {
        response_timeout: Duration::from_secs(2),
        ..QueueConfig::default()
    };
    let queue = Queue::connect(group.url(), cfg).await.expect("connect");
    let req = request("fail_fast", &[t("A", &[]), t("B", &[0])]);
    let id = req.workflow_id.clone();
    queue
        .submit(&req)
        .await
        .expect("submit through the sentinels");
    let mut c = queue.consumer("w1").unwrap();
    let streams = queue.keys().stream_refs(CAP);
    let a: Vec<Delivery> = c
        .read_prioritised(&streams, 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    queue.begin(&a[0], "w1", NOW).await.unwrap();
    assert_eq!(
        queue.complete(&a[0], "w1", "\"a\"", NOW).await.unwrap(),
        ScriptCode::Ok
    );
    // Everything so far is on the replica before the failover (asynchronous replication
    // would otherwise lose the tail; see docs/scaling.md).
    let old = group.primary().unwrap();
    assert_eq!(old.admin(&["WAIT", "1", "10000"]).unwrap(), "1");
    let old_port = old.port();

    let new_port = group.failover().expect("failover");
    assert_ne!(new_port, old_port);

    // The same consumer and handle: B was released by A's completion and is read, begun
    // and completed on the new primary.
    let b = read_retried(&mut c, &streams).await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].workflow_id, id);
    retried("beginning B", || queue.begin(&b[0], "w1", NOW)).await;
    let code = retried("completing B", || queue.complete(&b[0], "w1", "\"b\"", NOW)).await;
    assert_eq!(code, ScriptCode::Ok);
    let wf = retried("reading the workflow", || queue.workflow(&id))
        .await
        .unwrap();
    assert_eq!(wf.status, "completed");
    // It is the promoted replica that holds it.
    let promoted = group.server(new_port).unwrap();
    let status = promoted
        .admin(&["HGET", &queue.keys().workflow(&id), "status"])
        .unwrap();
    assert_eq!(status, "completed");
}

#[tokio::test]
async fn a_sentinel_url_naming_an_unknown_service_is_a_clear_error() {
    let group = SentinelGroup::start(0, 1).expect("sentinel group");
    let url = group.url().replace("/gleitzeit", "/no-such-service");
    let cfg = QueueConfig {
        response_timeout: Duration::from_secs(2),
        ..QueueConfig::default()
    };
    let err = Queue::connect(&url, cfg).await.unwrap_err();
    // A configuration error (the worker stops with it at start-up), not an outage to wait
    // out.
    assert!(!err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("service name"), "{text}");
    assert!(text.contains("sentinel monitor"), "{text}");
}
