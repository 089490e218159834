//! Live progress lines for `submit --wait`, computed from a workflow's event stream.
//!
//! The followers (`submit --wait` in [`crate::commands`], `watch` in [`crate::ops`], both built on
//! [`crate::follow`]) read the stream from its first entry with blocking `XREAD`, so every event
//! is seen once and in order; this module only turns events into lines.
//! Durations come from the events' own timestamps (or, failing those, the stream entry ids,
//! whose first part is the Redis server's clock in milliseconds), so no extra query is needed
//! to say how long a task ran.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::report::{format_duration, is_terminal};

/// One event of a workflow's event stream, as the progress display needs it. Serialized, it
/// is the event part of a `watch --json` line ([`crate::opsreport::WatchEventView`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressEvent {
    /// The stream entry id (`<ms>-<seq>`).
    #[serde(rename = "event")]
    pub id: String,
    /// `task` or `workflow`.
    pub kind: String,
    /// The task's name for task events.
    pub task: Option<String>,
    pub status: String,
    /// The attempt this event belongs to (1-based), when the event says.
    pub attempt: Option<u32>,
    /// When it happened (ms), when the event says.
    pub at_ms: Option<u64>,
    /// A failure's reason, when known.
    pub error: Option<String>,
    /// A `retrying` that used no attempt: the task waits for an endpoint or a service.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
}

impl ProgressEvent {
    /// When it happened: the event's own time, else the entry id's millisecond part.
    pub fn ms(&self) -> Option<u64> {
        self.at_ms
            .or_else(|| self.id.split('-').next()?.parse().ok())
    }
}

/// What an event means for the waiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to show.
    Quiet,
    /// A line for stderr.
    Line(String),
    /// The workflow ended with this status (the line, if any, is shown first).
    Finished { status: String, line: String },
}

/// Progress of one workflow, fed event by event.
#[derive(Debug, Clone)]
pub struct Progress {
    total: usize,
    done: HashSet<String>,
    started_ms: HashMap<String, u64>,
    max_attempts: HashMap<String, u32>,
    first_ms: Option<u64>,
    /// The last line shown for each task, so a task that waits for the same reason again and
    /// again is shown once, not once per deferral.
    last_line: HashMap<String, String>,
}

impl Progress {
    /// `max_attempts` gives each task's attempt budget (for "attempt 1/3").
    pub fn new(total: usize, max_attempts: HashMap<String, u32>) -> Self {
        Progress {
            total,
            done: HashSet::new(),
            started_ms: HashMap::new(),
            max_attempts,
            first_ms: None,
            last_line: HashMap::new(),
        }
    }

    /// When each task's current attempt started, as the workflow's state says: a task's
    /// `running` event is written only while someone watches (`Queue::watch`), so a task that
    /// started before the watch began still gets its "completed in …".
    pub fn with_started(mut self, started: impl IntoIterator<Item = (String, u64)>) -> Self {
        self.started_ms.extend(started);
        self
    }

    /// Tasks seen reaching a terminal status.
    pub fn done(&self) -> usize {
        self.done.len()
    }

    /// Tasks of the workflow.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Whether a failure event lacks its reason (the caller may look it up before `apply`).
    pub fn needs_reason(event: &ProgressEvent) -> bool {
        event.kind == "task"
            && matches!(event.status.as_str(), "failed" | "retrying")
            && event.error.is_none()
    }

    /// A task line: tasks ended of all, time since the workflow's first event, the text.
    fn line(&self, since: &str, text: &str) -> String {
        format!("[{}/{}] +{since} {text}", self.done(), self.total)
    }

    /// Applies one event and says what to show.
    pub fn apply(&mut self, event: &ProgressEvent) -> Step {
        let ms = event.ms();
        if self.first_ms.is_none() {
            self.first_ms = ms;
        }
        if event.kind == "workflow" {
            if !is_terminal(&event.status) {
                return Step::Quiet;
            }
            let took = match (self.first_ms, ms) {
                (Some(first), Some(now)) => format!(
                    " in {}",
                    format_duration(Duration::from_millis(now.saturating_sub(first)))
                ),
                _ => String::new(),
            };
            return Step::Finished {
                status: event.status.clone(),
                line: format!("workflow {}{took}", event.status),
            };
        }
        let Some(task) = event.task.as_deref() else {
            return Step::Quiet;
        };
        // Every task line says how long the workflow has run: "[1/3] +2.3s A completed …".
        let since = format_duration(Duration::from_millis(
            ms.zip(self.first_ms)
                .map_or(0, |(now, first)| now.saturating_sub(first)),
        ));
        let reason = event
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        match event.status.as_str() {
            "running" => {
                if let Some(ms) = ms {
                    self.started_ms.insert(task.to_owned(), ms);
                }
                // A waiting task is taken up again and again (each try may find the endpoint
                // still down); only a different outcome ends the wait's line.
                if self
                    .last_line
                    .get(task)
                    .is_some_and(|l| l.starts_with(&format!("{task} waits")))
                {
                    return Step::Quiet;
                }
                let attempt = match (event.attempt, self.max_attempts.get(task)) {
                    (Some(a), Some(max)) if a > 1 => format!(" (attempt {a}/{max})"),
                    (Some(a), None) if a > 1 => format!(" (attempt {a})"),
                    _ => String::new(),
                };
                let line = format!("{task} running{attempt}");
                if self.last_line.get(task) == Some(&line) {
                    return Step::Quiet;
                }
                self.last_line.insert(task.to_owned(), line.clone());
                Step::Line(self.line(&since, &line))
            }
            "retrying" if event.deferred => {
                // The same wait for the same reason is one line, however often it repeats.
                let line = format!("{task} waits (no attempt used){reason}");
                if self.last_line.get(task) == Some(&line) {
                    return Step::Quiet;
                }
                self.last_line.insert(task.to_owned(), line.clone());
                Step::Line(self.line(&since, &line))
            }
            "retrying" => {
                self.last_line.remove(task);
                let attempt = match (event.attempt, self.max_attempts.get(task)) {
                    (Some(a), Some(max)) => format!(" (attempt {a}/{max})"),
                    (Some(a), None) => format!(" (attempt {a})"),
                    _ => String::new(),
                };
                Step::Line(self.line(
                    &since,
                    &format!("{task} failed{attempt}, will retry{reason}"),
                ))
            }
            status if is_terminal(status) => {
                if !self.done.insert(task.to_owned()) {
                    return Step::Quiet;
                }
                let detail = match status {
                    "completed" => match (self.started_ms.get(task), ms) {
                        (Some(start), Some(end)) => format!(
                            " in {}",
                            format_duration(Duration::from_millis(end.saturating_sub(*start)))
                        ),
                        _ => String::new(),
                    },
                    "failed" => {
                        let attempts = event
                            .attempt
                            .map(|a| format!(" after {a} attempt{}", if a == 1 { "" } else { "s" }))
                            .unwrap_or_default();
                        format!("{attempts}{reason}")
                    }
                    _ => String::new(),
                };
                Step::Line(self.line(&since, &format!("{task} {status}{detail}")))
            }
            _ => Step::Quiet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ms: u64, kind: &str, task: Option<&str>, status: &str) -> ProgressEvent {
        ProgressEvent {
            id: format!("{ms}-0"),
            kind: kind.into(),
            task: task.map(str::to_owned),
            status: status.into(),
            attempt: None,
            at_ms: None,
            error: None,
            deferred: false,
        }
    }

    fn progress() -> Progress {
        Progress::new(
            3,
            HashMap::from([
                ("A".to_owned(), 3),
                ("B".to_owned(), 3),
                ("C".to_owned(), 1),
            ]),
        )
    }

    #[test]
    fn completions_count_up_with_durations() {
        let mut p = progress();
        assert_eq!(p.apply(&ev(1_000, "task", Some("A"), "ready")), Step::Quiet);
        assert_eq!(
            p.apply(&ev(1_100, "task", Some("A"), "running")),
            Step::Line("[0/3] +100ms A running".into())
        );
        assert_eq!(
            p.apply(&ev(2_300, "task", Some("A"), "completed")),
            Step::Line("[1/3] +1.3s A completed in 1.2s".into())
        );
        // A duplicate terminal event neither counts nor prints.
        assert_eq!(
            p.apply(&ev(2_400, "task", Some("A"), "completed")),
            Step::Quiet
        );
        assert_eq!(p.done(), 1);
        // Without a start seen, no duration is made up.
        assert_eq!(
            p.apply(&ev(2_500, "task", Some("B"), "completed")),
            Step::Line("[2/3] +1.5s B completed".into())
        );
        // A start known from the workflow's state (no `running` event: nobody watched then).
        let mut p = progress().with_started([("C".to_owned(), 500)]);
        assert_eq!(
            p.apply(&ev(1_000, "workflow", None, "submitted")),
            Step::Quiet
        );
        assert_eq!(
            p.apply(&ev(2_000, "task", Some("C"), "completed")),
            Step::Line("[1/3] +1.0s C completed in 1.5s".into())
        );
    }

    #[test]
    fn a_wait_for_the_same_reason_is_one_line_until_something_changes() {
        let mut p = progress();
        let wait = |ms: u64, reason: &str| ProgressEvent {
            deferred: true,
            attempt: Some(0),
            error: Some(reason.to_owned()),
            ..ev(ms, "task", Some("A"), "retrying")
        };
        let down = "retryable: every endpoint refused the connection (ep0: refused)";
        assert_eq!(
            p.apply(&wait(1, down)),
            Step::Line(format!("[0/3] +0ms A waits (no attempt used): {down}"))
        );
        assert_eq!(p.apply(&wait(2, down)), Step::Quiet);
        assert_eq!(p.apply(&wait(3, down)), Step::Quiet);
        let limited = "retryable: ep0: rate limited, retry after 30s";
        assert!(matches!(p.apply(&wait(4, limited)), Step::Line(l) if l.contains(limited)));
        // Tried again and waiting for the same reason: nothing new to say.
        assert_eq!(p.apply(&ev(5, "task", Some("A"), "running")), Step::Quiet);
        assert_eq!(p.apply(&wait(6, limited)), Step::Quiet);
        // A different reason is.
        assert!(matches!(p.apply(&wait(7, down)), Step::Line(_)));
    }

    #[test]
    fn a_start_is_one_line_and_a_retry_says_its_attempt() {
        let mut p = progress();
        let mut run = ev(1_000, "task", Some("A"), "running");
        run.attempt = Some(1);
        assert_eq!(p.apply(&run), Step::Line("[0/3] +0ms A running".into()));
        assert_eq!(p.apply(&run), Step::Quiet, "the same state again: no line");
        let mut retry = ev(1_500, "task", Some("A"), "retrying");
        retry.attempt = Some(1);
        retry.error = Some("boom".into());
        assert!(matches!(p.apply(&retry), Step::Line(_)));
        let mut again = ev(2_000, "task", Some("A"), "running");
        again.attempt = Some(2);
        assert_eq!(
            p.apply(&again),
            Step::Line("[0/3] +1.0s A running (attempt 2/3)".into())
        );
    }

    #[test]
    fn retries_and_failures_carry_attempts_and_reason() {
        let mut p = progress();
        let mut retry = ev(1_000, "task", Some("A"), "retrying");
        retry.attempt = Some(1);
        retry.error = Some("retryable: connection refused".into());
        assert!(Progress::needs_reason(&ev(
            0,
            "task",
            Some("A"),
            "retrying"
        )));
        assert!(!Progress::needs_reason(&retry));
        assert_eq!(
            p.apply(&retry),
            Step::Line(
                "[0/3] +0ms A failed (attempt 1/3), will retry: retryable: connection refused"
                    .into()
            )
        );
        let mut failed = ev(2_000, "task", Some("A"), "failed");
        failed.attempt = Some(3);
        failed.error = Some("permanent: bad request".into());
        assert_eq!(
            p.apply(&failed),
            Step::Line("[1/3] +1.0s A failed after 3 attempts: permanent: bad request".into())
        );
        assert_eq!(
            p.apply(&ev(2_001, "task", Some("B"), "cancelled")),
            Step::Line("[2/3] +1.0s B cancelled".into())
        );
    }

    #[test]
    fn workflow_end_finishes_with_its_status() {
        let mut p = progress();
        p.apply(&ev(10_000, "workflow", None, "submitted"));
        assert_eq!(
            p.apply(&ev(10_500, "workflow", None, "running")),
            Step::Quiet
        );
        assert_eq!(
            p.apply(&ev(13_000, "workflow", None, "failed")),
            Step::Finished {
                status: "failed".into(),
                line: "workflow failed in 3.0s".into()
            }
        );
    }

    #[test]
    fn entry_ids_give_milliseconds() {
        assert_eq!(
            ev(1_700_000_000_123, "task", None, "x").ms(),
            Some(1_700_000_000_123)
        );
        let odd = ProgressEvent {
            id: "garbage".into(),
            ..ev(0, "task", None, "x")
        };
        assert_eq!(odd.ms(), None);
        let stamped = ProgressEvent {
            at_ms: Some(7),
            ..ev(1_000, "task", None, "x")
        };
        assert_eq!(stamped.ms(), Some(7));
    }
}
