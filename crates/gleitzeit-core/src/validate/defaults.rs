//! Defaults and partial settings: `defaults` of the workflow and the partial `retry` and
//! `options` objects a task or the defaults may give, merged field by field.

use std::time::Duration;

use serde_json::Value;

use super::checker::Checker;
use super::fields::{
    at, field, BACKOFFS, DEFAULTS_FIELDS, OPTION_FIELDS, PRIORITIES, RETRY_FIELDS,
};
use crate::duration::format_duration;
use crate::error::ErrorKind;
use crate::model::{LlmOptions, Priority, DEFAULT_TIMEOUT};
use crate::retry::{Backoff, RetryPolicy};

/// Partial retry object as written in `defaults.retry` or a task's `retry`.
#[derive(Debug, Clone, Default)]
pub(super) struct RetryPatch {
    pub(super) max_attempts: Option<u32>,
    pub(super) backoff: Option<Backoff>,
    pub(super) base_delay: Option<Duration>,
    pub(super) max_delay: Option<Duration>,
    pub(super) jitter: Option<bool>,
    pub(super) wait_limit: Option<Duration>,
}

impl RetryPatch {
    pub(super) fn apply(&self, base: &RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            backoff: self.backoff.unwrap_or(base.backoff),
            base_delay: self.base_delay.unwrap_or(base.base_delay),
            max_delay: self.max_delay.unwrap_or(base.max_delay),
            jitter: self.jitter.unwrap_or(base.jitter),
            wait_limit: self.wait_limit.unwrap_or(base.wait_limit),
        }
    }

    pub(super) fn sets_delays(&self) -> bool {
        self.base_delay.is_some() || self.max_delay.is_some()
    }
}

/// Partial LLM options as written in `defaults.options` or a task's `options`.
#[derive(Debug, Clone, Default)]
pub(super) struct OptionsPatch {
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) top_k: Option<u32>,
    pub(super) max_tokens: Option<u32>,
    pub(super) seed: Option<i64>,
    pub(super) stop: Option<Vec<String>>,
    pub(super) json: Option<bool>,
}

impl OptionsPatch {
    /// Field by field: `self` wins over `under`.
    pub(super) fn over(self, under: &OptionsPatch) -> OptionsPatch {
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

    pub(super) fn into_options(self) -> LlmOptions {
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
pub(super) struct Defaults {
    pub(super) model: Option<String>,
    /// `defaults.model` was given but is invalid (already reported; tasks must not report
    /// a missing model again).
    pub(super) model_invalid: bool,
    pub(super) timeout: Duration,
    pub(super) retry: RetryPolicy,
    pub(super) priority: Priority,
    pub(super) options: OptionsPatch,
}

impl Checker<'_> {
    pub(super) fn retry_patch(&mut self, v: &Value, path: &str) -> RetryPatch {
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
        if let Some(v) = field(m, "wait_limit") {
            patch.wait_limit = self.delay(v, at(path, "wait_limit"));
        }
        patch
    }

    pub(super) fn check_delay_order(&mut self, retry: &RetryPolicy, path: &str) {
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

    pub(super) fn options_patch(&mut self, v: &Value, path: &str) -> OptionsPatch {
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

    pub(super) fn defaults(&mut self, v: Option<&Value>) -> Defaults {
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
}
