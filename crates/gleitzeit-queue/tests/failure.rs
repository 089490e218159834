//! Failures: retry through the delayed set, failure policies, dead letters, cancellation.

mod common;

use std::time::Duration;

use common::*;
use gleitzeit_queue::{
    BeginOutcome, Consumer, DeadLetterKind, Delivery, FailRequest, Priority, ScriptCode,
};

/// Fails delivery `d` as `w1` with [`failure`]`(retry_at_ms, dead_letter)`.
async fn fail_w1(
    env: &Env,
    d: &Delivery,
    retry_at_ms: Option<u64>,
    dead_letter: Option<DeadLetterKind>,
) -> ScriptCode {
    env.queue
        .fail(d, "w1", &failure(retry_at_ms, dead_letter))
        .await
        .unwrap()
}

/// Reads the next ready entry of [`CAP`] and begins it as `w1`.
async fn begin_next(env: &Env, c: &mut Consumer) -> Delivery {
    let d = env.read_all(c, CAP).await.remove(0);
    begin_ok(env, &d, "w1").await;
    d
}

/// Asserts that task `i` waits in the delayed set until `due`, with `attempts` counted (a
/// retry uses an attempt, a deferral does not).
async fn assert_waits_until(env: &Env, id: &str, i: u32, due: u64, attempts: &str) {
    assert_eq!(env.status(id, i).await, "retrying");
    assert_eq!(
        env.task_field(id, i, "attempts").await.as_deref(),
        Some(attempts)
    );
    let member = format!("{id}|{i}");
    let score: Option<String> = env
        .cmd(&["ZSCORE", &env.queue.keys().delayed(), &member])
        .await;
    assert_eq!(score, Some(due.to_string()));
}

#[tokio::test]
async fn retry_waits_in_the_delayed_set_until_promoted() {
    let (env, id, mut c) = with_workflow(&request("fail_fast", &[t("A", &[])])).await;
    let k = env.queue.keys().clone();
    let d = begin_next(&env, &mut c).await;
    let due = NOW + 1_000;
    assert_eq!(
        fail_w1(&env, &d, Some(due), None).await,
        ScriptCode::RetryScheduled
    );

    assert_waits_until(&env, &id, 0, due, "1").await;
    assert!(env
        .task_field(&id, 0, "error")
        .await
        .unwrap()
        .contains("503"));
    let stream = k.stream(CAP, Priority::Normal);
    assert_eq!(
        (env.xlen(&stream).await, env.pending(&stream).await),
        (0, 0),
        "entry acked and deleted"
    );
    assert_eq!(
        env.counters(&id).await,
        (1, 0, 0, 0, 0),
        "a retry is not an end"
    );

    // Not due yet.
    let p = env.queue.promote(due - 1, 100).await.unwrap();
    assert_eq!((p.moved, p.next_due_ms), (0, Some(due)));
    assert!(env.read_all(&mut c, CAP).await.is_empty());

    // Due: back on its stream, ready, readable and runnable as attempt 2.
    let p = env.queue.promote(due, 100).await.unwrap();
    assert_eq!((p.moved, p.next_due_ms), (1, None));
    assert_eq!(env.status(&id, 0).await, "ready");
    let again = env.read_all(&mut c, CAP).await;
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].entry_id, d.entry_id);
    let BeginOutcome::Run(ctx) = env.queue.begin(&again[0], "w1", NOW).await.unwrap() else {
        panic!("runnable")
    };
    assert_eq!(ctx.attempts, 1);
    assert_eq!(
        env.queue
            .complete(&again[0], "w1", "ok", NOW)
            .await
            .unwrap(),
        ScriptCode::Ok
    );
    assert_eq!(
        env.queue.workflow(&id).await.unwrap().unwrap().status,
        "completed"
    );
}

#[tokio::test]
async fn promote_respects_its_limit_and_reports_the_next_due_time() {
    let req = request("fail_fast", &[t("A", &[]), t("B", &[]), t("C", &[])]);
    let (env, id, mut c) = with_workflow(&req).await;
    let ds = env.read_all(&mut c, CAP).await;
    for (n, d) in ds.iter().enumerate() {
        begin_ok(&env, d, "w1").await;
        let due = NOW + 10 * (n as u64 + 1);
        env.queue
            .fail(d, "w1", &failure(Some(due), None))
            .await
            .unwrap();
    }
    let p = env.queue.promote(NOW + 100, 2).await.unwrap();
    assert_eq!((p.moved, p.next_due_ms), (2, Some(NOW + 30)));
    let p = env.queue.promote(NOW + 100, 2).await.unwrap();
    assert_eq!((p.moved, p.next_due_ms), (1, None));
    assert_eq!(env.read_all(&mut c, CAP).await.len(), 3);
    assert!(env
        .queue
        .tasks(&id)
        .await
        .unwrap()
        .iter()
        .all(|t| t.status == "ready"));
}

#[tokio::test]
async fn exhausted_under_fail_fast_cancels_the_rest_and_fails_the_workflow() {
    // A → B; C → D; E independent (in a retry). A fails for good.
    let mut req = request(
        "fail_fast",
        &[
            t("A", &[]),
            t("B", &[0]),
            t("C", &[]),
            t("D", &[2]),
            t("E", &[]),
        ],
    );
    req.tasks[0].max_attempts = 2;
    let (env, id, mut c) = with_workflow(&req).await;
    let k = env.queue.keys().clone();
    let ds = env.read_all(&mut c, CAP).await;
    let (a, cc, e) = (&ds[0], &ds[1], &ds[2]);
    assert_eq!((a.task, cc.task, e.task), (0, 2, 4));

    // C is running, E waits for a retry, A used its first attempt.
    begin_ok(&env, cc, "w1").await;
    begin_ok(&env, e, "w1").await;
    env.queue
        .fail(e, "w1", &failure(Some(NOW + 60_000), None))
        .await
        .unwrap();
    begin_ok(&env, a, "w1").await;
    env.queue
        .fail(a, "w1", &failure(Some(NOW + 5), None))
        .await
        .unwrap();
    env.queue.promote(NOW + 5, 10).await.unwrap();
    let a2 = begin_next(&env, &mut c).await;

    // The last attempt fails: the caller asks for a retry, but none is left.
    assert_eq!(
        fail_w1(&env, &a2, Some(NOW + 10), None).await,
        ScriptCode::Failed
    );
    assert_eq!(env.status(&id, 0).await, "failed");
    assert_eq!(
        env.task_field(&id, 0, "attempts").await.as_deref(),
        Some("2")
    );
    assert_eq!(env.status(&id, 1).await, "cancelled", "waiting → cancelled");
    assert_eq!(
        env.status(&id, 2).await,
        "running",
        "started tasks finish on their own"
    );
    assert_eq!(env.status(&id, 3).await, "cancelled");
    assert_eq!(
        env.status(&id, 4).await,
        "cancelled",
        "retrying → cancelled"
    );
    // Each closed task says what closed it; the failed and the running one have no reason.
    let reasons: Vec<Option<String>> = env
        .queue
        .tasks(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.reason)
        .collect();
    let why = Some(r#"task "A" failed and the policy fail_fast cancels the rest"#.to_owned());
    assert_eq!(
        reasons,
        vec![None, why.clone(), None, why.clone(), why],
        "reasons of A..E"
    );
    let delayed: u64 = env.cmd(&["ZCARD", &k.delayed()]).await;
    assert_eq!(delayed, 0, "its delayed retry was removed");
    let info = env.queue.workflow(&id).await.unwrap().unwrap();
    assert_eq!(info.status, "failed");
    assert_eq!(info.finished_ms, Some(NOW));
    assert_eq!(env.counters(&id).await, (1, 0, 1, 0, 3));
    // Asking for a retry past max_attempts writes an "exhausted" dead letter.
    let dead = env.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].kind.as_str(), dead[0].task, dead[0].attempts),
        ("exhausted", 0, 2)
    );

    // The running task completes late: recorded, counted, nothing released, no new end.
    assert_eq!(
        env.queue
            .complete(cc, "w1", "late", NOW + 100)
            .await
            .unwrap(),
        ScriptCode::Ok
    );
    assert_eq!(env.status(&id, 2).await, "completed");
    assert_eq!(env.status(&id, 3).await, "cancelled");
    assert!(env.read_all(&mut c, CAP).await.is_empty());
    assert_eq!(env.counters(&id).await, (0, 1, 1, 0, 3));
    let info = env.queue.workflow(&id).await.unwrap().unwrap();
    assert_eq!(
        info.status, "failed",
        "final status never turns into completed"
    );
    assert_eq!(info.finished_ms, Some(NOW), "the workflow ended once");
    let ends = env
        .queue
        .events(&id, "0", Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.is_workflow_end())
        .count();
    assert_eq!(ends, 1);
    assert!(env.cmd::<i64>(&["TTL", &k.workflow(&id)]).await > 0);
}

#[tokio::test]
async fn continue_skips_descendants_and_lets_independent_branches_finish() {
    // A → B → C, and A → C; D → E independent.
    let (env, id, mut c) = with_workflow(&request(
        "continue",
        &[
            t("A", &[]),
            t("B", &[0]),
            t("C", &[0, 1]),
            t("D", &[]),
            t("E", &[3]),
        ],
    ))
    .await;
    let ds = env.read_all(&mut c, CAP).await;
    let (a, d) = (&ds[0], &ds[1]);
    begin_ok(&env, a, "w1").await;
    assert_eq!(
        env.queue.fail(a, "w1", &failure(None, None)).await.unwrap(),
        ScriptCode::Failed
    );
    assert_eq!(env.status(&id, 1).await, "skipped");
    assert_eq!(env.status(&id, 2).await, "skipped");
    let tasks = env.queue.tasks(&id).await.unwrap();
    for t in &tasks[1..3] {
        assert_eq!(
            t.reason.as_deref(),
            Some(r#"upstream task "A" failed (policy continue)"#),
            "{}",
            t.name
        );
    }
    assert_eq!(
        tasks[3].reason, None,
        "the independent branch was not closed"
    );
    assert_eq!(env.counters(&id).await, (2, 0, 1, 2, 0));
    assert_eq!(
        env.queue.workflow(&id).await.unwrap().unwrap().status,
        "running"
    );

    run_ok(&env, d, "w1", "d").await;
    let e = env.read_all(&mut c, CAP).await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].task, 4);
    run_ok(&env, &e[0], "w1", "e").await;

    let info = env.queue.workflow(&id).await.unwrap().unwrap();
    assert_eq!(
        info.status, "failed",
        "a failed task makes the final status failed"
    );
    assert_eq!(env.counters(&id).await, (0, 2, 1, 2, 0));
    assert!(info.finished_ms.is_some());
    // No dead letter unless asked for.
    assert!(env.queue.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn continue_ends_the_workflow_when_the_failure_closes_the_last_open_tasks() {
    let (env, id, mut c) = with_workflow(&request("continue", &[t("A", &[]), t("B", &[0])])).await;
    let a = begin_next(&env, &mut c).await;
    fail_w1(&env, &a, None, None).await;
    let info = env.queue.workflow(&id).await.unwrap().unwrap();
    assert_eq!(info.status, "failed");
    assert_eq!(env.counters(&id).await, (0, 0, 1, 1, 0));
    let last = env
        .queue
        .events(&id, "0", Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(last.is_workflow_end());
}

#[tokio::test]
async fn task_on_failure_overrides_the_workflow_policy() {
    let mut tasks = [t("A", &[]), t("B", &[0]), t("C", &[])];
    tasks[0].on_failure = Some("continue");
    let (env, id, mut c) = with_workflow(&request("fail_fast", &tasks)).await;
    let ds = env.read_all(&mut c, CAP).await;
    begin_ok(&env, &ds[0], "w1").await;
    fail_w1(&env, &ds[0], None, None).await;
    assert_eq!(env.status(&id, 1).await, "skipped");
    assert_eq!(
        env.status(&id, 2).await,
        "ready",
        "the independent task was not cancelled"
    );
    assert_eq!(
        env.queue.workflow(&id).await.unwrap().unwrap().status,
        "running"
    );
}

#[tokio::test]
async fn poison_dead_letter_without_running_the_task() {
    let (env, id, mut c) = with_workflow(&request("fail_fast", &[t("A", &[])])).await;
    let stream = env.queue.keys().stream_ref(CAP, Priority::Normal);
    let d = env.read_all(&mut c, CAP).await.remove(0);
    env.age_entry(&d, "w1", 120_000).await;
    let d = env
        .queue
        .reclaim("w2", &stream, Duration::from_secs(60), 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(d.deliveries, 2);
    // The reclaimer decides the entry was delivered too often: fail it as poison unbegun.
    let req = FailRequest {
        error_json: r#"{"kind":"poison","message":"delivered 2 times"}"#.into(),
        retry_at_ms: None,
        dead_letter: Some(DeadLetterKind::Poison),
        now_ms: NOW + 7,
    };
    assert_eq!(
        env.queue.fail(&d, "w2", &req).await.unwrap(),
        ScriptCode::Failed
    );
    let dead = env.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let l = &dead[0];
    assert_eq!(
        (
            l.workflow_id.as_str(),
            l.task,
            l.name.as_str(),
            l.capability.as_str(),
            l.kind.as_str()
        ),
        (id.as_str(), 0, "A", CAP, "poison")
    );
    assert_eq!((l.attempts, l.at_ms), (1, NOW + 7));
    assert!(l.reason.contains("delivered 2 times"));
    assert_eq!(
        env.queue.workflow(&id).await.unwrap().unwrap().status,
        "failed"
    );
    assert_eq!(
        (env.xlen(&stream.key).await, env.pending(&stream.key).await),
        (0, 0)
    );
}

#[tokio::test]
async fn cancel_closes_every_open_task_and_is_reported_once() {
    let (env, id, mut c) = with_workflow(&request(
        "fail_fast",
        &[t("A", &[]), t("B", &[]), t("C", &[]), t("D", &[0])],
    ))
    .await;
    let k = env.queue.keys().clone();
    let stream = k.stream(CAP, Priority::Normal);
    let ds = env.read_all(&mut c, CAP).await;
    // A running, B retrying, C delivered but not begun, D waiting.
    begin_ok(&env, &ds[0], "w1").await;
    begin_ok(&env, &ds[1], "w1").await;
    fail_w1(&env, &ds[1], Some(NOW + 60_000), None).await;

    assert_eq!(
        env.queue.cancel(&id, NOW + 1).await.unwrap(),
        ScriptCode::Ok
    );
    for i in 0..4 {
        assert_eq!(env.status(&id, i).await, "cancelled", "task {i}");
        assert_eq!(
            env.task_field(&id, i, "reason").await.as_deref(),
            Some("the workflow was cancelled"),
            "task {i}"
        );
    }
    let info = env.queue.workflow(&id).await.unwrap().unwrap();
    assert_eq!(
        (info.status.as_str(), info.finished_ms),
        ("cancelled", Some(NOW + 1))
    );
    assert_eq!(env.counters(&id).await, (0, 0, 0, 0, 4));
    assert_eq!(env.cmd::<u64>(&["ZCARD", &k.delayed()]).await, 0);
    assert!(env.cmd::<i64>(&["TTL", &k.workflow(&id)]).await > 0);
    assert!(env
        .queue
        .events(&id, "0", Duration::ZERO)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .is_workflow_end());

    // The running task's worker finishes: its result is kept, the status stays cancelled.
    assert_eq!(
        env.queue.complete(&ds[0], "w1", "r", NOW).await.unwrap(),
        ScriptCode::Cancelled
    );
    assert_eq!(env.status(&id, 0).await, "cancelled");
    assert_eq!(env.task_field(&id, 0, "result").await.as_deref(), Some("r"));
    assert_eq!(env.counters(&id).await, (0, 0, 0, 0, 4));
    // C's delivered entry: begin refuses it and acknowledges it.
    assert_eq!(
        env.queue.begin(&ds[2], "w1", NOW).await.unwrap(),
        BeginOutcome::NotRunnable {
            status: "cancelled".into()
        }
    );
    assert_eq!(
        (env.xlen(&stream).await, env.pending(&stream).await),
        (0, 0)
    );

    assert_eq!(
        env.queue.cancel(&id, NOW).await.unwrap(),
        ScriptCode::AlreadyFinished
    );
    assert_eq!(
        env.queue.cancel("no-such-workflow", NOW).await.unwrap(),
        ScriptCode::NotFound
    );
}

#[tokio::test]
async fn begin_on_a_cancelled_task_acks_and_deletes_its_entry() {
    let (env, id, mut c) = with_workflow(&request("fail_fast", &[t("A", &[])])).await;
    let stream = env.queue.keys().stream(CAP, Priority::Normal);
    let d = env.read_all(&mut c, CAP).await.remove(0);
    assert_eq!(env.pending(&stream).await, 1);
    env.queue.cancel(&id, NOW).await.unwrap();
    assert_eq!(
        env.queue.begin(&d, "w1", NOW).await.unwrap(),
        BeginOutcome::NotRunnable {
            status: "cancelled".into()
        }
    );
    assert_eq!(env.pending(&stream).await, 0);
    assert_eq!(env.xlen(&stream).await, 0);
    assert_eq!(env.status(&id, 0).await, "cancelled");
}

#[tokio::test]
async fn a_running_task_redelivered_after_fail_fast_is_cancelled_not_rerun() {
    let (env, id, mut c) = with_workflow(&request("fail_fast", &[t("A", &[]), t("B", &[])])).await;
    let stream = env.queue.keys().stream_ref(CAP, Priority::Normal);
    let ds = env.read_all(&mut c, CAP).await;
    begin_ok(&env, &ds[0], "w1").await;
    begin_ok(&env, &ds[1], "w1").await;
    fail_w1(&env, &ds[1], None, None).await;
    assert_eq!(
        env.queue.workflow(&id).await.unwrap().unwrap().status,
        "failed"
    );
    assert_eq!(env.status(&id, 0).await, "running");

    // w1 dies; A is reclaimed and begun again under the failed workflow.
    env.age_entry(&ds[0], "w1", 120_000).await;
    let d = env
        .queue
        .reclaim("w2", &stream, Duration::from_secs(60), 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        env.queue.begin(&d, "w2", NOW).await.unwrap(),
        BeginOutcome::NotRunnable {
            status: "cancelled".into()
        }
    );
    assert_eq!(env.status(&id, 0).await, "cancelled");
    assert_eq!(
        env.task_field(&id, 0, "reason").await.as_deref(),
        Some("the workflow had ended before the task was taken up again")
    );
    assert_eq!(env.counters(&id).await, (0, 0, 1, 0, 1));
}

#[tokio::test]
async fn a_deferral_requeues_without_using_an_attempt() {
    let (env, id, mut c) = with_workflow(&request("fail_fast", &[t("A", &[])])).await;
    // Deferred twice: attempts stay 0, deferrals count, the task waits in the delayed set.
    for round in 1..=2u32 {
        let d = begin_next(&env, &mut c).await;
        let due = NOW + 1_000;
        assert_eq!(
            env.queue
                .defer(&d, "w1", &failure(Some(due), None))
                .await
                .unwrap(),
            ScriptCode::RetryScheduled
        );
        assert_waits_until(&env, &id, 0, due, "0").await;
        let info = env.queue.tasks(&id).await.unwrap().remove(0);
        assert_eq!((info.attempts, info.deferrals), (0, round));
        assert_eq!(env.queue.promote(due, 100).await.unwrap().moved, 1);
    }
    // A real failure afterwards still uses the first attempt.
    let d = begin_next(&env, &mut c).await;
    assert_eq!(
        fail_w1(&env, &d, Some(NOW + 1), None).await,
        ScriptCode::RetryScheduled
    );
    assert_eq!(
        env.task_field(&id, 0, "attempts").await.as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_deferral_needs_a_due_time_and_fails_plainly_once_the_workflow_ended() {
    let (env, id, mut c) = with_workflow(&request("fail_fast", &[t("A", &[]), t("B", &[])])).await;
    let mut ds = env.read_all(&mut c, CAP).await;
    let (a, b) = (ds.remove(0), ds.remove(0));
    begin_ok(&env, &a, "w1").await;
    begin_ok(&env, &b, "w1").await;
    assert!(env
        .queue
        .defer(&a, "w1", &failure(None, None))
        .await
        .is_err());
    // B fails for good under fail_fast: the workflow ends, so A's deferral is a failure.
    assert_eq!(fail_w1(&env, &b, None, None).await, ScriptCode::Failed);
    assert_eq!(
        env.queue
            .defer(&a, "w1", &failure(Some(NOW + 1), None))
            .await
            .unwrap(),
        ScriptCode::Failed
    );
    assert_eq!(env.status(&id, 0).await, "failed");
}

#[tokio::test]
async fn the_failure_or_completion_that_ends_a_workflow_reports_its_end() {
    let failed_after = |ms: u64| {
        Some(gleitzeit_queue::WorkflowEnd {
            status: "failed".into(),
            duration_ms: ms,
        })
    };
    let at = |ms: u64| FailRequest {
        now_ms: NOW + ms,
        ..failure(None, None)
    };

    // fail_fast: the terminal failure ends the workflow; a late completion reports nothing.
    let (env, _, mut c) = with_workflow(&request("fail_fast", &[t("A", &[]), t("B", &[])])).await;
    let ds = env.read_all(&mut c, CAP).await;
    begin_ok(&env, &ds[0], "w1").await;
    begin_ok(&env, &ds[1], "w1").await;
    let r = env
        .queue
        .fail_recorded(&ds[0], "w1", &at(40))
        .await
        .unwrap();
    assert_eq!((r.code, r.ended), (ScriptCode::Failed, failed_after(40)));
    let late = env
        .queue
        .complete_recorded(&ds[1], "w1", "r", NOW + 50)
        .await
        .unwrap();
    assert_eq!((late.code, late.ended), (ScriptCode::Ok, None));

    // continue: A's failure skips B, C still runs; C's completion ends the workflow, failed.
    let (env, _, mut c) = with_workflow(&request(
        "continue",
        &[t("A", &[]), t("B", &[0]), t("C", &[])],
    ))
    .await;
    let ds = env.read_all(&mut c, CAP).await;
    begin_ok(&env, &ds[0], "w1").await;
    begin_ok(&env, &ds[1], "w1").await;
    let r = env.queue.fail_recorded(&ds[0], "w1", &at(5)).await.unwrap();
    assert_eq!((r.code, r.ended), (ScriptCode::Failed, None));
    let r = env
        .queue
        .complete_recorded(&ds[1], "w1", "r", NOW + 70)
        .await
        .unwrap();
    assert_eq!((r.code, r.ended), (ScriptCode::Ok, failed_after(70)));

    // A deferral past its wait limit fails the task and ends the workflow.
    let (env, _, mut c) = with_workflow(&request("fail_fast", &[t("A", &[])])).await;
    let limit = gleitzeit_queue::WaitLimit {
        limit_ms: 1_000,
        give_up_error_json: r#"{"kind":"retryable","message":"gave up"}"#.into(),
    };
    let d = begin_next(&env, &mut c).await;
    let first = FailRequest {
        retry_at_ms: Some(NOW + 500),
        ..failure(None, None)
    };
    let r = env
        .queue
        .defer_within_recorded(&d, "w1", &first, Some(&limit))
        .await
        .unwrap();
    assert_eq!((r.code, r.ended), (ScriptCode::RetryScheduled, None));
    assert_eq!(env.queue.promote(NOW + 500, 10).await.unwrap().moved, 1);
    let d = begin_next(&env, &mut c).await;
    let second = FailRequest {
        retry_at_ms: Some(NOW + 1_500),
        now_ms: NOW + 1_000,
        ..failure(None, None)
    };
    let r = env
        .queue
        .defer_within_recorded(&d, "w1", &second, Some(&limit))
        .await
        .unwrap();
    assert_eq!((r.code, r.ended), (ScriptCode::Failed, failed_after(1_000)));
}
