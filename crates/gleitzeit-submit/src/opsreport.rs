//! What the operations commands (`queues`, `dead …`, `watch`, `fleet`, `endpoints`) print:
//! their JSON documents (part of the stable contract, see the crate docs) and the human
//! renderings. Pure, like [`crate::report`]: views in, text out.

use std::fmt::Write as _;
use std::time::Duration;

use gleitzeit_queue::WorkflowInfo;
use serde::Serialize;
use serde_json::Value;

use crate::progress::ProgressEvent;
use crate::report::{describe_error, format_age, table, TaskView};

// ---------------------------------------------------------------------------------------------
// queues

/// One ready stream (a capability at one priority) in `queues --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamView {
    /// `high` | `normal` | `low`.
    pub priority: String,
    /// The Redis key.
    pub key: String,
    /// Entries not yet delivered to a worker.
    pub ready: u64,
    /// Entries delivered and not yet acknowledged (running, or held by a dead worker until
    /// reclaimed).
    pub pending: u64,
    /// Age of the oldest ready entry (ms, Redis clock); `null` when none is ready.
    pub oldest_ready_age_ms: Option<u64>,
    /// Consumers the stream's group knows (every worker that ever read it).
    pub consumers: u64,
}

/// One capability in `queues --json`: its three streams summed, plus retries and dead letters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapabilityView {
    pub capability: String,
    pub ready: u64,
    pub pending: u64,
    pub oldest_ready_age_ms: Option<u64>,
    /// The largest consumer count of its streams.
    pub consumers: u64,
    /// Tasks waiting for a retry (`{ns}:delayed`).
    pub delayed: u64,
    /// Dead letters.
    pub dead: u64,
    /// The streams, high, normal, low.
    pub streams: Vec<StreamView>,
}

/// Queue totals over every capability (`queues --json` `totals`, `fleet --json` `queues`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueTotals {
    pub ready: u64,
    pub pending: u64,
    pub oldest_ready_age_ms: Option<u64>,
    pub delayed: u64,
    pub dead: u64,
}

/// `queues --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueuesView {
    /// Sorted by capability.
    pub capabilities: Vec<CapabilityView>,
    pub totals: QueueTotals,
}

fn age(ms: Option<u64>) -> String {
    ms.map(|ms| format_age(Duration::from_millis(ms)))
        .unwrap_or_else(|| "-".to_owned())
}

/// `queues` for people: one row per stream (capability and priority) that holds entries, and
/// always the capability's normal stream; retries and dead letters are counted per capability
/// and shown on its first row.
pub fn render_queues(view: &QueuesView) -> String {
    if view.capabilities.is_empty() {
        return "no capability streams yet (nothing was submitted)\n".to_owned();
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for c in &view.capabilities {
        let mut first = true;
        for st in c
            .streams
            .iter()
            .filter(|st| st.priority == "normal" || st.ready + st.pending > 0)
        {
            rows.push(vec![
                c.capability.clone(),
                st.priority.clone(),
                st.ready.to_string(),
                st.pending.to_string(),
                age(st.oldest_ready_age_ms),
                st.consumers.to_string(),
                if first {
                    c.delayed.to_string()
                } else {
                    String::new()
                },
                if first {
                    c.dead.to_string()
                } else {
                    String::new()
                },
            ]);
            first = false;
        }
    }
    let t = &view.totals;
    rows.push(vec![
        "TOTAL".to_owned(),
        String::new(),
        t.ready.to_string(),
        t.pending.to_string(),
        age(t.oldest_ready_age_ms),
        String::new(),
        t.delayed.to_string(),
        t.dead.to_string(),
    ]);
    table(
        &[
            "CAPABILITY",
            "PRIORITY",
            "READY",
            "PENDING",
            "OLDEST READY",
            "CONSUMERS",
            "DELAYED",
            "DEAD",
        ],
        &rows,
    )
}

// ---------------------------------------------------------------------------------------------
// dead letters

/// One dead letter (`dead list --json`, `dead inspect --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadView {
    /// The dead-letter id: a stream entry id, `<shard>/<entry id>` in a sharded namespace.
    pub id: String,
    pub workflow_id: String,
    /// The task's index in its workflow.
    pub task: u32,
    /// The task's name.
    pub name: String,
    pub capability: String,
    /// `exhausted` (a retryable failure ran out of attempts) | `poison` (the entry kept
    /// failing its workers, or its spec could not be decoded).
    pub kind: String,
    /// The failure record the task ended with (`FAILURE`, or the stored text).
    pub reason: Value,
    /// Attempts made.
    pub attempts: u32,
    /// When the task was dead-lettered (Unix ms).
    pub at_ms: u64,
}

/// `dead inspect --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectView {
    pub dead_letter: DeadView,
    /// The workflow now; `null` when it expired.
    pub workflow: Option<WorkflowInfo>,
    /// The task now (status, attempts, last error); `null` when it expired.
    pub task: Option<TaskView>,
    /// The task's definition as submitted (its spec); `null` when it expired.
    pub definition: Option<Value>,
}

/// One requeued dead letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequeuedView {
    /// The dead-letter id (deleted now).
    pub id: String,
    pub workflow_id: String,
    pub task: u32,
    /// Tasks besides this one reopened because its failure had skipped or cancelled them.
    pub reopened: u32,
    /// True when the workflow had ended and runs again.
    pub workflow_reopened: bool,
}

/// One dead letter the state refused to requeue (it is kept).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusedView {
    pub id: String,
    pub workflow_id: Option<String>,
    pub task: Option<u32>,
    /// `cancelled` (the workflow was cancelled by a user) | `expired` (the workflow no longer
    /// exists) | `not_failed` (the task is no longer failed) | `not_found` (the dead letter
    /// disappeared meanwhile, `--all` only).
    pub reason: String,
}

/// `dead requeue --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequeueView {
    pub requeued: Vec<RequeuedView>,
    pub refused: Vec<RefusedView>,
}

/// `dead purge --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PurgeView {
    /// Dead letters deleted.
    pub purged: u64,
}

/// `dead list` for people.
pub fn render_dead_list(letters: &[DeadView], now_ms: u64) -> String {
    if letters.is_empty() {
        return "no dead letters\n".to_owned();
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                format_age(Duration::from_millis(now_ms.saturating_sub(d.at_ms))),
                d.workflow_id.clone(),
                d.name.clone(),
                d.capability.clone(),
                d.kind.clone(),
                d.attempts.to_string(),
                describe_error(&d.reason),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "AGE",
            "WORKFLOW",
            "TASK",
            "CAPABILITY",
            "KIND",
            "ATTEMPTS",
            "REASON",
        ],
        &rows,
    )
}

/// `dead inspect` for people.
pub fn render_inspect(view: &InspectView, now_ms: u64) -> String {
    let d = &view.dead_letter;
    let mut out = String::new();
    let _ = writeln!(out, "Dead letter {}", d.id);
    let _ = writeln!(
        out,
        "task        {} (#{}) of workflow {}",
        d.name, d.task, d.workflow_id
    );
    let _ = writeln!(out, "capability  {}", d.capability);
    let _ = writeln!(
        out,
        "kind        {} after {} attempt{}, {} ago",
        d.kind,
        d.attempts,
        if d.attempts == 1 { "" } else { "s" },
        format_age(Duration::from_millis(now_ms.saturating_sub(d.at_ms)))
    );
    let _ = writeln!(out, "reason      {}", describe_error(&d.reason));
    match &view.workflow {
        Some(w) => {
            let _ = writeln!(
                out,
                "workflow    {} ({}, policy {}): {}/{} done, {} failed, {} skipped, {} cancelled",
                w.name,
                w.status,
                w.policy,
                w.done(),
                w.total,
                w.failed,
                w.skipped,
                w.cancelled
            );
        }
        None => {
            let _ = writeln!(
                out,
                "workflow    expired (cannot be requeued; purge the dead letter)"
            );
        }
    }
    if let Some(t) = &view.task {
        let _ = writeln!(
            out,
            "task now    {}, {}/{} attempts failed",
            t.status, t.attempts, t.max_attempts
        );
        if let Some(e) = &t.error {
            let _ = writeln!(out, "last error  {}", describe_error(e));
        }
    }
    if let Some(def) = &view.definition {
        out.push_str("definition\n");
        let text = serde_json::to_string_pretty(def).unwrap_or_else(|_| def.to_string());
        for line in text.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// A refusal's reason for people.
pub fn describe_refusal(r: &RefusedView) -> String {
    let wf = r.workflow_id.as_deref().unwrap_or("?");
    match r.reason.as_str() {
        "cancelled" => format!("workflow {wf} was cancelled by a user"),
        "expired" => format!("workflow {wf} no longer exists (its retention ended)"),
        "not_failed" => format!(
            "task #{} of workflow {wf} is not failed any more",
            r.task.unwrap_or_default()
        ),
        "not_found" => "the dead letter no longer exists".to_owned(),
        other => other.to_owned(),
    }
}

/// `dead requeue` for people.
pub fn render_requeue(view: &RequeueView) -> String {
    let mut out = String::new();
    for r in &view.requeued {
        let mut extra = Vec::new();
        if r.reopened > 0 {
            extra.push(format!(
                "{} closed task{} reopened",
                r.reopened,
                if r.reopened == 1 { "" } else { "s" }
            ));
        }
        if r.workflow_reopened {
            extra.push("workflow running again".to_owned());
        }
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" ({})", extra.join("; "))
        };
        let _ = writeln!(
            out,
            "requeued {}: task #{} of workflow {}{extra}",
            r.id, r.task, r.workflow_id
        );
    }
    for r in &view.refused {
        let _ = writeln!(out, "refused {}: {}", r.id, describe_refusal(r));
    }
    if view.requeued.is_empty() && view.refused.is_empty() {
        out.push_str("no dead letters to requeue\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// watch

/// One line of `watch --json`: a progress event, with the count of finished tasks after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchEventView {
    /// The event's fields, first: `event` (its stream entry id), `kind` (`task` |
    /// `workflow`), `task`, `status`, `attempt`, `at_ms`, and `error` (the failure's reason,
    /// `kind: message`, of a failed or retrying task).
    #[serde(flatten)]
    pub event: ProgressEvent,
    /// Tasks finished so far.
    pub done: u64,
    pub total: u64,
}

/// The last line of `watch --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchEndView {
    /// Always `end`.
    pub kind: String,
    pub id: String,
    /// The workflow's status when watching ended.
    pub status: String,
    /// True when `--timeout` ran out first (the workflow keeps running).
    pub timed_out: bool,
    pub done: u64,
    pub total: u64,
}

/// `[########············]`: `done` of `total` as a bar of `width` cells.
pub fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        ((done.min(total) as u128 * width as u128) / total as u128) as usize
    };
    format!(
        "[{}{}]",
        "#".repeat(filled),
        "·".repeat(width.saturating_sub(filled))
    )
}

// ---------------------------------------------------------------------------------------------
// fleet

/// One worker in `fleet --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerView {
    /// The worker's consumer id.
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    /// `running` | `draining` (shutting down, finishing its tasks).
    pub state: String,
    pub started_ms: u64,
    /// Last registry write (at a change, at most every 0.5 s; at least every 5 s).
    pub updated_ms: u64,
    pub concurrency: u32,
    pub in_flight: u32,
    pub capabilities: Vec<String>,
    /// Counters since the worker started.
    pub completed: u64,
    pub failed: u64,
    pub retried: u64,
    pub deferred: u64,
}

/// Fleet totals in `fleet --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetTotals {
    pub workers: u64,
    pub concurrency: u64,
    pub in_flight: u64,
    pub completed: u64,
    pub failed: u64,
}

/// `fleet --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetView {
    /// Live workers, sorted by id (workers whose record expired are left out).
    pub workers: Vec<WorkerView>,
    pub totals: FleetTotals,
    pub queues: QueueTotals,
    /// Every LLM endpoint (as in `endpoints --json`).
    pub endpoints: Vec<EndpointView>,
}

/// `fleet` for people.
pub fn render_fleet(view: &FleetView, now_ms: u64) -> String {
    let mut out = String::new();
    if view.workers.is_empty() {
        out.push_str("no live workers\n");
    } else {
        let rows: Vec<Vec<String>> = view
            .workers
            .iter()
            .map(|w| {
                vec![
                    w.id.clone(),
                    w.state.clone(),
                    format!("{}/{}", w.in_flight, w.concurrency),
                    format_age(Duration::from_millis(now_ms.saturating_sub(w.started_ms))),
                    w.completed.to_string(),
                    w.failed.to_string(),
                    w.version.clone(),
                    w.capabilities.join(","),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "WORKER",
                "STATE",
                "IN FLIGHT",
                "AGE",
                "COMPLETED",
                "FAILED",
                "VERSION",
                "CAPABILITIES",
            ],
            &rows,
        ));
    }
    let t = &view.totals;
    let _ = writeln!(
        out,
        "\nworkers   {} live, {}/{} slots busy, {} completed, {} failed since their start",
        t.workers, t.in_flight, t.concurrency, t.completed, t.failed
    );
    let q = &view.queues;
    let _ = writeln!(
        out,
        "queues    {} ready (oldest {}), {} pending, {} waiting to retry, {} dead letters",
        q.ready,
        age(q.oldest_ready_age_ms),
        q.pending,
        q.delayed,
        q.dead
    );
    if view.endpoints.is_empty() {
        out.push_str("endpoints none published\n");
    } else {
        let summary: Vec<String> = view
            .endpoints
            .iter()
            .map(|e| format!("{} {} ({} in flight)", e.name, e.health, e.in_flight))
            .collect();
        let _ = writeln!(out, "endpoints {}", summary.join(", "));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// endpoints

/// One LLM endpoint in `endpoints --json` (and `fleet --json`), aggregated over the workers
/// that report on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointView {
    pub name: String,
    /// The worst state any reporting worker sees (`unknown` when none reports).
    pub health: String,
    /// In-flight calls across the fleet (live leases).
    pub in_flight: u64,
    /// Models loaded on the endpoint, as last seen.
    pub models: Vec<String>,
    /// The most recent latency any worker measured (ms).
    pub latency_ms: Option<u64>,
    /// When that was (Unix ms).
    pub checked_ms: Option<u64>,
    /// Workers reporting on this endpoint (views older than 30 s are left out).
    pub reporters: u64,
    /// Breaker trips, summed over the reporting workers.
    pub failures: u64,
    /// Each reporting worker's state, by worker id.
    pub views: std::collections::BTreeMap<String, String>,
}

/// `endpoints` for people.
pub fn render_endpoints(list: &[EndpointView], now_ms: u64) -> String {
    if list.is_empty() {
        return "no endpoint state published (no worker with LLM endpoints has run)\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.health.clone(),
                e.in_flight.to_string(),
                e.latency_ms
                    .map(|ms| format!("{ms}ms"))
                    .unwrap_or_else(|| "-".to_owned()),
                e.checked_ms
                    .map(|ms| {
                        format!(
                            "{} ago",
                            format_age(Duration::from_millis(now_ms.saturating_sub(ms)))
                        )
                    })
                    .unwrap_or_else(|| "-".to_owned()),
                e.reporters.to_string(),
                e.failures.to_string(),
                e.models.join(","),
            ]
        })
        .collect();
    table(
        &[
            "ENDPOINT",
            "HEALTH",
            "IN FLIGHT",
            "LATENCY",
            "CHECKED",
            "WORKERS",
            "TRIPS",
            "LOADED MODELS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream(priority: &str, ready: u64) -> StreamView {
        StreamView {
            priority: priority.into(),
            key: format!("k#{priority}"),
            ready,
            pending: 0,
            oldest_ready_age_ms: None,
            consumers: 1,
        }
    }

    #[test]
    fn queues_show_one_row_per_capability_and_totals() {
        let view = QueuesView {
            capabilities: vec![CapabilityView {
                capability: "llm:a".into(),
                ready: 5,
                pending: 1,
                oldest_ready_age_ms: Some(65_000),
                consumers: 2,
                delayed: 3,
                dead: 4,
                streams: vec![stream("high", 2), stream("normal", 3), stream("low", 0)],
            }],
            totals: QueueTotals {
                ready: 5,
                pending: 1,
                oldest_ready_age_ms: Some(65_000),
                delayed: 3,
                dead: 4,
            },
        };
        let text = render_queues(&view);
        let lines: Vec<&str> = text.lines().collect();
        // high (has entries), normal (always), no low (empty), totals
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("CAPABILITY  PRIORITY") && lines[0].ends_with("DEAD"));
        let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[1]),
            ["llm:a", "high", "2", "0", "-", "1", "3", "4"]
        );
        assert_eq!(cells(lines[2]), ["llm:a", "normal", "3", "0", "-", "1"]);
        assert_eq!(cells(lines[3]), ["TOTAL", "5", "1", "1m", "5s", "3", "4"]);
        let doc = serde_json::to_value(&view).unwrap();
        assert_eq!(doc["capabilities"][0]["streams"][0]["priority"], "high");
        assert_eq!(doc["totals"]["dead"], 4);
        assert!(render_queues(&QueuesView {
            capabilities: vec![],
            totals: QueueTotals::default()
        })
        .starts_with("no capability"));
    }

    #[test]
    fn requeue_outcomes_read_well() {
        let view = RequeueView {
            requeued: vec![RequeuedView {
                id: "1-0".into(),
                workflow_id: "w".into(),
                task: 2,
                reopened: 3,
                workflow_reopened: true,
            }],
            refused: vec![RefusedView {
                id: "2-0".into(),
                workflow_id: Some("v".into()),
                task: Some(0),
                reason: "cancelled".into(),
            }],
        };
        assert_eq!(
            render_requeue(&view),
            "requeued 1-0: task #2 of workflow w (3 closed tasks reopened; workflow running again)\nrefused 2-0: workflow v was cancelled by a user\n"
        );
        assert_eq!(
            render_requeue(&RequeueView::default()),
            "no dead letters to requeue\n"
        );
    }

    #[test]
    fn bars_fill_proportionally() {
        assert_eq!(progress_bar(0, 4, 4), "[····]");
        assert_eq!(progress_bar(1, 4, 4), "[#···]");
        assert_eq!(progress_bar(4, 4, 4), "[####]");
        assert_eq!(progress_bar(9, 4, 4), "[####]");
        assert_eq!(progress_bar(0, 0, 2), "[##]");
    }

    #[test]
    fn watch_event_lines_keep_their_documented_fields() {
        let line = WatchEventView {
            event: ProgressEvent {
                id: "5-0".into(),
                kind: "task".into(),
                task: Some("A".into()),
                status: "failed".into(),
                attempt: Some(2),
                at_ms: None,
                error: Some("permanent: boom".into()),
                deferred: false,
            },
            done: 1,
            total: 3,
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"event":"5-0","kind":"task","task":"A","status":"failed","attempt":2,"at_ms":null,"error":"permanent: boom","done":1,"total":3}"#
        );
    }

    #[test]
    fn dead_letters_render_their_reason() {
        let d = DeadView {
            id: "1-0".into(),
            workflow_id: "w".into(),
            task: 0,
            name: "A".into(),
            capability: "llm:a".into(),
            kind: "exhausted".into(),
            reason: json!({"kind": "retryable", "message": "boom"}),
            attempts: 3,
            at_ms: 1_000,
        };
        let text = render_dead_list(std::slice::from_ref(&d), 61_000);
        assert!(text.lines().nth(1).unwrap().contains("boom"));
        assert!(!text.contains("retryable"), "{text}");
        assert!(text.contains("1m"), "{text}");
        let inspect = render_inspect(
            &InspectView {
                dead_letter: d,
                workflow: None,
                task: None,
                definition: Some(json!({"type": "text"})),
            },
            61_000,
        );
        assert!(inspect.contains("workflow    expired"), "{inspect}");
        assert!(inspect.contains("  \"type\": \"text\""), "{inspect}");
    }
}
