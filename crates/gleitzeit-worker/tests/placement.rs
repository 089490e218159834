//! Queue-aware placement (`model_affinity`): the fleet's planner reads the queue's demand —
//! including a task that is not ready yet because its parent runs — and loads that task's
//! model before the task becomes ready. In-process worker, real redis-server, an Ollama
//! simulator whose load log is ordered against the task records.

mod common;

use common::{Env, Worker};
use gleitzeit_testkit::llm::{MockOllama, SimConfig};
use gleitzeit_worker::{EndpointKind, EndpointSpec};

const CHAIN: &str = r#"
name: chain
tasks:
  - { name: First, type: text, model: first-model, prompt: a }
  - { name: Second, type: text, model: second-model, prompt: "b {{First.result}}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependents_model_is_loaded_before_the_dependent_is_ready() {
    let env = Env::start().await;
    let ollama = MockOllama::start(
        SimConfig::default()
            .with_models(["first-model", "second-model"])
            .with_max_loaded(2),
    )
    .await
    .unwrap();
    let mut cfg = env.config();
    cfg.endpoints = vec![EndpointSpec {
        name: "box".to_owned(),
        kind: EndpointKind::Ollama,
        url: ollama.url(),
        api_key_env: None,
        api_key_file: None,
        models: vec!["first-model".to_owned(), "second-model".to_owned()],
        timeout: std::time::Duration::from_secs(60),
    }];
    cfg.routing = serde_yaml_ng::from_str(
        "strategy: model_affinity\nendpoints: {box: {max_concurrent: 4, max_loaded: 2}}",
    )
    .unwrap();
    // The first task's call waits at the simulator's gate until the second model is loaded.
    ollama.hold();
    let worker = Worker::start(cfg);
    let id = env.submit(CHAIN).await;
    // A bound against a hang only; the order of events is what the test checks.
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        ollama.wait_held(1).await;
        ollama
            .wait_until(|_| ollama.loads_of("second-model") > 0)
            .await;
    })
    .await
    .expect("the second model was not preloaded while the first task ran");
    ollama.open_gate();
    let wf = env.wait_end(&id).await;
    assert_eq!(wf.status, "completed");
    worker.stop().await;

    let tasks = env.tasks(&id).await;
    let second_ready = tasks[1].ready_ms.expect("the second task became ready");
    let log = ollama.load_log();
    let second_loads: Vec<_> = log.iter().filter(|l| l.model == "second-model").collect();
    assert_eq!(
        second_loads.len(),
        1,
        "loaded once, by the planner: {log:?}"
    );
    assert!(
        second_loads[0].done_ms() <= second_ready,
        "loaded at {} (done {}), the task became ready at {second_ready}",
        second_loads[0].started_ms,
        second_loads[0].done_ms()
    );
    // The preload was an explicit load request, not the task's call.
    let explicit = ollama
        .requests()
        .iter()
        .filter(|r| {
            r.path == "/api/generate"
                && r.json("model") == "second-model"
                && r.json("prompt").as_str().is_none_or(str::is_empty)
        })
        .count();
    assert_eq!(explicit, 1);
}
