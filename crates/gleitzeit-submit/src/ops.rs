//! The operations commands: `queues`, `dead list|inspect|requeue|purge`, `watch`, `fleet` and
//! `endpoints`. Like the workflow commands they read through [`gleitzeit_queue::Queue`] and print
//! through [`crate::opsreport`]; results go to `out`, diagnostics to `err`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use gleitzeit_core::now_ms;
use gleitzeit_queue::{
    DeadLetter, EndpointState, Queue, QueueError, ScriptCode, StreamRef, WorkerRecord, WorkflowInfo,
};
use serde_json::Value;

use crate::cli::{DeadCommand, EntryArgs, ListArgs, PurgeArgs, SelectArgs, WatchArgs};
use crate::error::CliError;
use crate::exit::ExitCode;
use crate::follow::{fill_reason, final_exit, next_block, task_progress};
use crate::opsreport::{
    self, progress_bar, CapabilityView, DeadView, EndpointView, FleetTotals, FleetView,
    InspectView, PurgeView, QueueTotals, QueuesView, RefusedView, RequeueView, RequeuedView,
    StreamView, WatchEndView, WatchEventView, WorkerView,
};
use crate::progress::{Progress, ProgressEvent, Step};
use crate::report::is_terminal;
use crate::session::{print_json, print_view, Ctx};
use crate::views::{parse_json, task_view};

/// Dead letters read per page by `--all`.
const PAGE: usize = 500;
/// A worker's view of an endpoint older than this is ignored: the health hash is refreshed
/// every `routing.health_interval` (10 s by default) and readers treat three missed rounds
/// as a worker that is gone (docs/routing.md).
const ENDPOINT_VIEW_STALE_MS: u64 = 30_000;
/// Width of the `watch` progress bar.
pub(crate) const BAR: usize = 20;

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

// ---------------------------------------------------------------------------------------------
// queues

async fn queues_view(ctx: &Ctx, queue: &Queue) -> Result<QueuesView, CliError> {
    let q = |e| ctx.queue_err(e);
    let mut backlog = queue.backlog_by_capability().await.map_err(q)?;
    let mut caps = queue.capabilities().await.map_err(q)?;
    for cap in backlog.keys() {
        if !caps.contains(cap) {
            caps.push(cap.clone());
        }
    }
    caps.sort();
    let mut capabilities = Vec::with_capacity(caps.len());
    let mut totals = QueueTotals::default();
    for cap in caps {
        let mut streams = Vec::with_capacity(3);
        for r in queue.stream_refs(&cap) {
            let s = queue.stream_stats(&r).await.map_err(q)?;
            streams.push(StreamView {
                priority: r.priority.as_str().to_owned(),
                key: r.key,
                ready: s.ready,
                pending: s.pending,
                oldest_ready_age_ms: s.oldest_ready_age_ms,
                consumers: s.consumers,
            });
        }
        let b = backlog.remove(&cap).unwrap_or_default();
        let view = CapabilityView {
            capability: cap,
            ready: streams.iter().map(|s| s.ready).sum(),
            pending: streams.iter().map(|s| s.pending).sum(),
            oldest_ready_age_ms: streams
                .iter()
                .fold(None, |a, s| max_opt(a, s.oldest_ready_age_ms)),
            consumers: streams.iter().map(|s| s.consumers).max().unwrap_or(0),
            delayed: b.delayed,
            dead: b.dead,
            streams,
        };
        totals.ready += view.ready;
        totals.pending += view.pending;
        totals.oldest_ready_age_ms = max_opt(totals.oldest_ready_age_ms, view.oldest_ready_age_ms);
        capabilities.push(view);
    }
    // The set-wide counts include members whose task expired (no capability to file them
    // under), so they come from the sets themselves.
    let (dead, delayed) = queue.dead_and_delayed_counts().await.map_err(q)?;
    totals.dead = dead;
    totals.delayed = delayed;
    Ok(QueuesView {
        capabilities,
        totals,
    })
}

/// `queues`.
pub(crate) async fn queues(ctx: &Ctx, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let view = queues_view(ctx, &queue).await?;
    print_view(ctx.json, out, &view, opsreport::render_queues)?;
    Ok(ExitCode::Ok)
}

/// Totals only (for `fleet`): cheaper than [`queues_view`], no per-capability scan.
async fn queue_totals(ctx: &Ctx, queue: &Queue) -> Result<QueueTotals, CliError> {
    let q = |e| ctx.queue_err(e);
    let mut totals = QueueTotals::default();
    let refs: Vec<StreamRef> = queue
        .capabilities()
        .await
        .map_err(q)?
        .iter()
        .flat_map(|c| queue.stream_refs(c))
        .collect();
    for r in &refs {
        let s = queue.stream_stats(r).await.map_err(q)?;
        totals.ready += s.ready;
        totals.pending += s.pending;
        totals.oldest_ready_age_ms = max_opt(totals.oldest_ready_age_ms, s.oldest_ready_age_ms);
    }
    let (dead, delayed) = queue.dead_and_delayed_counts().await.map_err(q)?;
    totals.dead = dead;
    totals.delayed = delayed;
    Ok(totals)
}

// ---------------------------------------------------------------------------------------------
// dead letters

fn dead_view(d: DeadLetter) -> DeadView {
    DeadView {
        reason: parse_json(&d.reason),
        id: d.id,
        workflow_id: d.workflow_id,
        task: d.task,
        name: d.name,
        capability: d.capability,
        kind: d.kind,
        attempts: d.attempts,
        at_ms: d.at_ms,
    }
}

/// `dead …`.
pub(crate) async fn dead(
    ctx: &Ctx,
    command: DeadCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    match command {
        DeadCommand::List(args) => dead_list(ctx, &args, out).await,
        DeadCommand::Inspect(args) => dead_inspect(ctx, &args, out).await,
        DeadCommand::Requeue(args) => dead_requeue(ctx, &args, out, err).await,
        DeadCommand::Purge(args) => dead_purge(ctx, &args, out).await,
    }
}

async fn dead_list(ctx: &Ctx, args: &ListArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let letters: Vec<DeadView> = queue
        .dead_letters(args.limit)
        .await
        .map_err(|e| ctx.queue_err(e))?
        .into_iter()
        .map(dead_view)
        .collect();
    print_view(ctx.json, out, &letters, |l| {
        opsreport::render_dead_list(l, now_ms())
    })?;
    Ok(ExitCode::Ok)
}

async fn find_dead(ctx: &Ctx, queue: &Queue, id: &str) -> Result<DeadLetter, CliError> {
    queue
        .dead_letter(id)
        .await
        .map_err(|e| ctx.queue_err(e))?
        .ok_or_else(|| CliError::DeadLetterNotFound { id: id.to_owned() })
}

async fn dead_inspect(
    ctx: &Ctx,
    args: &EntryArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let q = |e| ctx.queue_err(e);
    let letter = find_dead(ctx, &queue, &args.entry_id).await?;
    // Dead letters name workflows submit wrote; a malformed id has nothing to look up.
    let wf: Option<WorkflowInfo> = match queue.workflow(&letter.workflow_id).await {
        Ok(wf) => wf,
        Err(QueueError::InvalidArgument(_)) => None,
        Err(e) => return Err(q(e)),
    };
    let (task, definition) = if wf.is_some() {
        let tasks = queue.tasks(&letter.workflow_id).await.map_err(q)?;
        let task = tasks.iter().find(|t| t.index == letter.task).map(task_view);
        let spec = queue
            .task_spec(&letter.workflow_id, letter.task)
            .await
            .map_err(q)?
            .map(|s| parse_json(&s));
        (task, spec)
    } else {
        (None, None)
    };
    let view = InspectView {
        dead_letter: dead_view(letter),
        workflow: wf,
        task,
        definition,
    };
    print_view(ctx.json, out, &view, |v| {
        opsreport::render_inspect(v, now_ms())
    })?;
    Ok(ExitCode::Ok)
}

/// The dead letters `--all [--capability C]` selects, oldest first.
async fn select_all(
    ctx: &Ctx,
    queue: &Queue,
    capability: Option<&str>,
) -> Result<Vec<DeadLetter>, CliError> {
    let mut selected = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = queue
            .dead_letters_after(after.as_deref(), PAGE)
            .await
            .map_err(|e| ctx.queue_err(e))?;
        let full = page.len() == PAGE;
        after = page.last().map(|d| d.id.clone());
        selected.extend(
            page.into_iter()
                .filter(|d| capability.is_none_or(|c| d.capability == c)),
        );
        if !full {
            return Ok(selected);
        }
    }
}

async fn dead_requeue(
    ctx: &Ctx,
    args: &SelectArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let ids: Vec<String> = match &args.entry_id {
        Some(id) => {
            // A missing dead letter is "not found" (exit 5), like a missing workflow.
            find_dead(ctx, &queue, id).await?;
            vec![id.clone()]
        }
        None => select_all(ctx, &queue, args.capability.as_deref())
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect(),
    };
    let mut view = RequeueView::default();
    for id in ids {
        let o = queue
            .requeue_dead(&id, now_ms())
            .await
            .map_err(|e| ctx.queue_err(e))?;
        let reason = match o.code {
            ScriptCode::Ok => {
                // The script always names the task it requeued.
                let workflow_id = o.workflow_id.unwrap_or_default();
                let task = o.task.unwrap_or_default();
                tracing::debug!(dead_letter = %id, workflow = %workflow_id, task, "requeued");
                view.requeued.push(RequeuedView {
                    id,
                    workflow_id,
                    task,
                    reopened: o.reopened,
                    workflow_reopened: o.workflow_reopened,
                });
                continue;
            }
            ScriptCode::NotFound => "not_found",
            ScriptCode::Expired => "expired",
            ScriptCode::Cancelled => "cancelled",
            ScriptCode::NotFailed => "not_failed",
            // Queue::requeue_dead returns no other code.
            other => return Err(CliError::unexpected_code("requeue.lua", other)),
        };
        view.refused.push(RefusedView {
            id,
            workflow_id: o.workflow_id,
            task: o.task,
            reason: reason.to_owned(),
        });
    }
    if ctx.json {
        print_json(out, &view)?;
        for r in &view.refused {
            writeln!(err, "refused {}: {}", r.id, opsreport::describe_refusal(r))?;
        }
    } else {
        write!(out, "{}", opsreport::render_requeue(&view))?;
    }
    Ok(if view.refused.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Refused
    })
}

async fn dead_purge(
    ctx: &Ctx,
    args: &PurgeArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    if args.select.all && !args.yes {
        return Err(CliError::Usage(
            "`dead purge --all` deletes dead letters for good: add --yes to confirm".to_owned(),
        ));
    }
    let queue = ctx.connect().await?;
    let q = |e| ctx.queue_err(e);
    let purged = match (&args.select.entry_id, &args.select.capability) {
        (Some(id), _) => {
            let n = queue
                .purge_dead(std::slice::from_ref(id))
                .await
                .map_err(q)?;
            if n == 0 {
                return Err(CliError::DeadLetterNotFound { id: id.clone() });
            }
            n
        }
        (None, None) => queue.purge_all_dead().await.map_err(q)?,
        (None, Some(cap)) => {
            let ids: Vec<String> = select_all(ctx, &queue, Some(cap))
                .await?
                .into_iter()
                .map(|d| d.id)
                .collect();
            let mut n = 0;
            for chunk in ids.chunks(PAGE) {
                n += queue.purge_dead(chunk).await.map_err(q)?;
            }
            n
        }
    };
    if ctx.json {
        print_json(out, &PurgeView { purged })?;
    } else {
        writeln!(
            out,
            "purged {purged} dead letter{}",
            if purged == 1 { "" } else { "s" }
        )?;
    }
    Ok(ExitCode::Ok)
}

// ---------------------------------------------------------------------------------------------
// watch

/// A progress tracker that already counts the tasks that are finished now (after a workflow
/// was reopened, the replayed history no longer tells the truth).
async fn progress_from_now(
    ctx: &Ctx,
    queue: &Queue,
    id: &str,
) -> Result<(Progress, u64), CliError> {
    let tasks = queue.tasks(id).await.map_err(|e| ctx.queue_err(e))?;
    let mut progress = task_progress(&tasks);
    for t in tasks.iter().filter(|t| is_terminal(&t.status)) {
        progress.apply(&ProgressEvent {
            id: "0-0".to_owned(),
            kind: "task".to_owned(),
            task: Some(t.name.clone()),
            status: t.status.clone(),
            attempt: None,
            at_ms: None,
            error: None,
            deferred: false,
        });
    }
    Ok((progress, tasks.len() as u64))
}

/// `watch ID`: replays the workflow's events, then follows them with blocking reads until it
/// ends (or `--timeout`). Human output: one line per step with a progress bar; `--json`: one
/// JSON line per event, then an `end` line.
pub(crate) async fn watch(
    ctx: &Ctx,
    args: &WatchArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let q = |e| ctx.queue_err(e);
    let id = args.id.as_str();
    let deadline = args.timeout.map(|t| Instant::now() + t);
    // Before reading the state: every transition after that read is an event.
    let mut interest = crate::follow::Interest::new(id);
    interest.keep(&queue).await;
    let info = queue
        .workflow(id)
        .await
        .map_err(q)?
        .ok_or_else(|| CliError::NotFound { id: id.to_owned() })?;
    if !ctx.json {
        writeln!(
            out,
            "watching workflow {id}  {} ({})",
            info.name,
            crate::report::count(info.total, "task")
        )?;
        out.flush()?;
    }
    // Tasks that had ended when we looked: their ends are in the stream only if it was
    // watched then, so they come from the state, in time order with the stream's events.
    let (mut progress, total, mut backlog) = {
        let tasks = queue.tasks(id).await.map_err(q)?;
        if !is_terminal(&info.status) {
            crate::coverage::say(
                ctx,
                &queue,
                &crate::coverage::open_capabilities(&tasks),
                err,
            )
            .await?;
        }
        (
            task_progress(&tasks),
            tasks.len() as u64,
            crate::follow::Ended::from_tasks(&tasks),
        )
    };
    let mut after = "0-0".to_owned();
    let mut ended: Option<String> = None;
    let mut timed_out = false;
    'follow: loop {
        let Some(block) = next_block(deadline) else {
            timed_out = true;
            break;
        };
        interest.keep(&queue).await;
        let events = queue.events(id, &after, block).await.map_err(q)?;
        let (events, last) = if events.is_empty() {
            match queue.workflow(id).await.map_err(q)? {
                None => return Err(CliError::NotFound { id: id.to_owned() }),
                // The stream holds no end (it expired, or was trimmed): the task ends known
                // from the state are the last lines.
                Some(w) if is_terminal(&w.status) => (backlog.before(None), Some(w.status)),
                Some(_) => continue,
            }
        } else {
            (backlog.with_stream(events, &mut after), None)
        };
        for mut event in events {
            if Progress::needs_reason(&event) {
                fill_reason(&queue, id, &mut event).await.map_err(q)?;
            }
            let reopened = event.kind == "workflow" && event.status == "running";
            if reopened {
                // A requeued dead letter reopened the workflow: count from its state now.
                progress = progress_from_now(ctx, &queue, id).await?.0;
            }
            let step = progress.apply(&event);
            let done = progress.done() as u64;
            if ctx.json {
                print_json(
                    out,
                    &WatchEventView {
                        event: event.clone(),
                        done,
                        total,
                    },
                )?;
            }
            let line = match &step {
                Step::Quiet if reopened => {
                    Some("workflow reopened (a dead letter was requeued)".to_owned())
                }
                Step::Quiet => None,
                Step::Line(line) => Some(line.clone()),
                Step::Finished { line, .. } => Some(line.clone()),
            };
            if let (false, Some(line)) = (ctx.json, line) {
                writeln!(out, "{} {line}", progress_bar(done, total, BAR))?;
            }
            out.flush()?;
            if let Step::Finished { status, .. } = step {
                // The history may hold an end the workflow was reopened after (a requeued
                // dead letter): this end is the last one when the record ended at its time.
                let now = queue.workflow(id).await.map_err(q)?;
                match now {
                    Some(w) if !is_terminal(&w.status) => continue,
                    Some(w) if w.finished_ms.is_some() && w.finished_ms != event.at_ms => continue,
                    _ => {
                        ended = Some(status);
                        break 'follow;
                    }
                }
            }
        }
        if let Some(status) = last {
            ended = Some(status);
            break;
        }
    }
    let info = queue.workflow(id).await.map_err(q)?;
    let status = info
        .as_ref()
        .map(|w| w.status.clone())
        .or(ended)
        .unwrap_or_default();
    let done = info
        .as_ref()
        .map(|w| u64::from(w.total.saturating_sub(w.open)))
        .unwrap_or(progress.done() as u64);
    if ctx.json {
        print_json(
            out,
            &WatchEndView {
                kind: "end".to_owned(),
                id: id.to_owned(),
                status: status.clone(),
                timed_out,
                done,
                total,
            },
        )?;
    } else if timed_out {
        writeln!(
            err,
            "stopped watching after {}; workflow {id} is still {status}",
            crate::report::format_duration(args.timeout.unwrap_or_default())
        )?;
    }
    Ok(if timed_out {
        ExitCode::Timeout
    } else {
        final_exit(&status)
    })
}

// ---------------------------------------------------------------------------------------------
// fleet, endpoints

fn worker_view(w: WorkerRecord) -> WorkerView {
    WorkerView {
        id: w.id,
        host: w.host,
        pid: w.pid,
        version: w.version,
        state: w.state,
        started_ms: w.started_ms,
        updated_ms: w.updated_ms,
        concurrency: w.concurrency,
        in_flight: w.in_flight,
        capabilities: w.capabilities,
        completed: w.completed,
        failed: w.failed,
        retried: w.retried,
        deferred: w.deferred,
    }
}

/// How bad a health state is; the worst view wins.
fn severity(state: &str) -> u8 {
    match state {
        "ok" => 0,
        "half_open" => 1,
        "rate_limited" => 2,
        "open" => 3,
        "misconfigured" => 4,
        // A state this version does not know is shown rather than hidden.
        _ => 5,
    }
}

/// Aggregates the fleet's views of one endpoint: the worst state of the fresh views, the
/// latest latency, summed breaker trips, live leases as load, loaded models.
pub(crate) fn endpoint_view(e: &EndpointState, now_ms: u64) -> EndpointView {
    let mut views = BTreeMap::new();
    let mut health: Option<String> = None;
    let mut latest: Option<(u64, Option<u64>)> = None;
    let mut failures = 0;
    for (worker, text) in &e.health {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let updated = v.get("updated_ms").and_then(Value::as_u64);
        if updated.is_none_or(|u| now_ms.saturating_sub(u) > ENDPOINT_VIEW_STALE_MS) {
            continue;
        }
        let state = v
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        if health
            .as_deref()
            .is_none_or(|h| severity(&state) > severity(h))
        {
            health = Some(state.clone());
        }
        failures += v.get("failures").and_then(Value::as_u64).unwrap_or(0);
        let latency = v
            .get("latency_ms")
            .and_then(Value::as_f64)
            .map(|ms| ms.round().max(0.0) as u64);
        if latency.is_some() && latest.is_none_or(|(t, _)| updated.unwrap_or(0) > t) {
            latest = Some((updated.unwrap_or(0), latency));
        }
        views.insert(worker.clone(), state);
    }
    let models: Vec<String> = e
        .models
        .get("loaded")
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    EndpointView {
        name: e.name.clone(),
        health: health.unwrap_or_else(|| "unknown".to_owned()),
        in_flight: e.live_leases,
        models,
        latency_ms: latest.and_then(|(_, l)| l),
        checked_ms: latest.map(|(t, _)| t),
        reporters: views.len() as u64,
        failures,
        views,
    }
}

async fn endpoint_views(ctx: &Ctx, queue: &Queue) -> Result<Vec<EndpointView>, CliError> {
    let now = now_ms();
    Ok(queue
        .endpoint_states(now)
        .await
        .map_err(|e| ctx.queue_err(e))?
        .iter()
        .map(|e| endpoint_view(e, now))
        .collect())
}

/// `fleet`.
pub(crate) async fn fleet(ctx: &Ctx, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let now = now_ms();
    let workers: Vec<WorkerView> = queue
        .workers(now)
        .await
        .map_err(|e| ctx.queue_err(e))?
        .into_iter()
        .map(worker_view)
        .collect();
    let totals = FleetTotals {
        workers: workers.len() as u64,
        concurrency: workers.iter().map(|w| u64::from(w.concurrency)).sum(),
        in_flight: workers.iter().map(|w| u64::from(w.in_flight)).sum(),
        completed: workers.iter().map(|w| w.completed).sum(),
        failed: workers.iter().map(|w| w.failed).sum(),
    };
    let view = FleetView {
        workers,
        totals,
        queues: queue_totals(ctx, &queue).await?,
        endpoints: endpoint_views(ctx, &queue).await?,
    };
    print_view(ctx.json, out, &view, |v| opsreport::render_fleet(v, now))?;
    Ok(ExitCode::Ok)
}

/// `endpoints`.
pub(crate) async fn endpoints(ctx: &Ctx, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let list = endpoint_views(ctx, &queue).await?;
    print_view(ctx.json, out, &list, |l| {
        opsreport::render_endpoints(l, now_ms())
    })?;
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn state(health: &[(&str, Value)]) -> EndpointState {
        EndpointState {
            name: "gpu1".into(),
            health: health
                .iter()
                .map(|(w, v)| ((*w).to_owned(), v.to_string()))
                .collect(),
            models: HashMap::from([("loaded".to_owned(), r#"["a","b"]"#.to_owned())]),
            live_leases: 3,
        }
    }

    #[test]
    fn endpoint_views_take_the_worst_fresh_state_and_the_latest_latency() {
        let now = 1_000_000;
        let e = state(&[
            (
                "w1",
                json!({"state": "ok", "latency_ms": 800.4, "failures": 0, "updated_ms": now - 1_000}),
            ),
            (
                "w2",
                json!({"state": "open", "latency_ms": 120.6, "failures": 2, "updated_ms": now - 500}),
            ),
            // Stale: its worker is gone; neither its state nor its latency count.
            (
                "w3",
                json!({"state": "misconfigured", "latency_ms": 5.0, "failures": 9, "updated_ms": now - 60_000}),
            ),
        ]);
        let v = endpoint_view(&e, now);
        assert_eq!(v.health, "open");
        assert_eq!(v.latency_ms, Some(121));
        assert_eq!(v.checked_ms, Some(now - 500));
        assert_eq!(v.failures, 2);
        assert_eq!(v.reporters, 2);
        assert_eq!(v.in_flight, 3);
        assert_eq!(v.models, vec!["a", "b"]);
        assert_eq!(v.views.get("w1").map(String::as_str), Some("ok"));

        let nobody = endpoint_view(&state(&[]), now);
        assert_eq!(nobody.health, "unknown");
        assert_eq!(nobody.latency_ms, None);
        // A view without a latency yet does not hide the state.
        let fresh = endpoint_view(
            &state(&[(
                "w1",
                json!({"state": "half_open", "latency_ms": null, "updated_ms": now}),
            )]),
            now,
        );
        assert_eq!(
            (fresh.health.as_str(), fresh.latency_ms),
            ("half_open", None)
        );
    }

    #[test]
    fn opt_helpers() {
        assert_eq!(max_opt(None, Some(2)), Some(2));
        assert_eq!(max_opt(None, None), None);
    }
}
