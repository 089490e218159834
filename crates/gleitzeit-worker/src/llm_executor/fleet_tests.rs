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
use deadpool_redis::redis;
use gleitzeit_testkit::llm::{Fault, MockOpenAi, SimConfig};
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

/// Three simulators with limits 2, 1 and 3 (calls take a few ms), as endpoints e0, e1, e2.
async fn three_limited() -> ([MockOpenAi; 3], [u32; 3], Vec<ResolvedEndpoint>) {
    let cfg = SimConfig::default().with_token_delay(Duration::from_millis(2));
    let sims = [
        MockOpenAi::start(cfg.clone()).await.unwrap(),
        MockOpenAi::start(cfg.clone()).await.unwrap(),
        MockOpenAi::start(cfg).await.unwrap(),
    ];
    let limits = [2u32, 1, 3];
    let endpoints = (0..3)
        .map(|i| limited(&format!("e{i}"), sims[i].url(), limits[i]))
        .collect();
    (sims, limits, endpoints)
}

/// `n` concurrent calls spread over `workers` in turn, prompts `<label><i> x y`; every one
/// must succeed.
async fn call_round(workers: &[Arc<LlmExecutor>], n: usize, label: &str) {
    let mut calls = Vec::new();
    for i in 0..n {
        let w = workers[i % workers.len()].clone();
        let prompt = format!("{label}{i} x y");
        calls.push(tokio::spawn(async move {
            let req = LlmRequest::generate("m", prompt);
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
}

#[tokio::test]
async fn least_loaded_across_three_workers_never_exceeds_any_limit() {
    let redis = RedisServer::start().unwrap();
    let (sims, limits, endpoints) = three_limited().await;
    let q = queue(&redis).await;
    // Three workers: three routers, each with its own slots handle on the same Redis.
    let mut workers = Vec::new();
    for _ in 0..3 {
        let slots = Arc::new(RedisSlots::new(queue(&redis).await));
        workers.push(Arc::new(
            LlmExecutor::with_slots(&endpoints, &RoutingConfig::default(), slots).unwrap(),
        ));
    }
    call_round(&workers, 45, "t").await;
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

/// With slot reuse on, three workers over endpoints with limits 2, 1 and 3 never put more
/// calls on an endpoint than its limit, though each keeps its returned slots for its next
/// calls; once drained, no worker holds any. (The linger is longer than the default so that
/// the slots still kept at the end are returned by the drain, not by their sweep.)
#[tokio::test]
async fn with_slot_reuse_the_limits_hold_across_workers_and_the_drain_returns_every_slot() {
    let redis = RedisServer::start().unwrap();
    let (sims, limits, endpoints) = three_limited().await;
    let q = queue(&redis).await;
    let routing = RoutingConfig {
        lease_linger: Duration::from_secs(2),
        ..RoutingConfig::default()
    };
    let mut workers = Vec::new();
    for w in 0..3 {
        let slots = RedisSlots::owned_by(queue(&redis).await, &format!("w{w}"))
            .reusing(routing.lease_linger);
        workers.push(Arc::new(
            LlmExecutor::with_slots(&endpoints, &routing, Arc::new(slots)).unwrap(),
        ));
    }
    call_round(&workers, 60, "t").await;
    let mut total = 0;
    for (sim, max) in sims.iter().zip(limits) {
        let c = sim.counters();
        assert!(c.max_in_flight <= u64::from(max), "{c:?} over {max}");
        total += c.received;
    }
    assert_eq!(total, 60);
    // One call alone, whose slot is surely fresh when it ends (the round's last slots may
    // have passed their reuse window and gone back).
    call_round(&workers[..1], 1, "last").await;
    let kept: u64 = q
        .lease_counts(&["e0", "e1", "e2"], now_ms())
        .await
        .unwrap()
        .iter()
        .sum();
    assert!(kept > 0, "slots are kept for the next calls");
    for w in &workers {
        w.drained().await;
    }
    assert_eq!(
        q.lease_counts(&["e0", "e1", "e2"], now_ms()).await.unwrap(),
        vec![0, 0, 0],
        "every slot went back at the drain"
    );
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
    let r = ex.run(&hi_task(None), 0).await.unwrap();
    assert_eq!(r.value, json!("m: hi"));
    assert_eq!(r.meta.unwrap().endpoint.as_deref(), Some("only"));
    let status = ex.router().status().await;
    assert_eq!(status[0].in_flight, Some(0));
    assert_eq!(status[0].state, "ok");
}

/// Endpoints "a" (preferred) and "b" behind two routers of two workers sharing one Redis.
async fn two_routers_over_a_and_b(
    redis: &RedisServer,
    a: &MockOpenAi,
    b: &MockOpenAi,
) -> [Arc<LlmExecutor>; 2] {
    let mut ea = limited("a", a.url(), 8);
    ea.routing.priority = 0;
    let mut eb = limited("b", b.url(), 8);
    eb.routing.priority = 1;
    let routing = RoutingConfig {
        strategy: Some(gleitzeit_llm::Strategy::Priority),
        ..RoutingConfig::default()
    };
    let mut routers = Vec::new();
    for _ in 0..2 {
        let slots = Arc::new(RedisSlots::new(queue(redis).await));
        routers.push(Arc::new(
            LlmExecutor::with_slots(&[ea.clone(), eb.clone()], &routing, slots).unwrap(),
        ));
    }
    [routers[0].clone(), routers[1].clone()]
}

/// One field of a hash (`None` when absent), read on a connection of the test's own.
async fn hash_field(redis: &RedisServer, key: &str, field: &str) -> Option<u64> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn ask(ex: &LlmExecutor, prompt: &str) -> String {
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(30)),
        ..CallOptions::default()
    };
    ex.router()
        .call(&LlmRequest::generate("m", prompt), &opts)
        .await
        .unwrap()
        .endpoint
}

/// An answer saying no request is left until a reset 2 s away holds the endpoint for every
/// router sharing the slots until then: the calls meanwhile go to the other endpoint (the
/// servers' request counts show it), and once the budget expired at its reset the preferred
/// endpoint is called again.
#[tokio::test]
async fn a_spent_request_budget_holds_the_endpoint_for_every_router_until_its_reset() {
    let redis = RedisServer::start().unwrap();
    let a = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let b = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let routers = two_routers_over_a_and_b(&redis, &a, &b).await;
    let q = queue(&redis).await;
    a.push_fault(Fault::Headers(vec![
        ("x-ratelimit-remaining-requests".into(), "0".into()),
        ("x-ratelimit-reset-requests".into(), "2s".into()),
    ]));
    assert_eq!(ask(&routers[0], "first").await, "a");
    let key = q.keys().endpoint_budget("a");
    assert_eq!(hash_field(&redis, &key, "requests").await, Some(0));
    let reset = hash_field(&redis, &key, "requests_reset")
        .await
        .expect("reset stored");
    // Both routers, several calls each, before the reset: none reaches "a".
    for i in 0..6 {
        assert_eq!(ask(&routers[i % 2], &format!("meanwhile {i}")).await, "b");
    }
    assert!(
        now_ms() < reset,
        "the calls took longer than the 2 s budget window"
    );
    assert_eq!(a.counters().received, 1);
    assert_eq!(b.counters().received, 6);

    // The budget is forgotten at its reset (the key expires), and each router's own view
    // of the hold ends with it: then "a" takes calls again.
    while hash_field(&redis, &key, "requests").await.is_some() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(now_ms() >= reset);
    for r in &routers {
        while r.router().status().await[0].state != "ok" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(ask(&routers[1], "after the reset").await, "a");
    assert_eq!(a.counters().received, 2);
}

/// A token budget below a call's estimate (prompt chars / 4 + max_tokens) holds the endpoint
/// for that call, on every router, while calls that fit still go to it and spend from it.
#[tokio::test]
async fn a_token_budget_too_small_for_a_call_sends_it_elsewhere() {
    let redis = RedisServer::start().unwrap();
    let a = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let b = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let routers = two_routers_over_a_and_b(&redis, &a, &b).await;
    a.push_fault(Fault::Headers(vec![
        ("x-ratelimit-remaining-requests".into(), "100".into()),
        ("x-ratelimit-reset-requests".into(), "1m".into()),
        ("x-ratelimit-remaining-tokens".into(), "50".into()),
        ("x-ratelimit-reset-tokens".into(), "1m".into()),
    ]));
    assert_eq!(ask(&routers[0], "hi").await, "a");
    // 400 characters: about 100 tokens, more than the 50 left.
    let long = "x".repeat(400);
    assert_eq!(ask(&routers[1], &long).await, "b");
    assert_eq!(ask(&routers[0], &long).await, "b");
    // 100 characters (25 tokens) fit, twice; the third no longer does.
    let medium = "y".repeat(100);
    assert_eq!(ask(&routers[1], &medium).await, "a");
    assert_eq!(ask(&routers[0], &medium).await, "a");
    assert_eq!(ask(&routers[1], &medium).await, "b");
    assert_eq!(a.counters().received, 3);
    assert_eq!(b.counters().received, 3);
    let key = queue(&redis).await.keys().endpoint_budget("a");
    let tokens = hash_field(&redis, &key, "tokens").await;
    assert_eq!(tokens, Some(0), "50 - 25 - 25");
}
