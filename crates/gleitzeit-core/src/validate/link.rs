//! Cross-task checks, in this order: unique names, explicit dependencies, template references
//! (implied dependencies), cycles, fan-in/out, task sizes. Builds the tasks when every draft
//! is complete.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::checker::Checker;
use super::cycles::report_cycles;
use super::fields::at;
use super::limits::{check_fan, check_task_size};
use super::references::implied_edges;
use super::task::Draft;
use crate::error::ErrorKind;
use crate::model::Task;

/// Links the drafts into tasks; `None` when a draft is incomplete (its problems were
/// reported while it was read).
pub(super) fn link(
    c: &mut Checker<'_>,
    drafts: &[Draft],
    input: &Map<String, Value>,
) -> Option<Vec<Task>> {
    let n = drafts.len();
    let index = name_index(c, drafts);
    let explicit = explicit_edges(c, drafts, &index);
    let implied = implied_edges(c, drafts, &index, input);

    // Final dependencies: explicit ∪ implied, in file order of the tasks.
    let all: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut deps: Vec<usize> = explicit[i]
                .iter()
                .copied()
                .chain(implied[i].iter().map(|x| x.to))
                .collect();
            deps.sort_unstable();
            deps.dedup();
            deps
        })
        .collect();

    report_cycles(c, drafts, &explicit, &implied, &all);
    check_fan(c, drafts, &all);

    let name_of = |i: usize| drafts[i].name.as_deref().unwrap_or("?");
    let mut tasks = Vec::with_capacity(n);
    for (i, d) in drafts.iter().enumerate() {
        let (Some(name), Some(action)) = (&d.name, &d.action) else {
            return None;
        };
        let task = Task {
            name: name.clone(),
            action: action.clone(),
            dependencies: all[i].iter().map(|&j| name_of(j).to_owned()).collect(),
            retry: d.retry.clone(),
            timeout: d.timeout,
            priority: d.priority,
            on_failure: d.on_failure,
            routing: d.routing.clone(),
        };
        check_task_size(c, &d.label, &task);
        tasks.push(task);
    }
    Some(tasks)
}

/// Task name → index of its first task; a repeated name is reported.
fn name_index<'d>(c: &mut Checker<'_>, drafts: &'d [Draft]) -> HashMap<&'d str, usize> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, d) in drafts.iter().enumerate() {
        let Some(name) = d.name.as_deref() else {
            continue;
        };
        match index.get(name) {
            Some(&first) => c.err(
                at(&d.label, "name"),
                ErrorKind::DuplicateName,
                format!(
                    "duplicate task name {name:?}: tasks[{first}] and tasks[{i}] have the same name"
                ),
            ),
            None => {
                index.insert(name, i);
            }
        }
    }
    index
}

/// Explicit edges: task → the tasks it depends on (each once), after reporting unknown
/// dependencies and a task depending on itself.
fn explicit_edges(
    c: &mut Checker<'_>,
    drafts: &[Draft],
    index: &HashMap<&str, usize>,
) -> Vec<Vec<usize>> {
    let n = drafts.len();
    let mut explicit: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in drafts.iter().enumerate() {
        for (path, dep) in &d.deps {
            match index.get(dep.as_str()) {
                None => c.err(
                    path.clone(),
                    ErrorKind::UnknownDependency,
                    format!("unknown dependency {dep:?}: no task has this name"),
                ),
                Some(&j) if j == i => c.err(
                    path.clone(),
                    ErrorKind::SelfDependency,
                    format!("task {dep:?} depends on itself"),
                ),
                Some(&j) => {
                    if !explicit[i].contains(&j) {
                        explicit[i].push(j);
                    }
                }
            }
        }
    }
    explicit
}
