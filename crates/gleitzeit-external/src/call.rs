//! What the worker asks of a task service: one function call, and the limits applied to it.

use std::io;
use std::time::Duration;

use serde_json::{Map, Value};

/// One call of a service function.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalCall {
    /// Service name as workflows use it (`Python Tasks`).
    pub service: String,
    /// Function name.
    pub function: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// `<workflow id>:<task index>`, for the service's logs.
    pub task_id: Option<String>,
    /// `<workflow id>/<task name>`: the service runs a call with the same key (and function)
    /// once and answers repeats from memory, which makes retries safe.
    pub idempotency_key: Option<String>,
    /// Deadline of the call, sent to the service (which enforces it) and awaited with a small
    /// grace period; `None` uses the configured default.
    pub timeout: Option<Duration>,
}

impl ExternalCall {
    /// A call of `function` on `service` without arguments, key or deadline.
    pub fn new(service: impl Into<String>, function: impl Into<String>) -> ExternalCall {
        ExternalCall {
            service: service.into(),
            function: function.into(),
            args: Vec::new(),
            kwargs: Map::new(),
            task_id: None,
            idempotency_key: None,
            timeout: None,
        }
    }

    /// Sets the positional arguments.
    pub fn args(mut self, args: Vec<Value>) -> ExternalCall {
        self.args = args;
        self
    }

    /// Sets the keyword arguments.
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> ExternalCall {
        self.kwargs = kwargs;
        self
    }

    /// Sets the deadline.
    pub fn timeout(mut self, timeout: Duration) -> ExternalCall {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> ExternalCall {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the task id.
    pub fn task_id(mut self, id: impl Into<String>) -> ExternalCall {
        self.task_id = Some(id.into());
        self
    }
}

/// Limits every call of a connection obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Deadline of a call that brings none.
    pub default_timeout: Duration,
    /// Extra wait beyond the deadline for the service's own `timeout` answer.
    pub timeout_grace: Duration,
    /// Largest accepted result, in bytes of JSON.
    pub max_result_bytes: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            default_timeout: Duration::from_secs(300),
            timeout_grace: Duration::from_secs(2),
            max_result_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Size of `value` encoded as compact JSON, counted without building the text.
pub fn json_size(value: &Value) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` to a writer that never fails cannot fail.
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_size_counts_compact_bytes() {
        for value in [
            json!(null),
            json!({"a": [1, 2, "ü"], "b": {"c": true}}),
            json!("x".repeat(1000)),
        ] {
            assert_eq!(json_size(&value), serde_json::to_vec(&value).unwrap().len());
        }
    }

    #[test]
    fn builder_sets_fields() {
        let call = ExternalCall::new("S", "f")
            .args(vec![json!(1)])
            .timeout(Duration::from_secs(2))
            .idempotency_key("wf/t")
            .task_id("wf:0");
        assert_eq!(call.args, vec![json!(1)]);
        assert_eq!(call.timeout, Some(Duration::from_secs(2)));
        assert_eq!(call.idempotency_key.as_deref(), Some("wf/t"));
        assert_eq!(call.task_id.as_deref(), Some("wf:0"));
    }
}
