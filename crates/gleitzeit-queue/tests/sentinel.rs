//! A queue on a `redis+sentinel://` URL: it finds the primary through the sentinels, and
//! after a failover the same handle and consumer go on against the promoted replica.

mod common;

use std::time::Duration;

use common::*;
use gleitzeit_queue::{Queue, QueueConfig};
use gleitzeit_testkit::sentinel::SentinelGroup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_follows_a_failover_to_the_promoted_replica() {
    let group = SentinelGroup::start(1, 3).expect("sentinel group");
    let cfg = QueueConfig {
        response_timeout: Duration::from_secs(2),
        ..QueueConfig::default()
    };
    let queue = Queue::connect(group.url(), cfg).await.expect("connect");
    let (id, new_port) = chain_across_failover(&queue, |_| {
        // Everything so far is on the replica before the failover (asynchronous
        // replication would otherwise lose the tail; see docs/scaling.md).
        let old = group.primary().unwrap();
        assert_eq!(old.admin(&["WAIT", "1", "10000"]).unwrap(), "1");
        let old_port = old.port();
        let new_port = group.failover().expect("failover");
        assert_ne!(new_port, old_port);
        new_port
    })
    .await;
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
