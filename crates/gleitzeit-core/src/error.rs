//! Validation errors: every problem of a workflow, each with the path of the offending field.
//!
//! Validation never stops at the first problem; callers get a `Vec<ValidationError>` with all
//! of them. No validation error can be fixed by retrying: the workflow text has to change.

use serde::Serialize;

/// One problem found in a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// Where the problem is, e.g. `tasks[2] (Summarize).dependencies[0]`, `defaults.retry`,
    /// or `line 3, column 7` for syntax errors.
    pub path: String,
    /// Which rule was broken.
    pub kind: ErrorKind,
    /// What is wrong, for humans.
    pub message: String,
}

impl ValidationError {
    /// Builds an error.
    pub fn new(path: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        ValidationError {
            path: path.into(),
            kind,
            message: message.into(),
        }
    }
}

/// The rule a [`ValidationError`] reports; one variant per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text is not valid YAML/JSON.
    Syntax,
    /// The workflow file could not be read.
    UnreadableFile,
    /// A value has the wrong JSON type (e.g. a number where a string is expected).
    WrongType,
    /// A value is not one of the allowed words (task type, priority, role, ...).
    InvalidValue,
    /// A field that no workflow, task, retry or options object has.
    UnknownField,
    /// A task field that exists, but not for this task type (e.g. `messages` on a text task).
    FieldNotForType,
    /// A required field is absent.
    MissingField,
    /// A required text or list is empty (prompt, messages, images).
    EmptyValue,
    /// The task list is empty.
    EmptyTasks,
    /// Two tasks have the same name.
    DuplicateName,
    /// A workflow or task name breaks the naming rules.
    InvalidName,
    /// A model name contains braces, control characters or whitespace, or is empty.
    InvalidModelName,
    /// A service name contains braces or control characters, or is empty.
    InvalidServiceName,
    /// A function name contains control characters.
    InvalidFunctionName,
    /// A dependency names no task.
    UnknownDependency,
    /// A task lists itself as a dependency.
    SelfDependency,
    /// The explicit dependencies form a cycle.
    Cycle,
    /// A template is not well formed.
    MalformedTemplate,
    /// A template references a task that does not exist.
    UnknownTaskReference,
    /// A template references an input key that the (overridden) input does not have.
    UnknownInputKey,
    /// An input override names a key the workflow does not declare in `input`.
    UnknownInputOverride,
    /// A template reference (which implies a dependency) would close a cycle.
    ReferenceCycle,
    /// More tasks than `Limits::max_tasks`.
    TooManyTasks,
    /// A task depends on more tasks than `Limits::max_dependencies`.
    TooManyDependencies,
    /// More tasks depend on one task than `Limits::max_dependents`.
    TooManyDependents,
    /// A task's spec JSON exceeds `Limits::max_task_bytes`.
    TaskTooLarge,
    /// The source text exceeds `Limits::max_workflow_bytes`.
    WorkflowTooLarge,
    /// A duration is not a humantime string or a non-negative number of seconds.
    InvalidDuration,
    /// A timeout is zero, negative or above `Limits::max_timeout`.
    InvalidTimeout,
    /// A workflow's `retention` is below one second or above `Limits::max_retention`.
    InvalidRetention,
    /// `retry.max_attempts` is 0 or above `Limits::max_attempts`.
    InvalidMaxAttempts,
    /// `retry.base_delay` is greater than `retry.max_delay`.
    DelayOrder,
    /// An LLM option is outside its range.
    OptionOutOfRange,
    /// An image is neither valid base64 nor (when loading a file) a readable image file.
    InvalidBase64,
    /// An image file could not be read.
    UnreadableImage,
    /// A builder call named a task that was never added.
    UnknownTask,
}
