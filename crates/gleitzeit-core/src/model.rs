//! The validated workflow model: what a workflow file means once every rule has been checked.
//!
//! These types are the contract between the submitter and the workers. A [`Task`] is
//! serialised to JSON and stored in Redis as the task's `spec`; workers decode it with
//! `serde_json`. The JSON shape of a `Task` (and of a [`Workflow`]) is exactly the workflow file
//! format with every default filled in, so a serialised workflow validates back to itself.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::duration::serde_duration;
use crate::retry::RetryPolicy;

/// A validated workflow: named tasks with their resolved dependencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// Display name, 1..=`Limits::max_name_len` characters.
    pub name: String,
    /// Free text shown to operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Workflow input after command-line overrides; `{{input.key}}` reads from it.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub input: Map<String, Value>,
    /// What a terminal task failure does to the rest of the workflow.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// How long the workflow's keys stay in Redis after it ends (results, events, the
    /// idempotency key). `None`: the submitter's default (`gleitzeit-submit --retention`,
    /// 24 h unless set).
    #[serde(
        default,
        with = "crate::duration::serde_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub retention: Option<Duration>,
    /// Tasks in file order; a task's index in this list is its id inside the workflow.
    pub tasks: Vec<Task>,
}

impl Workflow {
    /// The workflow as compact JSON in the file format (validates back to an equal workflow).
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys into JSON cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The workflow as pretty-printed JSON in the file format.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The workflow as YAML in the file format.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        serde_yaml_ng::to_string(self)
    }

    /// The index of the task with this name.
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }
}

/// One validated task. Its JSON is the `spec` stored in Redis and decoded by workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique name inside the workflow (see `names::check_task_name` for the rules).
    pub name: String,
    /// What to run; serialised flat with a `type` tag, as in the file.
    #[serde(flatten)]
    pub action: Action,
    /// Names of the tasks this one waits for: the explicit ones together with those its
    /// templates reference, in file order of the tasks, without duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// Retry policy after merging task, workflow defaults and built-in defaults.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Upper bound for one attempt.
    #[serde(with = "serde_duration", default = "default_timeout")]
    pub timeout: Duration,
    /// Queue priority.
    #[serde(default)]
    pub priority: Priority,
    /// Per-task override of the workflow's failure policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<FailurePolicy>,
    /// How the worker routes this LLM task over the endpoints, overriding the deployment's
    /// routing settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<TaskRouting>,
}

/// Per-task routing settings of an LLM task: which endpoints may take it (`tag`,
/// `provider`) and how one is chosen among them (`strategy`). Workflows name models, never
/// URLs; these narrow the deployment's endpoints without naming one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRouting {
    /// Endpoint selection strategy, one of [`ROUTING_STRATEGIES`]; `None` = the deployment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Only endpoints carrying this tag (the worker's `routing.endpoints.<name>.tags`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Only endpoints of this kind, one of [`ROUTING_PROVIDERS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// The routing strategies a task may name (the worker's `routing.strategy` values).
pub const ROUTING_STRATEGIES: &[&str] = &[
    "round_robin",
    "least_loaded",
    "priority",
    "fastest",
    "model_affinity",
];

/// The endpoint kinds a task may select with `routing.provider` (the worker's endpoint
/// `kind` values).
pub const ROUTING_PROVIDERS: &[&str] = &["ollama", "openai", "anthropic"];

/// The built-in per-attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// What a task does. LLM actions name a model; external actions name a service and function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// One completion from a prompt.
    Text {
        /// Model name as endpoints know it.
        model: String,
        /// Prompt text (templated).
        prompt: String,
        /// System prompt (templated).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<String>,
        /// Sampling options.
        #[serde(default, skip_serializing_if = "LlmOptions::is_default")]
        options: LlmOptions,
    },
    /// One reply to a conversation.
    Chat {
        /// Model name as endpoints know it.
        model: String,
        /// Conversation so far (contents templated).
        messages: Vec<ChatMessage>,
        /// System prompt (templated).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<String>,
        /// Sampling options.
        #[serde(default, skip_serializing_if = "LlmOptions::is_default")]
        options: LlmOptions,
    },
    /// A completion about one or more images.
    Vision {
        /// Model name as endpoints know it.
        model: String,
        /// Prompt text (templated).
        prompt: String,
        /// Images as raw base64 (no `data:` prefix); templated entries are rendered first.
        images: Vec<String>,
        /// System prompt (templated).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<String>,
        /// Sampling options.
        #[serde(default, skip_serializing_if = "LlmOptions::is_default")]
        options: LlmOptions,
    },
    /// An embedding vector of the prompt.
    Embed {
        /// Model name as endpoints know it.
        model: String,
        /// Text to embed (templated).
        prompt: String,
        /// Model options.
        #[serde(default, skip_serializing_if = "LlmOptions::is_default")]
        options: LlmOptions,
    },
    /// A function of an external task service.
    External {
        /// Service name, e.g. `Python Tasks`.
        service: String,
        /// Function name registered by the service.
        function: String,
        /// Positional arguments (string leaves templated).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<Value>,
        /// Keyword arguments (string leaves templated).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        kwargs: Map<String, Value>,
    },
}

impl Action {
    /// The model an LLM action runs on; `None` for external actions.
    pub fn model(&self) -> Option<&str> {
        match self {
            Action::Text { model, .. }
            | Action::Chat { model, .. }
            | Action::Vision { model, .. }
            | Action::Embed { model, .. } => Some(model),
            Action::External { .. } => None,
        }
    }

    /// The task type of this action.
    pub fn kind(&self) -> TaskType {
        match self {
            Action::Text { .. } => TaskType::Text,
            Action::Chat { .. } => TaskType::Chat,
            Action::Vision { .. } => TaskType::Vision,
            Action::Embed { .. } => TaskType::Embed,
            Action::External { .. } => TaskType::External,
        }
    }

    /// The LLM options of an LLM action; `None` for external actions.
    pub fn options(&self) -> Option<&LlmOptions> {
        match self {
            Action::Text { options, .. }
            | Action::Chat { options, .. }
            | Action::Vision { options, .. }
            | Action::Embed { options, .. } => Some(options),
            Action::External { .. } => None,
        }
    }
}

/// The capability (stream name suffix) a task is queued on: `llm:<model>` or `ext:<service>`.
pub fn capability(action: &Action) -> String {
    match action {
        Action::External { service, .. } => format!("ext:{service}"),
        other => format!("llm:{}", other.model().unwrap_or_default()),
    }
}

/// Sampling options for LLM tasks. Unset fields leave the endpoint's defaults in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmOptions {
    /// Sampling temperature, 0..=2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Upper bound of generated tokens, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling seed for reproducible output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop sequences (non-empty strings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Ask the endpoint for JSON output.
    #[serde(default, skip_serializing_if = "is_false")]
    pub json: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl LlmOptions {
    /// True when no option is set (the endpoint's defaults apply).
    pub fn is_default(&self) -> bool {
        *self == LlmOptions::default()
    }
}

/// One message of a chat task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said (templated).
    pub content: String,
}

/// The speaker of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user.
    User,
    /// The model's earlier replies.
    Assistant,
}

impl Role {
    /// The name used in files and provider APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// What a terminal task failure does to the rest of the workflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Fail the workflow at once and cancel every task that has not started.
    #[default]
    FailFast,
    /// Keep running independent branches; the failed task's descendants are skipped.
    Continue,
}

impl FailurePolicy {
    /// The name used in files and in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailFast => "fail_fast",
            FailurePolicy::Continue => "continue",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scheduling priority of a task: which of a capability's three streams it is queued on.
/// Workers read high before normal before low.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Read before normal and low.
    High,
    /// The default.
    #[default]
    Normal,
    /// Read last.
    Low,
}

impl Priority {
    /// All priorities in read order.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The name used in files, in the stored tasks and in scripts (`high`, `normal`, `low`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A priority name that is not `high`, `normal` or `low`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority {0:?} (expected high, normal or low)")]
pub struct UnknownPriority(pub String);

impl std::str::FromStr for Priority {
    type Err = UnknownPriority;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPriority(s.to_owned()))
    }
}

/// The kind of a task, as written in the file's `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// `text`: completion from a prompt.
    Text,
    /// `chat`: reply to messages.
    Chat,
    /// `vision`: completion about images.
    Vision,
    /// `embed`: embedding vector.
    Embed,
    /// `external`: function of a task service.
    External,
}

impl TaskType {
    /// Every task type, in documentation order.
    pub const ALL: [TaskType; 5] = [
        TaskType::Text,
        TaskType::Chat,
        TaskType::Vision,
        TaskType::Embed,
        TaskType::External,
    ];

    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Text => "text",
            TaskType::Chat => "chat",
            TaskType::Vision => "vision",
            TaskType::Embed => "embed",
            TaskType::External => "external",
        }
    }

    /// True for the types served by LLM endpoints.
    pub fn is_llm(self) -> bool {
        !matches!(self, TaskType::External)
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
