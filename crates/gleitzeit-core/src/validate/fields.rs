//! The workflow file's vocabulary (allowed fields, enum words) and the small helpers every
//! check uses to read a raw value and to name a field's path in an error.

use serde_json::{Map, Value};

use crate::model::{FailurePolicy, Priority, Role, TaskType};
use crate::retry::Backoff;

pub(super) const WORKFLOW_FIELDS: &[&str] = &[
    "name",
    "description",
    "input",
    "failure_policy",
    "retention",
    "defaults",
    "tasks",
];
pub(super) const DEFAULTS_FIELDS: &[&str] = &["model", "timeout", "retry", "priority", "options"];
pub(super) const RETRY_FIELDS: &[&str] = &[
    "max_attempts",
    "backoff",
    "base_delay",
    "max_delay",
    "jitter",
    "wait_limit",
];
pub(super) const OPTION_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "seed",
    "stop",
    "json",
];
pub(super) const MESSAGE_FIELDS: &[&str] = &["role", "content"];
pub(super) const ROUTING_FIELDS: &[&str] = &["strategy", "tag", "provider"];
pub(super) const COMMON_TASK_FIELDS: &[&str] = &[
    "name",
    "type",
    "dependencies",
    "retry",
    "timeout",
    "priority",
    "on_failure",
];
/// Every type-specific task field, in documentation order.
pub(super) const TYPE_TASK_FIELDS: &[&str] = &[
    "model", "prompt", "system", "messages", "images", "options", "routing", "service", "function",
    "args", "kwargs",
];

/// The fields a task of this type may have besides [`COMMON_TASK_FIELDS`].
pub(super) fn type_fields(t: TaskType) -> &'static [&'static str] {
    match t {
        TaskType::Text => &["model", "prompt", "system", "options", "routing"],
        TaskType::Chat => &["model", "messages", "system", "options", "routing"],
        TaskType::Vision => &["model", "prompt", "images", "system", "options", "routing"],
        TaskType::Embed => &["model", "prompt", "options", "routing"],
        TaskType::External => &["service", "function", "args", "kwargs"],
    }
}

pub(super) const TASK_TYPES: &[(&str, TaskType)] = &[
    ("text", TaskType::Text),
    ("chat", TaskType::Chat),
    ("vision", TaskType::Vision),
    ("embed", TaskType::Embed),
    ("external", TaskType::External),
];
pub(super) const PRIORITIES: &[(&str, Priority)] = &[
    ("high", Priority::High),
    ("normal", Priority::Normal),
    ("low", Priority::Low),
];
pub(super) const POLICIES: &[(&str, FailurePolicy)] = &[
    ("fail_fast", FailurePolicy::FailFast),
    ("continue", FailurePolicy::Continue),
];
pub(super) const BACKOFFS: &[(&str, Backoff)] = &[
    ("fixed", Backoff::Fixed),
    ("linear", Backoff::Linear),
    ("exponential", Backoff::Exponential),
];
pub(super) const ROLES: &[(&str, Role)] = &[
    ("system", Role::System),
    ("user", Role::User),
    ("assistant", Role::Assistant),
];

/// How error paths name task `i`: `tasks[i] (Name)` when it has a string name, else `tasks[i]`.
pub(crate) fn task_label(i: usize, task: &Value) -> String {
    match task.get("name").and_then(Value::as_str) {
        Some(name) => format!("tasks[{i}] ({})", name.escape_debug()),
        None => format!("tasks[{i}]"),
    }
}

/// "a text", "an external", ... for messages.
pub(super) fn a_type(t: TaskType) -> String {
    match t {
        TaskType::External | TaskType::Embed => format!("an {t}"),
        _ => format!("a {t}"),
    }
}

pub(super) fn at(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A field's value; YAML's empty value (`null`) counts as absent.
pub(super) fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

pub(super) fn words<T>(options: &[(&str, T)]) -> String {
    options
        .iter()
        .map(|(w, _)| *w)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the error for an unknown input key lists what the workflow declares.
pub(super) fn declared_keys(input: &Map<String, Value>) -> String {
    if input.is_empty() {
        "the workflow declares no input".to_owned()
    } else {
        format!(
            "declared: {}",
            input.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}
