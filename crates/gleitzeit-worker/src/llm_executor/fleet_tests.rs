//! Routers of several workers sharing one Redis: fleet-wide limits and failover.

use super::*;
use std::sync::Arc;
use std::time::Duration;

use gleitzeit_llm::{CallOptions, LlmRequest};
use gleitzeit_queue::{Queue, QueueConfig};
use serde_json::json;

use crate::config::{EndpointKind, ResolvedEndpoint, RoutingConfig};

use super::tests::hi_task;
use super::LlmExecutor;
use crate::bridge::now_ms;
use crate::config::EndpointRouting;
use gleitzeit_testkit::llm::{MockOpenAi, SimConfig};
use gleitzeit_testkit::redis::RedisServer;

fn limited(name: &str, url: String, max: u32) -> ResolvedEndpoint {
    ResolvedEndpoint {
        name: name.to_owned(),
        kind: EndpointKind::OpenAi,
        url,
        api_key: None,
        models: vec!["*".to_owned()],
        timeout: Duration::from_secs(30),
        routing: EndpointRouting {
            max_concurrent: Some(max),
            ..EndpointRouting::default()
        },
    }
}

async fn queue(redis: &RedisServer) -> Queue {
    Queue::connect(
        &redis.url(),
        QueueConfig {
            namespace: "fleet".into(),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn least_loaded_across_three_workers_never_exceeds_any_limit() {
    let redis = RedisServer::start().unwrap();
    let cfg = SimConfig::default().with_token_delay(Duration::from_millis(2));
    let sims = [
        MockOpenAi::start(cfg.clone()).await.unwrap(),
        MockOpenAi::start(cfg.clone()).await.unwrap(),
        MockOpenAi::start(cfg).await.unwrap(),
    ];
    let limits = [2u32, 1, 3];
    let endpoints: Vec<ResolvedEndpoint> = (0..3)
        .map(|i| limited(&format!("e{i}"), sims[i].url(), limits[i]))
        .collect();
    let q = queue(&redis).await;
    // Three workers: three routers, each with its own slots handle on the same Redis.
    let mut workers = Vec::new();
    for _ in 0..3 {
        let slots = Arc::new(RedisSlots::new(queue(&redis).await));
        workers.push(Arc::new(
            LlmExecutor::with_slots(&endpoints, &RoutingConfig::default(), slots).unwrap(),
        ));
    }
    let mut calls = Vec::new();
    for i in 0..45 {
        let w = workers[i % 3].clone();
        calls.push(tokio::spawn(async move {
            let req = LlmRequest::generate("m", format!("t{i} x y"));
            let opts = CallOptions {
                timeout: Some(Duration::from_secs(60)),
                ..CallOptions::default()
            };
            w.router().call(&req, &opts).await
        }));
    }
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let mut total = 0;
    for (sim, max) in sims.iter().zip(limits) {
        let c = sim.counters();
        // Each worker alone could have put up to `max` calls on the endpoint; together
        // they must not exceed it either.
        assert!(c.max_in_flight <= u64::from(max), "{c:?} over {max}");
        total += c.received;
    }
    assert_eq!(total, 45);
    assert_eq!(
        q.lease_counts(&["e0", "e1", "e2"], now_ms()).await.unwrap(),
        vec![0, 0, 0],
        "every lease was returned"
    );

    // One endpoint dies mid-run: every call still completes on the others.
    sims[2].set_token_delay(Duration::from_millis(5));
    let mut calls = Vec::new();
    for i in 0..30 {
        let w = workers[i % 3].clone();
        calls.push(tokio::spawn(async move {
            let req = LlmRequest::generate("m", format!("again {i}"));
            let opts = CallOptions {
                timeout: Some(Duration::from_secs(60)),
                ..CallOptions::default()
            };
            w.router().call(&req, &opts).await
        }));
    }
    let before = sims[2].counters().received;
    sims[2].wait_received(before + 1).await;
    sims[2].stop().await;
    for c in calls {
        let r = c.await.unwrap().unwrap();
        assert!(r.text.unwrap().contains("again"));
    }
    for (sim, max) in sims.iter().zip(limits) {
        assert!(sim.counters().max_in_flight <= u64::from(max));
    }
}

#[tokio::test]
async fn executor_runs_tasks_and_reports_the_endpoint() {
    let redis = RedisServer::start().unwrap();
    let sim = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let ex = LlmExecutor::with_slots(
        &[limited("only", sim.url(), 1)],
        &RoutingConfig::default(),
        Arc::new(RedisSlots::new(queue(&redis).await)),
    )
    .unwrap();
    let r = ex.run(&hi_task(None)).await.unwrap();
    assert_eq!(r.value, json!("m: hi"));
    assert_eq!(r.meta.unwrap().endpoint.as_deref(), Some("only"));
    let status = ex.router().status().await;
    assert_eq!(status[0].in_flight, Some(0));
    assert_eq!(status[0].state, "ok");
}
