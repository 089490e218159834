//! A queue on a `redis+cluster://` URL: every key of a namespace shares its hash tag, so a
//! namespace lives on the primary of one slot; the cluster client routes there, loads the
//! function library on every primary, and follows that primary's failover to its replica.

mod common;

use std::time::Duration;

use common::*;
use gleitzeit_queue::{Queue, QueueConfig, ScriptCode};
use gleitzeit_testkit::cluster::RedisCluster;

async fn start() -> RedisCluster {
    tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap()
        .expect("starting a redis cluster")
}

fn cfg(namespace: &str) -> QueueConfig {
    QueueConfig {
        namespace: namespace.to_owned(),
        response_timeout: Duration::from_secs(2),
        ..QueueConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_runs_on_a_cluster_and_follows_its_primary_failing_over() {
    let cluster = start().await;
    let queue = Queue::connect(cluster.url(), cfg("gleitzeit"))
        .await
        .expect("connect to the cluster");
    // The namespace's primary hands over to its replica (a coordinated failover: nothing
    // acknowledged is lost).
    let (id, (old, new)) = chain_across_failover(&queue, |wf_key| {
        let old = cluster.primary_of(wf_key).unwrap();
        (old, cluster.failover(wf_key).expect("failover"))
    })
    .await;
    assert_ne!(new, old);
    assert_eq!(
        cluster.primary_of(&queue.keys().workflow(&id)).unwrap(),
        new
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_spread_over_the_primaries_and_each_runs_its_scripts_there() {
    let cluster = start().await;
    // Namespaces whose hash tags fall on different primaries (found, not assumed).
    let mut by_primary = std::collections::BTreeMap::new();
    for k in 0..64 {
        let ns = format!("team-{k}");
        let probe = gleitzeit_queue::Keys::new(&ns).unwrap().workflow("x");
        by_primary
            .entry(cluster.primary_of(&probe).unwrap())
            .or_insert(ns);
        if by_primary.len() == 3 {
            break;
        }
    }
    assert_eq!(
        by_primary.len(),
        3,
        "64 namespaces all on fewer than 3 primaries"
    );
    for (primary, ns) in &by_primary {
        let queue = Queue::connect(cluster.url(), cfg(ns)).await.unwrap();
        let req = request("fail_fast", &[t("only", &[])]);
        queue.submit(&req).await.unwrap();
        let mut c = queue.consumer("w1").unwrap();
        let got = c
            .read_prioritised(&queue.keys().stream_refs(CAP), 10, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        queue.begin(&got[0], "w1", NOW).await.unwrap();
        assert_eq!(
            queue.complete(&got[0], "w1", "1", NOW).await.unwrap(),
            ScriptCode::Ok
        );
        // The workflow is on that primary.
        let node = cluster
            .nodes()
            .iter()
            .find(|n| n.port() == *primary)
            .unwrap();
        let status = node
            .admin(&["HGET", &queue.keys().workflow(&req.workflow_id), "status"])
            .unwrap();
        assert_eq!(status, "completed", "namespace {ns} on port {primary}");
    }
}

#[tokio::test]
async fn bad_cluster_urls_and_unsupported_settings_are_named() {
    let err = Queue::new("redis+cluster://h1:x", cfg("gleitzeit")).unwrap_err();
    assert!(err.to_string().contains("node 1"), "{err}");
    let err = Queue::new("redis+cluster://h1/3", cfg("gleitzeit")).unwrap_err();
    assert!(err.to_string().contains("database 0"), "{err}");
    let err = Queue::new(
        "redis+cluster://h1",
        QueueConfig {
            replica_acks: 1,
            replica_ack_timeout: Duration::from_millis(500),
            ..cfg("gleitzeit")
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("replica_acks"), "{err}");
}
