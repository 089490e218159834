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
/// trip per read. A role that may only read (monitor) is refused: it then follows task
/// ends and workflow events, which is all the progress bar counts.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_status_maps_to_exit_codes() {
        assert_eq!(final_exit("completed"), ExitCode::Ok);
        assert_eq!(final_exit("running"), ExitCode::Ok);
        assert_eq!(final_exit("failed"), ExitCode::WorkflowFailed);
        assert_eq!(final_exit("cancelled"), ExitCode::WorkflowFailed);
    }
}
