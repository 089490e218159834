//! The seam between the worker's queue loops and whatever executes a task. The worker only
//! needs to know which capabilities an executor serves and to get a result or a classified
//! failure back; [`crate::LlmExecutor`] is the production executor, tests and benchmarks plug in
//! their own.

use std::time::Duration;

use futures::future::BoxFuture;
use gleitzeit_core::{FailureKind, Task, TaskFailure, TaskResult};
use serde_json::Value;

/// Where a task comes from, for executors that log or route by it.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// Workflow id.
    pub workflow_id: String,
    /// Task index in the workflow.
    pub task_index: u32,
    /// Capability (stream) the task was read from.
    pub capability: String,
    /// 1-based number of this attempt (failed attempts so far + 1).
    pub attempt: u32,
    /// The longest chain of tasks waiting on this one: placement sends tasks with long
    /// chains behind them (the critical path) to the fastest endpoints.
    pub chain_below: u32,
}

/// A failed execution, classified so the worker can decide between retry and terminal failure.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecFailure {
    /// `Retryable`, `Permanent` or `Timeout` (the others are set by the worker itself).
    pub kind: FailureKind,
    /// Human-readable reason; stored with the task, so it must not contain secrets.
    pub message: String,
    /// Optional structured detail (error class, HTTP status, endpoint).
    pub detail: Option<Value>,
    /// Lower bound for the retry delay (a provider's `Retry-After`).
    pub min_retry_delay: Option<Duration>,
    /// The attempt never reached the work (no endpoint could take the call, no service
    /// instance was live): the task is re-queued without using an attempt. See
    /// [`ExecFailure::deferred`].
    pub deferred: bool,
}

impl ExecFailure {
    /// A failure that another attempt may not repeat (overload, connection fault, rate limit).
    pub fn retryable(message: impl Into<String>) -> ExecFailure {
        ExecFailure {
            kind: FailureKind::Retryable,
            message: message.into(),
            detail: None,
            min_retry_delay: None,
            deferred: false,
        }
    }

    /// A failure every attempt would repeat (bad request, unknown model, authentication).
    pub fn permanent(message: impl Into<String>) -> ExecFailure {
        ExecFailure {
            kind: FailureKind::Permanent,
            message: message.into(),
            detail: None,
            min_retry_delay: None,
            deferred: false,
        }
    }

    /// The task ran longer than its timeout.
    pub fn timeout(limit: Duration) -> ExecFailure {
        ExecFailure {
            kind: FailureKind::Timeout,
            message: format!(
                "task exceeded its timeout of {}",
                humantime::format_duration(limit)
            ),
            detail: None,
            min_retry_delay: None,
            deferred: false,
        }
    }

    /// The attempt could not start for want of capacity (every endpoint busy or cooling
    /// down, no live service instance). It is re-queued after a delay **without using one of
    /// the task's attempts**, however often that happens: waiting for capacity is
    /// backpressure, not failure, so a flapping endpoint cannot exhaust a task's retries
    /// without the task ever being tried.
    pub fn deferred(message: impl Into<String>) -> ExecFailure {
        ExecFailure {
            deferred: true,
            ..ExecFailure::retryable(message)
        }
    }

    /// Adds structured detail.
    pub fn with_detail(mut self, detail: Value) -> ExecFailure {
        self.detail = Some(detail);
        self
    }

    /// Whether another attempt may succeed. A timeout counts as retryable: a slow or
    /// overloaded endpoint is the usual cause.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// What is stored as the task's error.
    pub fn to_task_failure(&self) -> TaskFailure {
        TaskFailure {
            kind: self.kind,
            message: self.message.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// Executes tasks of the capabilities it serves.
///
/// `execute` must be cancel-safe in the sense that dropping the future abandons the work: the
/// worker drops it when the task's timeout passes, when another worker has taken the entry over,
/// or at the drain deadline.
pub trait Executor: Send + Sync + 'static {
    /// Whether this executor can run tasks queued on `capability` (the worker reads only the
    /// streams of capabilities some executor serves).
    fn serves(&self, capability: &str) -> bool;

    /// Whether tasks of `capability` cannot start now because every endpoint that serves
    /// them is at its limit; the reader takes no new tasks of it meanwhile (backpressure).
    fn saturated(&self, _capability: &str) -> bool {
        false
    }

    /// Runs one task whose templates have already been rendered.
    fn execute<'a>(
        &'a self,
        task: &'a Task,
        ctx: &'a ExecContext,
    ) -> BoxFuture<'a, Result<TaskResult, ExecFailure>>;

    /// The worker has drained (no task runs any more): give back what the executor keeps
    /// for later tasks (the LLM executor's parked slot leases). Called once, at the end of
    /// the worker's drain.
    fn drained(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
