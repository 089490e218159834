//! [`Checker`]: collects every error while the workflow value is walked, and reads typed
//! values (strings, words, numbers, durations, timeouts) from it, reporting wrong ones with
//! their path.

use std::time::Duration;

use serde_json::{Map, Value};

use super::fields::{at, field, type_name, words};
use crate::duration::{duration_from_value, format_duration, DurationError};
use crate::error::{ErrorKind, ValidationError};
use crate::limits::Limits;
use crate::names;

/// Collects errors while walking the value.
pub(super) struct Checker<'l> {
    pub(super) errs: Vec<ValidationError>,
    pub(super) limits: &'l Limits,
}

impl Checker<'_> {
    pub(super) fn err(
        &mut self,
        path: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) {
        self.errs.push(ValidationError::new(path, kind, message));
    }

    pub(super) fn wrong_type(&mut self, path: String, expected: &str, found: &Value) {
        self.err(
            path,
            ErrorKind::WrongType,
            format!("expected {expected}, found {}", type_name(found)),
        );
    }

    pub(super) fn check_fields(
        &mut self,
        m: &Map<String, Value>,
        allowed: &[&str],
        base: &str,
        what: &str,
    ) {
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

    pub(super) fn string(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        base: &str,
    ) -> Option<String> {
        match field(m, key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(at(base, key), "a string", other);
                None
            }
        }
    }

    pub(super) fn required_string(
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

    pub(super) fn bool(&mut self, m: &Map<String, Value>, key: &str, base: &str) -> Option<bool> {
        match field(m, key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong_type(at(base, key), "true or false", other);
                None
            }
        }
    }

    pub(super) fn word<T: Copy>(
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
    pub(super) fn integer(&mut self, v: &Value, path: &str) -> Option<i128> {
        if let Some(u) = v.as_u64() {
            return Some(i128::from(u));
        }
        if let Some(i) = v.as_i64() {
            return Some(i128::from(i));
        }
        self.wrong_type(path.to_owned(), "a whole number", v);
        None
    }

    pub(super) fn delay(&mut self, v: &Value, path: String) -> Option<Duration> {
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

    pub(super) fn timeout(&mut self, v: &Value, path: String) -> Option<Duration> {
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

    /// A workflow's `retention`: at least one second (Redis expires keys in whole seconds),
    /// at most `Limits::max_retention`.
    pub(super) fn retention(&mut self, v: &Value, path: String) -> Option<Duration> {
        let max = self.limits.max_retention;
        match duration_from_value(v) {
            Ok(d) if d < Duration::from_secs(1) => {
                self.err(
                    path,
                    ErrorKind::InvalidRetention,
                    "retention must be at least 1s",
                );
                None
            }
            Ok(d) if d > max => {
                self.err(
                    path,
                    ErrorKind::InvalidRetention,
                    // In days: humantime writes a year as "11months 30days 3h 50m 24s".
                    format!(
                        "retention {} exceeds the limit of {} days",
                        format_duration(d),
                        max.as_secs() / 86_400
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(DurationError::Negative) => {
                self.err(
                    path,
                    ErrorKind::InvalidRetention,
                    "retention must be at least 1s",
                );
                None
            }
            Err(_) => self.delay(v, path),
        }
    }

    pub(super) fn float_in(
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
    pub(super) fn count(&mut self, m: &Map<String, Value>, key: &str, base: &str) -> Option<u32> {
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

    pub(super) fn model(&mut self, m: &Map<String, Value>, base: &str) -> Option<String> {
        let model = self.string(m, "model", base)?;
        match names::check_model_name(&model) {
            Ok(()) => Some(model),
            Err(msg) => {
                self.err(at(base, "model"), ErrorKind::InvalidModelName, msg);
                None
            }
        }
    }
}
