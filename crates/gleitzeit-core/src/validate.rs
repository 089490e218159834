//! Validation: from a parsed workflow value to a [`Workflow`], reporting every problem at once.
//!
//! The checks run on a `serde_json::Value` rather than through `Deserialize`, because serde
//! stops at the first error; here each task is checked on its own and every wrong type, unknown
//! field, missing field, bad reference, cycle and exceeded limit is collected with the path of
//! the field (for example `tasks[2] (Summarize).dependencies[0]`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::duration::{duration_from_value, format_duration, DurationError};
use crate::error::{ErrorKind, ValidationError};
use crate::images::{excerpt, is_templated, normalize_base64};
use crate::limits::Limits;
use crate::model::{
    Action, ChatMessage, FailurePolicy, LlmOptions, Priority, Role, Task, TaskRouting, TaskType,
    Workflow, DEFAULT_TIMEOUT, ROUTING_PROVIDERS, ROUTING_STRATEGIES,
};
use crate::names;
use crate::retry::{Backoff, RetryPolicy};
use crate::template::{string_references, visit_value_strings, walk_input, Reference};

const WORKFLOW_FIELDS: &[&str] = &[
    "name",
    "description",
    "input",
    "failure_policy",
    "defaults",
    "tasks",
];
const DEFAULTS_FIELDS: &[&str] = &["model", "timeout", "retry", "priority", "options"];
const RETRY_FIELDS: &[&str] = &[
    "max_attempts",
    "backoff",
    "base_delay",
    "max_delay",
    "jitter",
];
const OPTION_FIELDS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "seed",
    "stop",
    "json",
];
const MESSAGE_FIELDS: &[&str] = &["role", "content"];
const ROUTING_FIELDS: &[&str] = &["strategy", "tag", "provider"];
const COMMON_TASK_FIELDS: &[&str] = &[
    "name",
    "type",
    "dependencies",
    "retry",
    "timeout",
    "priority",
    "on_failure",
];
/// Every type-specific task field, in documentation order.
const TYPE_TASK_FIELDS: &[&str] = &[
    "model", "prompt", "system", "messages", "images", "options", "routing", "service", "function",
    "args", "kwargs",
];

/// The fields a task of this type may have besides [`COMMON_TASK_FIELDS`].
fn type_fields(t: TaskType) -> &'static [&'static str] {
    match t {
        TaskType::Text => &["model", "prompt", "system", "options", "routing"],
        TaskType::Chat => &["model", "messages", "system", "options", "routing"],
        TaskType::Vision => &["model", "prompt", "images", "system", "options", "routing"],
        TaskType::Embed => &["model", "prompt", "options", "routing"],
        TaskType::External => &["service", "function", "args", "kwargs"],
    }
}

const TASK_TYPES: &[(&str, TaskType)] = &[
    ("text", TaskType::Text),
    ("chat", TaskType::Chat),
    ("vision", TaskType::Vision),
    ("embed", TaskType::Embed),
    ("external", TaskType::External),
];
const PRIORITIES: &[(&str, Priority)] = &[
    ("high", Priority::High),
    ("normal", Priority::Normal),
    ("low", Priority::Low),
];
const POLICIES: &[(&str, FailurePolicy)] = &[
    ("fail_fast", FailurePolicy::FailFast),
    ("continue", FailurePolicy::Continue),
];
const BACKOFFS: &[(&str, Backoff)] = &[
    ("fixed", Backoff::Fixed),
    ("linear", Backoff::Linear),
    ("exponential", Backoff::Exponential),
];
const ROLES: &[(&str, Role)] = &[
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
fn a_type(t: TaskType) -> String {
    match t {
        TaskType::External | TaskType::Embed => format!("an {t}"),
        _ => format!("a {t}"),
    }
}

fn at(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
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
fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn words<T>(options: &[(&str, T)]) -> String {
    options
        .iter()
        .map(|(w, _)| *w)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Partial retry object as written in `defaults.retry` or a task's `retry`.
#[derive(Debug, Clone, Default)]
struct RetryPatch {
    max_attempts: Option<u32>,
    backoff: Option<Backoff>,
    base_delay: Option<Duration>,
    max_delay: Option<Duration>,
    jitter: Option<bool>,
}

impl RetryPatch {
    fn apply(&self, base: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            backoff: self.backoff.unwrap_or(base.backoff),
            base_delay: self.base_delay.unwrap_or(base.base_delay),
            max_delay: self.max_delay.unwrap_or(base.max_delay),
            jitter: self.jitter.unwrap_or(base.jitter),
        }
    }

    fn sets_delays(&self) -> bool {
        self.base_delay.is_some() || self.max_delay.is_some()
    }
}

/// Partial LLM options as written in `defaults.options` or a task's `options`.
#[derive(Debug, Clone, Default)]
struct OptionsPatch {
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u32>,
    max_tokens: Option<u32>,
    seed: Option<i64>,
    stop: Option<Vec<String>>,
    json: Option<bool>,
}

impl OptionsPatch {
    /// Field by field: `self` wins over `under`.
    fn over(self, under: &OptionsPatch) -> OptionsPatch {
        OptionsPatch {
            temperature: self.temperature.or(under.temperature),
            top_p: self.top_p.or(under.top_p),
            top_k: self.top_k.or(under.top_k),
            max_tokens: self.max_tokens.or(under.max_tokens),
            seed: self.seed.or(under.seed),
            stop: self.stop.or_else(|| under.stop.clone()),
            json: self.json.or(under.json),
        }
    }

    fn into_options(self) -> LlmOptions {
        LlmOptions {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            max_tokens: self.max_tokens,
            seed: self.seed,
            stop: self.stop.unwrap_or_default(),
            json: self.json.unwrap_or(false),
        }
    }
}

/// Workflow-level defaults merged over the built-in ones.
struct Defaults {
    model: Option<String>,
    /// `defaults.model` was given but is invalid (already reported; tasks must not report
    /// a missing model again).
    model_invalid: bool,
    timeout: Duration,
    retry: RetryPolicy,
    priority: Priority,
    options: OptionsPatch,
}

/// One task as far as it could be read.
struct Draft {
    label: String,
    name: Option<String>,
    action: Option<Action>,
    /// (path of the entry, dependency name) in file order.
    deps: Vec<(String, String)>,
    retry: RetryPolicy,
    timeout: Duration,
    priority: Priority,
    on_failure: Option<FailurePolicy>,
    routing: Option<TaskRouting>,
    /// (field, text) of every string that may hold templates, read from the raw task so that
    /// template problems are reported even when other fields of the task are wrong.
    templates: Vec<(String, String)>,
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

/// An implied dependency: task `from` references the result of task `to` in `field`.
struct Implied {
    to: usize,
    field: String,
    reference: String,
}

/// Collects errors while walking the value.
struct Checker<'l> {
    errs: Vec<ValidationError>,
    limits: &'l Limits,
}

impl Checker<'_> {
    fn err(&mut self, path: impl Into<String>, kind: ErrorKind, message: impl Into<String>) {
        self.errs.push(ValidationError::new(path, kind, message));
    }

    fn wrong_type(&mut self, path: String, expected: &str, found: &Value) {
        self.err(
            path,
            ErrorKind::WrongType,
            format!("expected {expected}, found {}", type_name(found)),
        );
    }

    fn check_fields(&mut self, m: &Map<String, Value>, allowed: &[&str], base: &str, what: &str) {
        for key in m.keys() {
            if !allowed.contains(&key.as_str()) {
                self.err(
                    at(base, key),
                    ErrorKind::UnknownField,
                    format!(
                        "unknown field `{key}` in {what}; allowed fields: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn string(&mut self, m: &Map<String, Value>, key: &str, base: &str) -> Option<String> {
        match field(m, key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(at(base, key), "a string", other);
                None
            }
        }
    }

    fn required_string(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        base: &str,
        what: &str,
    ) -> Option<String> {
        if field(m, key).is_none() {
            self.err(
                at(base, key),
                ErrorKind::MissingField,
                format!("missing field `{key}` ({what})"),
            );
            return None;
        }
        self.string(m, key, base)
    }

    fn bool(&mut self, m: &Map<String, Value>, key: &str, base: &str) -> Option<bool> {
        match field(m, key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong_type(at(base, key), "true or false", other);
                None
            }
        }
    }

    fn word<T: Copy>(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        base: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let v = field(m, key)?;
        let Value::String(s) = v else {
            self.wrong_type(at(base, key), &format!("one of {}", words(options)), v);
            return None;
        };
        match options.iter().find(|(w, _)| *w == s) {
            Some((_, t)) => Some(*t),
            None => {
                self.err(
                    at(base, key),
                    ErrorKind::InvalidValue,
                    format!("invalid value {s:?}; expected one of {}", words(options)),
                );
                None
            }
        }
    }

    /// A whole number; `None` after reporting a wrong type.
    fn integer(&mut self, v: &Value, path: &str) -> Option<i128> {
        if let Some(u) = v.as_u64() {
            return Some(i128::from(u));
        }
        if let Some(i) = v.as_i64() {
            return Some(i128::from(i));
        }
        self.wrong_type(path.to_owned(), "a whole number", v);
        None
    }

    fn delay(&mut self, v: &Value, path: String) -> Option<Duration> {
        match duration_from_value(v) {
            Ok(d) => Some(d),
            Err(DurationError::WrongType) => {
                self.wrong_type(path, "a duration such as \"30s\" or a number of seconds", v);
                None
            }
            Err(DurationError::Negative) => {
                self.err(
                    path,
                    ErrorKind::InvalidDuration,
                    "duration must not be negative",
                );
                None
            }
            Err(DurationError::Malformed(m)) => {
                self.err(
                    path,
                    ErrorKind::InvalidDuration,
                    format!("invalid duration {m} (write e.g. \"500ms\", \"30s\", \"2m\")"),
                );
                None
            }
        }
    }

    fn timeout(&mut self, v: &Value, path: String) -> Option<Duration> {
        let max = self.limits.max_timeout;
        match duration_from_value(v) {
            Ok(d) if d.is_zero() => {
                self.err(path, ErrorKind::InvalidTimeout, "timeout must be positive");
                None
            }
            Ok(d) if d > max => {
                self.err(
                    path,
                    ErrorKind::InvalidTimeout,
                    format!(
                        "timeout {} exceeds the limit of {}",
                        format_duration(d),
                        format_duration(max)
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(DurationError::Negative) => {
                self.err(path, ErrorKind::InvalidTimeout, "timeout must be positive");
                None
            }
            Err(_) => self.delay(v, path),
        }
    }

    fn retry_patch(&mut self, v: &Value, path: &str) -> RetryPatch {
        let mut patch = RetryPatch::default();
        let Value::Object(m) = v else {
            self.wrong_type(path.to_owned(), "a mapping (retry settings)", v);
            return patch;
        };
        self.check_fields(m, RETRY_FIELDS, path, "retry settings");
        if let Some(v) = field(m, "max_attempts") {
            let p = at(path, "max_attempts");
            if let Some(n) = self.integer(v, &p) {
                let cap = self.limits.max_attempts;
                if n < 1 || n > i128::from(cap) {
                    self.err(
                        p,
                        ErrorKind::InvalidMaxAttempts,
                        format!(
                            "max_attempts is {n}; it counts every attempt including the first \
                             and must be between 1 and {cap}"
                        ),
                    );
                } else {
                    patch.max_attempts = u32::try_from(n).ok();
                }
            }
        }
        patch.backoff = self.word(m, "backoff", path, BACKOFFS);
        if let Some(v) = field(m, "base_delay") {
            patch.base_delay = self.delay(v, at(path, "base_delay"));
        }
        if let Some(v) = field(m, "max_delay") {
            patch.max_delay = self.delay(v, at(path, "max_delay"));
        }
        patch.jitter = self.bool(m, "jitter", path);
        patch
    }

    fn check_delay_order(&mut self, retry: &RetryPolicy, path: &str) {
        if retry.base_delay > retry.max_delay {
            self.err(
                path.to_owned(),
                ErrorKind::DelayOrder,
                format!(
                    "base_delay {} is greater than max_delay {}",
                    format_duration(retry.base_delay),
                    format_duration(retry.max_delay)
                ),
            );
        }
    }

    fn options_patch(&mut self, v: &Value, path: &str) -> OptionsPatch {
        let mut o = OptionsPatch::default();
        let Value::Object(m) = v else {
            self.wrong_type(path.to_owned(), "a mapping (LLM options)", v);
            return o;
        };
        self.check_fields(m, OPTION_FIELDS, path, "LLM options");
        o.temperature = self.float_in(m, "temperature", path, 0.0, 2.0);
        o.top_p = self.float_in(m, "top_p", path, 0.0, 1.0);
        o.top_k = self.count(m, "top_k", path);
        o.max_tokens = self.count(m, "max_tokens", path);
        if let Some(v) = field(m, "seed") {
            let p = at(path, "seed");
            if let Some(n) = self.integer(v, &p) {
                match i64::try_from(n) {
                    Ok(s) => o.seed = Some(s),
                    Err(_) => self.err(
                        p,
                        ErrorKind::OptionOutOfRange,
                        format!("seed {n} does not fit a signed 64-bit integer"),
                    ),
                }
            }
        }
        if let Some(v) = field(m, "stop") {
            let p = at(path, "stop");
            match v {
                Value::Array(items) => {
                    let mut stop = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        match item {
                            Value::String(s) if s.is_empty() => self.err(
                                format!("{p}[{i}]"),
                                ErrorKind::OptionOutOfRange,
                                "stop sequences must not be empty",
                            ),
                            Value::String(s) => stop.push(s.clone()),
                            other => self.wrong_type(format!("{p}[{i}]"), "a string", other),
                        }
                    }
                    o.stop = Some(stop);
                }
                other => self.wrong_type(p, "a list of strings", other),
            }
        }
        o.json = self.bool(m, "json", path);
        o
    }

    fn float_in(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        base: &str,
        lo: f64,
        hi: f64,
    ) -> Option<f64> {
        let v = field(m, key)?;
        let p = at(base, key);
        let Some(f) = v.as_f64() else {
            self.wrong_type(p, "a number", v);
            return None;
        };
        if (lo..=hi).contains(&f) {
            Some(f)
        } else {
            self.err(
                p,
                ErrorKind::OptionOutOfRange,
                format!("{key} is {f}; it must be between {lo} and {hi}"),
            );
            None
        }
    }

    /// A whole number from 1 to `u32::MAX`.
    fn count(&mut self, m: &Map<String, Value>, key: &str, base: &str) -> Option<u32> {
        let v = field(m, key)?;
        let p = at(base, key);
        let n = self.integer(v, &p)?;
        match u32::try_from(n) {
            Ok(c) if c >= 1 => Some(c),
            _ => {
                self.err(
                    p,
                    ErrorKind::OptionOutOfRange,
                    format!("{key} is {n}; it must be between 1 and {}", u32::MAX),
                );
                None
            }
        }
    }

    fn model(&mut self, m: &Map<String, Value>, base: &str) -> Option<String> {
        let model = self.string(m, "model", base)?;
        match names::check_model_name(&model) {
            Ok(()) => Some(model),
            Err(msg) => {
                self.err(at(base, "model"), ErrorKind::InvalidModelName, msg);
                None
            }
        }
    }

    fn defaults(&mut self, v: Option<&Value>) -> Defaults {
        let mut d = Defaults {
            model: None,
            model_invalid: false,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            priority: Priority::Normal,
            options: OptionsPatch::default(),
        };
        let Some(v) = v else { return d };
        let Value::Object(m) = v else {
            self.wrong_type("defaults".to_owned(), "a mapping", v);
            return d;
        };
        self.check_fields(m, DEFAULTS_FIELDS, "defaults", "defaults");
        if field(m, "model").is_some() {
            d.model = self.model(m, "defaults");
            d.model_invalid = d.model.is_none();
        }
        if let Some(t) = field(m, "timeout") {
            if let Some(t) = self.timeout(t, "defaults.timeout".to_owned()) {
                d.timeout = t;
            }
        }
        if let Some(r) = field(m, "retry") {
            d.retry = self.retry_patch(r, "defaults.retry").apply(&d.retry);
            self.check_delay_order(&d.retry, "defaults.retry");
        }
        d.priority = self
            .word(m, "priority", "defaults", PRIORITIES)
            .unwrap_or(d.priority);
        if let Some(o) = field(m, "options") {
            d.options = self.options_patch(o, "defaults.options");
        }
        d
    }

    fn task(&mut self, i: usize, v: &Value, d: &Defaults) -> Draft {
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
    fn routing(&mut self, v: &Value, path: &str) -> Option<TaskRouting> {
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

    fn action(
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

    fn prompt(&mut self, m: &Map<String, Value>, label: &str, kind: TaskType) -> Option<String> {
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

    fn messages(&mut self, m: &Map<String, Value>, label: &str) -> Option<Vec<ChatMessage>> {
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

    fn images(&mut self, m: &Map<String, Value>, label: &str) -> Option<Vec<String>> {
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

    fn external(&mut self, m: &Map<String, Value>, label: &str) -> Option<Action> {
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

fn declared_keys(input: &Map<String, Value>) -> String {
    if input.is_empty() {
        "the workflow declares no input".to_owned()
    } else {
        format!(
            "declared: {}",
            input.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

/// Cross-task checks: unique names, dependencies, references, cycles, fan-in/out, sizes.
/// Returns the tasks when every draft is complete.
fn link(c: &mut Checker<'_>, drafts: &[Draft], input: &Map<String, Value>) -> Option<Vec<Task>> {
    let n = drafts.len();
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

    // Explicit edges: task → the tasks it depends on.
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

    // Implied edges from template references.
    let mut implied: Vec<Vec<Implied>> = (0..n).map(|_| Vec::new()).collect();
    for (i, d) in drafts.iter().enumerate() {
        for (f, text) in &d.templates {
            let refs = string_references(text);
            let path = at(&d.label, f);
            let refs = match refs {
                Ok(r) => r,
                Err(e) => {
                    c.err(path, ErrorKind::MalformedTemplate, e.to_string());
                    continue;
                }
            };
            for r in refs {
                match &r {
                    Reference::Input { path: keys } => {
                        if walk_input(input, keys).is_none() {
                            c.err(
                                path.clone(),
                                ErrorKind::UnknownInputKey,
                                format!(
                                    "`{{{{{r}}}}}`: the input has no key `{}` ({})",
                                    keys.join("."),
                                    declared_keys(input)
                                ),
                            );
                        }
                    }
                    Reference::Result { task, .. } => match index.get(task.as_str()) {
                        None => c.err(
                            path.clone(),
                            ErrorKind::UnknownTaskReference,
                            format!("`{{{{{r}}}}}`: no task is named {task:?}"),
                        ),
                        Some(&j) if j == i => c.err(
                            path.clone(),
                            ErrorKind::ReferenceCycle,
                            format!("`{{{{{r}}}}}`: a task cannot reference its own result"),
                        ),
                        Some(&j) => {
                            if !implied[i].iter().any(|x| x.to == j) {
                                implied[i].push(Implied {
                                    to: j,
                                    field: f.to_owned(),
                                    reference: r.to_string(),
                                });
                            }
                        }
                    },
                }
            }
        }
    }

    let name_of = |i: usize| drafts[i].name.as_deref().unwrap_or("?");
    let cycle_text = |cycle: &[usize]| {
        cycle
            .iter()
            .map(|&i| name_of(i))
            .collect::<Vec<_>>()
            .join(" → ")
    };

    // Cycles among explicit dependencies.
    let explicit_sccs = cyclic_components(&explicit);
    for scc in &explicit_sccs {
        let start = scc[0];
        if let Some(cycle) = cycle_through(&explicit, scc, start, start) {
            c.err(
                at(&drafts[start].label, "dependencies"),
                ErrorKind::Cycle,
                format!(
                    "dependency cycle: {} (each task depends on the next)",
                    cycle_text(&cycle)
                ),
            );
        }
    }

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

    // Cycles that only references close.
    let explicit_sets: Vec<HashSet<usize>> = explicit_sccs
        .iter()
        .map(|s| s.iter().copied().collect())
        .collect();
    for scc in cyclic_components(&all) {
        let set: HashSet<usize> = scc.iter().copied().collect();
        if explicit_sets.contains(&set) {
            continue;
        }
        let edge = scc.iter().find_map(|&u| {
            implied[u]
                .iter()
                .find(|x| set.contains(&x.to) && !explicit[u].contains(&x.to))
                .map(|x| (u, x))
        });
        let Some((u, imp)) = edge else { continue };
        if let Some(back) = cycle_through(&all, &scc, imp.to, u) {
            let mut cycle = vec![u];
            cycle.extend(back);
            c.err(
                at(&drafts[u].label, &imp.field),
                ErrorKind::ReferenceCycle,
                format!(
                    "`{{{{{}}}}}` implies a dependency on {:?}, which would form a cycle: {} \
                     (each task depends on the next); only ancestors can be referenced",
                    imp.reference,
                    name_of(imp.to),
                    cycle_text(&cycle)
                ),
            );
        }
    }

    // Fan-in and fan-out.
    let mut children = vec![0usize; n];
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
        let size = serde_json::to_vec(&task).map_or(usize::MAX, |v| v.len());
        if size > c.limits.max_task_bytes {
            c.err(
                d.label.clone(),
                ErrorKind::TaskTooLarge,
                format!(
                    "the task's spec is {size} bytes as JSON; at most {} are allowed",
                    c.limits.max_task_bytes
                ),
            );
        }
        tasks.push(task);
    }
    Some(tasks)
}

/// Strongly connected components that contain a cycle (more than one node; self-loops are
/// reported separately), each sorted, ordered by their smallest node. Iterative Tarjan, so
/// long chains cannot overflow the stack.
pub(crate) fn cyclic_components(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next = 0usize;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, position in its edge list)
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(top) = call.last_mut() {
            let (v, pos) = *top;
            if let Some(&w) = edges[v].get(pos) {
                top.1 += 1;
                if w >= n {
                    continue;
                }
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                call.pop();
                if let Some(&(parent, _)) = call.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if comp.len() > 1 {
                        comp.sort_unstable();
                        out.push(comp);
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// The shortest path `from ⇝ to` inside `component`, as nodes after `from` ending with `to`,
/// prefixed by `from` itself: `[from, …, to]`. When `from == to` it is a cycle through `from`.
fn cycle_through(
    edges: &[Vec<usize>],
    component: &[usize],
    from: usize,
    to: usize,
) -> Option<Vec<usize>> {
    let inside: HashSet<usize> = component.iter().copied().collect();
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen: HashSet<usize> = HashSet::from([from]);
    while let Some(v) = queue.pop_front() {
        let mut targets = edges[v].clone();
        targets.sort_unstable();
        for w in targets {
            if !inside.contains(&w) {
                continue;
            }
            if w == to {
                let mut path = vec![to];
                let mut cur = v;
                while cur != from {
                    path.push(cur);
                    match prev.get(&cur) {
                        Some(&p) => cur = p,
                        None => return None,
                    }
                }
                path.push(from);
                path.reverse();
                return Some(path);
            }
            if seen.insert(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}
