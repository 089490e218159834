//! Case 8: SIGTERM drains in-flight work. With the task's call held at the simulator, SIGTERM
//! and then releasing the call lets the task complete and the worker exit 0. With the call
//! never released, the worker exits at its drain deadline, the entry stays pending, and a
//! second worker reclaims and completes it.

use gleitzeit_e2e::sim::{echo_openai, prompts};
use gleitzeit_e2e::worker::WorkerProcess;
use gleitzeit_e2e::workflows::{capability, MODEL};
use gleitzeit_e2e::{within, Deployment};

fn one_task(name: &str) -> String {
    format!(
        "name: {name}\ntasks:\n  - name: Held\n    type: text\n    model: {MODEL}\n    prompt: Held call\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_task_in_flight_then_exits_zero() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    sim.hold();
    let mut worker = WorkerProcess::spawn("w", &dep.worker(&sim.url()).drain_timeout("120s"));
    let id = dep.cli.submit_yaml(&one_task("Drain")).await;
    within("the call to arrive", sim.wait_held(1)).await;

    worker.sigterm();
    // The worker has taken the signal and is draining; only then is the call released.
    worker.wait_log("draining in-flight tasks").await;
    assert_eq!(dep.store.task(&id, 0).await["status"], "running");
    sim.open_gate();

    let status = worker.wait_exit().await;
    assert!(
        status.success(),
        "the worker exits 0 after draining: {status:?}"
    );
    assert_eq!(dep.store.wait_finished(&id).await, "completed");
    assert_eq!(dep.store.completions(&id).await.get("Held"), Some(&1));
    assert_eq!(sim.counters().received, 1);
    assert!(dep.store.pending(&capability()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_leaves_the_entry_pending_for_another_worker() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    sim.hold();
    // A short drain deadline and claim idle time (configuration; durations are not asserted).
    let spec = dep.worker(&sim.url()).drain_timeout("1s").claim_idle("1s");
    let mut first = WorkerProcess::spawn("first", &spec);
    let first_consumer = first.consumer().await;
    let id = dep.cli.submit_yaml(&one_task("Deadline")).await;
    within("the call to arrive", sim.wait_held(1)).await;

    // The call is never released: the worker gives up at its drain deadline and exits.
    first.sigterm();
    let status = first.wait_exit().await;
    assert!(
        status.success(),
        "a drain that hits its deadline still exits 0: {status:?}"
    );

    // The entry was left pending (not acknowledged, not failed) for someone else.
    let pending = dep.store.pending(&capability()).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].consumer, first_consumer);
    assert_eq!(dep.store.task(&id, 0).await["status"], "running");
    assert_eq!(dep.store.workflow(&id).await["status"], "running");

    sim.open_gate();
    let second = WorkerProcess::spawn("second", &spec);
    let second_consumer = second.consumer().await;
    assert_eq!(dep.store.wait_finished(&id).await, "completed");
    let task = dep.store.task(&id, 0).await;
    assert_eq!(task["consumer"], second_consumer);
    assert_eq!(task["attempts"], "0");
    assert_eq!(dep.store.completions(&id).await.get("Held"), Some(&1));
    assert_eq!(prompts(&sim), vec!["Held call", "Held call"]);
    assert!(dep.store.pending(&capability()).await.is_empty());
}

/// A clean shutdown is not an error: before the supervisor preferred the shutdown signal,
/// loops that ended because of it were sometimes logged as "ended early" at ERROR (about one
/// shutdown in four), so a dozen start/work/stop cycles would show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdowns_log_nothing_at_error() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    for round in 0..12 {
        let mut worker = WorkerProcess::spawn(&format!("w{round}"), &dep.worker(&sim.url()));
        // A completed task proves every loop is running before the signal.
        let id = dep
            .cli
            .submit_yaml(&one_task(&format!("Clean {round}")))
            .await;
        assert_eq!(dep.store.wait_finished(&id).await, "completed");
        worker.sigterm();
        let status = worker.wait_exit().await;
        assert!(status.success(), "round {round}: {status:?}");
        let errors: Vec<String> = worker
            .log_lines()
            .into_iter()
            .filter(|l| l.contains("ERROR"))
            .collect();
        assert!(
            errors.is_empty(),
            "round {round} logged errors: {errors:#?}"
        );
    }
}
