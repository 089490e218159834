//! The entry point: [`validate`] checks the workflow's own fields, reads every task and links
//! them, returning the [`Workflow`] or every problem found.

use serde_json::{Map, Value};

use super::checker::Checker;
use super::fields::{at, declared_keys, field, POLICIES, WORKFLOW_FIELDS};
use super::link::link;
use super::task::Draft;
use crate::error::{ErrorKind, ValidationError};
use crate::limits::Limits;
use crate::model::Workflow;
use crate::names;

/// Validates a parsed workflow (see [`crate::parse_workflow`]) and builds the [`Workflow`].
///
/// `input_overrides` replace values of the workflow's `input`; each key must be declared there.
/// Every problem is reported, each with its path. Image strings must be base64 here; file
/// paths are resolved by [`crate::load_file`] before validation.
pub fn validate(
    file: &Value,
    input_overrides: &Map<String, Value>,
    limits: &Limits,
) -> Result<Workflow, Vec<ValidationError>> {
    let mut c = Checker {
        errs: Vec::new(),
        limits,
    };
    let Value::Object(root) = file else {
        c.wrong_type(
            "workflow".to_owned(),
            "a mapping with `name` and `tasks`",
            file,
        );
        return Err(c.errs);
    };
    c.check_fields(root, WORKFLOW_FIELDS, "", "the workflow");

    let name = c.required_string(root, "name", "", "the workflow's name");
    if let Some(n) = &name {
        if let Err(msg) = names::check_workflow_name(n, limits.max_name_len) {
            c.err("name", ErrorKind::InvalidName, msg);
        }
    }
    let description = c.string(root, "description", "");
    let mut input = match field(root, "input") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            c.wrong_type("input".to_owned(), "a mapping of input values", other);
            Map::new()
        }
    };
    for (key, value) in input_overrides {
        if input.contains_key(key) {
            input.insert(key.clone(), value.clone());
        } else {
            c.err(
                at("input", key),
                ErrorKind::UnknownInputOverride,
                format!(
                    "input override `{key}` is not declared in the workflow's `input` ({})",
                    declared_keys(&input)
                ),
            );
        }
    }
    let failure_policy = c
        .word(root, "failure_policy", "", POLICIES)
        .unwrap_or_default();
    let retention = field(root, "retention").and_then(|v| c.retention(v, "retention".to_owned()));
    let defaults = c.defaults(field(root, "defaults"));

    let task_values: &[Value] = match field(root, "tasks") {
        None => {
            c.err(
                "tasks",
                ErrorKind::MissingField,
                "missing field `tasks` (a list of tasks)",
            );
            &[]
        }
        Some(Value::Array(items)) => {
            if items.is_empty() {
                c.err("tasks", ErrorKind::EmptyTasks, "the task list is empty");
            }
            if items.len() > limits.max_tasks {
                c.err(
                    "tasks",
                    ErrorKind::TooManyTasks,
                    format!(
                        "the workflow has {} tasks; at most {} are allowed",
                        items.len(),
                        limits.max_tasks
                    ),
                );
            }
            items
        }
        Some(other) => {
            c.wrong_type("tasks".to_owned(), "a list of tasks", other);
            &[]
        }
    };

    let drafts: Vec<Draft> = task_values
        .iter()
        .enumerate()
        .map(|(i, v)| c.task(i, v, &defaults))
        .collect();

    let tasks = link(&mut c, &drafts, &input);

    if !c.errs.is_empty() {
        return Err(c.errs);
    }
    match (name, tasks) {
        (Some(name), Some(tasks)) => Ok(Workflow {
            name,
            description,
            input,
            failure_policy,
            retention,
            tasks,
        }),
        // Unreachable in practice: every `None` above came with an error.
        _ => Err(vec![ValidationError::new(
            "workflow",
            ErrorKind::MissingField,
            "the workflow is incomplete",
        )]),
    }
}
