//! Case 2: a worker process killed with SIGKILL while a task is in flight. Its call is held at
//! the simulator's gate, the test sees it arrive, kills the worker, and another worker
//! reclaims the entry and finishes the workflow: every task completed exactly once in Redis,
//! nothing lost.

use gleitzeit_e2e::sim::{echo_openai, prompts};
use gleitzeit_e2e::worker::WorkerProcess;
use gleitzeit_e2e::workflows::{capability, chain};
use gleitzeit_e2e::{within, Deployment};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_task_another_worker_finishes_exactly_once() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    sim.hold();
    // claim_idle 1s: a dead worker's entry becomes reclaimable soon (configuration only).
    let spec = dep.worker(&sim.url()).claim_idle("1s");

    let mut doomed = WorkerProcess::spawn("doomed", &spec);
    let doomed_consumer = doomed.consumer().await;
    let id = dep.cli.submit_yaml(&chain("Crash", 3)).await;

    // Step 1's call reached the simulator and is held there: the task is in flight.
    within("the first call to arrive", sim.wait_held(1)).await;
    let task = dep.store.task(&id, 0).await;
    assert_eq!(task["status"], "running");
    assert_eq!(task["consumer"], doomed_consumer);
    let pending = dep.store.pending(&capability()).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].consumer, doomed_consumer);

    let status = doomed.sigkill().await;
    assert!(
        !status.success(),
        "SIGKILL ends the process abnormally: {status:?}"
    );

    // Calls pass from now on; a second worker reclaims the dead worker's entry.
    sim.open_gate();
    let survivor = WorkerProcess::spawn("survivor", &spec);
    let survivor_consumer = survivor.consumer().await;
    assert_eq!(dep.store.wait_finished(&id).await, "completed");

    // Exactly once in Redis: one completion event per task, exact counters, nothing left.
    let completions = dep.store.completions(&id).await;
    assert_eq!(completions.len(), 3, "{completions:?}");
    assert!(completions.values().all(|&n| n == 1), "{completions:?}");
    let wf = dep.store.workflow(&id).await;
    assert_eq!(
        (
            wf["total"].as_str(),
            wf["completed"].as_str(),
            wf["open"].as_str(),
            wf["failed"].as_str(),
            wf["skipped"].as_str(),
            wf["cancelled"].as_str()
        ),
        ("3", "3", "0", "0", "0", "0")
    );
    for (i, task) in dep.store.tasks(&id).await.into_iter().enumerate() {
        assert_eq!(task["status"], "completed", "task {i}: {task:?}");
        assert_eq!(
            task["consumer"], survivor_consumer,
            "task {i} finished by the survivor"
        );
        assert_eq!(
            task["attempts"], "0",
            "a crash is not a failed attempt: {task:?}"
        );
    }
    assert_eq!(dep.store.stream_len(&capability()).await, 0);
    assert!(dep.store.pending(&capability()).await.is_empty());
    assert!(dep.store.dead_letters().await.is_empty());

    // The simulator saw Step 1 twice (the lost call and the reclaimed one), the others once,
    // and the chain carried the reclaimed run's result.
    let seen = prompts(&sim);
    assert_eq!(
        seen.iter().filter(|p| *p == "Begin Crash").count(),
        2,
        "{seen:?}"
    );
    assert_eq!(seen.len(), 4, "{seen:?}");
    let step1 = dep.store.result_text(&id, "Step 1").await;
    assert!(
        seen.contains(&format!("Step 2 after <{step1}>")),
        "{seen:?}"
    );
}
