//! Redis Cluster. With the layout of one slot per namespace: worker processes and the
//! submitter reach a 3-primary, 3-replica cluster through a `redis+cluster://` URL; mid-run
//! the primary holding the namespace fails over to its replica, once on request (`CLUSTER
//! FAILOVER`) and once by a crash (SIGKILL; the replica takes over after
//! `cluster-node-timeout`). The fault suite's checker then reads the new primary: every
//! workflow completed, none lost, no result recorded twice, nothing stuck. As with Sentinel,
//! the writes a crashed primary had not replicated are redone by the queue (docs/scaling.md).
//!
//! With the namespace spread over three shards: the work spreads over the three primaries
//! (each within ±25 % of an equal share), a shard's primary crashing mid-run loses and
//! duplicates nothing, and a process configured for another shard count is refused.

use gleitzeit_e2e::cli::Cli;
use gleitzeit_e2e::faults::check::{check, Report};
use gleitzeit_e2e::faults::fleet::{ollama_sims, servers, spec_at, submit_to, workers};
use gleitzeit_e2e::faults::ha::{run_with_failover, Failover};
use gleitzeit_e2e::faults::seed;
use gleitzeit_e2e::faults::workload::Workload;
use gleitzeit_e2e::store::Store;
use gleitzeit_e2e::NAMESPACE;
use gleitzeit_queue::{Keys, Queue, QueueConfig, QueueError};
use gleitzeit_testkit::cluster::RedisCluster;

/// A cluster of `primaries` primaries with `replicas` replicas each (started off the async
/// threads: the harness waits synchronously).
async fn start(primaries: usize, replicas: usize) -> RedisCluster {
    tokio::task::spawn_blocking(move || RedisCluster::start(primaries, replicas))
        .await
        .unwrap()
        .expect("starting a redis cluster")
}

async fn run(scenario: &str, how: Failover) -> Report {
    let mut cluster = start(3, 1).await;
    let url = cluster.url();
    // Every key of the namespace lives in this key's slot.
    let key = Keys::new(NAMESPACE).unwrap().workflow("x");
    run_with_failover(scenario, &url, None, 0, move || {
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
    let cluster = start(3, 1).await;
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

/// The namespace spread over three shards: the worker processes and the submitter are
/// configured with `shards: 3`; each shard's slot lies in its own third of the slot space, so
/// on a cluster whose primaries own equal thirds (what `redis-cli --cluster create` makes)
/// each primary holds one shard.
const SHARDS: u16 = 3;

/// The primary serving each shard of the namespace, in shard order.
fn shard_primaries(cluster: &RedisCluster) -> Vec<u16> {
    let home = Keys::new(NAMESPACE).unwrap();
    (0..SHARDS)
        .map(|k| {
            cluster
                .primary_of(&home.shard(k, SHARDS).workflow("x"))
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_namespace_spreads_its_work_over_the_primaries() {
    let cluster = start(3, 1).await;
    let primaries = shard_primaries(&cluster);
    let mut distinct = primaries.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "one shard per primary: {primaries:?}");

    // 600 workflows: each primary's share is binomial (n = 600, p = 1/3), so ±25 % of an
    // equal share is more than four standard deviations.
    let workload = Workload::diamonds("sharded_spread", seed(), 600);
    let sims = ollama_sims(1, std::time::Duration::ZERO).await;
    let spec = spec_at(&cluster.url(), &[sims[0].url()], 16, "10s").set("shards", SHARDS);
    let _fleet = workers(2, &spec).await;
    let queue = Queue::connect(
        cluster.url(),
        QueueConfig {
            namespace: NAMESPACE.to_owned(),
            shards: Some(SHARDS),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("a queue on the cluster");
    let ids = submit_to(&queue, &workload).await;

    let store = Store::connect(&cluster.url(), NAMESPACE).await;
    let report = check("sharded_spread", &store, &workload, &ids, &servers(&sims)).await;
    report.print();
    report.assert_all_completed();

    // Where the work was: each shard's workflow index on the primary that serves it.
    let home = Keys::new(NAMESPACE).unwrap();
    let mut per_primary = Vec::new();
    for (k, port) in primaries.iter().enumerate() {
        let node = cluster.nodes().iter().find(|n| n.port() == *port).unwrap();
        let held: u64 = node
            .admin(&["ZCARD", &home.shard(k as u16, SHARDS).workflows()])
            .unwrap()
            .parse()
            .unwrap();
        // The workflow hashes are there too (the shard's keys live nowhere else).
        let scripts = commandstat_calls(node, "fcall");
        eprintln!("shard {k} on primary {port}: {held} workflows, {scripts} FCALLs");
        per_primary.push(held);
    }
    assert_eq!(per_primary.iter().sum::<u64>(), 600);
    for held in &per_primary {
        assert!(
            (150..=250).contains(held),
            "each primary within ±25 % of 200 workflows: {per_primary:?}"
        );
    }
    // The endpoint's state (leases of every call, health, model records) is under its own
    // prefix, on the primary of its own slot; nothing of it under the home prefix.
    let node_of = |key: &str| {
        let port = cluster.primary_of(key).unwrap();
        cluster.nodes().iter().find(|n| n.port() == port).unwrap()
    };
    let spread = home.with_spread(true);
    let own = node_of(&spread.endpoint_health("ep0"))
        .admin(&["KEYS", &format!("{}*", spread.endpoint_prefix("ep0"))])
        .unwrap();
    eprintln!("keys of endpoint ep0 under its own prefix: {own:?}");
    assert!(own.contains("ep:ep0:"), "{own:?}");
    let at_home = node_of(&home.endpoints())
        .admin(&["KEYS", &format!("{}ep:*", home.prefix())])
        .unwrap();
    assert!(at_home.trim().is_empty(), "{at_home:?}");
    // The CLI sees the whole namespace through the cluster URL, adopting its shard count.
    let out = Cli::new(&cluster.url(), NAMESPACE)
        .run(&["list", "--limit", "1000", "--json"])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let listed = out.stdout.matches("\"id\"").count();
    assert_eq!(listed, 600, "{}", out.stdout);
    // A submission and its follow-up commands, each finding the workflow's shard.
    let cli = Cli::new(&cluster.url(), NAMESPACE);
    let file = gleitzeit_e2e::cli::yaml_file(&gleitzeit_e2e::workflows::chain("via-cli", 2));
    let out = cli
        .run(&["submit", file.path().to_str().unwrap(), "--wait"])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.lines().next().unwrap().trim().to_owned();
    for args in [
        vec!["status", id.as_str()],
        vec!["results", id.as_str()],
        vec!["queues"],
        vec!["dead", "list"],
        vec!["fleet"],
        vec!["endpoints"],
    ] {
        let out = cli.run(&args).await;
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
    }
    let status = cli.run(&["status", &id, "--json"]).await;
    assert!(status.stdout.contains("\"completed\""), "{}", status.stdout);
    // The fleet view finds both workers' records, each under its own prefix.
    let fleet = queue.workers(gleitzeit_core::now_ms()).await.unwrap();
    assert_eq!(fleet.len(), 2, "{fleet:?}");
    for w in &fleet {
        let key = spread.worker(&w.id);
        assert!(key.starts_with(&format!("{{{NAMESPACE}~w~")), "{key}");
    }
}

/// `cmdstat_<name>` calls of a node's `INFO commandstats`.
fn commandstat_calls(node: &gleitzeit_testkit::redis::RedisServer, name: &str) -> u64 {
    let info = node.admin(&["INFO", "commandstats"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_primary_crashing_mid_run_loses_nothing() {
    let mut cluster = start(3, 1).await;
    let url = cluster.url();
    // A shard that is not the home slot's: its primary serves only workflows.
    let key = Keys::new(NAMESPACE).unwrap().shard(1, SHARDS).workflow("x");
    run_with_failover("sharded_primary_killed", &url, Some(SHARDS), 0, move || {
        let old = cluster.primary_of(&key).expect("the shard's primary");
        let new = cluster.kill_primary_of(&key).expect("the failover");
        assert_ne!(new, old);
        // The checker reads every shard through the cluster.
        (cluster.url(), cluster)
    })
    .await
    .assert_all_completed();
}

#[tokio::test]
async fn a_process_configured_for_another_shard_count_is_refused() {
    let cluster = start(3, 0).await;
    let cfg = |shards| QueueConfig {
        namespace: NAMESPACE.to_owned(),
        shards,
        ..QueueConfig::default()
    };
    Queue::connect(cluster.url(), cfg(Some(SHARDS)))
        .await
        .expect("recording 3 shards");
    let err = Queue::connect(cluster.url(), cfg(Some(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::ShardCount {
                configured: 2,
                recorded: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    // Unset adopts the recorded count.
    let q = Queue::connect(cluster.url(), cfg(None)).await.unwrap();
    assert_eq!(q.shard_count(), SHARDS);
    // The CLI says so and exits with the usage code.
    let out = Cli::new(&cluster.url(), NAMESPACE)
        .run(&["--shards", "2", "list"])
        .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("spread over 3 shard"), "{}", out.stderr);
}
