//! Redis Cluster with the layout of one slot per namespace: worker processes and the
//! submitter reach a 3-primary, 3-replica cluster through a `redis+cluster://` URL; mid-run
//! the primary holding the namespace fails over to its replica, once on request (`CLUSTER
//! FAILOVER`) and once by a crash (SIGKILL; the replica takes over after
//! `cluster-node-timeout`). The fault suite's checker then reads the new primary: every
//! workflow completed, none lost, no result recorded twice, nothing stuck. As with Sentinel,
//! the writes a crashed primary had not replicated are redone by the queue (docs/scaling.md).

use gleitzeit_e2e::faults::check::Report;
use gleitzeit_e2e::faults::ha::{run_with_failover, Failover};
use gleitzeit_e2e::NAMESPACE;
use gleitzeit_queue::Keys;
use gleitzeit_testkit::cluster::RedisCluster;

async fn run(scenario: &str, how: Failover) -> Report {
    let mut cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap()
        .expect("starting a redis cluster");
    let url = cluster.url();
    // Every key of the namespace lives in this key's slot.
    let key = Keys::new(NAMESPACE).unwrap().workflow("x");
    run_with_failover(scenario, &url, 0, move || {
        let old = cluster.primary_of(&key).expect("the namespace's primary");
        let new = match how {
            Failover::Requested => cluster.failover(&key),
            Failover::Crash => cluster.kill_primary_of(&key),
        }
        .expect("the failover");
        assert_ne!(new, old);
        (format!("redis://127.0.0.1:{new}/"), cluster)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_cluster_failover_mid_run_loses_nothing() {
    run("cluster_failover", Failover::Requested)
        .await
        .assert_all_completed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_cluster_primary_mid_run_loses_nothing() {
    run("cluster_primary_killed", Failover::Crash)
        .await
        .assert_all_completed();
}

/// The CLI's commands work on a cluster URL: a workflow submitted with `--wait` completes on
/// a worker reading the cluster, and the operator's views answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap()
        .expect("starting a redis cluster");
    let sim = gleitzeit_e2e::sim::echo_openai().await;
    let spec = gleitzeit_e2e::worker::WorkerSpec::openai(&cluster.url(), NAMESPACE, &sim.url());
    let worker = gleitzeit_e2e::worker::WorkerProcess::spawn("cluster", &spec);
    worker.consumer().await;
    let cli = gleitzeit_e2e::cli::Cli::new(&cluster.url(), NAMESPACE);
    let file = gleitzeit_e2e::cli::yaml_file(&gleitzeit_e2e::workflows::chain("Clustered", 2));
    let out = cli
        .run(&["submit", file.path().to_str().unwrap(), "--wait", "--json"])
        .await;
    out.assert_code(0);
    let id = out.json()["id"]
        .as_str()
        .expect("the workflow id")
        .to_owned();
    for args in [
        vec!["status", id.as_str(), "--json"],
        vec!["results", id.as_str(), "--json"],
        vec!["list", "--json"],
        vec!["queues", "--json"],
        vec!["fleet", "--json"],
        vec!["endpoints", "--json"],
        vec!["dead", "list", "--json"],
    ] {
        cli.run(&args).await.assert_code(0);
    }
    let status = cli.status_json(&id).await.json();
    assert_eq!(status["status"], "completed", "{status}");
}
