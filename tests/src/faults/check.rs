//! After a scenario: wait for every workflow's end (following the end events), then read
//! Redis and the prompts the simulators received and count what went wrong.
//!
//! - **lost**: a submitted workflow or task whose hash is gone, a task without a final
//!   state in a workflow that ended, or a completed task without a result;
//! - **duplicated**: a task with more than one `completed` event, or a workflow whose
//!   `completed` counter exceeds its completed tasks;
//! - **unexpected**: a stored result that does not answer its own task (the echo of the task's
//!   prompt with its parents' stored results, or the external function's echo of the task's
//!   marker), a completed LLM task whose prompt never reached a simulator, or a simulator call
//!   for no task of the workload;
//! - **stuck**: a workflow that had not ended when the drain gave up ([`crate::HANG_GUARD`]).
//!
//! Also summed: failed attempts (`attempts`, overall and on tasks that completed),
//! deferrals (re-queues that used no attempt), and re-runs (calls beyond the first per task,
//! which at-least-once execution allows).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use gleitzeit_testkit::llm::SimServer;
use serde_json::Value;

use crate::faults::workload::{expected_echo, marker_of, Body, Workload};
use crate::sim::prompts;
use crate::store::{Store, WORKFLOW_TERMINAL};
use crate::HANG_GUARD;

/// What a scenario left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Workload seed.
    pub seed: u64,
    /// Workflows submitted.
    pub workflows: usize,
    /// Tasks submitted.
    pub tasks: usize,
    /// Workflows that ended completed.
    pub completed: usize,
    /// Workflows that ended failed.
    pub failed: usize,
    /// Workflows that ended cancelled.
    pub cancelled: usize,
    /// Workflows or tasks lost (see the module documentation).
    pub lost: usize,
    /// Tasks recorded completed more than once.
    pub duplicated: usize,
    /// Results that do not answer their task, and calls for no task.
    pub unexpected: usize,
    /// Workflows not ended after the drain.
    pub stuck: usize,
    /// Deferrals over all tasks.
    pub deferrals: u64,
    /// Failed attempts over all tasks.
    pub attempts_spent: u64,
    /// Failed attempts of tasks that eventually completed.
    pub attempts_on_completed: u64,
    /// Simulator calls beyond the first per task.
    pub reruns: u64,
    /// Worst time from a worker's death (or freeze) to the re-run of an entry it held, when
    /// the scenario measured it.
    pub orphan_delay: Option<Duration>,
    /// The first few problems, for the failure message.
    pub problems: Vec<String>,
}

/// Problems kept in [`Report::problems`].
const MAX_PROBLEMS: usize = 20;

impl Report {
    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }

    /// The one-line summary.
    pub fn line(&self) -> String {
        let mut line = format!(
            "scenario {} seed={} workflows={} tasks={} completed={} failed={} cancelled={} lost={} duplicated={} unexpected={} stuck={} deferrals={} attempts_spent={} attempts_on_completed={} reruns={}",
            self.scenario,
            self.seed,
            self.workflows,
            self.tasks,
            self.completed,
            self.failed,
            self.cancelled,
            self.lost,
            self.duplicated,
            self.unexpected,
            self.stuck,
            self.deferrals,
            self.attempts_spent,
            self.attempts_on_completed,
            self.reruns,
        );
        if let Some(d) = self.orphan_delay {
            let _ = write!(line, " worst_orphan_delay_ms={}", d.as_millis());
        }
        line
    }

    /// Prints [`Report::line`] (to stderr, which the test harness shows with `--nocapture`
    /// and for failing tests).
    pub fn print(&self) {
        eprintln!("{}", self.line());
    }

    /// Asserts the outcome every transient fault must have: every workflow completed, and
    /// nothing lost, duplicated, unexpected or stuck.
    pub fn assert_all_completed(&self) {
        assert!(
            self.completed == self.workflows
                && self.lost == 0
                && self.duplicated == 0
                && self.unexpected == 0
                && self.stuck == 0,
            "{}\nproblems: {:#?}",
            self.line(),
            self.problems
        );
    }

    /// Asserts that no task that completed spent an attempt on the way (the fault was not the
    /// task's fault).
    pub fn assert_no_attempt_spent(&self) {
        assert_eq!(
            self.attempts_on_completed,
            0,
            "{}\nproblems: {:#?}",
            self.line(),
            self.problems
        );
    }
}

/// Waits for each workflow's end event, all within one [`HANG_GUARD`] from now; the final
/// status of each (`None`: not ended by then).
pub async fn drain(store: &Store, ids: &[String]) -> Vec<Option<String>> {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let status = match store.wait_finished_until(id, deadline).await {
            Some(status) => Some(status),
            // Past the deadline: what the hash says now.
            None => store
                .workflow(id)
                .await
                .get("status")
                .filter(|s| WORKFLOW_TERMINAL.contains(&s.as_str()))
                .cloned(),
        };
        out.push(status);
    }
    out
}

/// Drains (see [`drain`]) and counts. `ids[i]` is the id `workload.workflows[i]` was
/// submitted under; `sims` are every simulator the workers called.
pub async fn check(
    scenario: &str,
    store: &Store,
    workload: &Workload,
    ids: &[String],
    sims: &[&SimServer],
) -> Report {
    assert_eq!(ids.len(), workload.workflows.len(), "one id per workflow");
    let ends = drain(store, ids).await;
    let mut r = Report {
        scenario: scenario.to_owned(),
        seed: workload.seed,
        workflows: workload.workflows.len(),
        tasks: workload.task_count(),
        ..Report::default()
    };

    // Calls per task marker, over every simulator.
    let mut calls: HashMap<String, u64> = HashMap::new();
    let known: HashMap<&str, ()> = workload
        .workflows
        .iter()
        .flat_map(|w| w.tasks.iter().map(|t| (t.marker.as_str(), ())))
        .collect();
    for sim in sims {
        for prompt in prompts(sim) {
            match marker_of(&prompt) {
                Some(m) if known.contains_key(m) => *calls.entry(m.to_owned()).or_default() += 1,
                _ => {
                    r.unexpected += 1;
                    r.problem(format!("a call for no task of the workload: {prompt:?}"));
                }
            }
        }
    }
    r.reruns = calls.values().map(|n| n.saturating_sub(1)).sum();

    for ((wf, id), end) in workload.workflows.iter().zip(ids).zip(ends) {
        let meta = store.workflow(id).await;
        if meta.is_empty() {
            r.lost += 1;
            r.problem(format!("{} ({id}): workflow hash missing", wf.label));
            continue;
        }
        match end.as_deref() {
            Some("completed") => r.completed += 1,
            Some("failed") => r.failed += 1,
            Some("cancelled") => r.cancelled += 1,
            _ => {
                r.stuck += 1;
                r.problem(format!("{} ({id}): not ended: {meta:?}", wf.label));
            }
        }
        let ended = end.is_some();
        let completions = store.completions(id).await;
        let mut results: HashMap<&str, String> = HashMap::new();
        let mut completed_tasks = 0u64;
        let mut hashes = Vec::with_capacity(wf.tasks.len());
        let mut stored = store.tasks(id).await.into_iter();
        for t in &wf.tasks {
            let hash = stored.next().unwrap_or_default();
            let num = |f: &str| hash.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            r.attempts_spent += num("attempts");
            r.deferrals += num("deferrals");
            if hash.is_empty() {
                r.lost += 1;
                r.problem(format!("{} task {}: fields missing", wf.label, t.name));
                hashes.push(hash);
                continue;
            }
            let status = hash.get("status").map(String::as_str).unwrap_or("");
            if ended && !matches!(status, "completed" | "failed" | "skipped" | "cancelled") {
                r.lost += 1;
                r.problem(format!(
                    "{} task {}: status {status:?} after the workflow ended",
                    wf.label, t.name
                ));
            }
            let n = completions.get(&t.name).copied().unwrap_or(0);
            if n > 1 {
                r.duplicated += n - 1;
                r.problem(format!(
                    "{} task {}: {n} completed events",
                    wf.label, t.name
                ));
            }
            if status == "completed" {
                completed_tasks += 1;
                r.attempts_on_completed += num("attempts");
                match hash
                    .get("result")
                    .map(|raw| serde_json::from_str::<Value>(raw))
                {
                    Some(Ok(v)) => {
                        results.insert(t.name.as_str(), result_value(&v));
                    }
                    _ => {
                        r.lost += 1;
                        r.problem(format!(
                            "{} task {}: completed without a result",
                            wf.label, t.name
                        ));
                    }
                }
            }
            hashes.push(hash);
        }
        let counter = meta
            .get("completed")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if counter > completed_tasks {
            r.duplicated += (counter - completed_tasks) as usize;
            r.problem(format!(
                "{} ({id}): completed counter {counter} but {completed_tasks} tasks completed",
                wf.label
            ));
        }

        // Each stored result answers its own task.
        for t in &wf.tasks {
            let Some(got) = results.get(t.name.as_str()) else {
                continue;
            };
            match &t.body {
                Body::Llm(parts) => {
                    if calls.get(&t.marker).copied().unwrap_or(0) == 0 {
                        r.unexpected += 1;
                        r.problem(format!("{}: a result without a call", t.marker));
                    }
                    let want = expected_echo(parts, |p| results.get(p).map(String::as_str));
                    if let Some(want) = want {
                        if *got != want {
                            r.unexpected += 1;
                            r.problem(format!("{}: result {got:?}, expected {want:?}", t.marker));
                        }
                    }
                }
                Body::External { .. } => {
                    let answered: Option<Value> = serde_json::from_str(got).ok();
                    let marker = answered
                        .as_ref()
                        .and_then(|v| v.get("marker"))
                        .and_then(Value::as_str);
                    if marker != Some(t.marker.as_str()) {
                        r.unexpected += 1;
                        r.problem(format!("{}: external result {got}", t.marker));
                    }
                }
            }
        }
    }
    r
}

/// A stored result's `value`: text as is, anything else as JSON text.
fn result_value(result: &Value) -> String {
    match result.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}
