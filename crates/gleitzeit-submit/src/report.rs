//! What the commands print: the JSON documents (a stable contract, see the crate docs) and their
//! human renderings. Pure: the views are built from queue records in [`crate::views`] and
//! turned into text here, so every format is unit-tested without Redis.

use std::fmt::Write as _;
use std::time::Duration;

use gleitzeit_queue::WorkflowInfo;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// One task in `status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// 0-based position in the workflow file.
    pub index: u32,
    pub name: String,
    /// The stream the task is queued on (`llm:<model>`, `ext:<service>`).
    pub capability: String,
    /// `waiting` | `ready` | `running` | `retrying` | `completed` | `failed` | `skipped` | `cancelled`.
    pub status: String,
    /// Attempts that failed so far.
    pub attempts: u32,
    pub max_attempts: u32,
    /// The worker's failure record (`{kind, message, detail}`), when the last attempt failed.
    pub error: Option<Value>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Why a skipped or cancelled task never ran; `null` otherwise.
    pub reason: Option<String>,
}

/// `status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    #[serde(flatten)]
    pub workflow: WorkflowInfo,
    pub tasks: Vec<TaskView>,
}

/// One task in `results --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultView {
    pub status: String,
    /// The task's result value (a string for text tasks, an array for embeddings, any JSON for
    /// external tasks); `null` until the task completed.
    pub result: Option<Value>,
    /// The failure record (`{kind, message, detail}`) of a failed task.
    pub error: Option<Value>,
    /// `{model, endpoint, prompt_tokens, completion_tokens, duration_ms, load_ms, ttft_ms}` as far
    /// as the executor knew them; `null` when there is none.
    pub meta: Option<Value>,
    /// Why a skipped or cancelled task never ran (`upstream task "A" failed (policy
    /// continue)`, a fail_fast cancel, a cancel request); `null` otherwise.
    pub reason: Option<String>,
}

/// `results --json`: task name → result, serialised as one JSON object in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultsView(pub Vec<(String, ResultView)>);

impl Serialize for ResultsView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, view) in &self.0 {
            map.serialize_entry(name, view)?;
        }
        map.end()
    }
}

/// `submit --json` (without `--wait`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubmitView {
    pub id: String,
    /// The workflow's status (`running` for a new one).
    pub status: String,
    /// True when the idempotency key returned an earlier workflow.
    pub existing: bool,
    /// Why some tasks will wait (no live worker serves a capability, no service instance).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<crate::coverage::Notice>,
    /// What validates but is probably a mistake (`gleitzeit_core::lint`), as `validate` lists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<gleitzeit_core::Warning>,
}

/// `submit --wait --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitView {
    pub id: String,
    /// The workflow's status when waiting ended.
    pub status: String,
    pub existing: bool,
    /// True when `--timeout` ran out first (the workflow keeps running).
    pub timed_out: bool,
    pub results: ResultsView,
    /// As in `submit --json`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<gleitzeit_core::Warning>,
}

/// `cancel --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CancelView {
    pub id: String,
    /// `cancelled`, or `already_finished` when the workflow had ended before.
    pub outcome: String,
    /// The workflow's status afterwards.
    pub status: String,
}

/// `validate --json` on success.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidView {
    pub valid: bool,
    pub name: String,
    pub tasks: usize,
    /// Tasks without dependencies, released at submission.
    pub roots: Vec<String>,
    /// Distinct capabilities, sorted.
    pub capabilities: Vec<String>,
    /// What validates but is probably a mistake (`gleitzeit_core::lint`).
    pub warnings: Vec<gleitzeit_core::Warning>,
}

/// One validation problem in an error document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProblemView {
    pub path: String,
    pub kind: String,
    pub message: String,
}

/// Every failure under `--json`: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorDoc {
    pub error: ErrorView,
}

/// The body of [`ErrorDoc`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorView {
    /// `invalid` | `usage` | `unreachable` | `internal` | `not_found` | `conflict`.
    pub kind: String,
    pub message: String,
    pub exit_code: u8,
    /// Validation problems (kind `invalid`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemView>,
    /// The workflow already holding the idempotency key (kind `conflict`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_id: Option<String>,
}

/// Statuses from which a task or workflow never moves again.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "skipped" | "cancelled")
}

/// Compact durations for people: `850ms`, `1.2s`, `2m 5s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// Ages for people: the coarsest two units (`45s`, `3m 12s`, `2h 5m`, `3days 4h`).
pub fn format_age(d: Duration) -> String {
    let secs = d.as_secs();
    let rounded = if secs >= 86_400 {
        secs - secs % 3600
    } else if secs >= 3600 {
        secs - secs % 60
    } else {
        secs
    };
    if rounded == 0 {
        return "0s".to_owned();
    }
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Renders rows as left-aligned columns separated by two spaces (no trailing blanks).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One line for an error record: `permanent: model not found`.
pub fn describe_error(error: &Value) -> String {
    match error {
        Value::Object(map) => {
            let message = map.get("message").and_then(Value::as_str);
            let kind = map.get("kind").and_then(Value::as_str);
            match (kind, message) {
                // "retryable" says nothing a reader needs: the line already says whether the
                // task will be retried, and on a final failure the label would mislead.
                (Some("retryable"), Some(message)) => message.to_owned(),
                (Some(kind), Some(message)) => format!("{kind}: {message}"),
                (None, Some(message)) => message.to_owned(),
                _ => error.to_string(),
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line for a result's meta: `smollm2 · 52 tokens (12 prompt + 40 completion) · 1.2s`.
pub fn describe_meta(meta: &Value) -> Option<String> {
    let map = meta.as_object()?;
    let mut parts = Vec::new();
    if let Some(model) = map.get("model").and_then(Value::as_str) {
        parts.push(format!("model {model}"));
    }
    if let Some(endpoint) = map.get("endpoint").and_then(Value::as_str) {
        parts.push(format!("via {endpoint}"));
    }
    let prompt = map.get("prompt_tokens").and_then(Value::as_u64);
    let completion = map.get("completion_tokens").and_then(Value::as_u64);
    match (prompt, completion) {
        (Some(p), Some(c)) => parts.push(format!("{} tokens ({p} prompt + {c} completion)", p + c)),
        (Some(p), None) => parts.push(format!("{p} prompt tokens")),
        (None, Some(c)) => parts.push(format!("{c} completion tokens")),
        (None, None) => {}
    }
    if let Some(ms) = map.get("duration_ms").and_then(Value::as_u64) {
        parts.push(format_duration(Duration::from_millis(ms)));
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(" · "))
    }
}

/// `status` for people.
pub fn render_status(view: &StatusView, now_ms: u64) -> String {
    let wf = &view.workflow;
    let mut out = String::new();
    let _ = writeln!(out, "Workflow {}  {}", wf.id, wf.name);
    let _ = writeln!(out, "status    {} (policy {})", wf.status, wf.policy);
    let _ = writeln!(
        out,
        "progress  {}/{} done: {} completed, {} failed, {} skipped, {} cancelled",
        wf.done(),
        wf.total,
        wf.completed,
        wf.failed,
        wf.skipped,
        wf.cancelled
    );
    let age = Duration::from_millis(now_ms.saturating_sub(wf.created_ms));
    let _ = writeln!(
        out,
        "created   {} ({} ago)",
        format_time(wf.created_ms),
        format_age(age)
    );
    if let Some(finished) = wf.finished_ms {
        let took = Duration::from_millis(finished.saturating_sub(wf.created_ms));
        let _ = writeln!(
            out,
            "finished  {} (took {})",
            format_time(finished),
            format_duration(took)
        );
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = view
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.index.to_string(),
                t.name.clone(),
                t.status.clone(),
                format!("{}/{}", attempts_made(t), t.max_attempts),
                task_time(t, now_ms),
                t.capability.clone(),
                // A closed task has no error of its own: say what closed it.
                t.error
                    .as_ref()
                    .map(describe_error)
                    .or_else(|| t.reason.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "#",
            "TASK",
            "STATUS",
            "ATTEMPTS",
            "TIME",
            "CAPABILITY",
            "ERROR / WHY",
        ],
        &rows,
    ));
    out
}

/// Attempts started: the failed ones plus the one running or completed now.
fn attempts_made(t: &TaskView) -> u32 {
    match t.status.as_str() {
        "running" | "completed" => t.attempts.saturating_add(1),
        _ => t.attempts,
    }
}

fn task_time(t: &TaskView, now_ms: u64) -> String {
    match (t.started_ms, t.finished_ms) {
        (Some(s), Some(f)) => format_duration(Duration::from_millis(f.saturating_sub(s))),
        (Some(s), None) if t.status == "running" => {
            format!(
                "{}…",
                format_duration(Duration::from_millis(now_ms.saturating_sub(s)))
            )
        }
        _ => String::new(),
    }
}

/// `results` for people: a heading per task, then its value (text as is, JSON pretty).
pub fn render_results(results: &ResultsView) -> String {
    let mut out = String::new();
    for (i, (name, view)) in results.0.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut heading = format!("=== {name} ({})", view.status);
        if let Some(meta) = view.meta.as_ref().and_then(describe_meta) {
            let _ = write!(heading, " — {meta}");
        }
        out.push_str(&heading);
        out.push('\n');
        if let Some(result) = &view.result {
            let text = match result {
                Value::String(s) => s.clone(),
                other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
            };
            out.push_str(&text);
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
        if let Some(reason) = &view.reason {
            let _ = writeln!(out, "why: {reason}");
        }
        if let Some(error) = &view.error {
            let _ = writeln!(out, "error: {}", describe_error(error));
            // A task service's exception keeps its traceback: shown as raised.
            if let Some(tb) = error
                .pointer("/detail/traceback")
                .and_then(Value::as_str)
                .filter(|t| !t.trim().is_empty())
            {
                for line in tb.trim_end().lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
    }
    out
}

/// `list` for people.
pub fn render_list(workflows: &[WorkflowInfo], now_ms: u64) -> String {
    if workflows.is_empty() {
        return "no workflows\n".to_owned();
    }
    let rows: Vec<Vec<String>> = workflows
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.name.clone(),
                w.status.clone(),
                format!("{}/{}", w.done(), w.total),
                format_age(Duration::from_millis(now_ms.saturating_sub(w.created_ms))),
            ]
        })
        .collect();
    table(&["ID", "NAME", "STATUS", "PROGRESS", "AGE"], &rows)
}

/// `validate` for people.
pub fn render_valid(view: &ValidView) -> String {
    let mut text = format!(
        "valid: {} — {} task{}; roots: {}; capabilities: {}\n",
        view.name,
        view.tasks,
        if view.tasks == 1 { "" } else { "s" },
        view.roots.join(", "),
        view.capabilities.join(", ")
    );
    for w in &view.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    text
}

/// `1 task`, `3 tasks`: a count with its noun in the right number.
pub(crate) fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(count(1u32, "task"), "1 task");
        assert_eq!(count(0u32, "task"), "0 tasks");
        assert_eq!(count(6u32, "task"), "6 tasks");
    }
    use serde_json::json;

    fn workflow(status: &str, open: u32) -> WorkflowInfo {
        WorkflowInfo {
            id: "0190-abc".into(),
            name: "Text analysis".into(),
            status: status.into(),
            policy: "fail_fast".into(),
            total: 3,
            open,
            completed: 3 - open,
            failed: 0,
            skipped: 0,
            cancelled: 0,
            created_ms: 1_700_000_000_000,
            finished_ms: None,
        }
    }

    fn task(index: u32, name: &str, status: &str, attempts: u32) -> TaskView {
        TaskView {
            index,
            name: name.into(),
            capability: "llm:smollm2".into(),
            status: status.into(),
            attempts,
            max_attempts: 3,
            error: None,
            started_ms: None,
            finished_ms: None,
            reason: None,
        }
    }

    #[test]
    fn durations_and_ages_are_compact() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m 5s");
        assert_eq!(format_age(Duration::from_millis(400)), "0s");
        assert_eq!(format_age(Duration::from_secs(192)), "3m 12s");
        assert_eq!(format_age(Duration::from_secs(7_530)), "2h 5m");
        assert_eq!(
            format_age(Duration::from_secs(3 * 86_400 + 4 * 3600 + 59)),
            "3days 4h"
        );
    }

    #[test]
    fn status_json_is_flat_with_tasks() {
        let view = StatusView {
            workflow: workflow("running", 2),
            tasks: vec![task(0, "A", "completed", 0)],
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["id"], "0190-abc");
        assert_eq!(json["status"], "running");
        assert_eq!(json["open"], 2);
        assert_eq!(json["finished_ms"], Value::Null);
        assert_eq!(json["tasks"][0]["name"], "A");
        assert_eq!(json["tasks"][0]["error"], Value::Null);
        let back: StatusView = serde_json::from_value(json).unwrap();
        assert_eq!(back, view);
    }

    #[test]
    fn status_text_shows_progress_attempts_and_errors() {
        let mut failed = task(2, "Title", "failed", 3);
        failed.error = Some(json!({"kind": "permanent", "message": "model not found"}));
        let mut running = task(1, "Summarize", "running", 1);
        running.started_ms = Some(1_700_000_001_000);
        let mut done = task(0, "Extract", "completed", 0);
        done.started_ms = Some(1_700_000_000_000);
        done.finished_ms = Some(1_700_000_001_200);
        let view = StatusView {
            workflow: workflow("running", 2),
            tasks: vec![done, running, failed],
        };
        let text = render_status(&view, 1_700_000_003_000);
        assert!(text.contains("Workflow 0190-abc  Text analysis"), "{text}");
        assert!(
            text.contains("status    running (policy fail_fast)"),
            "{text}"
        );
        assert!(text.contains("progress  1/3 done: 1 completed"), "{text}");
        assert!(text.contains("(3s ago)"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let extract = lines.iter().find(|l| l.contains("Extract")).unwrap();
        assert!(
            extract.contains("completed") && extract.contains("1/3") && extract.contains("1.2s")
        );
        let summarize = lines.iter().find(|l| l.contains("Summarize")).unwrap();
        assert!(
            summarize.contains("2/3") && summarize.contains("2.0s…"),
            "{summarize}"
        );
        let title = lines.iter().find(|l| l.contains("Title")).unwrap();
        assert!(
            title.contains("3/3") && title.ends_with("permanent: model not found"),
            "{title}"
        );
        // Columns line up: every row has STATUS at the same offset as the header.
        let col = lines
            .iter()
            .find(|l| l.starts_with("#"))
            .unwrap()
            .find("STATUS")
            .unwrap();
        assert_eq!(&extract[col..col + 9], "completed");
        assert_eq!(&title[col..col + 6], "failed");
    }

    #[test]
    fn results_json_keeps_file_order_and_null_fields() {
        let results = ResultsView(vec![
            (
                "Zeta".into(),
                ResultView {
                    status: "completed".into(),
                    result: Some(json!("text")),
                    error: None,
                    meta: Some(json!({"model": "smollm2"})),
                    reason: None,
                },
            ),
            (
                "Alpha".into(),
                ResultView {
                    status: "failed".into(),
                    result: None,
                    error: Some(json!({"kind": "timeout", "message": "took too long"})),
                    meta: None,
                    reason: None,
                },
            ),
        ]);
        let text = serde_json::to_string(&results).unwrap();
        assert!(
            text.find("Zeta").unwrap() < text.find("Alpha").unwrap(),
            "{text}"
        );
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["Zeta"]["result"], "text");
        assert_eq!(json["Zeta"]["error"], Value::Null);
        assert_eq!(json["Alpha"]["status"], "failed");
        assert_eq!(json["Alpha"]["result"], Value::Null);
        assert_eq!(json["Alpha"]["meta"], Value::Null);
    }

    #[test]
    fn results_text_prints_text_as_is_and_json_pretty() {
        let results = ResultsView(vec![
            (
                "Summarize".into(),
                ResultView {
                    status: "completed".into(),
                    result: Some(json!("line one\nline two")),
                    error: None,
                    meta: Some(json!({
                        "model": "smollm2", "prompt_tokens": 12, "completion_tokens": 40,
                        "duration_ms": 1200
                    })),
                    reason: None,
                },
            ),
            (
                "Process".into(),
                ResultView {
                    status: "completed".into(),
                    result: Some(json!({"n": 1})),
                    error: None,
                    meta: None,
                    reason: None,
                },
            ),
            (
                "Title".into(),
                ResultView {
                    status: "failed".into(),
                    result: None,
                    error: Some(json!({"kind": "permanent", "message": "bad request"})),
                    meta: None,
                    reason: None,
                },
            ),
        ]);
        let text = render_results(&results);
        assert_eq!(
            text,
            "=== Summarize (completed) — model smollm2 · 52 tokens (12 prompt + 40 completion) · 1.2s\n\
             line one\nline two\n\
             \n=== Process (completed)\n{\n  \"n\": 1\n}\n\
             \n=== Title (failed)\nerror: permanent: bad request\n"
        );
    }

    #[test]
    fn closed_tasks_say_why_in_results_and_status() {
        let why = r#"upstream task "A" failed (policy continue)"#;
        let view = ResultsView(vec![(
            "B".to_owned(),
            ResultView {
                status: "skipped".into(),
                result: None,
                error: None,
                meta: None,
                reason: Some(why.into()),
            },
        )]);
        assert_eq!(
            render_results(&view),
            format!("=== B (skipped)\nwhy: {why}\n")
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["B"]["reason"], why);

        let mut skipped = task(1, "B", "skipped", 0);
        skipped.reason = Some(why.into());
        let status = StatusView {
            workflow: workflow("failed", 0),
            tasks: vec![task(0, "A", "failed", 1), skipped],
        };
        let text = render_status(&status, 1_700_000_005_000);
        let row = text.lines().find(|l| l.contains(" B ")).unwrap();
        assert!(row.trim_end().ends_with(why), "{text}");
    }

    #[test]
    fn list_text_has_one_row_per_workflow() {
        let mut older = workflow("completed", 0);
        older.id = "0190-old".into();
        older.created_ms -= 120_000;
        let text = render_list(&[workflow("running", 2), older], 1_700_000_005_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID"));
        assert!(
            lines[1].starts_with("0190-abc")
                && lines[1].contains("1/3")
                && lines[1].ends_with("5s")
        );
        assert!(
            lines[2].starts_with("0190-old")
                && lines[2].contains("3/3")
                && lines[2].ends_with("2m 5s")
        );
        assert_eq!(render_list(&[], 0), "no workflows\n");
    }

    #[test]
    fn errors_serialise_without_empty_fields() {
        let doc = ErrorDoc {
            error: ErrorView {
                kind: "not_found".into(),
                message: "no workflow x".into(),
                exit_code: 5,
                errors: vec![],
                existing_id: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&doc).unwrap(),
            json!({"error": {"kind": "not_found", "message": "no workflow x", "exit_code": 5}})
        );
    }

    #[test]
    fn results_show_a_service_traceback_and_no_retryable_label() {
        let view = ResultsView(vec![(
            "Process".to_owned(),
            ResultView {
                status: "failed".into(),
                result: None,
                error: Some(json!({
                    "kind": "permanent",
                    "message": "ValueError: bad input",
                    "detail": {"traceback": "Traceback (most recent call last):\n  File \"f.py\", line 3\nValueError: bad input\n"}
                })),
                reason: None,
                meta: None,
            },
        )]);
        assert_eq!(
            render_results(&view),
            "=== Process (failed)\nerror: permanent: ValueError: bad input\n  Traceback (most \
             recent call last):\n    File \"f.py\", line 3\n  ValueError: bad input\n"
        );
        assert_eq!(
            describe_error(&json!({"kind": "retryable", "message": "connection refused"})),
            "connection refused"
        );
        assert_eq!(
            describe_error(&json!({"kind": "timeout", "message": "no answer in 30s"})),
            "timeout: no answer in 30s"
        );
    }

    #[test]
    fn error_and_meta_descriptions() {
        assert_eq!(describe_error(&json!({"message": "m"})), "m");
        assert_eq!(describe_error(&json!("plain")), "plain");
        assert_eq!(describe_meta(&json!({})), None);
        assert_eq!(
            describe_meta(&json!({"completion_tokens": 5})).as_deref(),
            Some("5 completion tokens")
        );
    }
}
