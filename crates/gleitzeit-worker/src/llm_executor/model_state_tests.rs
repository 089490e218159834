//! Model state shared through Redis: one probe per endpoint per interval across workers,
//! health published per worker, queued work read from the capability streams, preloading,
//! and the per-task routing strategy.

use super::*;
use std::sync::Arc;
use std::time::Duration;

use gleitzeit_llm::router::Selection;
use gleitzeit_llm::{CallOptions, HealthReport, LlmRequest, ModelStateStore, Strategy};
use gleitzeit_queue::{Queue, QueueConfig};

use crate::config::{EndpointKind, ResolvedEndpoint, RoutingConfig};

use super::tests::hi_task;
use super::LlmExecutor;
use crate::config::EndpointRouting;
use gleitzeit_testkit::llm::{MockOllama, SimConfig};
use gleitzeit_testkit::redis::RedisServer;

fn ollama(name: &str, url: String, routing: EndpointRouting) -> ResolvedEndpoint {
    ResolvedEndpoint {
        name: name.to_owned(),
        kind: EndpointKind::Ollama,
        url,
        api_key: None,
        models: vec!["*".to_owned()],
        timeout: Duration::from_secs(30),
        routing,
    }
}

async fn queue(redis: &RedisServer) -> Queue {
    Queue::connect(
        &redis.url(),
        QueueConfig {
            namespace: "ms".into(),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap()
}

async fn worker(
    redis: &RedisServer,
    endpoints: &[ResolvedEndpoint],
    routing: &RoutingConfig,
) -> LlmExecutor {
    LlmExecutor::with_stores(
        endpoints,
        routing,
        Arc::new(RedisSlots::new(queue(redis).await)),
        Some(Arc::new(RedisModelState::new(queue(redis).await))),
    )
    .unwrap()
}

#[tokio::test]
async fn two_workers_probe_each_endpoint_once_per_interval_and_share_what_they_learn() {
    let redis = RedisServer::start().unwrap();
    let sim = MockOllama::start(SimConfig::default().with_models(["a", "b"]))
        .await
        .unwrap();
    let eps = [ollama("e", sim.url(), EndpointRouting::default())];
    let routing = RoutingConfig {
        health_interval: Duration::from_secs(60),
        ..RoutingConfig::default()
    };
    let w1 = worker(&redis, &eps, &routing).await;
    let w2 = worker(&redis, &eps, &routing).await;
    // A call loads "a" on the simulator; the next full refresh sees it in /api/ps.
    w1.router()
        .call(&LlmRequest::generate("a", "x"), &CallOptions::default())
        .await
        .unwrap();
    // (The call itself read /api/tags once to learn the model's size.)
    let tags_before = sim.hits("/api/tags");
    let polled1 = w1.router().health_round("w1").await;
    let polled2 = w2.router().health_round("w2").await;
    let polled3 = w1.router().health_round("w1").await;
    assert_eq!(polled1, ["e"]);
    assert!(polled2.is_empty() && polled3.is_empty());
    assert_eq!(
        sim.hits("/api/ps"),
        1,
        "one probe per interval for the fleet"
    );
    assert_eq!(sim.hits("/api/tags"), tags_before + 1);
    // The second worker sees what the first one polled.
    let rec = &w2.router().endpoint_models().await[0].1;
    assert_eq!(rec.loaded, ["a"]);
    assert_eq!(rec.pulled.len(), 2);
    assert_eq!(rec.probed_by.as_deref(), Some("w1"));
    // Both published health; the endpoint is listed.
    let q = queue(&redis).await;
    let health = q.endpoint_health("e").await.unwrap();
    assert_eq!(health.len(), 2);
    let report: HealthReport = serde_json::from_str(&health["w2"]).unwrap();
    assert_eq!(report.state, "ok");
    assert_eq!(report.worker, "w2");
    assert_eq!(report.in_flight, Some(0));
    assert_eq!(q.endpoint_names().await.unwrap(), ["e"]);
    // A call by the second worker updates "loaded" for everyone at once.
    w2.router()
        .call(&LlmRequest::generate("b", "x"), &CallOptions::default())
        .await
        .unwrap();
    let shared = q.endpoint_models(&["e"]).await.unwrap();
    assert_eq!(shared[0].loaded_json.as_deref(), Some(r#"["b","a"]"#));
}

#[tokio::test]
async fn queued_work_in_redis_keeps_its_model_loaded() {
    let redis = RedisServer::start().unwrap();
    let sim = MockOllama::start(SimConfig::default().with_max_loaded(2))
        .await
        .unwrap();
    let eps = [ollama(
        "e",
        sim.url(),
        EndpointRouting {
            max_loaded: Some(2),
            ..EndpointRouting::default()
        },
    )];
    let routing = RoutingConfig {
        strategy: Some(Strategy::ModelAffinity),
        ..RoutingConfig::default()
    };
    // A task waits for "a" in its stream from the start (calls trust the demand they
    // read for one plan_interval).
    let q = queue(&redis).await;
    let key = q.keys().stream("llm:a", gleitzeit_queue::Priority::Normal);
    let pool = deadpool_redis::Config::from_url(redis.url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    let _: String = deadpool_redis::redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("wf")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let w = worker(&redis, &eps, &routing).await;
    for m in ["a", "c"] {
        w.router()
            .call(&LlmRequest::generate(m, "x"), &CallOptions::default())
            .await
            .unwrap();
    }
    let store = RedisModelState::new(q.clone());
    let demand = store.demand(&["a", "c"]).await.unwrap();
    assert_eq!(demand.iter().map(|d| d.ready).collect::<Vec<_>>(), [1, 0]);
    w.router()
        .call(&LlmRequest::generate("b", "x"), &CallOptions::default())
        .await
        .unwrap();
    let mut loaded = sim.loaded_models();
    loaded.sort();
    assert_eq!(loaded, ["a", "b"], "c was unloaded, not the needed a");
    assert_eq!(sim.loads_of("a"), 1);
}

#[tokio::test]
async fn preload_runs_in_the_background_at_start() {
    let redis = RedisServer::start().unwrap();
    let sim = MockOllama::start(SimConfig::default()).await.unwrap();
    let eps = [ollama(
        "e",
        sim.url(),
        EndpointRouting {
            preload: vec!["p1".into()],
            ..EndpointRouting::default()
        },
    )];
    let routing = RoutingConfig {
        preload: [("e".to_owned(), vec!["p2".to_owned()])].into(),
        ..RoutingConfig::default()
    };
    let mut eps = eps.to_vec();
    // What config validation does: the top-level list joins the endpoint's.
    eps[0].routing.preload.push("p2".into());
    let w = worker(&redis, &eps, &routing).await;
    w.start_background("w".into());
    sim.wait_until(|c| c.loads >= 2).await;
    assert_eq!(sim.loads_of("p1"), 1);
    assert_eq!(sim.loads_of("p2"), 1);
    assert_eq!(sim.counters().received, 0, "no inference request");
}

#[tokio::test]
async fn a_task_can_name_its_routing_strategy() {
    let redis = RedisServer::start().unwrap();
    let s0 = MockOllama::start(SimConfig::default()).await.unwrap();
    let s1 = MockOllama::start(SimConfig::default()).await.unwrap();
    let eps = [
        ollama("first", s0.url(), EndpointRouting::default()),
        ollama(
            "second",
            s1.url(),
            EndpointRouting {
                priority: 1,
                ..EndpointRouting::default()
            },
        ),
    ];
    let routing = RoutingConfig {
        strategy: Some(Strategy::RoundRobin),
        ..RoutingConfig::default()
    };
    let w = worker(&redis, &eps, &routing).await;
    let mut t = hi_task(Some(gleitzeit_core::TaskRouting {
        strategy: Some("priority".into()),
        ..Default::default()
    }));
    for _ in 0..6 {
        w.run(&t, 0).await.unwrap();
    }
    assert_eq!(s0.counters().received, 6, "priority: always the first");
    assert_eq!(s1.counters().received, 0);
    // Without the override the deployment's round robin spreads the calls.
    t.routing = None;
    for _ in 0..6 {
        w.run(&t, 0).await.unwrap();
    }
    assert_eq!(s1.counters().received, 3);
    assert_eq!(task_selection(&t).unwrap(), Selection::default());
}
