//! What a worker stores when a task ends: a [`TaskResult`] on success, a [`TaskFailure`] on
//! failure. Both are JSON in the task's hash; templates of later tasks see `TaskResult::value`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The stored result of a completed task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The value templates substitute: text for LLM tasks, a vector for embeddings, any JSON
    /// for external tasks.
    pub value: Value,
    /// How the value was produced (absent when nothing is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ResultMeta>,
}

impl TaskResult {
    /// A result without metadata.
    pub fn new(value: Value) -> Self {
        TaskResult { value, meta: None }
    }
}

/// Facts about the call that produced a result; every field is optional because providers
/// report different things.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultMeta {
    /// Model that answered (as reported by the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Endpoint name or URL (without credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Tokens in the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Tokens generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// Wall time of the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Time the endpoint spent loading the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<u64>,
    /// Time to the first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
}

/// The stored error of a failed attempt or task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// Class of the failure; decides whether a retry can help.
    pub kind: FailureKind,
    /// Human-readable reason.
    pub message: String,
    /// Structured detail (endpoint, status code, ...), when there is any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

impl TaskFailure {
    /// A failure without detail.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        TaskFailure {
            kind,
            message: message.into(),
            detail: None,
        }
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// Class of a task failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Transient (overload, connection fault); another attempt may succeed.
    Retryable,
    /// The request itself is wrong (bad input, auth, template error); retrying cannot help.
    Permanent,
    /// The attempt exceeded the task's timeout; retried like `Retryable`.
    Timeout,
    /// Delivered too often without finishing (a worker crashed on it each time).
    Poison,
    /// The workflow was cancelled.
    Cancelled,
}

impl FailureKind {
    /// The name stored in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Retryable => "retryable",
            FailureKind::Permanent => "permanent",
            FailureKind::Timeout => "timeout",
            FailureKind::Poison => "poison",
            FailureKind::Cancelled => "cancelled",
        }
    }

    /// True when another attempt may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, FailureKind::Retryable | FailureKind::Timeout)
    }
}
