//! `gleitzeit-submit`: the producer and operator side of Gleitzeit — validate a workflow file,
//! submit it to Redis in one atomic script, follow it, read its results, cancel it, list
//! workflows — and operate the deployment: queues, dead letters (inspect, requeue, purge),
//! live `watch`, the worker fleet and the LLM endpoints (`docs/cli.md`) — and print the
//! least-privilege Redis ACL users of every role (`acl`, `docs/acl.md`).
//!
//! The binary only parses arguments and sets up logging; [`run`] does the work, so the same
//! code is used by scripts, by the Python package (which runs
//! `gleitzeit-submit submit - --json` with the workflow JSON on stdin) and by tests.
//!
//! # Exit codes
//!
//! See [`ExitCode`]: 0 ok, 1 unexpected error, 2 invalid workflow/input/usage (nothing written),
//! 3 cannot reach Redis, 4 workflow failed or cancelled, 5 workflow or dead letter not found,
//! 6 idempotency conflict, 7 `--wait` / `watch` timed out, 8 refused by the current state
//! (`dead requeue`; nothing changed for the refused items), 9 Redis refused the credentials
//! (wrong password or unknown user), 10 the Redis user lacks a permission (ACL; the message
//! names the command and the role).
//!
//! # JSON output (`--json`): a stable contract
//!
//! With `--json` every command prints exactly one JSON document on stdout, on one line
//! (except `watch`, which prints JSON lines).
//! Progress and human diagnostics still go to stderr (under `--json` too); they are for people
//! and not part of the contract. Fields are
//! only ever added, never renamed or removed. Times are Unix milliseconds.
//!
//! * `validate` →
//!   `{"valid": true, "name": str, "tasks": int, "roots": [task name], "capabilities": [str]}`
//! * `submit` →
//!   `{"id": str, "status": str, "existing": bool, "notices"?: [{"capability", "message"}],
//!   "warnings"?: [{"path", "message"}]}` — `status` is the workflow's status (`running` for a
//!   new workflow); `existing` is true when the idempotency key returned an earlier workflow
//!   with the same body; `notices` (when any) say which tasks will wait because no live
//!   worker or service instance serves them, `warnings` (when any) what validates but is
//!   probably a mistake (a single-brace placeholder).
//! * `submit --wait` →
//!   `{"id": str, "status": str, "existing": bool, "timed_out": bool, "results": RESULTS,
//!   "warnings"?: [...]}` where
//!   `RESULTS` is the document of `results`; `status` is the status when waiting ended.
//! * `status ID` →
//!   `{"id", "name", "status", "policy", "total", "open", "completed", "failed", "skipped",
//!   "cancelled", "created_ms", "finished_ms", "tasks": [TASK]}` with
//!   `TASK = {"index", "name", "capability", "status", "attempts", "max_attempts", "error",
//!   "started_ms", "finished_ms", "reason"}`; `attempts` counts failed attempts; `error` is the
//!   failure record or `null`; `reason` says why a skipped or cancelled task never ran, else
//!   `null`.
//! * `results ID` → `{TASK NAME: {"status": str, "result": any|null, "error": FAILURE|null,
//!   "meta": META|null, "reason": str|null}}`, tasks in workflow order. `result` is the task's
//!   value (text for LLM tasks, an array for embeddings, any JSON for external tasks); `reason`
//!   as in `status`.
//! * `cancel ID` → `{"id": str, "outcome": "cancelled"|"already_finished", "status": str}`
//! * `list` → `[{"id", "name", "status", "policy", "total", "open", "completed", "failed",
//!   "skipped", "cancelled", "created_ms", "finished_ms"}]`, newest first.
//! * `queues` → `{"capabilities": [{"capability", "ready", "pending", "oldest_ready_age_ms",
//!   "consumers", "delayed", "dead", "streams": [{"priority", "key", "ready", "pending",
//!   "oldest_ready_age_ms", "consumers"}]}], "totals": {"ready", "pending",
//!   "oldest_ready_age_ms", "delayed", "dead"}}`; see [`opsreport::QueuesView`].
//! * `dead list` → `[DEAD]`, newest first, with `DEAD = {"id", "workflow_id", "task", "name",
//!   "capability", "kind", "reason": FAILURE, "attempts", "at_ms"}` (`kind` `exhausted` or
//!   `poison`; `task` is the task's index).
//! * `dead inspect ID` → `{"dead_letter": DEAD, "workflow": WORKFLOW|null, "task": TASK|null,
//!   "definition": any|null}` (`WORKFLOW` as in `list`; `null` once the workflow expired).
//! * `dead requeue ID|--all` → `{"requeued": [{"id", "workflow_id", "task", "reopened",
//!   "workflow_reopened"}], "refused": [{"id", "workflow_id", "task", "reason"}]}` with
//!   `reason` one of `cancelled`, `expired`, `not_failed`, `not_found`; exit 8 when
//!   `refused` is not empty.
//! * `dead purge ID|--all --yes` → `{"purged": int}`.
//! * `watch ID` → one line per event `{"event", "kind", "task", "status", "attempt", "at_ms",
//!   "error", "done", "total"}`, then `{"kind": "end", "id", "status", "timed_out", "done",
//!   "total"}`.
//! * `fleet` → `{"workers": [WORKER], "totals": {"workers", "concurrency", "in_flight",
//!   "completed", "failed"}, "queues": {"ready", "pending", "oldest_ready_age_ms", "delayed",
//!   "dead"}, "endpoints": [ENDPOINT]}`; see [`opsreport::FleetView`].
//! * `prune` → `{"applied": bool, "older_than_s": int, "consumers": [{"stream", "consumer",
//!   "idle_ms"}], "health": [{"endpoint", "worker", "updated_ms"}], "endpoints": [str],
//!   "capabilities": [str], "kept": [str]}`; see [`prune::PruneView`].
//! * `endpoints` → `[ENDPOINT]` with `ENDPOINT = {"name", "health", "in_flight", "models",
//!   "latency_ms", "checked_ms", "reporters", "failures", "views"}`; see
//!   [`opsreport::EndpointView`].
//! * `endpoints add|remove|published|strategy` → `{"published": [PUBLISHED], "strategy":
//!   str|null}` (what is published afterwards, by name) with `PUBLISHED = {"endpoint":
//!   {"name", "kind", "url", "api_key_env"?, "models", "timeout"}, "routing": {"priority",
//!   "gpu", "max_concurrent"?, "memory_gb"?, "tags"?, "max_loaded"?}}`, the shapes of a worker
//!   file's endpoint entry and its `routing.endpoints.<name>`; a refused endpoint is an
//!   `invalid` error (exit 2) whose `errors` name fields like `endpoint.url`.
//! * `acl` → `[{"role": str, "user": str, "line": str}]`, `line` being the `ACL SETUSER`
//!   line printed without `--json`.
//! * any failure → `{"error": {"kind": str, "message": str, "exit_code": int,
//!   "errors"?: [{"path": str, "kind": str, "message": str}], "existing_id"?: str}}` with
//!   `kind` one of `invalid` (with `errors`, every validation problem), `usage`, `unreachable`,
//!   `not_found`, `conflict` (with `existing_id`), `auth` (exit 9), `permission` (exit 10),
//!   `internal`.
//!
//! `FAILURE = {"kind": "retryable"|"permanent"|"timeout"|"poison"|"cancelled", "message": str,
//! "detail"?: any}` and `META = {"model"?, "endpoint"?, "prompt_tokens"?,
//! "completion_tokens"?, "duration_ms"?, "load_ms"?, "ttft_ms"?}` are what workers store.
//!
//! Workflow statuses: `running`, `completed`, `failed`, `cancelled`. Task statuses: `waiting`,
//! `ready`, `running`, `retrying`, `completed`, `failed`, `skipped`, `cancelled`.

pub mod acl;
pub mod cli;
mod commands;
mod coverage;
mod error;
mod exit;
mod follow;
pub mod input;
mod ops;
pub mod opsreport;
pub mod progress;
pub mod prune;
mod published;
pub mod report;
mod request;
mod session;
mod source;
mod views;

use std::io::Write;

pub use cli::Cli;
pub use error::CliError;
pub use exit::ExitCode;
pub use request::submit_request;
pub use source::load_workflow;

/// Runs one command line against the process's stdout and stderr.
pub fn run(cli: Cli) -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_with(cli, &mut stdout.lock(), &mut stderr.lock())
}

/// Runs one command line, writing results to `out` and diagnostics and progress to `err`.
pub fn run_with(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    commands::run_with(cli, out, err)
}
