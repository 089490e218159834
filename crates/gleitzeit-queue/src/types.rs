//! Requests and results of the queue operations.
//!
//! Task specs, inputs, results and errors are opaque JSON text here: this crate moves them
//! between the submitter, Redis and the workers without interpreting them.

use std::time::Duration;

use crate::codes::ScriptCode;
use crate::error::QueueError;
use crate::keys::{validate_capability, validate_workflow_id, Priority};

/// Connection and storage settings of a [`Queue`](crate::Queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Key namespace (`{<ns>}:` prefix); deployments sharing a Redis use different ones.
    pub namespace: String,
    /// Consumer group on every ready stream.
    pub group: String,
    /// How long a finished workflow's keys live (rounded up to whole seconds, at least 1 s).
    pub retention: Duration,
    /// Approximate cap on each workflow's events stream (it is for watching progress; the
    /// hashes hold the truth).
    pub events_maxlen: usize,
    /// Approximate cap on the dead-letter stream.
    pub dead_maxlen: usize,
    /// How long a command may take before the call fails with a (retryable) timeout;
    /// blocking reads get their block time on top.
    pub response_timeout: Duration,
    /// Replicas that must confirm a new workflow before [`Queue::submit`] returns
    /// (`WAIT` after the submit script, on the same connection). Redis replicates
    /// asynchronously: without this a failover right after a submission can lose it, and
    /// nothing would redo it (lost worker writes are redone: see docs/scaling.md). 0 (the
    /// default) waits for none.
    ///
    /// [`Queue::submit`]: crate::Queue::submit
    pub replica_acks: u32,
    /// How long a submission waits for those confirmations (less than `response_timeout`).
    pub replica_ack_timeout: Duration,
    /// How many shards the namespace's workflows are spread over (1..=256; docs/scaling.md,
    /// "Sharding"). `None` (the default) adopts the count the namespace records
    /// (`{ns}:shards`; one when nothing is recorded). `Some(n)` records `n` when nothing is
    /// recorded yet and refuses to run against a namespace that records another count
    /// ([`QueueError::ShardCount`] from [`Queue::connect`](crate::Queue::connect)).
    pub shards: Option<u16>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            namespace: "gleitzeit".to_owned(),
            group: "workers".to_owned(),
            retention: Duration::from_secs(24 * 60 * 60),
            events_maxlen: 10_000,
            dead_maxlen: 100_000,
            response_timeout: Duration::from_secs(10),
            replica_acks: 0,
            replica_ack_timeout: Duration::from_secs(2),
            shards: None,
        }
    }
}

impl QueueConfig {
    pub(crate) fn validate(&self) -> Result<(), QueueError> {
        if self.group.is_empty() || self.group.chars().any(|c| c.is_control()) {
            return Err(QueueError::InvalidArgument(format!(
                "consumer group {:?} must be non-empty without control characters",
                self.group
            )));
        }
        if self.retention.is_zero() {
            return Err(QueueError::InvalidArgument(
                "retention must be positive".to_owned(),
            ));
        }
        if self.events_maxlen == 0 || self.dead_maxlen == 0 {
            return Err(QueueError::InvalidArgument(
                "events_maxlen and dead_maxlen must be positive".to_owned(),
            ));
        }
        if self.response_timeout.is_zero() {
            return Err(QueueError::InvalidArgument(
                "response_timeout must be positive".to_owned(),
            ));
        }
        if let Some(n) = self.shards {
            if !(1..=crate::keys::MAX_SHARDS).contains(&n) {
                return Err(QueueError::InvalidArgument(format!(
                    "shards must be 1-{}, got {n}",
                    crate::keys::MAX_SHARDS
                )));
            }
        }
        if self.replica_acks > 0
            && (self.replica_ack_timeout.is_zero()
                || self.replica_ack_timeout >= self.response_timeout)
        {
            return Err(QueueError::InvalidArgument(format!(
                "replica_ack_timeout must be positive and below response_timeout ({} ms), got {} ms",
                self.response_timeout.as_millis(),
                self.replica_ack_timeout.as_millis()
            )));
        }
        Ok(())
    }

    /// Retention in whole seconds, rounded up.
    pub(crate) fn retention_secs(&self) -> u64 {
        whole_secs(self.retention)
    }
}

/// A retention in whole seconds (Redis expires keys in seconds), rounded up, at least 1.
pub(crate) fn whole_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs.max(1)
    }
}

/// Failure policy names as stored in Redis.
pub const POLICY_FAIL_FAST: &str = "fail_fast";
/// See [`POLICY_FAIL_FAST`].
pub const POLICY_CONTINUE: &str = "continue";

/// One task of a [`SubmitRequest`]; its position in `tasks` is its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Unique task name.
    pub name: String,
    /// Stream the task is queued on (`llm:<model>`, `ext:<service>`).
    pub capability: String,
    /// Which of the capability's streams.
    pub priority: Priority,
    /// The task spec (JSON text, opaque here; returned by `begin`).
    pub spec_json: String,
    /// Indices of the tasks this one waits for.
    pub dependencies: Vec<u32>,
    /// Indices of the tasks that wait for this one (the inverse of `dependencies`).
    pub children: Vec<u32>,
    /// Indices of the tasks whose results this task's templates reference (ancestors).
    pub refs: Vec<u32>,
    /// Total attempts allowed, including the first (>= 1).
    pub max_attempts: u32,
    /// Per-task override of the workflow's failure policy.
    pub on_failure: Option<String>,
}

/// For each task of a workflow, the length of the longest chain of tasks that wait on it
/// (0 for a task nothing waits on, 2 for a root above a task above a leaf): how much of the
/// workflow is still to run after it. Placement sends tasks with long chains behind them (the
/// critical path) to the fastest endpoints. `children[i]` lists the tasks waiting on task
/// `i`; a cycle (which validation rejects before a workflow gets here) counts as no chain.
pub fn chains_below<C: AsRef<[u32]>>(children: &[C]) -> Vec<u32> {
    const UNSEEN: u32 = u32::MAX;
    const VISITING: u32 = u32::MAX - 1;
    let mut below = vec![UNSEEN; children.len()];
    for start in 0..children.len() {
        if below[start] != UNSEEN {
            continue;
        }
        // Depth-first, without recursion: (task, next child to look at).
        let mut stack = vec![(start, 0usize)];
        below[start] = VISITING;
        while let Some(&mut (task, ref mut next)) = stack.last_mut() {
            if let Some(&child) = children[task].as_ref().get(*next) {
                *next += 1;
                let child = child as usize;
                if child < children.len() && below[child] == UNSEEN {
                    below[child] = VISITING;
                    stack.push((child, 0));
                }
                continue;
            }
            let longest = children[task]
                .as_ref()
                .iter()
                .filter_map(|&c| below.get(c as usize))
                .filter(|&&b| b < VISITING)
                .map(|&b| b + 1)
                .max()
                .unwrap_or(0);
            below[task] = longest;
            stack.pop();
        }
    }
    below
}

/// A whole workflow, written by one script call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitRequest {
    /// Workflow id (a UUIDv7 string from the submitter).
    pub workflow_id: String,
    /// Workflow name.
    pub name: String,
    /// Optional idempotency key: resubmitting the same key with the same digest returns
    /// the existing workflow, with another digest is refused.
    pub idempotency_key: Option<String>,
    /// Digest of the validated workflow body (compared for idempotency).
    pub digest: String,
    /// `"fail_fast"` or `"continue"`.
    pub policy: String,
    /// Workflow input (JSON text, opaque here; returned by `begin`).
    pub input_json: String,
    /// Creation time, ms since the epoch.
    pub now_ms: u64,
    /// How long the workflow's keys stay after it ends; `None`: the queue's
    /// [`QueueConfig::retention`]. Rounded up to whole seconds.
    pub retention: Option<Duration>,
    /// Tasks in index order.
    pub tasks: Vec<TaskRecord>,
    /// Watched from the start: every transition of every task (ready, running, retrying,
    /// its end) becomes an event, not only the workflow's own events (for a submitter
    /// that follows the events stream from the start; a later watcher uses
    /// [`crate::Queue::watch`]).
    pub watch: bool,
}

fn valid_policy(p: &str) -> bool {
    p == POLICY_FAIL_FAST || p == POLICY_CONTINUE
}

impl SubmitRequest {
    /// Checks everything the scripts rely on: ids and names usable in keys, a consistent
    /// DAG (dependencies in range, no self-dependency, no cycle, `children` the inverse of
    /// `dependencies`, `refs` only ancestors), at least one task, valid policies.
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] naming the first problem.
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |msg: String| Err(QueueError::InvalidArgument(msg));
        validate_workflow_id(&self.workflow_id)?;
        if let Some(key) = &self.idempotency_key {
            if key.is_empty() || key.len() > 512 {
                return bad("idempotency key must be 1-512 bytes".to_owned());
            }
        }
        if self.retention.is_some_and(|r| r.is_zero()) {
            return bad("retention must be positive".to_owned());
        }
        if self.digest.is_empty() || self.digest.contains('\n') {
            return bad("digest must be non-empty and on one line".to_owned());
        }
        if !valid_policy(&self.policy) {
            return bad(format!(
                "policy {:?} must be fail_fast or continue",
                self.policy
            ));
        }
        let n = self.tasks.len();
        if n == 0 {
            return bad("a workflow needs at least one task".to_owned());
        }
        if u32::try_from(n).is_err() {
            return bad("too many tasks".to_owned());
        }
        let mut expected_children: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut names = std::collections::HashSet::with_capacity(n);
        for (i, t) in self.tasks.iter().enumerate() {
            if t.name.is_empty() {
                return bad(format!("task {i} has an empty name"));
            }
            // The packed layout joins names with control characters (keys.rs).
            if t.name.chars().any(char::is_control) {
                return bad(format!(
                    "task {i}: name {:?} contains a control character",
                    t.name
                ));
            }
            if !names.insert(t.name.as_str()) {
                return bad(format!("task name {:?} is used twice", t.name));
            }
            validate_capability(&t.capability)?;
            if t.max_attempts == 0 {
                return bad(format!("task {:?}: max_attempts must be >= 1", t.name));
            }
            if let Some(p) = &t.on_failure {
                if !valid_policy(p) {
                    return bad(format!(
                        "task {:?}: on_failure {p:?} must be fail_fast or continue",
                        t.name
                    ));
                }
            }
            let mut seen = std::collections::HashSet::new();
            for &d in &t.dependencies {
                if d as usize >= n || d as usize == i || !seen.insert(d) {
                    return bad(format!(
                        "task {:?}: dependency {d} is out of range, itself or repeated",
                        t.name
                    ));
                }
                expected_children[d as usize].push(i as u32);
            }
        }
        for (i, t) in self.tasks.iter().enumerate() {
            let mut given = t.children.clone();
            given.sort_unstable();
            let mut expected = expected_children[i].clone();
            expected.sort_unstable();
            if given != expected {
                return bad(format!(
                    "task {:?}: children {:?} are not the tasks depending on it {:?}",
                    t.name, t.children, expected
                ));
            }
        }
        let order = topological_order(&self.tasks)
            .ok_or_else(|| QueueError::InvalidArgument("dependencies form a cycle".to_owned()))?;
        // Ancestor sets as bitsets, filled in topological order (parents before children).
        let words = n.div_ceil(64);
        let mut ancestors = vec![vec![0u64; words]; n];
        for &i in &order {
            let mut acc = vec![0u64; words];
            for &d in &self.tasks[i].dependencies {
                let d = d as usize;
                acc[d / 64] |= 1 << (d % 64);
                for (a, b) in acc.iter_mut().zip(&ancestors[d]) {
                    *a |= *b;
                }
            }
            ancestors[i] = acc;
        }
        for (i, t) in self.tasks.iter().enumerate() {
            for &r in &t.refs {
                let r = r as usize;
                if r >= n || ancestors[i][r / 64] & (1 << (r % 64)) == 0 {
                    return bad(format!(
                        "task {:?}: referenced task {r} is not an ancestor",
                        t.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Kahn's algorithm; `None` when the dependencies contain a cycle.
fn topological_order(tasks: &[TaskRecord]) -> Option<Vec<usize>> {
    let n = tasks.len();
    let mut pending: Vec<usize> = tasks.iter().map(|t| t.dependencies.len()).collect();
    let mut order: Vec<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut head = 0;
    while head < order.len() {
        let i = order[head];
        head += 1;
        for &c in &tasks[i].children {
            let c = c as usize;
            pending[c] -= 1;
            if pending[c] == 0 {
                order.push(c);
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// What `submit` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// The workflow was written and its root tasks queued.
    Created {
        /// The new workflow's id.
        id: String,
    },
    /// The idempotency key was used before with the same digest; nothing was written.
    Existing {
        /// The id of the workflow created then.
        id: String,
    },
    /// The idempotency key was used before with another digest; nothing was written.
    Conflict {
        /// The id of the workflow that holds the key.
        existing_id: String,
    },
}

/// One entry handed to a consumer: a reference to a task, never its payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// Stream key the entry was read from.
    pub stream: String,
    /// Capability of that stream.
    pub capability: String,
    /// Priority of that stream.
    pub priority: Priority,
    /// Stream entry id.
    pub entry_id: String,
    /// Workflow the task belongs to.
    pub workflow_id: String,
    /// Task index within the workflow.
    pub task: u32,
    /// How many times the entry has been delivered (1 for a fresh read); complete/fail are
    /// fenced with it.
    pub deliveries: u64,
}

/// What a worker needs to run a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContext {
    /// Task name.
    pub name: String,
    /// The task spec (JSON text).
    pub spec_json: String,
    /// Attempts that have failed so far (this run is attempt `attempts + 1`).
    pub attempts: u32,
    /// Total attempts allowed.
    pub max_attempts: u32,
    /// The workflow input (JSON text).
    pub input_json: String,
    /// `(task name, result JSON)` of every task this one references.
    pub refs: Vec<(String, String)>,
    /// When the task last became ready (ms), if recorded: with the `now` given to
    /// `begin`, how long it waited in its stream.
    pub ready_ms: Option<u64>,
    /// Times it was re-queued without using an attempt.
    pub deferrals: u32,
    /// The longest chain of tasks waiting on this one ([`chains_below`]; 0 for a task
    /// submitted before it was recorded).
    pub chain_below: u32,
}

/// What `begin` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginOutcome {
    /// The task is now running: execute it.
    Run(TaskContext),
    /// The task cannot run; its entry was acknowledged and deleted. `status` is the task's
    /// status (`cancelled`, `skipped`, `completed`, ...) or `missing` (expired/unknown) or
    /// `superseded` (the entry is not the task's current one).
    NotRunnable {
        /// Why it cannot run.
        status: String,
    },
    /// The entry is no longer this consumer's (it was reclaimed); do not run it.
    Stale,
}

/// An entry [`crate::Consumer::take`] delivered and began in one script call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Where the entry came from (for completing or failing it).
    pub delivery: Delivery,
    /// What beginning it decided: run it, or it can no longer run.
    pub begun: BeginOutcome,
}

/// Which dead-letter record a terminal failure writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// A retryable failure ran out of attempts.
    Exhausted,
    /// The entry was delivered too often (it keeps killing or stalling workers) or its task
    /// spec cannot be decoded.
    Poison,
}

impl DeadLetterKind {
    /// The wire name (`exhausted`, `poison`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Exhausted => "exhausted",
            DeadLetterKind::Poison => "poison",
        }
    }
}

/// A finished workflow's end, as the call that ended it reports it ([`Recorded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowEnd {
    /// Final status: `completed` or `failed`.
    pub status: String,
    /// `finished_ms - created_ms`.
    pub duration_ms: u64,
}

/// What a completion or a failure recorded ([`Queue::complete_recorded`],
/// [`Queue::fail_recorded`], [`Queue::defer_within_recorded`]).
///
/// [`Queue::complete_recorded`]: crate::Queue::complete_recorded
/// [`Queue::fail_recorded`]: crate::Queue::fail_recorded
/// [`Queue::defer_within_recorded`]: crate::Queue::defer_within_recorded
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The script's return code.
    pub code: ScriptCode,
    /// The workflow's end when this call ended it (its last open task ended, or the failure
    /// policy ended it): a workflow ends in exactly one call, so exactly one caller learns
    /// it, with no read of its own. `None` otherwise.
    pub ended: Option<WorkflowEnd>,
    /// For a completion, on one of the completions each completion call carried (the first
    /// its reply was handed to): how many that call carried; `None` on the others, and for
    /// failures and deferrals. Counted over a worker's completions, these give its
    /// completion calls and how many completions share one (the worker's
    /// `gleitzeit_completion_call_size` histogram).
    pub call_size: Option<usize>,
}

/// Arguments of `fail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailRequest {
    /// The error (JSON text, opaque here).
    pub error_json: String,
    /// `Some(due)` schedules a retry at `due` (ms) if attempts remain; `None` fails the task
    /// for good.
    pub retry_at_ms: Option<u64>,
    /// Write a dead letter when the task fails for good.
    pub dead_letter: Option<DeadLetterKind>,
    /// Now, ms since the epoch.
    pub now_ms: u64,
}

/// How long a deferred task may wait for capacity ([`crate::Queue::defer_within`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitLimit {
    /// The limit, ms, counted from the first deferral after the last real attempt.
    pub limit_ms: u64,
    /// The error (JSON text) recorded when the task gives up waiting.
    pub give_up_error_json: String,
}

/// What `promote` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    /// Tasks queued again.
    pub moved: u32,
    /// When the next retry is due (ms), if any waits.
    pub next_due_ms: Option<u64>,
    /// Entries of expired workflows removed from the `{ns}:workflows` index.
    pub trimmed: u32,
}

/// A task for the crate's unit tests: capability `llm:m`, normal priority, spec `{}`, one
/// attempt; it references the results of its dependencies.
#[cfg(test)]
pub(crate) fn test_task(name: &str, deps: &[u32], children: &[u32]) -> TaskRecord {
    TaskRecord {
        name: name.to_owned(),
        capability: "llm:m".to_owned(),
        priority: Priority::Normal,
        spec_json: "{}".to_owned(),
        dependencies: deps.to_vec(),
        children: children.to_vec(),
        refs: deps.to_vec(),
        max_attempts: 1,
        on_failure: None,
    }
}

/// A watched submission of workflow `wf` (for the crate's unit tests): policy `policy`,
/// digest `d`, input `{}`, submitted at 1 ms.
#[cfg(test)]
pub(crate) fn test_request(wf: &str, policy: &str, tasks: Vec<TaskRecord>) -> SubmitRequest {
    SubmitRequest {
        watch: true,
        retention: None,
        workflow_id: wf.to_owned(),
        name: "test".to_owned(),
        idempotency_key: None,
        digest: "d".to_owned(),
        policy: policy.to_owned(),
        input_json: "{}".to_owned(),
        now_ms: 1,
        tasks,
    }
}

/// A fresh redis-server (killed on drop) and a queue on it with the default configuration
/// (for the crate's unit tests).
#[cfg(test)]
pub(crate) async fn test_queue() -> (gleitzeit_testkit::redis::RedisServer, crate::Queue) {
    let redis = gleitzeit_testkit::redis::RedisServer::start().expect("redis-server starts");
    let queue = crate::Queue::connect(&redis.url(), QueueConfig::default())
        .await
        .expect("connect");
    (redis, queue)
}

/// The status of each task of workflow `wf`, in index order (for the crate's unit tests).
#[cfg(test)]
pub(crate) async fn test_statuses(q: &crate::Queue, wf: &str) -> Vec<String> {
    q.tasks(wf)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.status)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::chains_below;

    #[test]
    fn chains_below_count_the_longest_chain_of_waiting_tasks() {
        // root → A, B; A → join; B → C → join
        let children = vec![vec![1, 2], vec![4], vec![3], vec![4], vec![]];
        assert_eq!(chains_below(&children), vec![3, 1, 2, 1, 0]);
        assert_eq!(chains_below::<Vec<u32>>(&[vec![]]), vec![0]);
        // A cycle counts as no chain, and the rest still gets its length.
        assert_eq!(chains_below(&[vec![1], vec![0], vec![]]), vec![1, 0, 0]);
    }
}
