//! Case 3: a stale completion (the entry was reclaimed by another consumer meanwhile) and a
//! duplicate completion change nothing in Redis and say so. Driven through `gleitzeit-queue`
//! directly against a real Redis, with the same calls a worker makes.

use std::time::Duration;

use gleitzeit_core::{FailureKind, TaskFailure, TaskResult};
use gleitzeit_e2e::workflows::{capability, chain, new_id, now_ms, parse, submit_request};
use gleitzeit_e2e::Deployment;
use gleitzeit_queue::{BeginOutcome, FailRequest, Priority, ScriptCode, SubmitOutcome};
use serde_json::json;

fn result_json(text: &str) -> String {
    serde_json::to_string(&TaskResult::new(json!(text))).unwrap()
}

fn error_json() -> String {
    serde_json::to_string(&TaskFailure::new(FailureKind::Retryable, "late failure")).unwrap()
}

#[tokio::test]
async fn stale_and_duplicate_completions_change_nothing() {
    let dep = Deployment::start().await;
    let queue = dep.queue().await;
    let store = &dep.store;

    let wf = parse(&chain("Fenced", 2));
    let id = new_id();
    let outcome = queue.submit(&submit_request(&wf, &id)).await.unwrap();
    assert_eq!(outcome, SubmitOutcome::Created { id: id.clone() });

    // The first consumer reads and begins Step 1.
    let stream = queue.keys().stream_ref(&capability(), Priority::Normal);
    let mut first = queue.consumer("first-consumer").unwrap();
    let read = first
        .read(std::slice::from_ref(&stream), 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(read.len(), 1, "only the root is ready: {read:?}");
    let d1 = read[0].clone();
    assert_eq!((d1.task, d1.deliveries), (0, 1));
    assert!(matches!(
        queue.begin(&d1, "first-consumer", now_ms()).await.unwrap(),
        BeginOutcome::Run(_)
    ));

    // It stalls; another consumer reclaims the entry (min idle 0 stands in for claim_idle).
    let reclaimed = queue
        .reclaim("second-consumer", &stream, Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(reclaimed.len(), 1, "{reclaimed:?}");
    let d2 = reclaimed[0].clone();
    assert_eq!(d2.entry_id, d1.entry_id);
    assert_eq!(d2.deliveries, 2);

    // The stalled consumer's late completion and late failure are stale: nothing changes.
    let before = store.snapshot().await;
    assert_eq!(
        queue
            .complete(
                &d1,
                "first-consumer",
                &result_json("stale result"),
                now_ms()
            )
            .await
            .unwrap(),
        ScriptCode::Stale
    );
    assert_eq!(
        store.snapshot().await,
        before,
        "a stale completion changed Redis"
    );
    let late_failure = FailRequest {
        error_json: error_json(),
        retry_at_ms: Some(now_ms()),
        dead_letter: None,
        now_ms: now_ms(),
    };
    assert_eq!(
        queue
            .fail(&d1, "first-consumer", &late_failure)
            .await
            .unwrap(),
        ScriptCode::Stale
    );
    assert_eq!(
        store.snapshot().await,
        before,
        "a stale failure changed Redis"
    );
    // Even with the current delivery count, the wrong consumer is refused.
    let forged = gleitzeit_queue::Delivery {
        deliveries: d2.deliveries,
        ..d1.clone()
    };
    assert_eq!(
        queue
            .complete(&forged, "first-consumer", &result_json("forged"), now_ms())
            .await
            .unwrap(),
        ScriptCode::Stale
    );
    assert_eq!(store.snapshot().await, before);

    // The current owner runs it and completes it: Step 2 is released exactly once.
    let BeginOutcome::Run(ctx) = queue.begin(&d2, "second-consumer", now_ms()).await.unwrap()
    else {
        panic!("the reclaiming consumer could not begin the task");
    };
    assert_eq!(ctx.name, "Step 1");
    let good = result_json("the real result");
    assert_eq!(
        queue
            .complete(&d2, "second-consumer", &good, now_ms())
            .await
            .unwrap(),
        ScriptCode::Ok
    );
    let after = store.snapshot().await;
    assert_eq!(
        store.stream_len(&capability()).await,
        1,
        "Step 2 queued once"
    );
    assert!(store.pending(&capability()).await.is_empty());

    // A duplicate completion by the owner, and the stalled consumer's completion now that
    // the task has ended: both duplicates, nothing changes.
    assert_eq!(
        queue
            .complete(&d2, "second-consumer", &result_json("again"), now_ms())
            .await
            .unwrap(),
        ScriptCode::Duplicate
    );
    assert_eq!(
        store.snapshot().await,
        after,
        "a duplicate completion changed Redis"
    );
    assert_eq!(
        queue
            .complete(&d1, "first-consumer", &result_json("very late"), now_ms())
            .await
            .unwrap(),
        ScriptCode::Duplicate
    );
    assert_eq!(store.snapshot().await, after);
    assert_eq!(
        queue
            .fail(&d2, "second-consumer", &late_failure)
            .await
            .unwrap(),
        ScriptCode::Duplicate
    );
    assert_eq!(
        store.snapshot().await,
        after,
        "a duplicate failure changed Redis"
    );

    // What stands is the owner's result, recorded once.
    let task = store.task(&id, 0).await;
    assert_eq!(task["status"], "completed");
    assert_eq!(task["result"], good);
    assert_eq!(task["consumer"], "second-consumer");
    assert_eq!(store.completions(&id).await.get("Step 1"), Some(&1));
    let wf_hash = store.workflow(&id).await;
    assert_eq!(wf_hash["completed"], "1");
    assert_eq!(wf_hash["open"], "1");
    assert_eq!(wf_hash["status"], "running");
    assert_eq!(store.task(&id, 1).await["status"], "ready");
}
