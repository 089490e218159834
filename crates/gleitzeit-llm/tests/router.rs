//! The router against simulators, with per-process slots: strategies, concurrency limits,
//! backpressure, and failover by error class.

use std::sync::Arc;
use std::time::Duration;

use gleitzeit_llm::{
    CallOptions, EndpointConfig, ErrorClass, LlmError, LlmRequest, LocalSlots, ProviderKind,
    RouteError, RouteTarget, Router, RouterConfig, Strategy,
};
use gleitzeit_testkit::llm::{Fault, MockOpenAi, SimConfig, SimServer};

async fn sims(n: usize, cfg: SimConfig) -> Vec<MockOpenAi> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(MockOpenAi::start(cfg.clone()).await.unwrap());
    }
    out
}

fn target(name: &str, sim: &SimServer) -> RouteTarget {
    RouteTarget::new(EndpointConfig::new(name, sim.url(), ProviderKind::OpenAi))
}

fn router(targets: Vec<RouteTarget>, strategy: Strategy) -> Arc<Router> {
    let cfg = RouterConfig {
        strategy,
        ..RouterConfig::default()
    };
    Arc::new(Router::new(targets, Arc::new(LocalSlots::new()), cfg).unwrap())
}

fn req() -> LlmRequest {
    LlmRequest::generate("m", "hello")
}

fn opts() -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_secs(30)),
        ..CallOptions::default()
    }
}

/// Endpoint "a" on the first simulator, preferred; "b" on the second as its spare.
fn a_then_b(s: &[MockOpenAi]) -> Vec<RouteTarget> {
    vec![
        target("a", &s[0]).with_priority(0),
        target("b", &s[1]).with_priority(1),
    ]
}

/// A priority router over [`a_then_b`]: every call goes to "a" while it can take it.
fn primary_and_spare(s: &[MockOpenAi]) -> Arc<Router> {
    router(a_then_b(s), Strategy::Priority)
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let s = sims(3, SimConfig::default()).await;
    let r = router(
        vec![target("a", &s[0]), target("b", &s[1]), target("c", &s[2])],
        Strategy::RoundRobin,
    );
    for _ in 0..30 {
        r.call(&req(), &opts()).await.unwrap();
    }
    for sim in &s {
        assert_eq!(sim.counters().received, 10);
    }
}

#[tokio::test]
async fn least_loaded_never_exceeds_limits_and_waits_for_slots() {
    let s = sims(
        3,
        SimConfig::default().with_token_delay(Duration::from_millis(2)),
    )
    .await;
    let limits = [2u32, 3, 1];
    let r = router(
        (0..3)
            .map(|i| target(&format!("e{i}"), &s[i]).with_max_concurrent(limits[i]))
            .collect(),
        Strategy::LeastLoaded,
    );
    let mut calls = Vec::new();
    for i in 0..40 {
        let r = r.clone();
        calls.push(tokio::spawn(async move {
            r.call(&LlmRequest::generate("m", format!("task {i}")), &opts())
                .await
        }));
    }
    for c in calls {
        let resp = c.await.unwrap().unwrap();
        assert!(resp.text.unwrap().contains("task"));
    }
    let mut total = 0;
    for (sim, max) in s.iter().zip(limits) {
        let c = sim.counters();
        assert!(c.max_in_flight <= u64::from(max), "{c:?} over {max}");
        assert!(c.received > 0, "every endpoint was used");
        total += c.received;
    }
    assert_eq!(total, 40);
    assert!(!r.saturated("m"));
}

#[tokio::test]
async fn priority_spills_over_when_full() {
    let s = sims(2, SimConfig::default()).await;
    let r = router(
        vec![
            target("primary", &s[0])
                .with_priority(0)
                .with_max_concurrent(2),
            target("spare", &s[1]).with_priority(1),
        ],
        Strategy::Priority,
    );
    s[0].hold();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.call(&req(), &opts()).await })
        })
        .collect();
    s[0].wait_held(2).await;
    let third = r.call(&req(), &opts()).await.unwrap();
    assert_eq!(third.endpoint, "spare");
    s[0].open_gate();
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().endpoint, "primary");
    }
    assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "primary");
}

#[tokio::test]
async fn backpressure_waits_for_a_slot_and_reports_saturation() {
    let s = sims(1, SimConfig::default()).await;
    let r = router(
        vec![target("only", &s[0]).with_max_concurrent(1)],
        Strategy::LeastLoaded,
    );
    s[0].hold();
    let first = {
        let r = r.clone();
        tokio::spawn(async move { r.call(&req(), &opts()).await })
    };
    s[0].wait_held(1).await;
    // A call with no time to wait fails as saturated, retryable; nothing reached the server.
    let short = CallOptions {
        timeout: Some(Duration::from_millis(20)),
        ..CallOptions::default()
    };
    let e = r.call(&req(), &short).await.unwrap_err();
    assert!(matches!(e, RouteError::Saturated { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Retry);
    assert_eq!(s[0].counters().received, 1);
    // A patient call waits, and the model reads as saturated meanwhile.
    let second = {
        let r = r.clone();
        tokio::spawn(async move { r.call(&req(), &opts()).await })
    };
    while !r.saturated("m") {
        tokio::task::yield_now().await;
    }
    assert!(!r.saturated("other"));
    s[0].open_gate();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert!(!r.saturated("m"));
    assert_eq!(s[0].counters().max_in_flight, 1);
}

#[tokio::test]
async fn failover_completes_every_call_when_an_endpoint_dies() {
    let s = sims(
        2,
        SimConfig::default().with_token_delay(Duration::from_millis(3)),
    )
    .await;
    let r = router(
        vec![
            target("dies", &s[0]).with_max_concurrent(4),
            target("lives", &s[1]).with_max_concurrent(4),
        ],
        Strategy::LeastLoaded,
    );
    let mut calls = Vec::new();
    for i in 0..24 {
        let r = r.clone();
        calls.push(tokio::spawn(async move {
            r.call(&LlmRequest::generate("m", format!("n{i} a b c")), &opts())
                .await
        }));
    }
    // Kill the first endpoint while it has calls mid-response.
    s[0].wait_in_flight(1).await;
    s[0].stop().await;
    for c in calls {
        let resp = c.await.unwrap().unwrap();
        assert!(resp.text.unwrap().contains(" a b c"));
    }
    assert!(s[1].counters().finished > 0);
    let status = r.status().await;
    assert_eq!(status[0].state, "open", "{status:?}");
}

#[tokio::test]
async fn bad_requests_and_refused_credentials_are_not_retried() {
    let s = sims(2, SimConfig::default()).await;
    let r = primary_and_spare(&s);
    s[0].push_fault(Fault::Status(
        400,
        r#"{"error":{"message":"bad field","type":"invalid_request_error"}}"#.into(),
    ));
    let e = r.call(&req(), &opts()).await.unwrap_err();
    assert!(
        matches!(&e, RouteError::Call { endpoint, error: LlmError::BadRequest { status: 400, .. }, .. } if endpoint == "a"),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Fatal);
    assert_eq!(
        s[1].counters().received,
        0,
        "a 400 is not retried elsewhere"
    );

    // One endpoint with a wrong key: one request, then it is skipped — no retry storm.
    let locked = MockOpenAi::start(SimConfig::default().with_api_key("right"))
        .await
        .unwrap();
    let r = router(vec![target("locked", &locked)], Strategy::LeastLoaded);
    let e = r.call(&req(), &opts()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Fatal, "{e:?}");
    for _ in 0..3 {
        let e = r.call(&req(), &opts()).await.unwrap_err();
        assert!(matches!(e, RouteError::Unusable { .. }), "{e:?}");
    }
    assert_eq!(locked.counters().received, 1);
    assert_eq!(r.status().await[0].state, "misconfigured");
}

#[tokio::test]
async fn unauthorized_endpoint_is_routed_around() {
    let s = sims(2, SimConfig::default()).await;
    s[0].update_config(|c| c.api_key = Some("other".into()));
    let r = primary_and_spare(&s);
    for _ in 0..4 {
        assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "b");
    }
    assert_eq!(s[0].counters().received, 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let s = sims(2, SimConfig::default()).await;
    let r = primary_and_spare(&s);
    s[0].push_fault(Fault::RateLimit {
        retry_after: Some("30".into()),
    });
    for _ in 0..5 {
        assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "b");
    }
    assert_eq!(
        s[0].counters().received,
        1,
        "a is not asked again before 30 s"
    );
    assert_eq!(r.status().await[0].state, "rate_limited");

    // Alone, a rate-limited endpoint makes calls fail with the wait, without requests.
    let single = MockOpenAi::start(SimConfig::default()).await.unwrap();
    single.push_fault(Fault::RateLimit {
        retry_after: Some("30".into()),
    });
    let r = router(vec![target("one", &single)], Strategy::LeastLoaded);
    let e = r.call(&req(), &opts()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::RetryAfter(Duration::from_secs(30)));
    let e = r.call(&req(), &opts()).await.unwrap_err();
    match e.class() {
        ErrorClass::RetryAfter(d) => assert!(d > Duration::from_secs(25), "{d:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(single.counters().received, 1);
}

#[tokio::test]
async fn overload_trips_the_breaker_and_a_probe_closes_it() {
    let s = sims(2, SimConfig::default()).await;
    let targets = a_then_b(&s);
    // A long cool-down: the tripped endpoint is skipped.
    let r = router(targets.clone(), Strategy::Priority);
    s[0].push_fault(Fault::Overloaded);
    for _ in 0..3 {
        assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "b");
    }
    assert_eq!(s[0].counters().received, 1);
    assert_eq!(r.status().await[0].state, "open");

    // No cool-down: the next call is the half-open probe, and its success closes the breaker.
    let cfg = RouterConfig {
        strategy: Strategy::Priority,
        cooldown: Duration::ZERO,
        ..RouterConfig::default()
    };
    let r = Router::new(targets, Arc::new(LocalSlots::new()), cfg).unwrap();
    s[0].push_fault(Fault::Overloaded);
    assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "b");
    assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "a");
    assert_eq!(r.status().await[0].state, "ok");
}

#[tokio::test]
async fn stream_errors_and_missing_models_move_elsewhere() {
    let s = sims(2, SimConfig::default()).await;
    let r = primary_and_spare(&s);
    s[0].push_fault(Fault::StreamError { after_chunks: 1 });
    let resp = r.call(&req(), &opts()).await.unwrap();
    assert_eq!(resp.endpoint, "b");
    assert_eq!(
        resp.text.as_deref(),
        Some("m: hello"),
        "no partial output kept"
    );
    // The stream error did not cool `a` down.
    assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "a");

    s[0].update_config(|c| c.models = vec!["other".into()]);
    assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "b");
    assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "b");
    assert_eq!(
        s[0].counters().received,
        3,
        "a asked once about the missing model"
    );
    // Other models still go to `a`.
    let other = LlmRequest::generate("other", "x");
    assert_eq!(r.call(&other, &opts()).await.unwrap().endpoint, "a");
}

#[tokio::test]
async fn unknown_models_and_strategies() {
    let s = sims(1, SimConfig::default()).await;
    let r = router(
        vec![target("a", &s[0]).with_models(["m"])],
        Strategy::Fastest,
    );
    assert!(r.serves("m") && !r.serves("x"));
    let e = r
        .call(&LlmRequest::generate("x", "p"), &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, RouteError::NoEndpoint { .. }));
    assert_eq!(e.class(), ErrorClass::Fatal);
    // A per-call strategy override works like the configured one.
    let resp = r
        .call_with(&req(), &opts(), Some(Strategy::RoundRobin))
        .await
        .unwrap();
    assert_eq!(resp.endpoint, "a");
    assert_eq!(
        serde_json::from_str::<Strategy>("\"least_loaded\"").unwrap(),
        Strategy::LeastLoaded
    );
    assert_eq!(Strategy::default(), Strategy::LeastLoaded);
    assert!(Router::new(
        vec![target("a", &s[0]), target("a", &s[0])],
        Arc::new(LocalSlots::new()),
        RouterConfig::default()
    )
    .is_err());
}

#[tokio::test]
async fn a_lone_endpoint_with_an_open_breaker_is_still_asked() {
    let s = sims(1, SimConfig::default()).await;
    let r = router(vec![target("only", &s[0])], Strategy::LeastLoaded);
    s[0].push_fault(Fault::Overloaded);
    let e = r.call(&req(), &opts()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Retry);
    // No other endpoint could take the call: the task's retry reaches the server again.
    assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "only");
    assert_eq!(s[0].counters().received, 2);
    assert_eq!(r.status().await[0].state, "ok");
}

#[tokio::test]
async fn endpoints_naming_the_model_come_before_wildcards() {
    let s = sims(2, SimConfig::default()).await;
    let r = router(
        vec![
            target("any", &s[0]),
            target("named", &s[1])
                .with_models(["m"])
                .with_max_concurrent(1),
        ],
        Strategy::LeastLoaded,
    );
    for _ in 0..5 {
        assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "named");
    }
    // Full: the wildcard endpoint takes the overflow.
    s[1].hold();
    let held = {
        let r = r.clone();
        tokio::spawn(async move { r.call(&req(), &opts()).await })
    };
    s[1].wait_held(1).await;
    assert_eq!(r.call(&req(), &opts()).await.unwrap().endpoint, "any");
    s[1].open_gate();
    assert_eq!(held.await.unwrap().unwrap().endpoint, "named");
}

#[tokio::test]
async fn large_models_never_go_to_cpu_endpoints() {
    use gleitzeit_testkit::llm::MockOllama;
    let gpu = MockOllama::start(SimConfig::default().with_models(["llama3.1:70b", "llama3.2:3b"]))
        .await
        .unwrap();
    let cpu = MockOllama::start(SimConfig::default().with_models(["llama3.1:70b", "llama3.2:3b"]))
        .await
        .unwrap();
    let ollama = |name: &str, sim: &SimServer| {
        RouteTarget::new(EndpointConfig::new(name, sim.url(), ProviderKind::Ollama))
    };
    let r = router(
        vec![
            ollama("gpu", &gpu).with_gpu(Some(48.0)),
            ollama("cpu", &cpu),
        ],
        Strategy::RoundRobin,
    );
    for _ in 0..6 {
        let big = LlmRequest::generate("llama3.1:70b", "think hard");
        assert_eq!(r.call(&big, &opts()).await.unwrap().endpoint, "gpu");
    }
    // Small models spread over both.
    for _ in 0..6 {
        r.call(&LlmRequest::generate("llama3.2:3b", "hi"), &opts())
            .await
            .unwrap();
    }
    assert_eq!(cpu.counters().received, 3);
    assert_eq!(gpu.counters().received, 9);

    // Right after a start, many calls at once: none goes to the CPU endpoint while the
    // first size lookup is under way (they wait for it instead of routing by guess).
    let r = router(
        vec![
            ollama("gpu", &gpu).with_gpu(Some(48.0)),
            ollama("cpu", &cpu),
        ],
        Strategy::RoundRobin,
    );
    let calls = (0..8).map(|_| {
        let r = r.clone();
        async move {
            r.call(&LlmRequest::generate("llama3.1:70b", "at once"), &opts())
                .await
                .unwrap()
                .endpoint
        }
    });
    let placed = futures::future::join_all(calls).await;
    assert!(placed.iter().all(|e| e == "gpu"), "{placed:?}");
    assert_eq!(
        cpu.counters().received,
        3,
        "no 70b call reached the CPU endpoint"
    );
    assert_eq!(gpu.counters().received, 17);

    // No endpoint can hold it: refused without an inference request.
    let r = router(
        vec![
            ollama("small-gpu", &gpu).with_gpu(Some(8.0)),
            ollama("cpu", &cpu),
        ],
        Strategy::LeastLoaded,
    );
    let e = r
        .call(&LlmRequest::generate("llama3.1:70b", "x"), &opts())
        .await
        .unwrap_err();
    assert!(matches!(e, RouteError::Unusable { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Fatal);
    assert_eq!(cpu.counters().received, 3);
    assert_eq!(gpu.counters().received, 17);
}

/// The addresses of servers that are not there: a listener bound and dropped, so connecting
/// is refused.
fn refused_target(name: &str) -> RouteTarget {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    RouteTarget::new(EndpointConfig::new(
        name,
        format!("http://127.0.0.1:{port}"),
        ProviderKind::OpenAi,
    ))
}

#[tokio::test]
async fn endpoint_trouble_is_told_apart_from_a_failed_task() {
    // Every endpoint refuses connections: trouble of the endpoints, and the error names
    // each endpoint with its error.
    let r = router(
        vec![refused_target("a"), refused_target("b")],
        Strategy::Priority,
    );
    let e = r.call(&req(), &opts()).await.unwrap_err();
    assert!(e.is_endpoint_trouble(), "{e}");
    let named: Vec<&str> = e.endpoint_errors().iter().map(|(ep, _)| *ep).collect();
    assert_eq!(named.len(), 2, "{e}");
    assert!(named.contains(&"a") && named.contains(&"b"), "{e}");
    let text = e.to_string();
    assert!(text.contains("a:") && text.contains("b:"), "{text}");

    // 503 busy (an Ollama whose queue is full) and 529 are overload; a 500 is a failure of
    // the call at an endpoint that could serve it.
    let s = sims(2, SimConfig::default()).await;
    let r = primary_and_spare(&s);
    s[0].push_fault(Fault::Overloaded);
    s[1].push_fault(Fault::Status(
        529,
        r#"{"error":{"message":"Overloaded"}}"#.into(),
    ));
    let e = r.call(&req(), &opts()).await.unwrap_err();
    assert!(e.is_endpoint_trouble(), "{e}");

    let s = sims(2, SimConfig::default()).await;
    let r = primary_and_spare(&s);
    s[0].push_fault(Fault::Overloaded);
    s[1].push_fault(Fault::Status(
        500,
        r#"{"error":{"message":"internal error"}}"#.into(),
    ));
    let e = r.call(&req(), &opts()).await.unwrap_err();
    assert!(
        !e.is_endpoint_trouble(),
        "a 500 counts against the task: {e}"
    );

    // A bad request is the task's own fault.
    let s = sims(1, SimConfig::default()).await;
    let r = router(vec![target("a", &s[0])], Strategy::Priority);
    s[0].push_fault(Fault::Status(400, r#"{"error":{"message":"bad"}}"#.into()));
    assert!(!r
        .call(&req(), &opts())
        .await
        .unwrap_err()
        .is_endpoint_trouble());
}

#[tokio::test]
async fn a_model_of_unknown_size_goes_to_gpu_endpoints_when_one_serves_it() {
    // OpenAI-compatible endpoints report no sizes. With a GPU endpoint among those serving
    // the model, a CPU endpoint is never chosen by guess; a model only a CPU endpoint
    // serves still runs there.
    let s = sims(2, SimConfig::default()).await;
    let r = router(
        vec![
            target("gpu", &s[0])
                .with_gpu(Some(80.0))
                .with_models(["mystery"]),
            target("cpu", &s[1]).with_models(["mystery", "cpu-only"]),
        ],
        Strategy::RoundRobin,
    );
    for _ in 0..4 {
        let placed = r
            .call(&LlmRequest::generate("mystery", "?"), &opts())
            .await
            .unwrap();
        assert_eq!(placed.endpoint, "gpu");
    }
    let placed = r
        .call(&LlmRequest::generate("cpu-only", "?"), &opts())
        .await
        .unwrap();
    assert_eq!(placed.endpoint, "cpu");
    assert_eq!((s[0].counters().received, s[1].counters().received), (4, 1));
}

#[tokio::test]
async fn a_held_endpoint_beside_a_refusing_one_gives_the_deferral_a_floor() {
    // a rate limits for 30 s; b refuses connections and its breaker opens. Neither can
    // take the task before b's cool-down ends: the error says so, so the task waits that
    // long instead of coming back after a short backoff to fail the same way.
    let s = sims(1, SimConfig::default()).await;
    s[0].push_fault(Fault::RateLimit {
        retry_after: Some("30".into()),
    });
    let r = router(
        vec![target("a", &s[0]), refused_target("b")],
        Strategy::Priority,
    );
    let e = r.call(&req(), &opts()).await.unwrap_err();
    assert!(e.is_endpoint_trouble(), "{e}");
    let floor = e.retry_in().expect("a floor for the deferral");
    assert!(
        floor > Duration::ZERO && floor <= Duration::from_secs(30),
        "{floor:?}"
    );
    assert_eq!(r.status().await[1].state, "open", "b's breaker is open");
}

#[tokio::test]
async fn a_rate_limit_seen_by_one_router_holds_every_router_sharing_the_slots() {
    let s = sims(1, SimConfig::default()).await;
    let slots: Arc<LocalSlots> = Arc::new(LocalSlots::new());
    let make = || {
        Router::new(
            vec![target("a", &s[0])],
            slots.clone(),
            RouterConfig::default(),
        )
        .unwrap()
    };
    let (first, second) = (make(), make());
    s[0].push_fault(Fault::RateLimit {
        retry_after: Some("30".into()),
    });
    let e = first.call(&req(), &opts()).await.unwrap_err();
    assert!(e.is_endpoint_trouble(), "{e}");
    // The second router never saw the 429, but the shared store holds the endpoint: it
    // sends nothing and reports when the endpoint is usable again.
    let e = second.call(&req(), &opts()).await.unwrap_err();
    assert!(matches!(e, RouteError::Unavailable { .. }), "{e:?}");
    match e.class() {
        ErrorClass::RetryAfter(d) => assert!(d > Duration::from_secs(20), "{d:?}"),
        other => panic!("{other:?}"),
    }
    assert!(e.is_endpoint_trouble());
    assert_eq!(s[0].counters().received, 1);
}

#[tokio::test]
async fn overload_answers_lower_the_shared_limit_and_successes_raise_it() {
    use gleitzeit_llm::{SlotCandidate, SlotOutcome, SlotPick, Slots};
    let slots = LocalSlots::new();
    let ttl = Duration::from_secs(60);
    let a = [SlotCandidate {
        endpoint: "a",
        max: 0,
    }];
    // Eight calls in flight on an unlimited endpoint, then it answers 503.
    for i in 0..8 {
        let g = slots
            .acquire_with(&a, SlotPick::InOrder, &format!("l{i}"), ttl, 0)
            .await
            .unwrap();
        assert_eq!(g.chosen, Some(0));
        assert_eq!(g.limits, [None]);
    }
    slots
        .settle("a", "l0", SlotOutcome::Overloaded)
        .await
        .unwrap();
    // Half of what was in flight: 4. Seven are still held, so nothing more is admitted.
    let g = slots
        .acquire_with(&a, SlotPick::InOrder, "x", ttl, 0)
        .await
        .unwrap();
    assert_eq!((g.chosen, g.limits.clone()), (None, vec![Some(4)]));
    for i in 1..8 {
        slots
            .settle(
                "a",
                &format!("l{i}"),
                SlotOutcome::Answered {
                    adapting: true,
                    max: 0,
                    budget: None,
                },
            )
            .await
            .unwrap();
    }
    // Seven successes at about +1/limit each: the limit grew past 5.
    let mut taken = 0;
    for i in 0..10 {
        let g = slots
            .acquire_with(&a, SlotPick::InOrder, &format!("m{i}"), ttl, 0)
            .await
            .unwrap();
        if g.chosen.is_some() {
            taken += 1;
        }
    }
    assert_eq!(taken, 5, "limit 4 + 7 × ~1/4..1/5 = 5");
    // A limit that grows back to the configured maximum is dropped.
    assert_eq!(gleitzeit_llm::router::aimd::increase(3.9, 4), None);
    assert_eq!(gleitzeit_llm::router::aimd::decrease(None, 1), 1.0);
    assert_eq!(gleitzeit_llm::router::aimd::decrease(Some(3.0), 10), 1.0);
}
