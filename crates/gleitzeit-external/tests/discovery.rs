//! Discovery through Redis with real registering services, and pools built on it.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    init_logs, python, redis_conn, redis_pool, test_config, PyService, ServiceSpec, TOKEN,
};
use deadpool_redis::redis;
use gleitzeit_external::discovery::now_ms;
use gleitzeit_external::keys::{instance_key, service_key};
use gleitzeit_external::{Discovery, ExternalCall, ExternalError, ServicePool, Token};
use gleitzeit_testkit::redis::RedisServer;
use serde_json::json;

const SERVICE: &str = "Python Tasks";

/// Adds to `pipe` a registration of `instance` (home prefix) at `url`, expiring at
/// `expires_ms`, as a service would write it.
fn register_by_hand(pipe: &mut redis::Pipeline, instance: &str, url: &str, expires_ms: u64) {
    pipe.cmd("ZADD")
        .arg(service_key("gleitzeit", SERVICE).unwrap())
        .arg(expires_ms)
        .arg(instance)
        .ignore()
        .cmd("HSET")
        .arg(instance_key("gleitzeit", SERVICE, instance).unwrap())
        .arg(&[
            ("instance", instance),
            ("service", SERVICE),
            ("url", url),
            ("functions", "[]"),
            ("max_concurrency", "1"),
            ("started_ms", "1"),
            ("protocol", "2"),
        ])
        .ignore();
}

fn discovered_pool(redis_url: &str) -> ServicePool {
    ServicePool::new(
        &test_config(),
        Token::new(TOKEN),
        Some(redis_pool(redis_url)),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_instances_are_found_and_expired_ones_ignored() {
    init_logs();
    let Some(py) = python() else { return };
    let redis_server = RedisServer::start().unwrap();
    let redis = redis_pool(&redis_server.url());
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE).redis(&redis_server.url())).await;
    let discovery = Discovery::new(redis.clone(), "gleitzeit").unwrap();

    let found = discovery.live_instances(SERVICE).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let record = &found[0];
    assert_eq!(record.instance, svc.instance);
    assert_eq!(record.service, SERVICE);
    assert_eq!(record.url, svc.url);
    assert_eq!(record.protocol, 2);
    assert_eq!(record.max_concurrency, 32);
    assert!(record.expires_ms > now_ms());
    let names: Vec<&str> = record.functions.iter().map(|f| f.name.as_str()).collect();
    for expected in ["echo", "echo_async", "boom", "mark_and_sleep"] {
        assert!(names.contains(&expected), "{names:?}");
    }

    // A dead instance (expiry in the past, hash still there) and a member without a hash.
    let mut conn = redis_conn(&redis_server.url()).await;
    let zset = service_key("gleitzeit", SERVICE).unwrap();
    let dead = "ghost-1-00000000";
    let mut pipe = redis::pipe();
    register_by_hand(&mut pipe, dead, "http://127.0.0.1:1", now_ms() - 1000);
    let _: () = pipe
        .cmd("ZADD")
        .arg(&zset)
        .arg(now_ms() + 60_000)
        .arg("hashless-1-00000000")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let found = discovery.live_instances(SERVICE).await.unwrap();
    assert_eq!(
        found
            .iter()
            .map(|r| r.instance.as_str())
            .collect::<Vec<_>>(),
        vec![svc.instance.as_str()]
    );
    // The reader removed the dead member on the way.
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(&zset)
        .arg(dead)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(score, None);

    // Another service, another namespace: nothing.
    assert!(discovery.live_instances("Nobody").await.unwrap().is_empty());
    let other_ns = Discovery::new(redis.clone(), "team-b").unwrap();
    assert!(other_ns.live_instances(SERVICE).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_discovered_instances_share_the_calls() {
    init_logs();
    let Some(py) = python() else { return };
    let redis_server = RedisServer::start().unwrap();
    let spec = ServiceSpec::new(SERVICE).redis(&redis_server.url());
    let a = PyService::start(&py, &spec).await;
    let b = PyService::start(&py, &spec).await;
    let pool = discovered_pool(&redis_server.url());
    assert_eq!(
        pool.wait_ready(SERVICE, 2, Duration::from_secs(30))
            .await
            .unwrap(),
        2
    );

    let calls = (0..40).map(|i| {
        let pool = &pool;
        async move {
            pool.call(ExternalCall::new(SERVICE, "echo_async").args(vec![json!(i), json!(0.05)]))
                .await
                .unwrap()
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut per_pid: HashMap<u64, usize> = HashMap::new();
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer["value"], json!(i));
        *per_pid.entry(answer["pid"].as_u64().unwrap()).or_default() += 1;
    }
    println!("measured: 40 calls over two instances: {per_pid:?}");
    assert_eq!(per_pid.len(), 2, "both instances served: {per_pid:?}");
    assert!(per_pid[&u64::from(a.pid)] > 0 && per_pid[&u64::from(b.pid)] > 0);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistered_instances_are_dropped_and_unknown_services_have_none() {
    init_logs();
    let Some(py) = python() else { return };
    let redis_server = RedisServer::start().unwrap();
    let spec = ServiceSpec::new(SERVICE).redis(&redis_server.url());
    let mut a = PyService::start(&py, &spec).await;
    let b = PyService::start(&py, &spec).await;
    let pool = discovered_pool(&redis_server.url());
    pool.wait_ready(SERVICE, 2, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(pool.status().len(), 2);

    // A clean shutdown deregisters; the next refresh forgets the instance.
    a.terminate().await;
    pool.refresh(SERVICE).await.unwrap();
    let status = pool.status();
    assert_eq!(
        status.iter().map(|s| s.url.as_str()).collect::<Vec<_>>(),
        vec![b.url.as_str()]
    );
    for i in 0..5 {
        let v = pool
            .call(ExternalCall::new(SERVICE, "echo").args(vec![json!(i)]))
            .await
            .unwrap();
        assert_eq!(v["pid"], json!(b.pid));
    }

    let err = pool
        .call(ExternalCall::new("Nobody", "f"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExternalError::NoInstance { detail: Some(d), .. } if d.contains("none registered")),
        "{err:?}"
    );
    assert!(err.retryable());
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_a_retryable_discovery_error() {
    init_logs();
    let mut redis_server = RedisServer::start().unwrap();
    let pool = discovered_pool(&redis_server.url());
    redis_server.kill();
    let err = pool
        .call(ExternalCall::new(SERVICE, "echo"))
        .await
        .unwrap_err();
    assert!(matches!(&err, ExternalError::Discovery { .. }), "{err:?}");
    assert!(err.retryable());
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_under_another_address_than_the_proven_one_is_refused() {
    init_logs();
    let Some(py) = python() else { return };
    let redis_server = RedisServer::start().unwrap();
    // A real instance (not registering itself) that proves http://127.0.0.1:<port>, and a
    // registration written into Redis that sends workers to it through another address, as a
    // relay in front of it would.
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE)).await;
    let other_address = format!("http://localhost:{}", svc.port);
    let instance = "relay-1-00000000";
    let mut conn = redis_conn(&redis_server.url()).await;
    let mut pipe = redis::pipe();
    register_by_hand(&mut pipe, instance, &other_address, now_ms() + 60_000);
    let _: () = pipe.query_async(&mut conn).await.unwrap();

    let pool = discovered_pool(&redis_server.url());
    let err = pool
        .call(ExternalCall::new(SERVICE, "echo").args(vec![json!(1)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExternalError::NoInstance { detail: Some(d), .. }
            if d.contains("relay") && d.contains(&svc.url) && d.contains(&other_address)),
        "{err:?}"
    );
    pool.close().await;

    // The same address written in the worker's own configuration is the operator's choice.
    let pool = common::static_pool(SERVICE, &[other_address], test_config());
    let value = pool
        .call(ExternalCall::new(SERVICE, "echo").args(vec![json!(2)]))
        .await
        .unwrap();
    assert_eq!(value["pid"], json!(svc.pid));
    pool.close().await;
}

/// In a namespace over several shards a service registers under its own prefix
/// (`{ns~svc~<service>}:`), and discovery finds it there as well as one registered under the
/// home prefix before the namespace recorded its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_sharded_namespace_services_register_under_their_own_prefix_and_are_found() {
    use gleitzeit_external::keys::service_key_in;
    init_logs();
    let Some(py) = python() else { return };
    let redis_server = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis_server.url()).await;
    let shards = gleitzeit_queue::Keys::new("gleitzeit")
        .unwrap()
        .shard_count();
    let _: () = redis::cmd("SET")
        .arg(&shards)
        .arg("3")
        .query_async(&mut conn)
        .await
        .unwrap();
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE).redis(&redis_server.url())).await;
    let own = service_key_in("gleitzeit", SERVICE, true).unwrap();
    assert_eq!(own, "{gleitzeit~svc~Python Tasks}:svc:Python Tasks");
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(&own)
        .arg(&svc.instance)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(score.is_some(), "not registered under {own}");
    let home = service_key("gleitzeit", SERVICE).unwrap();
    let at_home: u64 = redis::cmd("ZCARD")
        .arg(&home)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(at_home, 0);

    // An instance that registered under the home prefix (before the count was recorded).
    let early = "early-1-00000000";
    let mut pipe = redis::pipe();
    register_by_hand(&mut pipe, early, "http://127.0.0.1:1", now_ms() + 60_000);
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let discovery = Discovery::new(redis_pool(&redis_server.url()), "gleitzeit").unwrap();
    let mut found: Vec<String> = discovery
        .live_instances(SERVICE)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.instance)
        .collect();
    found.sort();
    let mut want = vec![early.to_owned(), svc.instance.clone()];
    want.sort();
    assert_eq!(found, want);
}
