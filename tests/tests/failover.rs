//! Failing over from a dead endpoint is visible to an operator: the worker logs it at WARN,
//! naming the endpoint and its error, and the task completes on the next endpoint.

use std::net::TcpListener;
use std::time::Duration;

use gleitzeit_e2e::faults::fleet::{ollama_sims, spec, submit, workers};
use gleitzeit_e2e::faults::seed;
use gleitzeit_e2e::faults::workload::Workload;
use gleitzeit_e2e::{within, Deployment};
use serde_json::json;

/// A URL where nothing listens (a port the OS handed out and took back).
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_over_from_a_dead_endpoint_is_logged_at_warn() {
    let dep = Deployment::start().await;
    let sims = ollama_sims(1, Duration::ZERO).await;
    // ep0 (dead) is tried first: the priority strategy, ep0 preferred.
    let spec = spec(&dep, &[dead_url(), sims[0].url()], 2, "5s").set(
        "routing",
        json!({
            "strategy": "priority",
            "endpoints": {"ep0": {"priority": 0}, "ep1": {"priority": 1}}
        }),
    );
    let fleet = workers(1, &spec).await;
    let workload = Workload::diamonds("failover", seed(), 1);
    let ids = submit(&dep, &workload).await;
    let status = within("the workflow to end", dep.store.wait_finished(&ids[0])).await;
    assert_eq!(status, "completed");

    let line = within(
        "the failover line",
        fleet[0].wait_log("failing over to the next"),
    )
    .await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("ep0"), "{line}");
    assert!(line.to_lowercase().contains("connect"), "{line}");
}
