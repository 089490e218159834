//! The limits that involve more than one field: fan-in and fan-out of the dependency graph, and
//! the size of a task's spec.

use super::checker::Checker;
use super::fields::at;
use super::task::Draft;
use crate::error::ErrorKind;
use crate::model::Task;

/// Reports tasks with more dependencies (`all`, template references included) or more
/// dependents than the limits allow.
pub(super) fn check_fan(c: &mut Checker<'_>, drafts: &[Draft], all: &[Vec<usize>]) {
    let mut children = vec![0usize; all.len()];
    for (i, deps) in all.iter().enumerate() {
        if deps.len() > c.limits.max_dependencies {
            c.err(
                at(&drafts[i].label, "dependencies"),
                ErrorKind::TooManyDependencies,
                format!(
                    "the task depends on {} tasks (including template references); at most {} \
                     are allowed",
                    deps.len(),
                    c.limits.max_dependencies
                ),
            );
        }
        for &j in deps {
            children[j] += 1;
        }
    }
    for (j, &count) in children.iter().enumerate() {
        if count > c.limits.max_dependents {
            c.err(
                drafts[j].label.clone(),
                ErrorKind::TooManyDependents,
                format!(
                    "{count} tasks depend on this task; at most {} are allowed",
                    c.limits.max_dependents
                ),
            );
        }
    }
}

/// Reports a task whose spec, as JSON, is larger than the limit.
pub(super) fn check_task_size(c: &mut Checker<'_>, label: &str, task: &Task) {
    let size = serde_json::to_vec(task).map_or(usize::MAX, |v| v.len());
    if size > c.limits.max_task_bytes {
        c.err(
            label.to_owned(),
            ErrorKind::TaskTooLarge,
            format!(
                "the task's spec is {size} bytes as JSON; at most {} are allowed",
                c.limits.max_task_bytes
            ),
        );
    }
}
