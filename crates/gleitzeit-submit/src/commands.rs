//! The workflow commands (`validate`, `submit`, `status`, `results`, `cancel`, `list`) and the
//! dispatch of every command: each loads what it needs, talks to Redis through
//! [`gleitzeit_queue::Queue`] and prints through [`crate::report`]. Results go to `out`
//! (stdout), diagnostics and live progress to `err` (stderr), so `--json` output can be piped
//! while a person watches the progress.

use std::io::Write;
use std::time::{Duration, Instant};

use gleitzeit_core::{now_ms, plan, Limits};
use gleitzeit_queue::{Queue, Role, ScriptCode, SubmitOutcome, TaskInfo, TlsFiles, WorkflowInfo};

use crate::cli::{
    Cli, Command, DeadCommand, EndpointsCommand, IdArgs, ListArgs, SubmitArgs, ValidateArgs,
};
use crate::error::CliError;
use crate::exit::ExitCode;
use crate::follow::{fill_reason, final_exit, next_block, task_progress};
use crate::ops;
use crate::progress::{Progress, Step};
use crate::report::{self, is_terminal, CancelView, StatusView, SubmitView, ValidView, WaitView};
use crate::request::submit_request;
use crate::session::{print_json, print_view, runtime, Ctx};
use crate::source::load_workflow;
use crate::views::{results_view, task_view};

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
        redis_tls_ca,
        redis_tls_cert,
        redis_tls_key,
        namespace,
        shards,
        replica_acks,
        json,
        command,
    } = cli;
    let (role, check_role) = role_of(&command);
    let ctx = Ctx {
        redis_url,
        tls: TlsFiles {
            ca: redis_tls_ca,
            cert: redis_tls_cert,
            key: redis_tls_key,
        },
        namespace,
        shards,
        replica_acks,
        json,
        role,
        check_role,
    };
    // `validate` and `acl` stay free of sockets and of the async runtime.
    match command {
        Command::Validate(args) => validate(&args, json, out),
        Command::Acl(args) => crate::acl::print(&ctx.namespace, json, &args, out, err),
        Command::Submit(args) => runtime()?.block_on(submit(&ctx, &args, out, err)),
        Command::Status(args) => runtime()?.block_on(status(&ctx, &args, out)),
        Command::Results(args) => runtime()?.block_on(results(&ctx, &args, out)),
        Command::Cancel(args) => runtime()?.block_on(cancel(&ctx, &args, out)),
        Command::List(args) => runtime()?.block_on(list(&ctx, &args, out)),
        Command::Queues => runtime()?.block_on(ops::queues(&ctx, out)),
        Command::Dead(args) => runtime()?.block_on(ops::dead(&ctx, args.command, out, err)),
        Command::Watch(args) => runtime()?.block_on(ops::watch(&ctx, &args, out, err)),
        Command::Fleet => runtime()?.block_on(ops::fleet(&ctx, out)),
        Command::Prune(args) => runtime()?.block_on(crate::prune::prune(&ctx, &args, out)),
        Command::Endpoints(args) => match args.command {
            None => runtime()?.block_on(ops::endpoints(&ctx, out)),
            Some(cmd) => crate::published::run(&ctx, cmd, out, err),
        },
    }
}

/// The role a command runs as, and whether its permissions are checked before it starts
/// (the commands that run scripts: a script refused a command half way would stop with its
/// work half done).
fn role_of(command: &Command) -> (Role, bool) {
    match command {
        Command::Submit(_) | Command::Cancel(_) => (Role::Submitter, true),
        Command::Validate(_)
        | Command::Status(_)
        | Command::Results(_)
        | Command::List(_)
        | Command::Watch(_)
        | Command::Acl(_) => (Role::Submitter, false),
        Command::Queues | Command::Fleet => (Role::Monitor, false),
        // Removing runs prune.lua: checked first, like the other scripts.
        Command::Prune(args) => (Role::Operator, args.yes),
        Command::Endpoints(args) => match args.command {
            None | Some(EndpointsCommand::Published) => (Role::Monitor, false),
            // Checked first: a refused command inside MULTI would otherwise leave the reply
            // stream of the transaction for the client to untangle.
            Some(_) => (Role::Operator, true),
        },
        Command::Dead(args) => match args.command {
            DeadCommand::List(_) | DeadCommand::Inspect(_) => (Role::Monitor, false),
            DeadCommand::Requeue(_) => (Role::Operator, true),
            DeadCommand::Purge(_) => (Role::Operator, false),
        },
    }
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
        warnings: gleitzeit_core::lint(&wf),
    };
    print_view(json, out, &view, report::render_valid)?;
    Ok(ExitCode::Ok)
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
    // Warnings do not stop a submission; they are said before anything else happens (and
    // given in the JSON document, so a program can pass them on).
    let warnings = gleitzeit_core::lint(&wf);
    for w in &warnings {
        writeln!(err, "warning: {w}")?;
    }
    let queue = ctx.connect().await?;
    // In a sharded namespace an idempotency key and its workflow share a shard.
    let id = queue.workflow_id_for(args.idempotency_key.as_deref(), || {
        uuid::Uuid::now_v7().to_string()
    });
    let mut request = submit_request(&wf, &plan, id, args.idempotency_key.clone(), now_ms());
    // The workflow's own retention wins; the submitter's is the default for the rest.
    request.retention = request.retention.or(args.retention);
    // Followed from the start: every transition is an event (see `Queue::watch`).
    request.watch = args.events || args.wait;
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
        let submitted = Submitted {
            id,
            existing,
            warnings,
        };
        return wait(ctx, &queue, &submitted, args.timeout, out, err).await;
    }
    let notices = crate::coverage::say(ctx, &queue, &plan.capabilities(), err).await?;
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
                notices,
                warnings,
            },
        )?;
    }
    Ok(ExitCode::Ok)
}

/// Follows a workflow's events with blocking reads until it ends or `timeout` passes, showing
/// progress on `err`, then prints its results.
/// A workflow just submitted, as `--wait` reports it at the end.
struct Submitted {
    id: String,
    existing: bool,
    warnings: Vec<gleitzeit_core::Warning>,
}

async fn wait(
    ctx: &Ctx,
    queue: &Queue,
    submitted: &Submitted,
    timeout: Option<Duration>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let (id, existing) = (submitted.id.as_str(), submitted.existing);
    let deadline = timeout.map(|t| Instant::now() + t);
    let q = |e| ctx.queue_err(e);
    // Before reading the state: every transition after that read is an event (a workflow
    // resubmitted by idempotency key may have been submitted unwatched).
    let mut interest = crate::follow::Interest::new(id);
    interest.keep(queue).await;
    let (info, tasks) = fetch(ctx, queue, id).await?;
    writeln!(
        err,
        "waiting for workflow {id} ({})",
        report::count(info.total, "task")
    )?;
    if !is_terminal(&info.status) {
        crate::coverage::say(ctx, queue, &crate::coverage::open_capabilities(&tasks), err).await?;
    }
    let mut progress = task_progress(&tasks);
    // Tasks that had ended when we looked: their ends are in the stream only if it was
    // watched then, so they come from the state, in time order with the stream's events.
    let mut backlog = crate::follow::Ended::from_tasks(&tasks);
    // A workflow that had already ended when we looked (a fast one, or an idempotent
    // resubmission of a finished one) still shows its history: its events are replayed
    // without waiting, then the results follow.
    let ended = is_terminal(&info.status).then(|| info.status.clone());
    let mut final_status = None;
    let mut timed_out = false;
    // Reading from the start replays what happened before we looked, so counts are complete.
    let mut after = "0-0".to_owned();
    while final_status.is_none() {
        let block = if ended.is_some() {
            Duration::ZERO
        } else if let Some(block) = next_block(deadline) {
            block
        } else {
            timed_out = true;
            break;
        };
        interest.keep(queue).await;
        let events = queue.events(id, &after, block).await.map_err(q)?;
        let (events, last) = if events.is_empty() {
            let status = match &ended {
                Some(status) => Some(status.clone()),
                None => {
                    tracing::debug!(workflow = %id, "no event within {block:?}; checking the workflow");
                    match queue.workflow(id).await.map_err(q)? {
                        None => return Err(CliError::NotFound { id: id.to_owned() }),
                        Some(w) if is_terminal(&w.status) => Some(w.status),
                        Some(_) => None,
                    }
                }
            };
            let Some(status) = status else { continue };
            // The stream holds no end (it expired, or was trimmed): the task ends known from
            // the state are the last lines.
            (backlog.before(None), Some(status))
        } else {
            (backlog.with_stream(events, &mut after), None)
        };
        for mut event in events {
            if Progress::needs_reason(&event) {
                fill_reason(queue, id, &mut event).await.map_err(q)?;
            }
            let step = progress.apply(&event);
            // The same bar as `watch`: tasks ended of all.
            let bar = crate::opsreport::progress_bar(
                progress.done() as u64,
                progress.total() as u64,
                crate::ops::BAR,
            );
            match step {
                Step::Quiet => {}
                Step::Line(line) => writeln!(err, "{bar} {line}")?,
                Step::Finished { status, line } => {
                    writeln!(err, "{bar} {line}")?;
                    final_status = Some(status);
                    break;
                }
            }
        }
        if final_status.is_none() {
            final_status = last;
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
                warnings: submitted.warnings.clone(),
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
// ---------------------------------------------------------------------------------------------
// status, results, cancel, list

async fn status(ctx: &Ctx, args: &IdArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let (info, tasks) = fetch(ctx, &queue, &args.id).await?;
    let view = StatusView {
        workflow: info,
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
        ScriptCode::Ok => "cancelled",
        ScriptCode::AlreadyFinished => "already_finished",
        ScriptCode::NotFound => {
            return Err(CliError::NotFound {
                id: args.id.clone(),
            })
        }
        // Queue::cancel returns no other code.
        other => return Err(CliError::unexpected_code("cancel.lua", other)),
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
    let workflows = queue.list(args.limit).await.map_err(|e| ctx.queue_err(e))?;
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
