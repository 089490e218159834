//! `task:call`: one function call from a worker.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ProtocolError;
use super::fields::{json_type, opt_int, opt_str, req_str, require_object};

/// `task:call`: run `function(*args, **kwargs)` and answer with `request_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct Call {
    /// Chosen by the worker, unique among its calls in flight.
    pub request_id: String,
    /// `<workflow id>:<task index>`, for logs.
    pub task_id: Option<String>,
    /// `<workflow id>/<task name>`: calls with the same key (and function) run once.
    pub idempotency_key: Option<String>,
    /// The function to run.
    pub function: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// The worker's deadline for this call in milliseconds (≥ 1).
    pub timeout_ms: Option<u64>,
}

impl Call {
    /// Decodes and validates a call payload. The request id is read first so that every later
    /// error still carries it.
    ///
    /// # Errors
    /// [`ProtocolError`] naming the offending field.
    pub fn from_value(value: &Value) -> Result<Call, ProtocolError> {
        let obj = require_object(value, "call", None)?;
        let request_id = req_str(obj, "request_id", "call", true, None)?;
        let rid = Some(request_id.as_str());
        let function = req_str(obj, "function", "call", true, rid)?;
        let task_id = opt_str(obj, "task_id", "call", true, rid)?;
        let idempotency_key = opt_str(obj, "idempotency_key", "call", true, rid)?;
        let args = match obj.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(other) => {
                return Err(ProtocolError::new(
                    format!("call.args must be an array, got {}", json_type(other)),
                    rid,
                ))
            }
        };
        let kwargs = match obj.get("kwargs") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(other) => {
                return Err(ProtocolError::new(
                    format!("call.kwargs must be an object, got {}", json_type(other)),
                    rid,
                ))
            }
        };
        let timeout_ms = opt_int(obj, "timeout_ms", "call", 1, rid)?;
        Ok(Call {
            request_id,
            task_id,
            idempotency_key,
            function,
            args,
            kwargs,
            timeout_ms,
        })
    }
}

impl TryFrom<Value> for Call {
    type Error = ProtocolError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Call::from_value(&value)
    }
}
