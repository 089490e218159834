//! The commands: each loads what it needs, talks to Redis through [`gleitzeit_queue::Queue`] and
//! prints through [`crate::report`]. Results go to `out` (stdout), diagnostics and live progress
//! to `err` (stderr), so `--json` output can be piped while a person watches the progress.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gleitzeit_core::{plan, Limits, Plan, Priority as CorePriority, Workflow};
use gleitzeit_queue::{
    CancelCode, Event, Priority, Queue, QueueConfig, QueueError, SubmitOutcome, SubmitRequest,
    TaskInfo, TaskRecord, WorkflowInfo,
};
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Cli, Command, IdArgs, ListArgs, SubmitArgs, ValidateArgs};
use crate::error::CliError;
use crate::exit::ExitCode;
use crate::ops;
use crate::progress::{Progress, ProgressEvent, Step};
use crate::report::{
    self, describe_error, is_terminal, CancelView, ResultView, ResultsView, StatusView, SubmitView,
    TaskView, ValidView, WaitView, WorkflowView,
};
use crate::source::load_workflow;

/// Longest single blocking read while waiting (`submit --wait`, `watch`). After a read that saw
/// nothing the workflow's record is checked once, so a workflow that expired or whose events
/// were trimmed away cannot leave the wait blocked forever.
const MAX_BLOCK: Duration = Duration::from_secs(10);

/// Runs one parsed command line, writing to the given streams; returns the exit code.
pub fn run_with(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let json = cli.json;
    match execute(cli, out, err) {
        Ok(code) => code,
        Err(e) => {
            if json {
                if let Ok(text) = serde_json::to_string(&e.to_doc()) {
                    let _ = writeln!(out, "{text}");
                }
            }
            for line in e.human_lines() {
                let _ = writeln!(err, "{line}");
            }
            e.exit_code()
        }
    }
}

fn execute(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<ExitCode, CliError> {
    let Cli {
        redis_url,
        namespace,
        json,
        command,
    } = cli;
    let ctx = Ctx {
        redis_url,
        namespace,
        json,
    };
    // `validate` stays free of sockets and of the async runtime.
    match command {
        Command::Validate(args) => validate(&args, json, out),
        Command::Submit(args) => runtime()?.block_on(submit(&ctx, &args, out, err)),
        Command::Status(args) => runtime()?.block_on(status(&ctx, &args, out)),
        Command::Results(args) => runtime()?.block_on(results(&ctx, &args, out)),
        Command::Cancel(args) => runtime()?.block_on(cancel(&ctx, &args, out)),
        Command::List(args) => runtime()?.block_on(list(&ctx, &args, out)),
        Command::Queues => runtime()?.block_on(ops::queues(&ctx, out)),
        Command::Dead(args) => runtime()?.block_on(ops::dead(&ctx, args.command, out, err)),
        Command::Watch(args) => runtime()?.block_on(ops::watch(&ctx, &args, out, err)),
        Command::Fleet => runtime()?.block_on(ops::fleet(&ctx, out)),
        Command::Endpoints => runtime()?.block_on(ops::endpoints(&ctx, out)),
    }
}

/// One command at a time needs no worker threads.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Settings shared by the commands that talk to Redis.
pub(crate) struct Ctx {
    pub(crate) redis_url: String,
    pub(crate) namespace: String,
    pub(crate) json: bool,
}

impl Ctx {
    /// Connects and pings, so an unreachable Redis is reported before anything else.
    pub(crate) async fn connect(&self) -> Result<Queue, CliError> {
        let config = QueueConfig {
            namespace: self.namespace.clone(),
            ..QueueConfig::default()
        };
        Queue::connect(&self.redis_url, config)
            .await
            .map_err(|e| self.queue_err(e))
    }

    pub(crate) fn queue_err(&self, err: QueueError) -> CliError {
        CliError::from_queue(err, &self.redis_url)
    }
}

pub(crate) fn print_json<T: Serialize>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    let text =
        serde_json::to_string(value).map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// Prints a command's result: one JSON line under `--json`, else `render`'s text for people.
pub(crate) fn print_view<T: Serialize>(
    json: bool,
    out: &mut dyn Write,
    view: &T,
    render: impl FnOnce(&T) -> String,
) -> Result<(), CliError> {
    if json {
        print_json(out, view)
    } else {
        write!(out, "{}", render(view))?;
        Ok(())
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// validate

fn validate(args: &ValidateArgs, json: bool, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let wf = load_workflow(&args.source, &Limits::default())?;
    let plan = plan(&wf)?;
    let view = ValidView {
        valid: true,
        name: wf.name.clone(),
        tasks: wf.tasks.len(),
        roots: plan.roots().map(|t| t.name.clone()).collect(),
        capabilities: plan.capabilities(),
    };
    print_view(json, out, &view, report::render_valid)?;
    Ok(ExitCode::Ok)
}

// ---------------------------------------------------------------------------------------------
// submit

/// Builds the submit script's request from a validated workflow and its plan.
pub fn submit_request(
    wf: &Workflow,
    plan: &Plan,
    workflow_id: String,
    idempotency_key: Option<String>,
    now_ms: u64,
) -> SubmitRequest {
    SubmitRequest {
        workflow_id,
        name: wf.name.clone(),
        idempotency_key,
        digest: plan.digest.clone(),
        policy: wf.failure_policy.as_str().to_owned(),
        input_json: Value::Object(wf.input.clone()).to_string(),
        now_ms,
        tasks: plan
            .tasks
            .iter()
            .map(|t| TaskRecord {
                name: t.name.clone(),
                capability: t.capability.clone(),
                priority: match t.priority {
                    CorePriority::High => Priority::High,
                    CorePriority::Normal => Priority::Normal,
                    CorePriority::Low => Priority::Low,
                },
                spec_json: t.spec_json.clone(),
                dependencies: t.dependencies.clone(),
                children: t.children.clone(),
                refs: t.refs.clone(),
                max_attempts: t.max_attempts,
                on_failure: t.on_failure.map(|p| p.as_str().to_owned()),
            })
            .collect(),
    }
}

async fn submit(
    ctx: &Ctx,
    args: &SubmitArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    // Everything local first: an invalid workflow never opens a connection.
    let wf = load_workflow(&args.source, &Limits::default())?;
    let plan = plan(&wf)?;
    let queue = ctx.connect().await?;
    let request = submit_request(
        &wf,
        &plan,
        uuid::Uuid::now_v7().to_string(),
        args.idempotency_key.clone(),
        now_ms(),
    );
    let outcome = queue.submit(&request).await.map_err(|e| ctx.queue_err(e))?;
    let (id, existing) = match outcome {
        SubmitOutcome::Created { id } => (id, false),
        SubmitOutcome::Existing { id } => (id, true),
        SubmitOutcome::Conflict { existing_id } => {
            return Err(CliError::Conflict {
                key: args.idempotency_key.clone().unwrap_or_default(),
                existing_id,
            })
        }
    };
    tracing::debug!(workflow = %id, existing, tasks = request.tasks.len(), "submitted");
    if existing {
        writeln!(
            err,
            "idempotency key {:?} already submitted this workflow: {id}",
            args.idempotency_key.as_deref().unwrap_or_default()
        )?;
    }
    if !ctx.json {
        // The id comes first, alone on its line, also when waiting: a caller can pick it up
        // (and follow the workflow elsewhere) while the results are still to come.
        writeln!(out, "{id}")?;
        out.flush()?;
    }
    if args.wait {
        return wait(ctx, &queue, &id, existing, args.timeout, out, err).await;
    }
    if ctx.json {
        let status = if existing {
            queue
                .workflow(&id)
                .await
                .map_err(|e| ctx.queue_err(e))?
                .map(|w| w.status)
                .unwrap_or_else(|| "running".to_owned())
        } else {
            "running".to_owned()
        };
        print_json(
            out,
            &SubmitView {
                id,
                status,
                existing,
            },
        )?;
    }
    Ok(ExitCode::Ok)
}

/// Follows a workflow's events with blocking reads until it ends or `timeout` passes, showing
/// progress on `err`, then prints its results.
async fn wait(
    ctx: &Ctx,
    queue: &Queue,
    id: &str,
    existing: bool,
    timeout: Option<Duration>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let q = |e| ctx.queue_err(e);
    let (info, tasks) = fetch(ctx, queue, id).await?;
    writeln!(err, "waiting for workflow {id} ({} tasks)", info.total)?;
    let mut progress = task_progress(&tasks);
    let mut final_status = is_terminal(&info.status).then(|| info.status.clone());
    let mut timed_out = false;
    // Reading from the start replays what happened before we looked, so counts are complete.
    let mut after = "0-0".to_owned();
    while final_status.is_none() {
        let Some(block) = next_block(deadline) else {
            timed_out = true;
            break;
        };
        let events = queue.events(id, &after, block).await.map_err(q)?;
        if events.is_empty() {
            tracing::debug!(workflow = %id, "no event within {block:?}; checking the workflow");
            match queue.workflow(id).await.map_err(q)? {
                None => return Err(CliError::NotFound { id: id.to_owned() }),
                Some(w) if is_terminal(&w.status) => final_status = Some(w.status),
                Some(_) => {}
            }
            continue;
        }
        for event in events {
            after = event.id.clone();
            let mut event = progress_event(event);
            if Progress::needs_reason(&event) {
                fill_reason(queue, id, &mut event).await.map_err(q)?;
            }
            match progress.apply(&event) {
                Step::Quiet => {}
                Step::Line(line) => writeln!(err, "{line}")?,
                Step::Finished { status, line } => {
                    writeln!(err, "{line}")?;
                    final_status = Some(status);
                    break;
                }
            }
        }
    }
    let (info, tasks) = fetch(ctx, queue, id).await?;
    let results = results_view(&tasks);
    if timed_out {
        writeln!(
            err,
            "timed out after {}; workflow {id} is still {} (follow it with `status {id}`)",
            report::format_duration(timeout.unwrap_or_default()),
            info.status
        )?;
    }
    if ctx.json {
        print_json(
            out,
            &WaitView {
                id: id.to_owned(),
                status: info.status.clone(),
                existing,
                timed_out,
                results,
            },
        )?;
    } else {
        write!(out, "{}", report::render_results(&results))?;
    }
    Ok(if timed_out {
        ExitCode::Timeout
    } else {
        final_exit(&info.status)
    })
}

/// A progress tracker for a workflow's tasks, knowing each task's attempt budget so retries can
/// be told from final failures.
pub(crate) fn task_progress(tasks: &[TaskInfo]) -> Progress {
    Progress::new(
        tasks.len(),
        tasks
            .iter()
            .map(|t| (t.name.clone(), t.max_attempts))
            .collect::<HashMap<_, _>>(),
    )
}

/// How long the next blocking event read may wait: the time left before `deadline`, capped at
/// [`MAX_BLOCK`] so the workflow's state is re-checked now and then; `None` once the deadline
/// has passed.
pub(crate) fn next_block(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| left.min(MAX_BLOCK))
        }
        None => Some(MAX_BLOCK),
    }
}

pub(crate) fn final_exit(status: &str) -> ExitCode {
    match status {
        "failed" | "cancelled" => ExitCode::WorkflowFailed,
        _ => ExitCode::Ok,
    }
}

pub(crate) fn progress_event(event: Event) -> ProgressEvent {
    ProgressEvent {
        id: event.id,
        kind: event.kind,
        task: event.task,
        status: event.status,
        attempt: event.attempt,
        at_ms: event.at_ms,
        error: None,
    }
}

/// Looks up the stored error (and attempt count) of the task an event is about.
pub(crate) async fn fill_reason(
    queue: &Queue,
    id: &str,
    event: &mut ProgressEvent,
) -> Result<(), QueueError> {
    let Some(name) = event.task.as_deref() else {
        return Ok(());
    };
    let tasks = queue.tasks(id).await?;
    if let Some(task) = tasks.iter().find(|t| t.name == name) {
        event.error = task
            .error_json
            .as_deref()
            .map(|e| describe_error(&parse_json(e)));
        if event.attempt.is_none() {
            event.attempt = Some(task.attempts);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// status, results, cancel, list

async fn status(ctx: &Ctx, args: &IdArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let (info, tasks) = fetch(ctx, &queue, &args.id).await?;
    let view = StatusView {
        workflow: workflow_view(info),
        tasks: tasks.iter().map(task_view).collect(),
    };
    print_view(ctx.json, out, &view, |v| report::render_status(v, now_ms()))?;
    Ok(ExitCode::Ok)
}

async fn results(ctx: &Ctx, args: &IdArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let (info, tasks) = fetch(ctx, &queue, &args.id).await?;
    let view = results_view(&tasks);
    print_view(ctx.json, out, &view, report::render_results)?;
    Ok(final_exit(&info.status))
}

async fn cancel(ctx: &Ctx, args: &IdArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let code = queue
        .cancel(&args.id, now_ms())
        .await
        .map_err(|e| ctx.queue_err(e))?;
    let outcome = match code {
        CancelCode::Cancelled => "cancelled",
        CancelCode::AlreadyFinished => "already_finished",
        CancelCode::NotFound => {
            return Err(CliError::NotFound {
                id: args.id.clone(),
            })
        }
    };
    let status = queue
        .workflow(&args.id)
        .await
        .map_err(|e| ctx.queue_err(e))?
        .map(|w| w.status)
        .unwrap_or_else(|| "cancelled".to_owned());
    if ctx.json {
        print_json(
            out,
            &CancelView {
                id: args.id.clone(),
                outcome: outcome.to_owned(),
                status,
            },
        )?;
    } else if outcome == "cancelled" {
        writeln!(out, "cancelled workflow {}", args.id)?;
    } else {
        writeln!(
            out,
            "workflow {} had already finished ({status}); nothing to cancel",
            args.id
        )?;
    }
    Ok(ExitCode::Ok)
}

async fn list(ctx: &Ctx, args: &ListArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let workflows: Vec<WorkflowView> = queue
        .list(args.limit)
        .await
        .map_err(|e| ctx.queue_err(e))?
        .into_iter()
        .map(workflow_view)
        .collect();
    print_view(ctx.json, out, &workflows, |w| {
        report::render_list(w, now_ms())
    })?;
    Ok(ExitCode::Ok)
}

/// The workflow's record and its tasks, or `NotFound`.
async fn fetch(
    ctx: &Ctx,
    queue: &Queue,
    id: &str,
) -> Result<(WorkflowInfo, Vec<TaskInfo>), CliError> {
    let info = queue
        .workflow(id)
        .await
        .map_err(|e| ctx.queue_err(e))?
        .ok_or_else(|| CliError::NotFound { id: id.to_owned() })?;
    let tasks = queue.tasks(id).await.map_err(|e| ctx.queue_err(e))?;
    Ok((info, tasks))
}

// ---------------------------------------------------------------------------------------------
// queue records → views

pub(crate) fn workflow_view(w: WorkflowInfo) -> WorkflowView {
    WorkflowView {
        id: w.id,
        name: w.name,
        status: w.status,
        policy: w.policy,
        total: w.total.into(),
        open: w.open.into(),
        completed: w.completed.into(),
        failed: w.failed.into(),
        skipped: w.skipped.into(),
        cancelled: w.cancelled.into(),
        created_ms: w.created_ms,
        finished_ms: w.finished_ms,
    }
}

/// A stored error is shown while it explains the task's state; a task that completed after a
/// failed attempt no longer has an error worth showing.
fn visible_error(t: &TaskInfo) -> Option<Value> {
    if t.status == "completed" {
        return None;
    }
    t.error_json.as_deref().map(parse_json)
}

pub(crate) fn task_view(t: &TaskInfo) -> TaskView {
    TaskView {
        index: t.index,
        name: t.name.clone(),
        capability: t.capability.clone(),
        status: t.status.clone(),
        attempts: t.attempts,
        max_attempts: t.max_attempts,
        error: visible_error(t),
        started_ms: t.started_ms,
        finished_ms: t.finished_ms,
    }
}

/// Splits a stored `TaskResult` (`{value, meta}`) into result and meta; anything else is shown
/// whole as the result.
fn split_result(text: &str) -> (Value, Option<Value>) {
    match parse_json(text) {
        Value::Object(mut map) if map.contains_key("value") => {
            let value = map.remove("value").unwrap_or(Value::Null);
            let meta = map.remove("meta").filter(|m| !m.is_null());
            (value, meta)
        }
        other => (other, None),
    }
}

fn results_view(tasks: &[TaskInfo]) -> ResultsView {
    ResultsView(
        tasks
            .iter()
            .map(|t| {
                let (result, meta) = match t.result_json.as_deref().map(split_result) {
                    Some((value, meta)) => (Some(value), meta),
                    None => (None, None),
                };
                (
                    t.name.clone(),
                    ResultView {
                        status: t.status.clone(),
                        result,
                        error: visible_error(t),
                        meta,
                    },
                )
            })
            .collect(),
    )
}

/// Stored JSON, or the text itself as a string when it is not JSON (written by something else).
pub(crate) fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_results_split_into_value_and_meta() {
        let (v, m) = split_result(r#"{"value":"hi","meta":{"model":"smollm2"}}"#);
        assert_eq!(v, json!("hi"));
        assert_eq!(m, Some(json!({"model": "smollm2"})));
        let (v, m) = split_result(r#"{"value":[1,2]}"#);
        assert_eq!(v, json!([1, 2]));
        assert_eq!(m, None);
        let (v, m) = split_result("not json");
        assert_eq!(v, json!("not json"));
        assert_eq!(m, None);
    }

    #[test]
    fn final_status_maps_to_exit_codes() {
        assert_eq!(final_exit("completed"), ExitCode::Ok);
        assert_eq!(final_exit("running"), ExitCode::Ok);
        assert_eq!(final_exit("failed"), ExitCode::WorkflowFailed);
        assert_eq!(final_exit("cancelled"), ExitCode::WorkflowFailed);
    }

    #[test]
    fn submit_request_mirrors_the_plan() {
        let text = "name: demo\nfailure_policy: continue\ninput: {x: 1}\ntasks:\n  - name: A\n    type: text\n    model: smollm2\n    prompt: hi\n    priority: high\n  - name: B\n    type: text\n    model: smollm2\n    prompt: \"{{A.result}}\"\n    on_failure: fail_fast\n";
        let wf = gleitzeit_core::load_str(
            text,
            gleitzeit_core::Format::Yaml,
            None,
            &serde_json::Map::new(),
            &Limits::default(),
        )
        .unwrap();
        let plan = plan(&wf).unwrap();
        let req = submit_request(&wf, &plan, "id-1".into(), Some("k".into()), 42);
        assert_eq!(req.workflow_id, "id-1");
        assert_eq!(req.policy, "continue");
        assert_eq!(req.digest, plan.digest);
        assert_eq!(
            serde_json::from_str::<Value>(&req.input_json).unwrap(),
            json!({"x": 1})
        );
        assert_eq!(req.now_ms, 42);
        assert_eq!(req.tasks.len(), 2);
        assert_eq!(req.tasks[0].priority, Priority::High);
        assert_eq!(req.tasks[0].children, vec![1]);
        assert_eq!(req.tasks[1].dependencies, vec![0]);
        assert_eq!(req.tasks[1].refs, vec![0]);
        assert_eq!(req.tasks[1].on_failure.as_deref(), Some("fail_fast"));
        assert_eq!(req.tasks[1].capability, "llm:smollm2");
        req.validate().unwrap();
    }
}
