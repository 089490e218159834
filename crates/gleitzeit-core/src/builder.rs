//! A builder for workflows in code, mirroring the Python client's style:
//!
//! ```
//! use gleitzeit_core::{Limits, WorkflowBuilder};
//! use serde_json::json;
//!
//! let mut wf = WorkflowBuilder::new("Text analysis").input("text", json!("Gleitzeit runs LLM workflows"));
//! wf.add_text_task("Summarize", "llama3.2", "Summarize: {{input.text}}")
//!     .add_external_task("Process", "Python Tasks", "process_data", vec![json!("{{Summarize.result}}")])
//!     .depends_on("Process", &["Summarize"]);
//! let workflow = wf.build(&Limits::default()).expect("valid workflow");
//! assert_eq!(workflow.tasks[1].dependencies, vec!["Summarize".to_owned()]);
//! ```
//!
//! Workflow-level settings take and return the builder by value (so `new(..).input(..)` can
//! start a chain); tasks are added and adjusted through `&mut` methods that name the task.
//! The builder writes the same document a workflow file would contain and [`build`] runs the
//! same validation, so a built workflow is identical to the equivalent file's. Images are
//! base64 strings here (files are only resolved when loading a workflow file).
//!
//! [`build`]: WorkflowBuilder::build

use std::time::Duration;

use serde_json::{Map, Value};

use crate::duration::format_duration;
use crate::error::{ErrorKind, ValidationError};
use crate::limits::Limits;
use crate::model::{ChatMessage, FailurePolicy, LlmOptions, Priority, Workflow};
use crate::retry::RetryPolicy;
use crate::validate::validate;

/// Builds a [`Workflow`]; see the module documentation.
#[derive(Debug, Clone)]
pub struct WorkflowBuilder {
    name: String,
    description: Option<String>,
    input: Map<String, Value>,
    failure_policy: Option<FailurePolicy>,
    retention: Option<Duration>,
    defaults: Map<String, Value>,
    tasks: Vec<Map<String, Value>>,
    /// Calls that named a task that was never added; reported by `build`.
    errors: Vec<ValidationError>,
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // The model types serialise to JSON without failure (string keys, finite numbers).
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl WorkflowBuilder {
    /// Starts a workflow with this name.
    pub fn new(name: impl Into<String>) -> Self {
        WorkflowBuilder {
            name: name.into(),
            description: None,
            input: Map::new(),
            failure_policy: None,
            retention: None,
            defaults: Map::new(),
            tasks: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Declares an input value (`{{input.key}}`).
    pub fn input(mut self, key: impl Into<String>, value: Value) -> Self {
        self.input.insert(key.into(), value);
        self
    }

    /// Sets the workflow's failure policy (default `fail_fast`).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = Some(policy);
        self
    }

    /// How long the workflow's keys stay in Redis after it ends (default: the submitter's).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Model for LLM tasks added with an empty model name.
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.defaults
            .insert("model".into(), Value::String(model.into()));
        self
    }

    /// Timeout for tasks that set none.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.defaults
            .insert("timeout".into(), Value::String(format_duration(timeout)));
        self
    }

    /// Retry policy for tasks that set none.
    pub fn default_retry(mut self, retry: RetryPolicy) -> Self {
        self.defaults.insert("retry".into(), to_value(&retry));
        self
    }

    /// Priority for tasks that set none.
    pub fn default_priority(mut self, priority: Priority) -> Self {
        self.defaults
            .insert("priority".into(), Value::String(priority.as_str().into()));
        self
    }

    /// LLM options merged under every LLM task's own options.
    pub fn default_options(mut self, options: LlmOptions) -> Self {
        self.defaults.insert("options".into(), to_value(&options));
        self
    }

    fn add(&mut self, name: &str, kind: &str, fields: Vec<(&str, Value)>) -> &mut Self {
        let mut task = Map::new();
        task.insert("name".into(), Value::String(name.to_owned()));
        task.insert("type".into(), Value::String(kind.to_owned()));
        for (k, v) in fields {
            task.insert(k.to_owned(), v);
        }
        self.tasks.push(task);
        self
    }

    fn model_field(model: String) -> Vec<(&'static str, Value)> {
        if model.is_empty() {
            Vec::new()
        } else {
            vec![("model", Value::String(model))]
        }
    }

    /// Adds a text task. An empty `model` means "use [`default_model`](Self::default_model)".
    pub fn add_text_task(
        &mut self,
        name: &str,
        model: impl Into<String>,
        prompt: impl Into<String>,
    ) -> &mut Self {
        let mut fields = Self::model_field(model.into());
        fields.push(("prompt", Value::String(prompt.into())));
        self.add(name, "text", fields)
    }

    /// Adds a chat task.
    pub fn add_chat_task(
        &mut self,
        name: &str,
        model: impl Into<String>,
        messages: Vec<ChatMessage>,
    ) -> &mut Self {
        let mut fields = Self::model_field(model.into());
        fields.push(("messages", to_value(&messages)));
        self.add(name, "chat", fields)
    }

    /// Adds a vision task; `images` are base64 strings (or templates).
    pub fn add_vision_task(
        &mut self,
        name: &str,
        model: impl Into<String>,
        prompt: impl Into<String>,
        images: Vec<String>,
    ) -> &mut Self {
        let mut fields = Self::model_field(model.into());
        fields.push(("prompt", Value::String(prompt.into())));
        fields.push(("images", to_value(&images)));
        self.add(name, "vision", fields)
    }

    /// Adds an embedding task.
    pub fn add_embed_task(
        &mut self,
        name: &str,
        model: impl Into<String>,
        prompt: impl Into<String>,
    ) -> &mut Self {
        let mut fields = Self::model_field(model.into());
        fields.push(("prompt", Value::String(prompt.into())));
        self.add(name, "embed", fields)
    }

    /// Adds an external task calling `function` of `service` with positional `args`.
    pub fn add_external_task(
        &mut self,
        name: &str,
        service: impl Into<String>,
        function: impl Into<String>,
        args: Vec<Value>,
    ) -> &mut Self {
        let mut fields = vec![
            ("service", Value::String(service.into())),
            ("function", Value::String(function.into())),
        ];
        if !args.is_empty() {
            fields.push(("args", Value::Array(args)));
        }
        self.add(name, "external", fields)
    }

    /// The most recently added task with this name; records an error when there is none.
    fn task_mut(&mut self, task: &str, method: &str) -> Option<&mut Map<String, Value>> {
        let found = self
            .tasks
            .iter()
            .rposition(|t| t.get("name").and_then(Value::as_str) == Some(task));
        match found {
            Some(i) => self.tasks.get_mut(i),
            None => {
                self.errors.push(ValidationError::new(
                    format!("{method}({task:?})"),
                    ErrorKind::UnknownTask,
                    format!("no task named {task:?} has been added"),
                ));
                None
            }
        }
    }

    fn set(&mut self, task: &str, method: &str, key: &str, value: Value) -> &mut Self {
        if let Some(t) = self.task_mut(task, method) {
            t.insert(key.to_owned(), value);
        }
        self
    }

    /// Adds explicit dependencies to a task (references in templates add their own).
    pub fn depends_on(&mut self, task: &str, dependencies: &[&str]) -> &mut Self {
        if let Some(t) = self.task_mut(task, "depends_on") {
            let entry = t
                .entry("dependencies")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                list.extend(dependencies.iter().map(|d| Value::String((*d).to_owned())));
            }
        }
        self
    }

    /// Sets a task's system prompt.
    pub fn system(&mut self, task: &str, system: impl Into<String>) -> &mut Self {
        self.set(task, "system", "system", Value::String(system.into()))
    }

    /// Sets a task's LLM options.
    pub fn options(&mut self, task: &str, options: LlmOptions) -> &mut Self {
        self.set(task, "options", "options", to_value(&options))
    }

    /// Sets a task's retry policy.
    pub fn retry(&mut self, task: &str, retry: RetryPolicy) -> &mut Self {
        self.set(task, "retry", "retry", to_value(&retry))
    }

    /// Sets a task's timeout.
    pub fn timeout(&mut self, task: &str, timeout: Duration) -> &mut Self {
        self.set(
            task,
            "timeout",
            "timeout",
            Value::String(format_duration(timeout)),
        )
    }

    /// Sets a task's priority.
    pub fn priority(&mut self, task: &str, priority: Priority) -> &mut Self {
        self.set(
            task,
            "priority",
            "priority",
            Value::String(priority.as_str().into()),
        )
    }

    /// Overrides the failure policy for one task.
    pub fn on_failure(&mut self, task: &str, policy: FailurePolicy) -> &mut Self {
        self.set(
            task,
            "on_failure",
            "on_failure",
            Value::String(policy.as_str().into()),
        )
    }

    /// Sets an external task's keyword arguments.
    pub fn kwargs(&mut self, task: &str, kwargs: Map<String, Value>) -> &mut Self {
        self.set(task, "kwargs", "kwargs", Value::Object(kwargs))
    }

    /// The workflow document (file format) this builder describes.
    pub fn to_value(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("name".into(), Value::String(self.name.clone()));
        if let Some(d) = &self.description {
            doc.insert("description".into(), Value::String(d.clone()));
        }
        if !self.input.is_empty() {
            doc.insert("input".into(), Value::Object(self.input.clone()));
        }
        if let Some(p) = self.failure_policy {
            doc.insert("failure_policy".into(), Value::String(p.as_str().into()));
        }
        if let Some(r) = self.retention {
            doc.insert("retention".into(), Value::String(format_duration(r)));
        }
        if !self.defaults.is_empty() {
            doc.insert("defaults".into(), Value::Object(self.defaults.clone()));
        }
        doc.insert(
            "tasks".into(),
            Value::Array(self.tasks.iter().cloned().map(Value::Object).collect()),
        );
        Value::Object(doc)
    }

    /// Validates and builds the workflow, reporting every problem like a file would.
    pub fn build(&self, limits: &Limits) -> Result<Workflow, Vec<ValidationError>> {
        let result = validate(&self.to_value(), &Map::new(), limits);
        if self.errors.is_empty() {
            return result;
        }
        let mut errs = self.errors.clone();
        if let Err(more) = result {
            errs.extend(more);
        }
        Err(errs)
    }
}
