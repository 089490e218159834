//! Following a workflow's event stream (`submit --wait`, `watch`): how long to block, turning
//! queue events into progress events with their failure reason, and the exit code of the
//! status the workflow ended with.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gleitzeit_queue::{Event, Queue, QueueError, TaskInfo};

use crate::exit::ExitCode;
use crate::progress::{Progress, ProgressEvent};
use crate::report::describe_error;
use crate::views::parse_json;

/// Longest single blocking read while waiting (`submit --wait`, `watch`). After a read that saw
/// nothing the workflow's record is checked once, so a workflow that expired or whose events
/// were trimmed away cannot leave the wait blocked forever.
const MAX_BLOCK: Duration = Duration::from_secs(10);

/// How long a watcher's interest in a workflow's every transition lasts unless renewed; the
/// follow loops renew it every half of that ([`Interest::keep`] before each blocking read,
/// which waits at most [`MAX_BLOCK`], well under half).
const WATCH_TTL: Duration = Duration::from_secs(60);

/// A follower's interest in every transition of one workflow as an event (`Queue::watch`,
/// for [`WATCH_TTL`]). [`Interest::keep`] asks at once and then again only when half of
/// that time has passed, so a follow loop calls it before each read without a Redis round
/// trip per read. A role that may only read (monitor) is refused: it then sees the tasks
/// that had ended when it looked ([`Ended`]) and then only the workflow's end.
pub(crate) struct Interest<'a> {
    id: &'a str,
    asked: Option<Instant>,
}

impl<'a> Interest<'a> {
    pub(crate) fn new(id: &'a str) -> Self {
        Interest { id, asked: None }
    }

    pub(crate) async fn keep(&mut self, queue: &Queue) {
        if self.asked.is_some_and(|t| t.elapsed() < WATCH_TTL / 2) {
            return;
        }
        self.asked = Some(Instant::now());
        if let Err(e) = queue.watch(self.id, WATCH_TTL).await {
            tracing::debug!(workflow = %self.id, error = %e, "cannot ask for every transition as an event");
        }
    }
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
    .with_started(
        tasks
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.started_ms?))),
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
        deferred: event.deferred,
    }
}

/// The ends of the tasks that had ended when a follower read the workflow's state, as progress
/// events in the order they ended. A task's end is an event only while someone watches
/// (`Queue::watch`), so a follower that arrives later, or follows a workflow submitted
/// unwatched, learns those ends from the state. [`Ended::before`] hands them out in time
/// order between the stream's events, so they show the lines the events would have; a task
/// end the stream holds as well is shown once (a [`Progress`] counts each task's end once).
/// Their `event` id is empty: they come from the state, not the stream.
pub(crate) struct Ended {
    events: std::collections::VecDeque<ProgressEvent>,
}

impl Ended {
    pub(crate) fn from_tasks(tasks: &[TaskInfo]) -> Self {
        let mut ended: Vec<&TaskInfo> = tasks
            .iter()
            .filter(|t| crate::report::is_terminal(&t.status))
            .collect();
        ended.sort_by_key(|t| (t.finished_ms.unwrap_or(u64::MAX), t.index));
        Ended {
            events: ended
                .into_iter()
                .map(|t| ProgressEvent {
                    id: String::new(),
                    kind: "task".to_owned(),
                    task: Some(t.name.clone()),
                    status: t.status.clone(),
                    attempt: (t.status == "failed").then_some(t.attempts),
                    at_ms: t.finished_ms,
                    error: (t.status == "failed").then(|| task_reason(t)).flatten(),
                    deferred: false,
                })
                .collect(),
        }
    }

    /// The ends that happened before or at `ms` (every one left with `None`), in order.
    pub(crate) fn before(&mut self, ms: Option<u64>) -> Vec<ProgressEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.events.front() {
            match (e.at_ms, ms) {
                // A task that ended in the same millisecond as an event goes first: the
                // workflow's end is written in the same step as its last task's end.
                (Some(at), Some(ms)) if at > ms => break,
                _ => out.extend(self.events.pop_front()),
            }
        }
        out
    }

    /// A batch read from the stream as progress events, with the ends from the state that
    /// came before each; `after` moves to the batch's last stream id.
    pub(crate) fn with_stream(
        &mut self,
        events: Vec<Event>,
        after: &mut String,
    ) -> Vec<ProgressEvent> {
        let batch = events
            .into_iter()
            .map(|e| {
                after.clone_from(&e.id);
                progress_event(e)
            })
            .collect();
        self.interleave(batch)
    }

    /// The stream's `events` with the ends from the state that came before each of them.
    pub(crate) fn interleave(&mut self, events: Vec<ProgressEvent>) -> Vec<ProgressEvent> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.extend(self.before(e.ms()));
            out.push(e);
        }
        out
    }
}

/// A task's stored error, described for a progress line.
fn task_reason(task: &TaskInfo) -> Option<String> {
    task.error_json
        .as_deref()
        .map(|e| describe_error(&parse_json(e)))
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
        event.error = task_reason(task);
        if event.attempt.is_none() {
            event.attempt = Some(task.attempts);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(index: u32, name: &str, status: &str, finished_ms: Option<u64>) -> TaskInfo {
        TaskInfo {
            index,
            name: name.to_owned(),
            capability: "llm:m".to_owned(),
            status: status.to_owned(),
            attempts: 2,
            max_attempts: 2,
            result_json: None,
            error_json: (status == "failed")
                .then(|| r#"{"kind":"invalid_request","message":"bad prompt"}"#.to_owned()),
            ready_ms: None,
            started_ms: None,
            finished_ms,
            deferrals: 0,
            reason: None,
        }
    }

    fn stream(ms: u64, kind: &str, task: Option<&str>, status: &str) -> ProgressEvent {
        ProgressEvent {
            id: format!("{ms}-0"),
            kind: kind.to_owned(),
            task: task.map(str::to_owned),
            status: status.to_owned(),
            attempt: None,
            at_ms: Some(ms),
            error: None,
            deferred: false,
        }
    }

    fn names(events: &[ProgressEvent]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| (e.task.clone().unwrap_or_default(), e.status.clone()))
            .collect()
    }

    #[test]
    fn ended_tasks_come_from_the_state_in_time_order_between_the_events() {
        let tasks = [
            task(0, "late", "completed", Some(30)),
            task(1, "open", "running", None),
            task(2, "early", "failed", Some(10)),
            task(3, "last", "completed", Some(50)),
        ];
        let mut ended = Ended::from_tasks(&tasks);
        let out = ended.interleave(vec![
            stream(5, "workflow", None, "submitted"),
            stream(20, "task", Some("open"), "running"),
        ]);
        assert_eq!(
            names(&out),
            [
                (String::new(), "submitted".to_owned()),
                ("early".to_owned(), "failed".to_owned()),
                ("open".to_owned(), "running".to_owned()),
            ]
        );
        // The failure carries its reason and attempts from the record.
        assert_eq!(out[1].attempt, Some(2));
        assert!(out[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("bad prompt")));
        assert_eq!(out[1].id, "", "not a stream entry");
        // The workflow's end is written in the same millisecond as its last task's end: the
        // task goes first.
        let out = ended.interleave(vec![stream(50, "workflow", None, "completed")]);
        assert_eq!(
            names(&out),
            [
                ("late".to_owned(), "completed".to_owned()),
                ("last".to_owned(), "completed".to_owned()),
                (String::new(), "completed".to_owned()),
            ]
        );
        assert!(ended.before(None).is_empty());
    }

    #[test]
    fn final_status_maps_to_exit_codes() {
        assert_eq!(final_exit("completed"), ExitCode::Ok);
        assert_eq!(final_exit("running"), ExitCode::Ok);
        assert_eq!(final_exit("failed"), ExitCode::WorkflowFailed);
        assert_eq!(final_exit("cancelled"), ExitCode::WorkflowFailed);
    }
}
