//! Recording helpers for the worker's loops: one function per event, so the runtime and the
//! executors say what happened and this module alone knows the metric names and labels.

use std::time::Duration;

use super::catalogue::*;

/// How one task attempt ended, as counted by the task metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// Result recorded.
    Completed,
    /// Failed terminally.
    Failed,
    /// Scheduled for a retry.
    Retried,
    /// Re-queued without using an attempt (no capacity).
    Deferred,
    /// Anything else (stale, lost, cancelled meanwhile, abandoned): only the run time counts.
    Other,
}

/// A task began on this worker (`begin.lua` accepted it).
pub fn task_started(capability: &str, task_type: &str) {
    metrics::counter!(TASKS_STARTED, "capability" => capability.to_owned(), "type" => task_type.to_owned())
        .increment(1);
}

/// A task attempt that began here ended; `run` is begin → outcome recorded.
pub fn task_ended(capability: &str, task_type: &str, end: TaskEnd, run: Duration) {
    let labels = [
        ("capability", capability.to_owned()),
        ("type", task_type.to_owned()),
    ];
    let counter = match end {
        TaskEnd::Completed => Some(TASKS_COMPLETED),
        TaskEnd::Failed => Some(TASKS_FAILED),
        TaskEnd::Retried => Some(TASKS_RETRIED),
        TaskEnd::Deferred | TaskEnd::Other => None,
    };
    if let Some(name) = counter {
        metrics::counter!(name, &labels).increment(1);
    }
    metrics::histogram!(TASK_RUN_SECONDS, &labels).record(run.as_secs_f64());
}

/// A task failed terminally before it could begin running (poison entry): counted as failed
/// with no run time.
pub fn task_failed_unstarted(capability: &str, task_type: &str) {
    metrics::counter!(TASKS_FAILED, "capability" => capability.to_owned(), "type" => task_type.to_owned())
        .increment(1);
}

/// This worker wrote a dead letter for a task.
pub fn task_dead_lettered(capability: &str, task_type: &str) {
    metrics::counter!(TASKS_DEAD_LETTERED, "capability" => capability.to_owned(), "type" => task_type.to_owned())
        .increment(1);
}

/// Time a task waited in its stream (`ready_ms` → begin).
pub fn queue_wait(capability: &str, wait: Duration) {
    metrics::histogram!(TASK_QUEUE_WAIT_SECONDS, "capability" => capability.to_owned())
        .record(wait.as_secs_f64());
}

/// Time from a task's last dependency completing to the task beginning (see the catalogue).
pub fn dependency_release(capability: &str, latency: Duration) {
    metrics::histogram!(DEPENDENCY_RELEASE_SECONDS, "capability" => capability.to_owned())
        .record(latency.as_secs_f64());
}

/// One completion call to Redis, carrying `size` completions.
pub fn completion_call(size: usize) {
    metrics::histogram!(COMPLETION_CALL_SIZE).record(size as f64);
}

/// A workflow ended in this worker's completion or failure of one of its tasks.
pub fn workflow_ended(status: &str, duration: Duration) {
    metrics::histogram!(WORKFLOW_DURATION_SECONDS, "status" => status.to_owned())
        .record(duration.as_secs_f64());
}

/// Tasks executing on this worker: one more.
pub fn in_flight_inc() {
    metrics::gauge!(WORKER_IN_FLIGHT).increment(1.0);
}

/// Tasks executing on this worker: one fewer.
pub fn in_flight_dec() {
    metrics::gauge!(WORKER_IN_FLIGHT).decrement(1.0);
}

/// This worker's configured concurrency.
pub fn concurrency(n: usize) {
    metrics::gauge!(WORKER_CONCURRENCY).set(n as f64);
}

/// One external service call ended; `outcome` is `ok` or the error class.
pub fn service_call(service: &str, function: &str, outcome: &str, elapsed: Duration) {
    metrics::counter!(
        SERVICE_CALLS,
        "service" => service.to_owned(),
        "function" => function.to_owned(),
        "outcome" => outcome.to_owned()
    )
    .increment(1);
    metrics::histogram!(
        SERVICE_CALL_SECONDS,
        "service" => service.to_owned(),
        "function" => function.to_owned()
    )
    .record(elapsed.as_secs_f64());
}

/// External calls in flight from this worker to `service`: `delta` is +1 or -1.
pub fn service_in_flight(service: &str, delta: f64) {
    metrics::gauge!(SERVICE_IN_FLIGHT, "service" => service.to_owned()).increment(delta);
}

/// Counts external calls in flight while it lives.
pub struct ServiceCallGuard {
    service: String,
}

impl ServiceCallGuard {
    /// One more call in flight to `service` until the guard is dropped.
    pub fn new(service: &str) -> ServiceCallGuard {
        service_in_flight(service, 1.0);
        ServiceCallGuard {
            service: service.to_owned(),
        }
    }
}

impl Drop for ServiceCallGuard {
    fn drop(&mut self) {
        service_in_flight(&self.service, -1.0);
    }
}
