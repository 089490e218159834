//! The metric catalogue: every metric the worker exports, with its kind, help text and labels.
//!
//! This is the single place metric names are spelled. Code records through the name
//! constants below; dashboards and their tests check against [`CATALOGUE`]; the exporter
//! describes every entry at start so `# HELP`/`# TYPE` lines exist even before a first sample.

/// How a metric behaves (maps to the Prometheus type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Where a metric's value comes from, which decides how dashboards aggregate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Counted by this worker process: sum across workers.
    Worker,
    /// Read from shared Redis state; every worker exports the same value: take `max`.
    Fleet,
}

/// One catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    pub scope: Scope,
}

// Task lifecycle (per worker).
pub const TASKS_STARTED: &str = "gleitzeit_tasks_started_total";
pub const TASKS_COMPLETED: &str = "gleitzeit_tasks_completed_total";
pub const TASKS_FAILED: &str = "gleitzeit_tasks_failed_total";
pub const TASKS_RETRIED: &str = "gleitzeit_tasks_retried_total";
pub const TASKS_DEAD_LETTERED: &str = "gleitzeit_tasks_dead_lettered_total";
pub const TASK_RUN_SECONDS: &str = "gleitzeit_task_run_seconds";
pub const TASK_QUEUE_WAIT_SECONDS: &str = "gleitzeit_task_queue_wait_seconds";
pub const DEPENDENCY_RELEASE_SECONDS: &str = "gleitzeit_dependency_release_seconds";

// Workflows.
pub const WORKFLOWS_SUBMITTED: &str = "gleitzeit_workflows_submitted_total";
pub const WORKFLOWS_COMPLETED: &str = "gleitzeit_workflows_completed_total";
pub const WORKFLOWS_FAILED: &str = "gleitzeit_workflows_failed_total";
pub const WORKFLOWS_CANCELLED: &str = "gleitzeit_workflows_cancelled_total";
pub const WORKFLOW_DURATION_SECONDS: &str = "gleitzeit_workflow_duration_seconds";

// Streams and queues (fleet).
pub const STREAM_READY: &str = "gleitzeit_stream_ready";
pub const STREAM_PENDING: &str = "gleitzeit_stream_pending";
pub const STREAM_OLDEST_READY_AGE_SECONDS: &str = "gleitzeit_stream_oldest_ready_age_seconds";
pub const STREAM_CONSUMERS: &str = "gleitzeit_stream_consumers";
pub const DELAYED_TASKS: &str = "gleitzeit_delayed_tasks";
pub const DEAD_LETTERS: &str = "gleitzeit_dead_letters";

// LLM endpoints.
pub const ENDPOINT_IN_FLIGHT: &str = "gleitzeit_endpoint_in_flight";
pub const ENDPOINT_REQUESTS: &str = "gleitzeit_endpoint_requests_total";
pub const ENDPOINT_REQUEST_SECONDS: &str = "gleitzeit_endpoint_request_seconds";
pub const ENDPOINT_TTFT_SECONDS: &str = "gleitzeit_endpoint_ttft_seconds";
pub const ENDPOINT_TOKENS: &str = "gleitzeit_endpoint_tokens_total";
pub const ENDPOINT_MODEL_LOADS: &str = "gleitzeit_endpoint_model_loads_total";
pub const ENDPOINT_UP: &str = "gleitzeit_endpoint_up";
pub const ENDPOINT_CIRCUIT_STATE: &str = "gleitzeit_endpoint_circuit_state";
pub const ENDPOINT_LOADED_MODELS: &str = "gleitzeit_endpoint_loaded_models";

// External task services.
pub const SERVICE_INSTANCES: &str = "gleitzeit_service_instances";
pub const SERVICE_IN_FLIGHT: &str = "gleitzeit_service_in_flight";
pub const SERVICE_CALLS: &str = "gleitzeit_service_calls_total";
pub const SERVICE_CALL_SECONDS: &str = "gleitzeit_service_call_seconds";

// The worker process.
pub const WORKER_IN_FLIGHT: &str = "gleitzeit_worker_in_flight";
pub const WORKER_CONCURRENCY: &str = "gleitzeit_worker_concurrency";
pub const WORKER_INFO: &str = "gleitzeit_worker_info";
pub const FLEET_REFRESH_ERRORS: &str = "gleitzeit_fleet_refresh_errors_total";
pub const COMPLETION_CALL_SIZE: &str = "gleitzeit_completion_call_size";

/// Histogram buckets (seconds) sized for LLM latencies: milliseconds up to ten minutes.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Buckets of [`COMPLETION_CALL_SIZE`] (completions per call): powers of two up to the most
/// one call carries (64, `gleitzeit_queue`'s group commit).
pub const CALL_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

const CAP_TYPE: &[&str] = &["capability", "type"];
const CAP: &[&str] = &["capability"];
const STREAM: &[&str] = &["capability", "priority"];
const EP: &[&str] = &["endpoint"];
const EP_MODEL: &[&str] = &["endpoint", "model"];

const fn def(
    name: &'static str,
    kind: MetricKind,
    scope: Scope,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        help,
        labels,
        scope,
    }
}

use MetricKind::{Counter, Gauge, Histogram};
use Scope::{Fleet, Worker};

/// Every metric the worker exports. `docs/metrics.md` is the prose version of this table.
pub const CATALOGUE: &[MetricDef] = &[
    def(TASKS_STARTED, Counter, Worker, CAP_TYPE,
        "Task attempts this worker began (begin.lua accepted the delivery)."),
    def(TASKS_COMPLETED, Counter, Worker, CAP_TYPE,
        "Task attempts this worker completed successfully (result recorded)."),
    def(TASKS_FAILED, Counter, Worker, CAP_TYPE,
        "Tasks this worker failed terminally (no retry left, or not retryable)."),
    def(TASKS_RETRIED, Counter, Worker, CAP_TYPE,
        "Failed attempts this worker scheduled for a retry (task went to the delayed set)."),
    def(TASKS_DEAD_LETTERED, Counter, Worker, CAP_TYPE,
        "Dead letters this worker wrote (exhausted retries or poison deliveries)."),
    def(TASK_RUN_SECONDS, Histogram, Worker, CAP_TYPE,
        "Time from begin to the outcome being recorded, per attempt."),
    def(TASK_QUEUE_WAIT_SECONDS, Histogram, Worker, CAP,
        "Time a task spent ready in its stream: task ready_ms to begin."),
    def(DEPENDENCY_RELEASE_SECONDS, Histogram, Worker, CAP,
        "For a task with dependencies, on its first attempt and delivery: time from its last dependency completing (complete.lua makes the task ready in that same step) to the task beginning on a worker (ready_ms to started_ms)."),
    def(COMPLETION_CALL_SIZE, Histogram, Worker, &[],
        "Completions each of this worker's completion calls carried to Redis: a busy worker's completions that arrive while its previous call is on its way go together in the next one (its _count is the calls, its _sum the completions)."),
    def(WORKFLOWS_SUBMITTED, Counter, Fleet, &[],
        "Workflows created, fleet-wide (from the Redis stats hash; export of an absolute value)."),
    def(WORKFLOWS_COMPLETED, Counter, Fleet, &[],
        "Workflows that ended completed, fleet-wide (from the Redis stats hash)."),
    def(WORKFLOWS_FAILED, Counter, Fleet, &[],
        "Workflows that ended failed, fleet-wide (from the Redis stats hash)."),
    def(WORKFLOWS_CANCELLED, Counter, Fleet, &[],
        "Workflows that were cancelled, fleet-wide (from the Redis stats hash)."),
    def(WORKFLOW_DURATION_SECONDS, Histogram, Worker, &["status"],
        "Workflow created_ms to finished_ms by final status (completed, failed), observed once per workflow by the worker whose completion or failure of a task ended it (the script that ended it returns it)."),
    def(STREAM_READY, Gauge, Fleet, STREAM,
        "Entries in the stream not yet delivered to any worker (the group's lag)."),
    def(STREAM_PENDING, Gauge, Fleet, STREAM,
        "Entries delivered to a worker and not yet acknowledged (running or awaiting reclaim)."),
    def(STREAM_OLDEST_READY_AGE_SECONDS, Gauge, Fleet, STREAM,
        "Age of the oldest undelivered entry in the stream (0 when none)."),
    def(STREAM_CONSUMERS, Gauge, Fleet, STREAM,
        "Consumers registered in the stream's group."),
    def(DELAYED_TASKS, Gauge, Fleet, &[],
        "Tasks waiting in the delayed set for a retry or deferral."),
    def(DEAD_LETTERS, Gauge, Fleet, &[],
        "Entries in the dead-letter stream."),
    def(ENDPOINT_IN_FLIGHT, Gauge, Fleet, EP,
        "Unexpired slot leases of the endpoint, fleet-wide."),
    def(ENDPOINT_REQUESTS, Counter, Worker, &["endpoint", "model", "outcome"],
        "Provider call attempts from this worker by outcome (ok or the error class)."),
    def(ENDPOINT_REQUEST_SECONDS, Histogram, Worker, EP_MODEL,
        "Duration of one provider call attempt."),
    def(ENDPOINT_TTFT_SECONDS, Histogram, Worker, EP_MODEL,
        "Time to the first token of a streamed provider response."),
    def(ENDPOINT_TOKENS, Counter, Worker, &["endpoint", "model", "direction"],
        "Tokens reported by the provider; direction in (prompt) or out (generated)."),
    def(ENDPOINT_MODEL_LOADS, Counter, Worker, EP_MODEL,
        "Responses that reported loading the model (a cold start)."),
    def(ENDPOINT_UP, Gauge, Worker, EP,
        "1 while this worker's router considers the endpoint healthy, else 0."),
    def(ENDPOINT_CIRCUIT_STATE, Gauge, Worker, EP,
        "This worker's circuit breaker for the endpoint: 0 closed, 1 half-open, 2 open."),
    def(ENDPOINT_LOADED_MODELS, Gauge, Fleet, EP_MODEL,
        "1 for each model the shared model state lists as loaded on the endpoint."),
    def(SERVICE_INSTANCES, Gauge, Fleet, &["service"],
        "Live (unexpired) instances of the Python task service."),
    def(SERVICE_IN_FLIGHT, Gauge, Worker, &["service"],
        "External calls this worker has in flight to the service (instances do not publish their load, so sum across workers)."),
    def(SERVICE_CALLS, Counter, Worker, &["service", "function", "outcome"],
        "External service calls from this worker by outcome (ok or the error class)."),
    def(SERVICE_CALL_SECONDS, Histogram, Worker, &["service", "function"],
        "Duration of one external service call."),
    def(WORKER_IN_FLIGHT, Gauge, Worker, &[],
        "Tasks this worker is executing now."),
    def(WORKER_CONCURRENCY, Gauge, Worker, &[],
        "This worker's configured concurrency (execution slots)."),
    def(WORKER_INFO, Gauge, Worker, &["version"],
        "Always 1; the label carries the worker's version."),
    def(FLEET_REFRESH_ERRORS, Counter, Worker, &[],
        "Failed refreshes of the fleet-wide gauges (Redis unreachable or a read failed)."),
];

/// Looks a metric up by name.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    CATALOGUE.iter().find(|d| d.name == name)
}
