//! One task: its fields, its action (prompt, messages, images, external call), routing hints
//! and settings, read into a [`Draft`] with every problem reported, together with the raw
//! strings that may hold templates.

use std::time::Duration;

use serde_json::{Map, Value};

use super::checker::Checker;
use super::defaults::Defaults;
use super::fields::{
    a_type, at, field, task_label, type_fields, words, COMMON_TASK_FIELDS, MESSAGE_FIELDS,
    POLICIES, PRIORITIES, ROLES, ROUTING_FIELDS, TASK_TYPES, TYPE_TASK_FIELDS,
};
use crate::error::ErrorKind;
use crate::images::{excerpt, is_templated, normalize_base64};
use crate::model::{
    Action, ChatMessage, FailurePolicy, Priority, TaskRouting, TaskType, ROUTING_PROVIDERS,
    ROUTING_STRATEGIES,
};
use crate::names;
use crate::retry::RetryPolicy;
use crate::template::visit_value_strings;

/// One task as far as it could be read.
pub(super) struct Draft {
    pub(super) label: String,
    pub(super) name: Option<String>,
    pub(super) action: Option<Action>,
    /// (path of the entry, dependency name) in file order.
    pub(super) deps: Vec<(String, String)>,
    pub(super) retry: RetryPolicy,
    pub(super) timeout: Duration,
    pub(super) priority: Priority,
    pub(super) on_failure: Option<FailurePolicy>,
    pub(super) routing: Option<TaskRouting>,
    /// (field, text) of every string that may hold templates, read from the raw task so that
    /// template problems are reported even when other fields of the task are wrong.
    pub(super) templates: Vec<(String, String)>,
}

impl Checker<'_> {
    pub(super) fn task(&mut self, i: usize, v: &Value, d: &Defaults) -> Draft {
        let label = task_label(i, v);
        let mut draft = Draft {
            label: label.clone(),
            name: None,
            action: None,
            deps: Vec::new(),
            retry: d.retry.clone(),
            timeout: d.timeout,
            priority: d.priority,
            on_failure: None,
            routing: None,
            templates: Vec::new(),
        };
        let Value::Object(m) = v else {
            self.wrong_type(label, "a mapping (a task)", v);
            return draft;
        };

        match field(m, "name") {
            None => self.err(
                at(&label, "name"),
                ErrorKind::MissingField,
                "missing field `name` (every task needs a unique name)",
            ),
            Some(Value::String(name)) => {
                if let Err(msg) = names::check_task_name(name, self.limits.max_name_len) {
                    self.err(at(&label, "name"), ErrorKind::InvalidName, msg);
                }
                // Kept even when invalid so references to it do not also report it unknown.
                draft.name = Some(name.clone());
            }
            Some(other) => self.wrong_type(at(&label, "name"), "a string", other),
        }

        let kind = if field(m, "type").is_none() {
            self.err(
                at(&label, "type"),
                ErrorKind::MissingField,
                format!("missing field `type` (one of {})", words(TASK_TYPES)),
            );
            None
        } else {
            self.word(m, "type", &label, TASK_TYPES)
        };

        for key in m.keys() {
            let k = key.as_str();
            if COMMON_TASK_FIELDS.contains(&k) {
                continue;
            }
            match kind {
                Some(t) if type_fields(t).contains(&k) => {}
                Some(t) if TYPE_TASK_FIELDS.contains(&k) => self.err(
                    at(&label, k),
                    ErrorKind::FieldNotForType,
                    format!(
                        "field `{k}` is not valid for {} task; allowed fields: {}, {}",
                        a_type(t),
                        COMMON_TASK_FIELDS.join(", "),
                        type_fields(t).join(", ")
                    ),
                ),
                None if TYPE_TASK_FIELDS.contains(&k) => {}
                _ => {
                    let allowed: Vec<&str> = COMMON_TASK_FIELDS
                        .iter()
                        .chain(kind.map_or(TYPE_TASK_FIELDS, type_fields))
                        .copied()
                        .collect();
                    self.err(
                        at(&label, k),
                        ErrorKind::UnknownField,
                        format!(
                            "unknown field `{k}` in a task; allowed fields: {}",
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }

        if let Some(deps) = field(m, "dependencies") {
            let p = at(&label, "dependencies");
            match deps {
                Value::Array(items) => {
                    for (j, item) in items.iter().enumerate() {
                        match item {
                            Value::String(s) => draft.deps.push((format!("{p}[{j}]"), s.clone())),
                            other => self.wrong_type(format!("{p}[{j}]"), "a task name", other),
                        }
                    }
                }
                other => self.wrong_type(p, "a list of task names", other),
            }
        }
        if let Some(r) = field(m, "retry") {
            let p = at(&label, "retry");
            let patch = self.retry_patch(r, &p);
            draft.retry = patch.apply(&d.retry);
            if patch.sets_delays() {
                self.check_delay_order(&draft.retry, &p);
            }
        }
        if let Some(t) = field(m, "timeout") {
            if let Some(t) = self.timeout(t, at(&label, "timeout")) {
                draft.timeout = t;
            }
        }
        if let Some(p) = self.word(m, "priority", &label, PRIORITIES) {
            draft.priority = p;
        }
        draft.on_failure = self.word(m, "on_failure", &label, POLICIES);
        if kind.is_some_and(|k| k != TaskType::External) {
            if let Some(r) = field(m, "routing") {
                draft.routing = self.routing(r, &at(&label, "routing"));
            }
        }

        if let Some(kind) = kind {
            draft.action = self.action(kind, m, &label, d);
            draft.templates = raw_templates(kind, m);
        }
        draft
    }

    /// A task's `routing` mapping: `strategy` must name a known strategy, `provider` a known
    /// endpoint kind, and `tag` must be a tag an endpoint could carry (the worker's rule:
    /// not blank, no control characters).
    pub(super) fn routing(&mut self, v: &Value, path: &str) -> Option<TaskRouting> {
        let Value::Object(m) = v else {
            self.wrong_type(path.to_owned(), "a mapping (routing settings)", v);
            return None;
        };
        for k in m.keys() {
            if !ROUTING_FIELDS.contains(&k.as_str()) {
                self.err(
                    at(path, k),
                    ErrorKind::UnknownField,
                    format!(
                        "unknown field `{k}` in routing; allowed fields: {}",
                        ROUTING_FIELDS.join(", ")
                    ),
                );
            }
        }
        let options: Vec<(&str, &str)> = ROUTING_STRATEGIES.iter().map(|s| (*s, *s)).collect();
        let strategy = self.word(m, "strategy", path, &options);
        let providers: Vec<(&str, &str)> = ROUTING_PROVIDERS.iter().map(|s| (*s, *s)).collect();
        let provider = self.word(m, "provider", path, &providers);
        let tag = self.string(m, "tag", path).filter(|t| {
            let bad = t.trim().is_empty() || t.chars().any(char::is_control);
            if bad {
                self.err(
                    at(path, "tag"),
                    ErrorKind::InvalidValue,
                    format!("invalid tag {t:?}; a tag is not blank and has no control characters"),
                );
            }
            !bad
        });
        Some(TaskRouting {
            strategy: strategy.map(str::to_owned),
            tag,
            provider: provider.map(str::to_owned),
        })
    }

    pub(super) fn action(
        &mut self,
        kind: TaskType,
        m: &Map<String, Value>,
        label: &str,
        d: &Defaults,
    ) -> Option<Action> {
        if kind == TaskType::External {
            return self.external(m, label);
        }
        let model = if field(m, "model").is_some() {
            self.model(m, label)
        } else if d.model.is_some() || d.model_invalid {
            d.model.clone()
        } else {
            self.err(
                at(label, "model"),
                ErrorKind::MissingField,
                format!(
                    "missing field `model` ({} task needs one, and `defaults.model` is not set)",
                    a_type(kind)
                ),
            );
            None
        };
        let options = match field(m, "options") {
            Some(o) => self
                .options_patch(o, &at(label, "options"))
                .over(&d.options),
            None => d.options.clone(),
        }
        .into_options();
        let system = if kind == TaskType::Embed {
            None
        } else {
            self.string(m, "system", label)
        };
        let prompt = if matches!(kind, TaskType::Text | TaskType::Vision | TaskType::Embed) {
            self.prompt(m, label, kind)
        } else {
            None
        };
        let action = match kind {
            TaskType::Text => Action::Text {
                model: model?,
                prompt: prompt?,
                system,
                options,
            },
            TaskType::Chat => {
                let messages = self.messages(m, label);
                Action::Chat {
                    model: model?,
                    messages: messages?,
                    system,
                    options,
                }
            }
            TaskType::Vision => {
                let images = self.images(m, label);
                Action::Vision {
                    model: model?,
                    prompt: prompt?,
                    images: images?,
                    system,
                    options,
                }
            }
            TaskType::Embed => Action::Embed {
                model: model?,
                prompt: prompt?,
                options,
            },
            TaskType::External => return None,
        };
        Some(action)
    }

    pub(super) fn prompt(
        &mut self,
        m: &Map<String, Value>,
        label: &str,
        kind: TaskType,
    ) -> Option<String> {
        let prompt = self.required_string(
            m,
            "prompt",
            label,
            &format!("{} task needs a prompt", a_type(kind)),
        )?;
        if prompt.is_empty() {
            self.err(
                at(label, "prompt"),
                ErrorKind::EmptyValue,
                "prompt must not be empty",
            );
            return None;
        }
        Some(prompt)
    }

    pub(super) fn messages(
        &mut self,
        m: &Map<String, Value>,
        label: &str,
    ) -> Option<Vec<ChatMessage>> {
        let p = at(label, "messages");
        let Some(v) = field(m, "messages") else {
            self.err(
                p,
                ErrorKind::MissingField,
                "missing field `messages` (a chat task needs a list of {role, content})",
            );
            return None;
        };
        let Value::Array(items) = v else {
            self.wrong_type(p, "a list of messages", v);
            return None;
        };
        if items.is_empty() {
            self.err(p, ErrorKind::EmptyValue, "messages must not be empty");
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let mp = format!("{p}[{i}]");
            let Value::Object(msg) = item else {
                self.wrong_type(mp, "a mapping with `role` and `content`", item);
                ok = false;
                continue;
            };
            self.check_fields(msg, MESSAGE_FIELDS, &mp, "a chat message");
            let role = if field(msg, "role").is_none() {
                self.err(
                    at(&mp, "role"),
                    ErrorKind::MissingField,
                    format!("missing field `role` (one of {})", words(ROLES)),
                );
                None
            } else {
                self.word(msg, "role", &mp, ROLES)
            };
            let content = self.required_string(msg, "content", &mp, "the message text");
            match (role, content) {
                (Some(role), Some(content)) => out.push(ChatMessage { role, content }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(super) fn images(&mut self, m: &Map<String, Value>, label: &str) -> Option<Vec<String>> {
        let p = at(label, "images");
        let Some(v) = field(m, "images") else {
            self.err(
                p,
                ErrorKind::MissingField,
                "missing field `images` (a vision task needs at least one image)",
            );
            return None;
        };
        let Value::Array(items) = v else {
            self.wrong_type(p, "a list of images (base64 or file paths)", v);
            return None;
        };
        if items.is_empty() {
            self.err(p, ErrorKind::EmptyValue, "images must not be empty");
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            match item {
                // Templated images are known only after rendering.
                Value::String(s) if is_templated(s) => out.push(s.clone()),
                Value::String(s) => match normalize_base64(s) {
                    Ok(b64) => out.push(b64),
                    Err(why) => {
                        self.err(
                            ip,
                            ErrorKind::InvalidBase64,
                            format!(
                                "image {} is {why}; give base64 data, or a file path relative \
                                 to the workflow file when loading from a file",
                                excerpt(s)
                            ),
                        );
                        ok = false;
                    }
                },
                other => {
                    self.wrong_type(ip, "a string (base64 or file path)", other);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    pub(super) fn external(&mut self, m: &Map<String, Value>, label: &str) -> Option<Action> {
        let service = self
            .required_string(
                m,
                "service",
                label,
                "the task service to call, e.g. \"Python Tasks\"",
            )
            .and_then(|s| match names::check_service_name(&s) {
                Ok(()) => Some(s),
                Err(msg) => {
                    self.err(at(label, "service"), ErrorKind::InvalidServiceName, msg);
                    None
                }
            });
        let function = self
            .required_string(m, "function", label, "the function of the service to call")
            .and_then(|f| match names::check_function_name(&f) {
                Ok(()) => Some(f),
                Err(msg) => {
                    self.err(at(label, "function"), ErrorKind::InvalidFunctionName, msg);
                    None
                }
            });
        let args = match field(m, "args") {
            None => Some(Vec::new()),
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => {
                self.wrong_type(at(label, "args"), "a list", other);
                None
            }
        };
        let kwargs = match field(m, "kwargs") {
            None => Some(Map::new()),
            Some(Value::Object(k)) => Some(k.clone()),
            Some(other) => {
                self.wrong_type(at(label, "kwargs"), "a mapping", other);
                None
            }
        };
        Some(Action::External {
            service: service?,
            function: function?,
            args: args?,
            kwargs: kwargs?,
        })
    }
}

/// The strings of a raw task that may hold templates, with their field paths, in the order
/// `template::visit_action_strings` visits them.
fn raw_templates(kind: TaskType, m: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |f: &str, s: &str| out.push((f.to_owned(), s.to_owned()));
    let text = |key: &str| field(m, key).and_then(Value::as_str);
    let list = |key: &str| field(m, key).and_then(Value::as_array);
    match kind {
        TaskType::Text | TaskType::Vision | TaskType::Embed => {
            if let Some(p) = text("prompt") {
                push("prompt", p);
            }
        }
        TaskType::Chat | TaskType::External => {}
    }
    if matches!(kind, TaskType::Text | TaskType::Chat | TaskType::Vision) {
        if let Some(s) = text("system") {
            push("system", s);
        }
    }
    match kind {
        TaskType::Chat => {
            for (i, msg) in list("messages").into_iter().flatten().enumerate() {
                if let Some(c) = msg.get("content").and_then(Value::as_str) {
                    push(&format!("messages[{i}].content"), c);
                }
            }
        }
        TaskType::Vision => {
            for (i, img) in list("images").into_iter().flatten().enumerate() {
                if let Some(s) = img.as_str() {
                    push(&format!("images[{i}]"), s);
                }
            }
        }
        TaskType::External => {
            for (i, v) in list("args").into_iter().flatten().enumerate() {
                visit_value_strings(&format!("args[{i}]"), v, &mut push);
            }
            if let Some(kwargs) = field(m, "kwargs").and_then(Value::as_object) {
                for (k, v) in kwargs {
                    visit_value_strings(&format!("kwargs.{k}"), v, &mut push);
                }
            }
        }
        TaskType::Text | TaskType::Embed => {}
    }
    out
}
