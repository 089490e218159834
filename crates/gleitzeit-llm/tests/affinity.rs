//! Model placement against Ollama simulators: `model_affinity` (fewer model loads than round
//! robin, loaded models preferred, models needed by queued work kept), model management
//! (show, load, unload, pull, preload, keep_alive) and health rounds sharing one store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gleitzeit_llm::{
    CallOptions, EndpointConfig, LlmRequest, LocalModelState, LocalSlots, ModelStateStore,
    Provider, ProviderKind, RouteTarget, Router, RouterConfig, Strategy,
};
use gleitzeit_testkit::llm::{MockOllama, SimConfig};

fn target(name: &str, sim: &MockOllama) -> RouteTarget {
    RouteTarget::new(EndpointConfig::new(name, sim.url(), ProviderKind::Ollama))
}

fn router_with(targets: Vec<RouteTarget>, cfg: RouterConfig) -> Router {
    Router::new(targets, Arc::new(LocalSlots::new()), cfg).unwrap()
}

fn router(targets: Vec<RouteTarget>, strategy: Strategy) -> Router {
    router_with(
        targets,
        RouterConfig {
            strategy,
            ..RouterConfig::default()
        },
    )
}

fn opts() -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_secs(30)),
        ..CallOptions::default()
    }
}

async fn call(r: &Router, model: &str) -> String {
    r.call(&LlmRequest::generate(model, "hi"), &opts())
        .await
        .unwrap()
        .endpoint
}

/// Polls `cond` until it holds or 10 s pass.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// Two simulators that keep one model loaded each (50 ms per load); calls over models a and
/// b in batches of four. Returns the total number of model loads.
async fn loads_for(strategy: Strategy) -> u64 {
    let cfg = SimConfig::default()
        .with_max_loaded(1)
        .with_load_delay(Duration::from_millis(50));
    let s0 = MockOllama::start(cfg.clone()).await.unwrap();
    let s1 = MockOllama::start(cfg).await.unwrap();
    let r = router(
        vec![
            target("e0", &s0).with_max_loaded(1),
            target("e1", &s1).with_max_loaded(1),
        ],
        strategy,
    );
    for model in ["a", "b", "a", "b"] {
        for _ in 0..4 {
            call(&r, model).await;
        }
    }
    assert_eq!(s0.counters().received + s1.counters().received, 16);
    s0.loads() + s1.loads()
}

#[tokio::test]
async fn model_affinity_loads_models_fewer_times_than_round_robin() {
    let rr = loads_for(Strategy::RoundRobin).await;
    let affinity = loads_for(Strategy::ModelAffinity).await;
    // Round robin alternates endpoints, so every batch loads its model on both; affinity
    // keeps a on one endpoint and b on the other.
    assert_eq!(rr, 8);
    assert_eq!(affinity, 2);
    assert!(affinity < rr);
}

#[tokio::test]
async fn a_loaded_model_is_preferred_and_preload_loads_at_start() {
    let s0 = MockOllama::start(SimConfig::default()).await.unwrap();
    let s1 = MockOllama::start(SimConfig::default()).await.unwrap();
    let r = router(
        vec![target("e0", &s0), target("e1", &s1).with_preload(["warm"])],
        Strategy::ModelAffinity,
    );
    assert_eq!(r.preload().await, 1);
    assert_eq!(s1.loads_of("warm"), 1);
    assert_eq!(s1.loaded_models(), ["warm"]);
    assert_eq!(s0.loads(), 0);
    for _ in 0..10 {
        assert_eq!(call(&r, "warm").await, "e1");
    }
    assert_eq!(s1.loads_of("warm"), 1, "never loaded again");

    // A router that knows nothing learns what is loaded from /api/ps in a health round.
    let fresh = router(
        vec![target("e0", &s0), target("e1", &s1)],
        Strategy::ModelAffinity,
    );
    assert_eq!(fresh.health_round("w").await, ["e0", "e1"]);
    let models = fresh.endpoint_models().await;
    assert_eq!(models[1].1.loaded, ["warm"]);
    for _ in 0..10 {
        assert_eq!(call(&fresh, "warm").await, "e1");
    }
    assert_eq!(s0.counters().received, 0);
}

#[tokio::test]
async fn a_model_needed_by_queued_work_is_not_evicted_when_another_choice_exists() {
    // Two endpoints, one model each: "a" (queued work needs it) and "c" (nobody does).
    // Repeated with fresh routers so a lucky tie-break cannot pass the test.
    for round in 0..6 {
        let cfg = SimConfig::default().with_max_loaded(1);
        let s0 = MockOllama::start(cfg.clone()).await.unwrap();
        let s1 = MockOllama::start(cfg).await.unwrap();
        let (m0, m1) = if round % 2 == 0 {
            ("a", "c")
        } else {
            ("c", "a")
        };
        let store = Arc::new(LocalModelState::new());
        store.set_queued("a", 3);
        let r = router(
            vec![
                target("e0", &s0).with_max_loaded(1).with_preload([m0]),
                target("e1", &s1).with_max_loaded(1).with_preload([m1]),
            ],
            Strategy::ModelAffinity,
        )
        .with_model_state(store);
        assert_eq!(r.preload().await, 2);
        let expected = if m0 == "c" { "e0" } else { "e1" };
        assert_eq!(call(&r, "b").await, expected, "round {round}");
        let keeper = if m0 == "a" { &s0 } else { &s1 };
        assert_eq!(keeper.loaded_models(), ["a"]);
    }

    // One endpoint holding two models: the router unloads the one nobody needs, although
    // the server would have evicted the needed one (least recently used).
    let s = MockOllama::start(SimConfig::default().with_max_loaded(2))
        .await
        .unwrap();
    let store = Arc::new(LocalModelState::new());
    let r = router(
        vec![target("e", &s).with_max_loaded(2)],
        Strategy::ModelAffinity,
    )
    .with_model_state(store.clone());
    // Queued work for "a" from the start (calls trust the demand they read for one
    // plan_interval).
    store.set_queued("a", 1);
    call(&r, "a").await;
    call(&r, "c").await;
    assert_eq!(s.loaded_models(), ["a", "c"]);
    call(&r, "b").await;
    let mut loaded = s.loaded_models();
    loaded.sort();
    assert_eq!(loaded, ["a", "b"]);
    assert_eq!(s.loads_of("a"), 1);
}

#[tokio::test]
async fn one_health_round_per_interval_polls_each_endpoint_once() {
    let s0 = MockOllama::start(SimConfig::default().with_models(["x"]))
        .await
        .unwrap();
    let store: Arc<LocalModelState> = Arc::new(LocalModelState::new());
    let cfg = RouterConfig {
        health_interval: Duration::from_secs(60),
        ..RouterConfig::default()
    };
    let a = router_with(vec![target("e0", &s0)], cfg.clone()).with_model_state(store.clone());
    let b = router_with(vec![target("e0", &s0)], cfg).with_model_state(store.clone());
    assert_eq!(a.health_round("wa").await, ["e0"]);
    assert!(b.health_round("wb").await.is_empty());
    assert!(a.health_round("wa").await.is_empty());
    assert_eq!(s0.hits("/api/ps"), 1);
    assert_eq!(s0.hits("/api/tags"), 1);
    // Both published their view of the endpoint's health.
    let health = store.health("e0");
    assert_eq!(health.len(), 2);
    assert_eq!(health["wb"].state, "ok");
    // Both read the record the first one wrote.
    let rec = &b.endpoint_models().await[0].1;
    assert_eq!(rec.pulled[0].name, "x");
    assert_eq!(rec.probed_by.as_deref(), Some("wa"));
    let shared = store.models(&["e0"]).await.unwrap();
    assert!(shared[0].updated_ms.is_some());
}

#[tokio::test]
async fn provider_shows_loads_unloads_and_pulls() {
    let s = MockOllama::start(SimConfig::default().with_models(["llama3.1:70b"]))
        .await
        .unwrap();
    let p = Provider::new(EndpointConfig::new("e", s.url(), ProviderKind::Ollama)).unwrap();
    let d = p.show("llama3.1:70b").await.unwrap().unwrap();
    assert_eq!(d.parameters, Some(70_000_000_000));
    assert_eq!(d.context_length, Some(8192));
    assert_eq!(d.family.as_deref(), Some("llama"));
    assert!(p.load("llama3.1:70b", Some("10m")).await.unwrap());
    assert_eq!(s.loaded_models(), ["llama3.1:70b"]);
    assert_eq!(s.last_request().unwrap().json("keep_alive"), "10m");
    assert!(p.unload("llama3.1:70b").await.unwrap());
    assert!(s.loaded_models().is_empty());
    assert_eq!(s.last_request().unwrap().json("keep_alive"), 0);
    p.load("llama3.1:70b", None).await.unwrap();
    assert_eq!(s.loads_of("llama3.1:70b"), 2, "a reload is a load");
    assert!(p.pull("new", Duration::from_secs(10)).await.unwrap());
    assert!(s.config().models.contains(&"new".to_owned()));
    let listed = p.list_models().await.unwrap();
    assert!(listed.iter().any(|m| m.name == "new"));
}

#[tokio::test]
async fn missing_models_are_pulled_once_in_the_background_when_allowed() {
    let has = MockOllama::start(SimConfig::default().with_models(["x"]))
        .await
        .unwrap();
    let lacks = MockOllama::start(SimConfig::default().with_models(["y"]))
        .await
        .unwrap();
    let r = router_with(
        vec![
            target("lacks", &lacks).with_priority(0),
            target("has", &has).with_priority(1),
        ],
        RouterConfig {
            strategy: Strategy::Priority,
            allow_pull: true,
            ..RouterConfig::default()
        },
    );
    // The call fails over to the endpoint that has the model while the other pulls it.
    assert_eq!(call(&r, "x").await, "has");
    assert!(eventually(|| lacks.config().models.contains(&"x".to_owned())).await);
    for _ in 0..3 {
        call(&r, "x").await;
    }
    assert_eq!(lacks.hits("/api/pull"), 1, "pulled once");
    assert_eq!(has.hits("/api/pull"), 0);

    // Not allowed: nothing is pulled.
    let lacks2 = MockOllama::start(SimConfig::default().with_models(["y"]))
        .await
        .unwrap();
    let r = router_with(
        vec![
            target("lacks", &lacks2).with_priority(0),
            target("has", &has).with_priority(1),
        ],
        RouterConfig {
            strategy: Strategy::Priority,
            ..RouterConfig::default()
        },
    );
    assert_eq!(call(&r, "x").await, "has");
    assert_eq!(lacks2.hits("/api/pull"), 0);
}

#[tokio::test]
async fn keep_alive_setting_applies_unless_the_request_sets_one() {
    let s = MockOllama::start(SimConfig::default()).await.unwrap();
    let r = router_with(
        vec![target("e", &s)],
        RouterConfig {
            keep_alive: Some("30m".into()),
            ..RouterConfig::default()
        },
    );
    call(&r, "m").await;
    assert_eq!(s.last_request().unwrap().json("keep_alive"), "30m");
    let mut req = LlmRequest::generate("m", "x");
    req.keep_alive = Some("0".into());
    r.call(&req, &opts()).await.unwrap();
    assert_eq!(s.last_request().unwrap().json("keep_alive"), "0");
    // keep_alive 0 unloads the model after the call; the next call loads it again.
    assert!(s.loaded_models().is_empty());
    call(&r, "m").await;
    assert_eq!(s.loads_of("m"), 2);
}

#[tokio::test]
async fn among_endpoints_with_the_model_loaded_the_least_loaded_is_chosen() {
    let s0 = MockOllama::start(SimConfig::default()).await.unwrap();
    let s1 = MockOllama::start(SimConfig::default()).await.unwrap();
    let s2 = MockOllama::start(SimConfig::default()).await.unwrap();
    let r = Arc::new(router(
        vec![
            target("e0", &s0).with_preload(["m"]),
            target("e1", &s1).with_preload(["m"]),
            target("cold", &s2),
        ],
        Strategy::ModelAffinity,
    ));
    assert_eq!(r.preload().await, 2);
    for s in [&s0, &s1, &s2] {
        s.hold();
    }
    // One call at a time reaches a server (and holds its slot there) before the next.
    let mut calls = Vec::new();
    for n in 1..=4u64 {
        let r = r.clone();
        calls.push(tokio::spawn(async move {
            r.call(&LlmRequest::generate("m", "x"), &opts()).await
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        while s0.counters().held + s1.counters().held + s2.counters().held < n {
            assert!(Instant::now() < deadline, "call {n} never arrived");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!((s0.counters().held, s1.counters().held), (2, 2));
    assert_eq!(
        s2.counters().received,
        0,
        "the endpoint without the model is not used"
    );
    for s in [&s0, &s1, &s2] {
        s.open_gate();
    }
    for c in calls {
        c.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_70b_model_never_goes_to_a_cpu_endpoint_even_where_it_is_loaded() {
    // The simulators list no models, so the size comes from /api/show (70B, Q4_K_M: about
    // 42 GB), over the CPU limit of 16 GB.
    let gpu = MockOllama::start(SimConfig::default()).await.unwrap();
    let cpu = MockOllama::start(SimConfig::default()).await.unwrap();
    let r = router(
        vec![
            target("gpu", &gpu).with_gpu(Some(48.0)),
            target("cpu", &cpu).with_preload(["llama3.1:70b"]),
        ],
        Strategy::ModelAffinity,
    );
    r.preload().await;
    assert_eq!(cpu.loaded_models(), ["llama3.1:70b"]);
    for _ in 0..6 {
        assert_eq!(call(&r, "llama3.1:70b").await, "gpu");
    }
    assert!(gpu.hits("/api/show") + cpu.hits("/api/show") >= 1);
    assert_eq!(cpu.counters().received, 0);
    // A small model may go to the CPU endpoint, where it is loaded after the first call.
    let first = call(&r, "llama3.2:1b").await;
    for _ in 0..4 {
        assert_eq!(call(&r, "llama3.2:1b").await, first);
    }
}

#[test]
fn strategies_parse_by_name() {
    for s in Strategy::ALL {
        assert_eq!(s.to_string().parse::<Strategy>(), Ok(s));
    }
    assert_eq!(
        "model_affinity".parse::<Strategy>(),
        Ok(Strategy::ModelAffinity)
    );
    assert!("closest".parse::<Strategy>().is_err());
}
