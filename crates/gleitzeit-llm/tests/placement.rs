//! Queue-aware placement in the router (`model_affinity`): a load under way is seen by every
//! router sharing the model state and is not started a second time elsewhere unless the
//! queued work needs both endpoints; an unload under way is seen the same way; a model
//! wanted by a task about to be ready is not evicted; the planner preloads where the queue will need a model, and only one router
//! plans at a time.

use std::sync::Arc;
use std::time::Duration;

use gleitzeit_llm::{
    CallOptions, EndpointConfig, LlmRequest, LocalModelState, LocalSlots, ModelDemand,
    ProviderKind, RouteTarget, Router, RouterConfig, Strategy,
};
use gleitzeit_testkit::llm::{MockOllama, SimConfig};

/// A bound against a hang only: the tests wait for events, this says which never came.
const HANG: Duration = Duration::from_secs(30);

fn target(name: &str, sim: &MockOllama, max_concurrent: u32) -> RouteTarget {
    let mut t = RouteTarget::new(EndpointConfig::new(name, sim.url(), ProviderKind::Ollama));
    t.max_concurrent = max_concurrent;
    t
}

/// A router (one worker) whose model state and slots are `store` and `slots`, shared with
/// the test's other routers as a fleet shares them in Redis.
fn router(
    targets: Vec<RouteTarget>,
    store: &Arc<LocalModelState>,
    slots: &Arc<LocalSlots>,
) -> Arc<Router> {
    let cfg = RouterConfig {
        strategy: Strategy::ModelAffinity,
        ..RouterConfig::default()
    };
    Arc::new(
        Router::new(targets, slots.clone(), cfg)
            .unwrap()
            .with_model_state(store.clone()),
    )
}

fn spawn_call(r: &Arc<Router>, model: &str) -> tokio::task::JoinHandle<String> {
    let r = r.clone();
    let model = model.to_owned();
    tokio::spawn(async move {
        let opts = CallOptions {
            timeout: Some(HANG),
            ..CallOptions::default()
        };
        r.call(&LlmRequest::generate(model, "hi"), &opts)
            .await
            .unwrap()
            .endpoint
    })
}

/// Holds both simulators' gates, starts one call of "m" through `first` and returns the
/// index (0 or 1) of the simulator it reached.
async fn first_call_held(first: &Arc<Router>, sims: &[MockOllama; 2]) -> usize {
    for s in sims {
        s.hold();
    }
    // The call runs on in the background; the simulators show where it went.
    drop(spawn_call(first, "m"));
    tokio::time::timeout(HANG, async {
        tokio::select! {
            _ = sims[0].wait_held(1) => 0,
            _ = sims[1].wait_held(1) => 1,
        }
    })
    .await
    .expect("the first call reached no simulator")
}

/// Two routers (two workers) over the two simulators (`max_concurrent` each), sharing the
/// model state (returned) and the slots.
fn two_routers(
    sims: &[MockOllama; 2],
    max_concurrent: u32,
) -> (Arc<LocalModelState>, Arc<Router>, Arc<Router>) {
    let (store, slots) = (
        Arc::new(LocalModelState::new()),
        Arc::new(LocalSlots::new()),
    );
    let targets = || {
        vec![
            target("e0", &sims[0], max_concurrent),
            target("e1", &sims[1], max_concurrent),
        ]
    };
    let a = router(targets(), &store, &slots);
    let b = router(targets(), &store, &slots);
    (store, a, b)
}

async fn two_sims() -> [MockOllama; 2] {
    [
        MockOllama::start(SimConfig::default()).await.unwrap(),
        MockOllama::start(SimConfig::default()).await.unwrap(),
    ]
}

#[tokio::test]
async fn a_load_under_way_is_joined_not_repeated_elsewhere() {
    let sims = two_sims().await;
    let (_, a, b) = two_routers(&sims, 4);
    let x = first_call_held(&a, &sims).await;
    let y = 1 - x;
    // While the first call loads "m" on x, the second router's call goes there too.
    let second = spawn_call(&b, "m");
    tokio::time::timeout(HANG, sims[x].wait_held(2))
        .await
        .expect("the second call did not join the load under way");
    assert_eq!(sims[y].counters().received, 0);
    for s in &sims {
        s.open_gate();
    }
    assert_eq!(second.await.unwrap(), format!("e{x}"));
    assert_eq!(sims[x].loads_of("m"), 1);
    assert_eq!(sims[y].loads(), 0);
}

#[tokio::test]
async fn a_second_load_starts_when_the_queue_needs_both_endpoints() {
    let sims = two_sims().await;
    let (store, a, b) = two_routers(&sims, 1);
    // Twenty queued tasks want "m": more than two rounds of the loading endpoint's slot.
    store.set_demand(
        "m",
        ModelDemand {
            ready: 20,
            soon: 0.0,
        },
    );
    let x = first_call_held(&a, &sims).await;
    let y = 1 - x;
    // The loading endpoint's one slot is taken: the queue needs the other endpoint too.
    let second = spawn_call(&b, "m");
    tokio::time::timeout(HANG, sims[y].wait_held(1))
        .await
        .expect("the second call did not load the model on the other endpoint");
    for s in &sims {
        s.open_gate();
    }
    assert_eq!(second.await.unwrap(), format!("e{y}"));
}

#[tokio::test]
async fn a_model_wanted_by_a_task_about_to_be_ready_is_not_evicted() {
    let sim = MockOllama::start(SimConfig::default().with_max_loaded(2))
        .await
        .unwrap();
    let (store, slots) = (
        Arc::new(LocalModelState::new()),
        Arc::new(LocalSlots::new()),
    );
    // No task waits for "a" yet, but one will be ready when its running parent ends.
    store.set_demand(
        "a",
        ModelDemand {
            ready: 0,
            soon: 1.0,
        },
    );
    let r = router(
        vec![target("e", &sim, 4).with_max_loaded(2)],
        &store,
        &slots,
    );
    for m in ["a", "c", "b"] {
        spawn_call(&r, m).await.unwrap();
    }
    let mut loaded = sim.loaded_models();
    loaded.sort();
    assert_eq!(loaded, ["a", "b"], "c (wanted by nothing) made room");
    assert_eq!(sim.loads_of("a"), 1);
}

#[tokio::test]
async fn the_planner_preloads_for_queued_work_and_only_one_router_plans() {
    let sim = MockOllama::start(SimConfig::default().with_models(["m"]))
        .await
        .unwrap();
    let (store, slots) = (
        Arc::new(LocalModelState::new()),
        Arc::new(LocalSlots::new()),
    );
    let targets = || {
        let mut t = target("e", &sim, 4);
        t.models = vec!["m".to_owned()];
        vec![t]
    };
    let (a, b) = (
        router(targets(), &store, &slots),
        router(targets(), &store, &slots),
    );
    // Nothing queued: nothing to do.
    assert!(a.plan_round("wa").await.is_empty());
    store.set_demand(
        "m",
        ModelDemand {
            ready: 0,
            soon: 1.0,
        },
    );
    // "wa" holds the planner lock: "wb" follows.
    assert!(b.plan_round("wb").await.is_empty());
    assert_eq!(a.plan_round("wa").await, [("e".to_owned(), "m".to_owned())]);
    tokio::time::timeout(HANG, sim.wait_until(|c| c.loads >= 1))
        .await
        .expect("the preload did not reach the endpoint");
    assert_eq!(sim.loaded_models(), ["m"]);
}

/// An unload under way is seen by every router within one call: while one router unloads
/// "a" from a full endpoint to make room for "b" (the unload held at the simulator's gate),
/// another router's call of "a" does not take the copy being unloaded for a warm one and
/// loads "a" on the other endpoint instead.
#[tokio::test]
async fn an_unload_under_way_is_seen_by_every_router() {
    let s0 = MockOllama::start(SimConfig::default().with_max_loaded(1).with_gated_loads())
        .await
        .unwrap();
    let s1 = MockOllama::start(SimConfig::default().with_max_loaded(1))
        .await
        .unwrap();
    let (store, slots) = (
        Arc::new(LocalModelState::new()),
        Arc::new(LocalSlots::new()),
    );
    // e0 serves both models and holds "a"; e1 serves only "a", so "b" must go to e0.
    let targets = || {
        vec![
            target("e0", &s0, 4)
                .with_max_loaded(1)
                .with_models(["a", "b"])
                .with_preload(["a"]),
            target("e1", &s1, 4).with_max_loaded(1).with_models(["a"]),
        ]
    };
    let (a, b) = (
        router(targets(), &store, &slots),
        router(targets(), &store, &slots),
    );
    assert_eq!(a.preload().await, 1);
    assert_eq!(s0.loaded_models(), ["a"]);

    s0.hold();
    let first = spawn_call(&a, "b");
    tokio::time::timeout(HANG, s0.wait_held(1))
        .await
        .expect("the unload did not reach the endpoint");
    let unload = s0
        .last_request()
        .and_then(|r| r.body)
        .expect("a JSON request");
    assert_eq!(unload["model"], "a");
    assert_eq!(unload["keep_alive"], 0);
    assert_eq!(s0.loaded_models(), ["a"], "the unload is still held");

    let second = spawn_call(&b, "a");
    tokio::time::timeout(HANG, s1.wait_finished(1))
        .await
        .expect("the second router did not load the model on the other endpoint");
    assert_eq!(second.await.unwrap(), "e1");
    assert_eq!(s0.counters().held, 1, "only the unload waits at e0");

    s0.open_gate();
    assert_eq!(first.await.unwrap(), "e0");
    assert_eq!(s0.loaded_models(), ["b"]);
    assert_eq!(s0.loads_of("a"), 1, "never loaded again on e0");
}

/// The critical path to the fastest endpoint: with the model loaded on a slow and a fast
/// endpoint, and the fast one busier, a call nothing waits on goes to the less loaded slow
/// one, while a call with tasks waiting on it (`chain_below` > 0) goes to the fast one.
#[tokio::test]
async fn a_call_with_a_chain_behind_it_goes_to_the_fastest_warm_endpoint() {
    let slow = MockOllama::start(SimConfig::default().with_latency(Duration::from_millis(100)))
        .await
        .unwrap();
    let fast = MockOllama::start(SimConfig::default().with_latency(Duration::from_millis(2)))
        .await
        .unwrap();
    let mut e0 = target("e0", &slow, 4);
    e0.tags = vec!["slow".into()];
    let mut e1 = target("e1", &fast, 4);
    e1.tags = vec!["fast".into()];
    let r = router(
        vec![e0, e1],
        &Arc::new(LocalModelState::new()),
        &Arc::new(LocalSlots::new()),
    );
    let req = LlmRequest::generate("m", "hi");
    let opts = |chain_below| CallOptions {
        timeout: Some(HANG),
        chain_below,
        ..CallOptions::default()
    };
    let on = |tag: &str| gleitzeit_llm::Selection {
        tag: Some(tag.to_owned()),
        ..gleitzeit_llm::Selection::default()
    };
    // Load "m" on both and measure both (two calls each).
    for tag in ["slow", "fast", "slow", "fast"] {
        let resp = r.call_selected(&req, &opts(0), &on(tag)).await.unwrap();
        assert_eq!(resp.endpoint, if tag == "slow" { "e0" } else { "e1" });
    }
    // One call held on the fast endpoint: it is now the busier of the two.
    fast.hold();
    let held = {
        let r = r.clone();
        let req = req.clone();
        tokio::spawn(async move { r.call_selected(&req, &opts(0), &on("fast")).await })
    };
    tokio::time::timeout(HANG, fast.wait_held(1)).await.unwrap();

    // Nothing waits on it: the less loaded endpoint.
    let leaf = r.call(&req, &opts(0)).await.unwrap();
    assert_eq!(leaf.endpoint, "e0");

    // Two tasks wait on it: the fastest endpoint with a free slot, busier or not.
    let critical = {
        let r = r.clone();
        let req = req.clone();
        tokio::spawn(async move { r.call(&req, &opts(2)).await })
    };
    tokio::time::timeout(HANG, fast.wait_held(2)).await.unwrap();
    fast.open_gate();
    assert_eq!(critical.await.unwrap().unwrap().endpoint, "e1");
    assert_eq!(held.await.unwrap().unwrap().endpoint, "e1");
}
