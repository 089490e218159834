//! Tasks select endpoints by tag or provider (`routing: {tag, provider}` in the workflow): the
//! worker, running in-process against a real redis-server and three simulators, sends each
//! task only to the endpoints its selection admits, and fails a task whose selection matches
//! no endpoint at once, without a request and without a retry.

mod common;

use common::{error_of, result_of, Env, Worker};
use gleitzeit_core::FailureKind;
use gleitzeit_testkit::llm::{MockOllama, MockOpenAi, SimConfig};
use gleitzeit_worker::{EndpointKind, EndpointSpec};
use serde_json::json;

const SELECTED: &str = r#"
name: selected
tasks:
  - { name: Tagged, type: text, model: smollm2, prompt: a, routing: { tag: gpu } }
  - { name: Local, type: text, model: smollm2, prompt: b, routing: { provider: ollama } }
  - name: Both
    type: chat
    model: smollm2
    messages: [{ role: user, content: c }]
    routing: { tag: gpu, provider: openai, strategy: priority }
"#;

const NOWHERE: &str = r#"
name: nowhere
tasks:
  - name: Nowhere
    type: text
    model: smollm2
    prompt: d
    retry: { max_attempts: 3 }
    routing: { tag: tpu }
"#;

fn endpoint(name: &str, kind: EndpointKind, url: String) -> EndpointSpec {
    EndpointSpec {
        name: name.to_owned(),
        kind,
        url,
        api_key_env: None,
        api_key_file: None,
        models: vec!["*".to_owned()],
        timeout: std::time::Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_only_on_the_endpoints_their_selection_admits() {
    // "sim" (OpenAI, untagged) comes with the environment; "gpu" (OpenAI) and "local"
    // (Ollama) carry the tag `gpu`.
    let env = Env::start().await;
    let gpu = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let local = MockOllama::start(SimConfig::default()).await.unwrap();
    let mut cfg = env.config();
    cfg.endpoints
        .push(endpoint("gpu", EndpointKind::OpenAi, gpu.url()));
    cfg.endpoints
        .push(endpoint("local", EndpointKind::Ollama, local.url()));
    // Priority puts the untagged endpoint first, so an unselected call would go there.
    cfg.routing = serde_yaml_ng::from_str(
        "strategy: priority\nendpoints: {sim: {priority: 0}, gpu: {priority: 1, tags: [gpu]}, local: {priority: 2, tags: [gpu, big]}}",
    )
    .unwrap();
    let worker = Worker::start(cfg);

    let id = env.submit(SELECTED).await;
    let wf = env.wait_end(&id).await;
    assert_eq!(wf.status, "completed");
    let tasks = env.tasks(&id).await;
    let endpoint_of = |i: usize| result_of(&tasks[i]).meta.expect("meta").endpoint;
    // `tag: gpu` under priority: the first tagged endpoint, never the untagged first one.
    assert_eq!(endpoint_of(0).as_deref(), Some("gpu"));
    assert_eq!(endpoint_of(1).as_deref(), Some("local"));
    assert_eq!(endpoint_of(2).as_deref(), Some("gpu"));
    assert_eq!(result_of(&tasks[1]).value, json!("smollm2: b"));
    assert!(tasks.iter().all(|t| t.attempts == 0));
    assert_eq!(env.sim.counters().received, 0, "the untagged endpoint");
    assert_eq!(gpu.counters().received, 2);
    assert_eq!(local.counters().received, 1);

    // A selection no endpoint matches: failed at once (one attempt of three, not retried),
    // saying which tag was asked for, and no inference request anywhere.
    let id = env.submit(NOWHERE).await;
    let wf = env.wait_end(&id).await;
    assert_eq!(wf.status, "failed");
    let t = env.tasks(&id).await.remove(0);
    assert_eq!(t.status, "failed");
    assert_eq!(t.attempts, 1);
    let err = error_of(&t);
    assert_eq!(err.kind, FailureKind::Permanent);
    assert!(err.message.contains(r#"tag "tpu""#), "{}", err.message);
    assert_eq!(err.detail.as_ref().unwrap()["tag"], json!("tpu"));
    assert_eq!(
        (
            env.sim.counters().received,
            gpu.counters().received,
            local.counters().received
        ),
        (0, 2, 1)
    );
    worker.stop().await;
}
