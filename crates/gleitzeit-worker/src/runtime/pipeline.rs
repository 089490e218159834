//! One delivery from begin to its recorded end: begin → decode → render → execute (with
//! timeout) → complete, retry, defer or fail.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gleitzeit_core::{FailureKind, RenderContext, Task, TaskFailure, TaskResult};
use gleitzeit_queue::{
    BeginOutcome, DeadLetterKind, Delivery, FailRequest, Recorded, ScriptCode, TaskContext,
    WaitLimit,
};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::connect::now_ms;
use super::inflight::{Outcome, Shared};
use crate::executor::{ExecContext, ExecFailure};
use crate::metrics::record::{self as metric, TaskEnd};

/// begin → decode → render → execute (with timeout) → complete or fail.
/// How much longer than a task's timeout the worker waits for its executor, which bounds
/// its own work by the timeout and says how it ended.
const EXECUTOR_GRACE: Duration = Duration::from_secs(1);

/// `begun` is what beginning the delivery decided when the read began it; otherwise (a
/// reclaimed delivery) it is begun here.
pub(super) async fn process(
    shared: &Arc<Shared>,
    delivery: &Delivery,
    begun: Option<BeginOutcome>,
) -> Outcome {
    let consumer = shared.consumer.as_str();
    let begun = match begun {
        Some(b) => b,
        None => {
            let Some(b) = shared
                .with_retry("begin", || shared.queue.begin(delivery, consumer, now_ms()))
                .await
            else {
                return Outcome::GaveUp;
            };
            b
        }
    };
    let ctx = match begun {
        BeginOutcome::Run(ctx) => ctx,
        BeginOutcome::NotRunnable { status } => {
            info!(status = %status, "task can no longer run; entry acknowledged");
            return Outcome::NotRunnable;
        }
        BeginOutcome::Stale => {
            info!("entry was reclaimed by another consumer before it began; not running it");
            return Outcome::Stale;
        }
    };
    tracing::Span::current().record("task_name", ctx.name.as_str());

    let task: Task = match serde_json::from_str(&ctx.spec_json) {
        Ok(t) => t,
        Err(e) => {
            let failure = TaskFailure {
                kind: FailureKind::Permanent,
                message: format!("task spec cannot be decoded: {e}"),
                detail: None,
            };
            error!(error = %e, "undecodable task spec: dead-lettering as poison");
            let outcome = finish_failure(
                shared,
                delivery,
                failure,
                None,
                Some(DeadLetterKind::Poison),
            )
            .await;
            if outcome == Outcome::Failed {
                metric::task_failed_unstarted(&delivery.capability, UNKNOWN_TYPE);
                metric::task_dead_lettered(&delivery.capability, UNKNOWN_TYPE);
            }
            return outcome;
        }
    };

    let task_type = task.action.kind().as_str();
    metric::task_started(&delivery.capability, task_type);
    shared.observe_wait(delivery, &task, &ctx);
    let run_started = Instant::now();
    let outcome = run_task(shared, delivery, &ctx, task).await;
    metric::task_ended(
        &delivery.capability,
        task_type,
        task_end(outcome),
        run_started.elapsed(),
    );
    outcome
}

/// The `type` label of a task whose spec could not be read.
pub(super) const UNKNOWN_TYPE: &str = "unknown";

/// How an outcome counts in the task metrics.
pub(super) fn task_end(outcome: Outcome) -> TaskEnd {
    match outcome {
        Outcome::Completed => TaskEnd::Completed,
        Outcome::Failed => TaskEnd::Failed,
        Outcome::Retried => TaskEnd::Retried,
        Outcome::Deferred => TaskEnd::Deferred,
        Outcome::Stale
        | Outcome::Lost
        | Outcome::Aborted
        | Outcome::NotRunnable
        | Outcome::GaveUp => TaskEnd::Other,
    }
}

/// render → execute (with timeout) → complete or fail, for a task that has begun.
pub(super) async fn run_task(
    shared: &Arc<Shared>,
    delivery: &Delivery,
    ctx: &TaskContext,
    task: Task,
) -> Outcome {
    let consumer = shared.consumer.as_str();
    let rendered = match render(&task, ctx) {
        Ok(t) => t,
        Err(message) => {
            warn!(error = %message, "templates cannot be rendered: failing the task");
            let failure = TaskFailure {
                kind: FailureKind::Permanent,
                message,
                detail: None,
            };
            return finish_failure(shared, delivery, failure, None, None).await;
        }
    };

    let exec_ctx = ExecContext {
        workflow_id: delivery.workflow_id.clone(),
        task_index: delivery.task,
        capability: delivery.capability.clone(),
        attempt: ctx.attempts + 1,
        chain_below: ctx.chain_below,
    };
    debug!(attempt = exec_ctx.attempt, "executing");
    let started = Instant::now();
    // The executors bound their own work by the task's timeout (the router's slot waits
    // and calls, the service calls) and report how it ended, e.g. a slot wait as a deferral;
    // this outer bound, a little later, only catches an executor that overran.
    let result = match tokio::time::timeout(
        rendered.timeout + EXECUTOR_GRACE,
        shared.executor.execute(&rendered, &exec_ctx),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ExecFailure::timeout(rendered.timeout)),
    };

    match result {
        Ok(result) => {
            let json = match serde_json::to_string(&result) {
                Ok(j) => j,
                Err(e) => {
                    let failure = TaskFailure {
                        kind: FailureKind::Permanent,
                        message: format!("result cannot be serialised: {e}"),
                        detail: None,
                    };
                    return finish_failure(shared, delivery, failure, None, None).await;
                }
            };
            let Some(recorded) = shared
                .with_retry("complete", || {
                    let d = shared.current(delivery);
                    let json = json.clone();
                    async move {
                        shared
                            .queue
                            .complete_recorded(&d, consumer, &json, now_ms())
                            .await
                    }
                })
                .await
            else {
                return Outcome::GaveUp;
            };
            let code = observe_recorded(recorded);
            if code == ScriptCode::Ok {
                info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "task completed"
                );
                Outcome::Completed
            } else {
                refused("completion", code)
            }
        }
        Err(failure) if failure.deferred => {
            // Nothing that could serve the task took it (endpoints down, overloaded, rate
            // limited, no slot, no service instance): re-queue it without using an attempt,
            // after the provider's hint or the task's backoff for this many waits in a row,
            // until its wait limit.
            let delay = task
                .retry
                .delay_for(ctx.deferrals.saturating_add(1), rand::random::<f64>())
                .max(failure.min_retry_delay.unwrap_or_default());
            info!(error = %failure.message, retry_in = ?delay, "task deferred: nothing could take it, attempt not counted");
            finish_deferral(shared, delivery, &task, &failure, delay).await
        }
        Err(failure) => {
            let failed_attempts = ctx.attempts + 1;
            let (retry_at, dead) = if failure.is_retryable() {
                if task.retry.should_retry(failed_attempts) {
                    let delay = task
                        .retry
                        .delay_for(failed_attempts, rand::random::<f64>())
                        .max(failure.min_retry_delay.unwrap_or_default());
                    (Some(delay), None)
                } else {
                    (None, Some(DeadLetterKind::Exhausted))
                }
            } else {
                (None, None)
            };
            warn!(
                attempt = failed_attempts,
                max_attempts = task.retry.max_attempts,
                kind = ?failure.kind,
                error = %failure.message,
                retry_in = ?retry_at,
                "task attempt failed"
            );
            let outcome =
                finish_failure(shared, delivery, failure.to_task_failure(), retry_at, dead).await;
            if outcome == Outcome::Failed && dead.is_some() {
                metric::task_dead_lettered(&delivery.capability, task.action.kind().as_str());
            }
            outcome
        }
    }
}

/// Records a deferral: the task waits `delay` in the retry set with its attempts unchanged.
pub(super) async fn finish_deferral(
    shared: &Arc<Shared>,
    delivery: &Delivery,
    task: &Task,
    exec: &ExecFailure,
    delay: Duration,
) -> Outcome {
    let wait_limit = task.retry.wait_limit;
    let failure = exec.to_task_failure();
    let error_json = failure_json(&failure);
    // What is recorded if the task has waited as long as it may: the same reason, said as
    // the end of the wait (every endpoint and its last error are in the message and detail).
    let gave_up = TaskFailure {
        kind: failure.kind,
        message: format!(
            "gave up after waiting {} (retry.wait_limit) for an endpoint or service that could take the task; last: {}",
            humantime::format_duration(wait_limit),
            failure.message
        ),
        detail: failure.detail.clone(),
    };
    let limit = WaitLimit {
        limit_ms: u64::try_from(wait_limit.as_millis()).unwrap_or(u64::MAX),
        give_up_error_json: failure_json(&gave_up),
    };
    let consumer = shared.consumer.as_str();
    let Some(recorded) = shared
        .with_retry("defer", || {
            let d = shared.current(delivery);
            let now = now_ms();
            let req = FailRequest {
                error_json: error_json.clone(),
                // Rounded up: a deferral waiting for a hold to end is never due before it.
                retry_at_ms: Some(now.saturating_add(
                    u64::try_from(delay.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX),
                )),
                dead_letter: None,
                now_ms: now,
            };
            let limit = &limit;
            async move {
                shared
                    .queue
                    .defer_within_recorded(&d, consumer, &req, Some(limit))
                    .await
            }
        })
        .await
    else {
        return Outcome::GaveUp;
    };
    match observe_recorded(recorded) {
        ScriptCode::RetryScheduled => Outcome::Deferred,
        ScriptCode::Failed => {
            warn!(wait_limit = %humantime::format_duration(wait_limit), error = %failure.message,
                "task failed: it waited as long as its wait limit allows");
            metric::task_dead_lettered(&delivery.capability, task.action.kind().as_str());
            Outcome::Failed
        }
        other => refused("deferral", other),
    }
}

/// Records what a completion or failure call reports: the workflow's duration when this call
/// ended it (the script says so: a workflow ends in exactly one call, so the fleet-wide
/// histogram counts it once, with no read) and, once per completion call, how many
/// completions it carried; returns the call's code. Without an installed recorder the
/// metrics are no-ops.
fn observe_recorded(recorded: Recorded) -> ScriptCode {
    if let Some(end) = recorded.ended {
        metric::workflow_ended(&end.status, Duration::from_millis(end.duration_ms));
    }
    if let Some(size) = recorded.call_size {
        metric::completion_call(size);
    }
    recorded.code
}

/// A failure as stored (a `TaskFailure` always serialises; the fallback keeps the message
/// if that ever changed).
fn failure_json(failure: &TaskFailure) -> String {
    serde_json::to_string(failure).unwrap_or_else(|_| {
        serde_json::json!({ "kind": failure.kind.as_str(), "message": failure.message }).to_string()
    })
}

/// Records a failure: a retry after `retry_in`, or terminal (with an optional dead letter).
pub(super) async fn finish_failure(
    shared: &Arc<Shared>,
    delivery: &Delivery,
    failure: TaskFailure,
    retry_in: Option<Duration>,
    dead_letter: Option<DeadLetterKind>,
) -> Outcome {
    // A `TaskFailure` always serialises; the fallback keeps the message if that ever changed.
    let error_json = serde_json::to_string(&failure).unwrap_or_else(|_| {
        serde_json::json!({ "kind": failure.kind.as_str(), "message": failure.message }).to_string()
    });
    let consumer = shared.consumer.as_str();
    let Some(recorded) = shared
        .with_retry("fail", || {
            let d = shared.current(delivery);
            let now = now_ms();
            let req = FailRequest {
                error_json: error_json.clone(),
                retry_at_ms: retry_in.map(|r| now + r.as_millis() as u64),
                dead_letter,
                now_ms: now,
            };
            async move { shared.queue.fail_recorded(&d, consumer, &req).await }
        })
        .await
    else {
        return Outcome::GaveUp;
    };
    match observe_recorded(recorded) {
        ScriptCode::RetryScheduled => Outcome::Retried,
        ScriptCode::Failed => {
            info!(kind = failure.kind.as_str(), "task failed");
            Outcome::Failed
        }
        other => refused("failure", other),
    }
}

/// What a code that recorded nothing new means for this delivery. `complete.lua` and
/// `fail.lua` return the same codes for it (lib.lua's one table), so one match serves
/// completions, failures and deferrals; `call` names which in the log.
fn refused(call: &str, code: ScriptCode) -> Outcome {
    match code {
        ScriptCode::Stale => {
            info!("{call} refused as stale: another consumer owns the entry");
            Outcome::Stale
        }
        ScriptCode::Duplicate => {
            warn!("{call} refused as a duplicate: the task had already ended");
            Outcome::Stale
        }
        ScriptCode::Cancelled => {
            info!("{call} of a task cancelled while it ran: kept for inspection, nothing released");
            Outcome::NotRunnable
        }
        ScriptCode::NotFound => {
            info!("the task no longer exists (workflow expired); entry acknowledged");
            Outcome::NotRunnable
        }
        ScriptCode::NotRunning => {
            warn!("{call} refused: the task was never begun");
            Outcome::Stale
        }
        // The queue lets through only the codes complete.lua and fail.lua return.
        other => {
            error!(code = ?other, "{call}: a return code these scripts never give");
            Outcome::Stale
        }
    }
}

/// Renders the task's templates with the workflow input and the referenced results.
pub(super) fn render(task: &Task, ctx: &TaskContext) -> Result<Task, String> {
    let input: Map<String, Value> = if ctx.input_json.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(&ctx.input_json) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => Map::new(),
            Ok(_) => return Err("workflow input is not a JSON object".to_owned()),
            Err(e) => return Err(format!("workflow input is not valid JSON: {e}")),
        }
    };
    let mut results = HashMap::new();
    for (name, json) in &ctx.refs {
        // Results are stored as `TaskResult` (value + meta); templates see the value.
        let value = match serde_json::from_str::<TaskResult>(json) {
            Ok(r) => r.value,
            Err(_) => serde_json::from_str::<Value>(json)
                .map_err(|e| format!("result of {name:?} is not valid JSON: {e}"))?,
        };
        results.insert(name.clone(), value);
    }
    let rctx = RenderContext {
        input: &input,
        results: &results,
    };
    task.render(&rctx)
        .map_err(|e| format!("template error: {e}"))
}
