//! Endpoints published to the fleet with `gleitzeit-submit endpoints add|remove`: a worker
//! configured with only a dead endpoint and `published_endpoints: adopt` routes over a
//! published simulator once it is published and stops when it is withdrawn; a worker that
//! does not adopt them never calls it and says so once.

use gleitzeit_e2e::sim::{echo_openai, prompts_starting_with};
use gleitzeit_e2e::worker::{WorkerProcess, WorkerSpec};
use gleitzeit_e2e::workflows::MODEL;
use gleitzeit_e2e::Deployment;
use serde_json::json;

/// A port nothing listens on: every call is refused at once.
const DEAD_URL: &str = "http://127.0.0.1:1";

/// A worker whose only configured endpoint is dead, with this `published_endpoints` mode.
fn spec(dep: &Deployment, mode: &str) -> WorkerSpec {
    dep.worker(DEAD_URL)
        .set(
            "endpoints",
            json!([{"name": "dead", "kind": "openai", "url": DEAD_URL, "models": ["*"],
                    "timeout": "10s"}]),
        )
        .set("published_endpoints", mode)
}

/// One text task whose prompt starts with `prefix`.
fn one_task(name: &str, prefix: &str) -> String {
    format!(
        "name: {name}\ntasks:\n  - name: Ask\n    type: text\n    model: {MODEL}\n    timeout: 60s\n    prompt: \"{prefix} please\"\n"
    )
}

async fn publish(dep: &Deployment, name: &str, url: &str) {
    dep.cli
        .run(&[
            "--json",
            "endpoints",
            "add",
            name,
            "--kind",
            "openai",
            "--url",
            url,
        ])
        .await
        .assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopting_worker_follows_what_is_published() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    let worker = WorkerProcess::spawn("adopt", &spec(&dep, "adopt"));
    worker.consumer().await;

    publish(&dep, "live", &sim.url()).await;
    worker
        .wait_log("published endpoints adopted version=1 endpoints=live")
        .await;
    let id = dep.cli.submit_yaml(&one_task("first", "Published")).await;
    assert_eq!(dep.store.wait_finished(&id).await, "completed");
    assert_eq!(prompts_starting_with(&sim, "Published").len(), 1);
    let result = dep.store.task_named(&id, "Ask").await["result"].clone();
    assert!(
        result.contains("\"endpoint\":\"live\""),
        "the result names the published endpoint: {result}"
    );

    // Withdrawn: later calls reach only the dead endpoint, and are deferred.
    dep.cli
        .run(&["--json", "endpoints", "remove", "live"])
        .await
        .assert_code(0);
    worker
        .wait_log("published endpoints adopted version=2 endpoints= ")
        .await;
    let id = dep.cli.submit_yaml(&one_task("second", "Withdrawn")).await;
    dep.store.wait_task_status(&id, "Ask", "retrying").await;
    assert!(
        prompts_starting_with(&sim, "Withdrawn").is_empty(),
        "a withdrawn endpoint was called"
    );
    dep.cli.run(&["cancel", &id]).await.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_ignores_them_never_calls_them_and_says_so_once() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    publish(&dep, "live", &sim.url()).await;
    let worker = WorkerProcess::spawn("ignore", &spec(&dep, "ignore"));
    worker.consumer().await;
    let notice = "1 endpoints are published in Redis but this worker does not adopt them \
                  (set published_endpoints: adopt)";
    worker.wait_log(notice).await;

    let id = dep.cli.submit_yaml(&one_task("ignored", "Ignored")).await;
    dep.store.wait_task_status(&id, "Ask", "retrying").await;
    // A second change of what is published is not announced again.
    publish(&dep, "also", &sim.url()).await;
    let id2 = dep.cli.submit_yaml(&one_task("ignored2", "Ignored")).await;
    dep.store.wait_task_status(&id2, "Ask", "retrying").await;
    assert!(
        prompts_starting_with(&sim, "Ignored").is_empty(),
        "a worker that does not adopt published endpoints called one"
    );
    let notices = worker
        .log_lines()
        .iter()
        .filter(|l| l.contains("does not adopt them"))
        .count();
    assert_eq!(notices, 1);
    for id in [id, id2] {
        dep.cli.run(&["cancel", &id]).await.assert_code(0);
    }
}
