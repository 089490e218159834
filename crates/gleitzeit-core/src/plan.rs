//! Planning: turning a validated [`Workflow`] into what the submit script writes to Redis —
//! task indices, dependency and dependent indices, referenced results, capabilities and the
//! spec JSON of each task — plus a digest that identifies the workflow's content.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::graph::cyclic_components;
use crate::model::{capability, FailurePolicy, Priority, Workflow};
use crate::template::references;

/// A workflow laid out for submission.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// SHA-256 (hex) of the canonical JSON of the workflow, input included.
    pub digest: String,
    /// One entry per task, in file order (`tasks[i].index == i`).
    pub tasks: Vec<PlannedTask>,
}

impl Plan {
    /// Tasks without dependencies: released at submission.
    pub fn roots(&self) -> impl Iterator<Item = &PlannedTask> {
        self.tasks.iter().filter(|t| t.dependencies.is_empty())
    }

    /// Every capability the workflow needs, sorted, without duplicates.
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = self.tasks.iter().map(|t| t.capability.clone()).collect();
        caps.sort();
        caps.dedup();
        caps
    }
}

/// One task laid out for submission.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedTask {
    /// Position in the file; the task's id within the workflow.
    pub index: u32,
    /// Task name.
    pub name: String,
    /// Stream the task is queued on (`llm:<model>` / `ext:<service>`).
    pub capability: String,
    /// Queue priority.
    pub priority: Priority,
    /// Indices of the tasks it waits for, ascending.
    pub dependencies: Vec<u32>,
    /// Indices of the tasks that wait for it, ascending.
    pub children: Vec<u32>,
    /// Indices of the tasks whose results its templates reference, ascending.
    pub refs: Vec<u32>,
    /// Total attempts allowed.
    pub max_attempts: u32,
    /// Per-task failure policy override.
    pub on_failure: Option<FailurePolicy>,
    /// The task serialised as JSON: the `spec` workers decode.
    pub spec_json: String,
}

/// Why a workflow cannot be planned. Only workflows built without [`crate::validate`] can
/// fail here; the workflow must be fixed, retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The workflow has no tasks.
    #[error("the workflow has no tasks")]
    NoTasks,
    /// More tasks than indices can address.
    #[error("the workflow has {0} tasks, too many to index")]
    TooManyTasks(usize),
    /// Two tasks share a name.
    #[error("duplicate task name {0:?}")]
    DuplicateTask(String),
    /// A dependency names no task.
    #[error("task {task:?} depends on unknown task {dependency:?}")]
    UnknownDependency {
        /// The depending task.
        task: String,
        /// The missing dependency.
        dependency: String,
    },
    /// A template references a task that is not among the task's dependencies.
    #[error("task {task:?} references the result of {reference:?}, which is not one of its dependencies")]
    ReferenceNotDependency {
        /// The referencing task.
        task: String,
        /// The referenced task.
        reference: String,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle through task {0:?}")]
    Cycle(String),
    /// A task could not be serialised.
    #[error("task {task:?} cannot be serialised: {message}")]
    Serialize {
        /// The task.
        task: String,
        /// The serialiser's message.
        message: String,
    },
}

/// Lays out a workflow for submission. Checks again what the queue relies on (unique names,
/// known dependencies, references among dependencies, no cycle), so a hand-built workflow can
/// never deadlock in Redis.
pub fn plan(wf: &Workflow) -> Result<Plan, PlanError> {
    let n = wf.tasks.len();
    if n == 0 {
        return Err(PlanError::NoTasks);
    }
    if u32::try_from(n).is_err() {
        return Err(PlanError::TooManyTasks(n));
    }
    let idx = |i: usize| i as u32; // fits: checked above
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (i, t) in wf.tasks.iter().enumerate() {
        if index.insert(t.name.as_str(), i).is_some() {
            return Err(PlanError::DuplicateTask(t.name.clone()));
        }
    }
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(n);
    for (i, t) in wf.tasks.iter().enumerate() {
        let mut d = Vec::with_capacity(t.dependencies.len());
        for name in &t.dependencies {
            match index.get(name.as_str()) {
                Some(&j) => d.push(j),
                None => {
                    return Err(PlanError::UnknownDependency {
                        task: t.name.clone(),
                        dependency: name.clone(),
                    })
                }
            }
        }
        d.sort_unstable();
        d.dedup();
        if d.contains(&i) {
            return Err(PlanError::Cycle(t.name.clone()));
        }
        deps.push(d);
    }
    if let Some(scc) = cyclic_components(&deps).first() {
        return Err(PlanError::Cycle(wf.tasks[scc[0]].name.clone()));
    }
    let mut children: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            children[j].push(idx(i));
        }
    }
    let mut tasks = Vec::with_capacity(n);
    for (i, t) in wf.tasks.iter().enumerate() {
        let mut refs: Vec<u32> = Vec::new();
        for r in references(t) {
            let Some(name) = r.task() else { continue };
            match index.get(name) {
                Some(&j) if deps[i].contains(&j) => refs.push(idx(j)),
                _ => {
                    return Err(PlanError::ReferenceNotDependency {
                        task: t.name.clone(),
                        reference: name.to_owned(),
                    })
                }
            }
        }
        refs.sort_unstable();
        refs.dedup();
        let spec_json = serde_json::to_string(t).map_err(|e| PlanError::Serialize {
            task: t.name.clone(),
            message: e.to_string(),
        })?;
        tasks.push(PlannedTask {
            index: idx(i),
            name: t.name.clone(),
            capability: capability(&t.action),
            priority: t.priority,
            dependencies: deps[i].iter().map(|&j| idx(j)).collect(),
            children: std::mem::take(&mut children[i]),
            refs,
            max_attempts: t.retry.max_attempts,
            on_failure: t.on_failure,
            spec_json,
        });
    }
    Ok(Plan {
        digest: digest(wf),
        tasks,
    })
}

/// SHA-256 (hex) of the workflow's canonical JSON: object keys sorted, no whitespace. Equal
/// workflows give equal digests whatever the order of keys in the source; any change of a
/// name, field, value, input or task order gives a different one.
pub fn digest(wf: &Workflow) -> String {
    let value = serde_json::to_value(wf).unwrap_or(Value::Null);
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Canonical JSON with sorted keys, independent of serde_json's map ordering feature.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
