//! Case 5: poison. A task whose calls always fail retryably lands in the dead-letter stream
//! while the same worker serves another workflow to completion; and an entry delivered more
//! than `max_deliveries` times (a crash loop, simulated by reclaiming it repeatedly) is
//! dead-lettered as poison without being run again.

use std::time::Duration;

use gleitzeit_e2e::sim::{echo_openai, prompts_starting_with};
use gleitzeit_e2e::worker::WorkerProcess;
use gleitzeit_e2e::workflows::{capability, diamond, new_id, parse, submit_request, MODEL};
use gleitzeit_e2e::Deployment;
use gleitzeit_queue::{Priority, SubmitOutcome};
use gleitzeit_testkit::llm::Fault;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_task_is_dead_lettered_while_other_work_completes() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    // Every call whose prompt carries the marker fails at the endpoint (HTTP 500), forever.
    sim.poison("POISON", internal_error());
    let _worker = WorkerProcess::spawn("w", &dep.worker(&sim.url()));

    let poisoned = dep
        .cli
        .submit_yaml(&format!(
            "name: Poisoned\ndefaults:\n  model: {MODEL}\ntasks:\n  - name: Pill\n    type: text\n    prompt: POISON pill\n    retry: {{ max_attempts: 3, backoff: fixed, base_delay: 100ms }}\n"
        ))
        .await;
    let healthy = dep.cli.submit_yaml(&diamond("Healthy")).await;

    assert_eq!(dep.store.wait_finished(&healthy).await, "completed");
    assert_eq!(dep.store.wait_finished(&poisoned).await, "failed");

    // At most one call per attempt (the router may skip an endpoint it knows is failing).
    let calls = prompts_starting_with(&sim, "POISON").len();
    assert!((1..=3).contains(&calls), "{calls} calls for 3 attempts");
    let dead = dep.store.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.get("wf"), poisoned);
    assert_eq!(letter.get("task"), "0");
    assert_eq!(letter.get("name"), "Pill");
    assert_eq!(letter.get("cap"), capability());
    assert_eq!(letter.get("kind"), "exhausted");
    assert_eq!(letter.get("attempts"), "3");
    let reason: Value = serde_json::from_str(letter.get("reason")).unwrap();
    assert_eq!(reason["kind"], "retryable", "{reason}");
    assert!(
        reason["message"].as_str().unwrap_or("").contains("500"),
        "{reason}"
    );

    let healthy_wf = dep.store.workflow(&healthy).await;
    assert_eq!(healthy_wf["completed"], "6");
    assert!(dep
        .store
        .completions(&healthy)
        .await
        .values()
        .all(|&n| n == 1));
    assert_eq!(dep.store.stream_len(&capability()).await, 0);
    assert!(dep.store.pending(&capability()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_entry_is_dead_lettered_as_poison() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    let queue = dep.queue().await;

    let wf = parse(&format!(
        "name: Crash loop\ntasks:\n  - name: Crasher\n    type: text\n    model: {MODEL}\n    prompt: crash me\n"
    ));
    let id = new_id();
    assert!(matches!(
        queue.submit(&submit_request(&wf, &id)).await.unwrap(),
        SubmitOutcome::Created { .. }
    ));

    // The entry is delivered, then taken over again and again, as when every worker that
    // picks it up dies: 1 read + 3 reclaims = 4 deliveries.
    let stream = queue.keys().stream_ref(&capability(), Priority::Normal);
    let mut crasher = queue.consumer("crasher-0").unwrap();
    let read = crasher
        .read(std::slice::from_ref(&stream), 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    for n in 1..=3 {
        let taken = queue
            .reclaim(&format!("crasher-{n}"), &stream, Duration::ZERO, 1)
            .await
            .unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].deliveries, n + 1);
    }

    // A worker allowing 2 deliveries reclaims it once it has been idle for claim_idle; the
    // count is over the limit, so it is dead-lettered instead of run.
    let spec = dep.worker(&sim.url()).claim_idle("1s").max_deliveries(2);
    let _worker = WorkerProcess::spawn("w", &spec);
    assert_eq!(dep.store.wait_finished(&id).await, "failed");

    assert_eq!(
        sim.counters().received,
        0,
        "a poison entry is not run again"
    );
    let task = dep.store.task(&id, 0).await;
    assert_eq!(task["status"], "failed");
    let error: Value = serde_json::from_str(&task["error"]).unwrap();
    assert_eq!(error["kind"], "poison", "{error}");
    let dead = dep.store.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].get("wf"), id);
    assert_eq!(dead[0].get("name"), "Crasher");
    assert_eq!(dead[0].get("kind"), "poison");
    assert_eq!(dep.store.stream_len(&capability()).await, 0);
    assert!(dep.store.pending(&capability()).await.is_empty());
    assert_eq!(dep.store.counter(&id, "failed").await, 1);
    assert_eq!(dep.store.counter(&id, "open").await, 0);
}

/// A failure of the call at an endpoint that could serve it: an attempt (an overload answer
/// would be endpoint trouble, waited out without using one).
fn internal_error() -> Fault {
    Fault::Status(500, r#"{"error":{"message":"internal error"}}"#.into())
}
