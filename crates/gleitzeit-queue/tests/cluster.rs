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

/// Endpoint names whose own slots lie on at least two primaries, none on the primary of the
/// namespace's home slot (found, not assumed).
fn endpoints_off_home(cluster: &RedisCluster, keys: &gleitzeit_queue::Keys) -> Vec<String> {
    let home = cluster.primary_of(&keys.endpoints()).unwrap();
    let mut found: Vec<(u16, String)> = Vec::new();
    for k in 0..256 {
        let name = format!("ep-{k}");
        let primary = cluster.primary_of(&keys.endpoint_leases(&name)).unwrap();
        if primary != home && found.iter().filter(|(p, _)| *p == primary).count() < 2 {
            found.push((primary, name));
        }
        if found.len() == 4 {
            break;
        }
    }
    let primaries: std::collections::BTreeSet<u16> = found.iter().map(|(p, _)| *p).collect();
    assert!(
        primaries.len() == 2 && found.len() == 4,
        "no endpoints off the home primary: {found:?}"
    );
    found.into_iter().map(|(_, n)| n).collect()
}

/// Over N > 1 shards each endpoint's state is under a prefix of its own, so the lease of
/// every LLM call goes to that endpoint's slot instead of the namespace's home slot; every
/// endpoint operation — leases over several candidates in both picks, lessons, busy counts,
/// model records, load marks, health, the operator's view, pruning — works across those
/// slots, and a handle that was never told the shard count finds the same keys. Each
/// worker's registry record is likewise under its own prefix, listed through the home index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_namespace_keeps_each_endpoints_and_workers_state_in_a_slot_of_its_own() {
    use gleitzeit_queue::{LeaseCandidate, LeaseLesson, LeasePick, ModelsRecord};
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap()
        .expect("starting a redis cluster");
    let sharded = QueueConfig {
        shards: Some(3),
        ..cfg("fleet")
    };
    let q = Queue::connect(cluster.url(), sharded).await.unwrap();
    let keys = q.keys().clone();
    assert!(keys.is_spread());
    let names = endpoints_off_home(&cluster, &keys);
    let [a, b, c, d] = [&names[0], &names[1], &names[2], &names[3]].map(String::as_str);
    assert!(keys
        .endpoint_hold(a)
        .starts_with(&format!("{{fleet~ep~{a}}}:")));
    let now = 1_000_000;
    let far = now + 3_600_000;
    let cand = |endpoint, max| LeaseCandidate { endpoint, max };

    // In order: each candidate (one slot each) is asked until one grants.
    let order = [cand(a, 1), cand(b, 1), cand(c, 0)];
    let mut chosen = Vec::new();
    for i in 0..3 {
        let g = q
            .lease_acquire(&order, LeasePick::InOrder, &format!("w|{i}"), 0, now, far)
            .await
            .unwrap();
        chosen.push(g.chosen);
    }
    assert_eq!(chosen, [Some(0), Some(1), Some(2)]);
    assert_eq!(
        q.lease_counts(&[a, b, c, d], now).await.unwrap(),
        [1, 1, 1, 0]
    );
    // Least loaded: d (empty) before c (one lease), though c comes first.
    let g = q
        .lease_acquire(
            &[cand(c, 4), cand(d, 4)],
            LeasePick::LeastLoaded,
            "w|3",
            0,
            now,
            far,
        )
        .await
        .unwrap();
    assert_eq!(g.chosen, Some(1));
    // A lesson (which returns the lease) lands in the endpoint's slot: a held endpoint is
    // skipped by every caller.
    q.lease_settle(a, "w|0", LeaseLesson::Hold { ms: 60_000 }, now)
        .await
        .unwrap();
    let g = q
        .lease_acquire(
            &[cand(a, 0), cand(b, 0)],
            LeasePick::InOrder,
            "w|4",
            0,
            now,
            far,
        )
        .await
        .unwrap();
    assert_eq!(g.chosen, Some(1));
    assert!(g.holds_ms[0] > 0 && g.holds_ms[1] == 0, "{g:?}");
    let node = primary_node(&cluster, &keys.endpoint_hold(a));
    assert_eq!(
        node.admin(&["EXISTS", &keys.endpoint_hold(a)]).unwrap(),
        "1"
    );
    assert!(q.lease_release(b, "w|4").await.unwrap());
    assert!(q.lease_renew(c, "w|2", far + 1).await.unwrap());

    // Model state over several slots.
    q.endpoint_busy_begin(a, "m", 60_000).await.unwrap();
    q.endpoint_busy_begin(c, "m", 60_000).await.unwrap();
    q.endpoint_busy_end(c, "m").await.unwrap();
    let busy = q.endpoint_busy(&[a, c]).await.unwrap();
    assert_eq!(busy[0].get("m"), Some(&1));
    assert!(busy[1].is_empty(), "{busy:?}");
    let record = ModelsRecord {
        loaded_json: Some("[\"m\"]".to_owned()),
        ..ModelsRecord::default()
    };
    q.endpoint_models_put(b, &record).await.unwrap();
    let models = q.endpoint_models(&[a, b]).await.unwrap();
    assert_eq!(models[1].loaded_json.as_deref(), Some("[\"m\"]"));
    assert!(models[0].loaded_json.is_none());
    assert!(q.endpoint_loading_begin(d, "m", "w", 60_000).await.unwrap());
    let marks = q.endpoint_marks(&[a, d], "m").await.unwrap();
    assert!(!marks[0].loading && marks[1].loading, "{marks:?}");
    for e in [a, b, c, d] {
        q.endpoint_health_publish(e, "w", &format!("{{\"updated_ms\":{now}}}"), 60_000)
            .await
            .unwrap();
    }
    let states = q.endpoint_states(now).await.unwrap();
    let live: Vec<(String, u64)> = states
        .iter()
        .map(|s| (s.name.clone(), s.live_leases))
        .collect();
    let mut want: Vec<(String, u64)> = [(a, 0), (b, 1), (c, 1), (d, 1)]
        .iter()
        .map(|(n, k)| ((*n).to_owned(), *k))
        .collect();
    want.sort();
    assert_eq!(live, want);
    assert!(states.iter().all(|s| s.health.len() == 1), "{states:?}");

    // A handle made without a shard count (the LLM executor's) adopts the recorded one.
    let fresh = Queue::new(cluster.url(), cfg("fleet")).unwrap();
    assert_eq!(
        fresh.lease_counts(&[a, b, c, d], now).await.unwrap(),
        [0, 1, 1, 1]
    );
    assert_eq!(
        fresh.endpoint_busy(&[a]).await.unwrap()[0].get("m"),
        Some(&1)
    );

    // Pruning reaches the endpoints' slots: with every lease gone and the views old, each
    // endpoint is dropped with all its keys.
    // (Endpoints in slots of their own: one round trip per endpoint, sent together.)
    assert_eq!(
        q.lease_release_many(&[(b, "w|1"), (c, "w|2"), (d, "w|3")])
            .await
            .unwrap(),
        3
    );
    let _: () = redis_del_models(&cluster, &keys, &[a, b, c, d]);
    let report = q
        .prune(Duration::from_secs(1), now + 10_000_000, true)
        .await
        .unwrap();
    let mut pruned = report.endpoints.clone();
    pruned.sort();
    let mut all: Vec<String> = [a, b, c, d].iter().map(|s| (*s).to_owned()).collect();
    all.sort();
    assert_eq!(pruned, all);
    assert!(q.endpoint_names().await.unwrap().is_empty());
    assert!(q.endpoint_health(a).await.unwrap().is_empty());

    // Each worker's registry record is under its own prefix; the index stays home.
    let ids = ["w-a", "w-b", "w-c", "w-d"];
    for id in ids {
        let rec = gleitzeit_queue::WorkerRecord {
            id: id.to_owned(),
            updated_ms: now,
            concurrency: 4,
            ..gleitzeit_queue::WorkerRecord::default()
        };
        q.publish_worker(&rec, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(keys.worker(id).starts_with(&format!("{{fleet~w~{id}}}:")));
        let node = primary_node(&cluster, &keys.worker(id));
        let concurrency = node.admin(&["HGET", &keys.worker(id), "concurrency"]);
        assert_eq!(concurrency.unwrap(), "4");
    }
    let listed = |workers: Vec<gleitzeit_queue::WorkerRecord>| -> Vec<String> {
        workers.into_iter().map(|w| w.id).collect()
    };
    assert_eq!(listed(q.workers(now).await.unwrap()), ids);
    q.remove_worker("w-b").await.unwrap();
    assert_eq!(listed(q.workers(now).await.unwrap()), ["w-a", "w-c", "w-d"]);
}

/// The node serving `key`'s slot.
fn primary_node<'a>(
    cluster: &'a RedisCluster,
    key: &str,
) -> &'a gleitzeit_testkit::redis::RedisServer {
    let port = cluster.primary_of(key).unwrap();
    cluster.nodes().iter().find(|n| n.port() == port).unwrap()
}

/// Deletes the models records (a prune keeps an endpoint that has one).
fn redis_del_models(cluster: &RedisCluster, keys: &gleitzeit_queue::Keys, names: &[&str]) {
    for n in names {
        let key = keys.endpoint_models(n);
        primary_node(cluster, &key).admin(&["DEL", &key]).unwrap();
    }
}
