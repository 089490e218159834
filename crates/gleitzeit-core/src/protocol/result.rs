//! `task:result`: the outcome of one call, and the closed set of error kinds.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::error::ProtocolError;
use super::fields::{json_type, opt_str, req_int, req_str, require_object};

/// Why a call failed. A closed set: a new kind needs a new protocol version, because a worker
/// cannot know whether retrying an unknown kind can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The function raised.
    Exception,
    /// The service has no such function.
    UnknownFunction,
    /// The call was malformed or its arguments do not fit the function's signature.
    BadRequest,
    /// The function returned something JSON cannot encode.
    NotJson,
    /// The call ran longer than its time limit.
    Timeout,
    /// The service runs `max_concurrency` calls already, or is shutting down.
    Overloaded,
}

impl ErrorKind {
    /// Every kind of the protocol (unchanged since version 1).
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Exception,
        ErrorKind::UnknownFunction,
        ErrorKind::BadRequest,
        ErrorKind::NotJson,
        ErrorKind::Timeout,
        ErrorKind::Overloaded,
    ];

    /// The wire name (`exception`, `unknown_function`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Exception => "exception",
            ErrorKind::UnknownFunction => "unknown_function",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NotJson => "not_json",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Overloaded => "overloaded",
        }
    }

    /// Parses a wire name.
    pub fn from_wire(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the protocol fixes this kind as never retryable whatever the message says: the
    /// same call would fail the same way.
    pub fn never_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::UnknownFunction | ErrorKind::BadRequest | ErrorKind::NotJson
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call failed, and whether calling again can help.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct ErrorInfo {
    /// One of the six kinds.
    pub kind: ErrorKind,
    /// The exception class name (or `UnknownFunction`, `BadRequest`, ...).
    #[serde(rename = "type")]
    pub r#type: String,
    /// Human-readable message (cut at 8 KiB by the service).
    pub message: String,
    /// Python traceback (its end kept, cut at 32 KiB), when there is one.
    pub traceback: Option<String>,
    /// Whether calling again can succeed, as the service says.
    pub retryable: bool,
}

impl ErrorInfo {
    /// Decodes and validates an error object.
    ///
    /// # Errors
    /// [`ProtocolError`] naming the offending field.
    pub fn from_value(value: &Value) -> Result<ErrorInfo, ProtocolError> {
        let obj = require_object(value, "error", None)?;
        let kind_name = req_str(obj, "kind", "error", true, None)?;
        let kind = ErrorKind::from_wire(&kind_name).ok_or_else(|| {
            let known: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
            ProtocolError::new(
                format!(
                    "error.kind {kind_name:?} is not one of {}",
                    known.join(", ")
                ),
                None,
            )
        })?;
        let r#type = req_str(obj, "type", "error", true, None)?;
        let message = req_str(obj, "message", "error", false, None)?;
        let traceback = opt_str(obj, "traceback", "error", false, None)?;
        let retryable = match obj.get("retryable") {
            Some(Value::Bool(b)) => *b,
            other => {
                return Err(ProtocolError::new(
                    format!(
                        "error.retryable must be a boolean, got {}",
                        json_type(other.unwrap_or(&Value::Null))
                    ),
                    None,
                ))
            }
        };
        Ok(ErrorInfo {
            kind,
            r#type,
            message,
            traceback,
            retryable,
        })
    }
}

impl TryFrom<Value> for ErrorInfo {
    type Error = ProtocolError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        ErrorInfo::from_value(&value)
    }
}

/// `task:result`: the outcome of one call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
pub enum TaskResultMsg {
    /// The function returned `result` (any JSON value, `null` included).
    Ok {
        /// The call's request id.
        request_id: String,
        /// What the function returned.
        result: Value,
        /// How long the function ran.
        duration_ms: u64,
    },
    /// The call failed.
    Err {
        /// The call's request id; `None` only in a `bad_request` answer to a call whose request
        /// id could not be read (such an answer cannot be matched to a call).
        request_id: Option<String>,
        /// Why.
        error: ErrorInfo,
    },
}

impl TaskResultMsg {
    /// The request id the answer is for, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            TaskResultMsg::Ok { request_id, .. } => Some(request_id),
            TaskResultMsg::Err { request_id, .. } => request_id.as_deref(),
        }
    }

    /// Decodes and validates a result payload.
    ///
    /// # Errors
    /// [`ProtocolError`] naming the offending field.
    pub fn from_value(value: &Value) -> Result<TaskResultMsg, ProtocolError> {
        let obj = require_object(value, "result", None)?;
        if !obj.contains_key("request_id") {
            return Err(ProtocolError::new(
                "result.request_id is required (null only for bad_request)",
                None,
            ));
        }
        let request_id = opt_str(obj, "request_id", "result", true, None)?;
        let rid = request_id.as_deref();
        let ok = match obj.get("ok") {
            Some(Value::Bool(b)) => *b,
            other => {
                return Err(ProtocolError::new(
                    format!(
                        "result.ok must be a boolean, got {}",
                        json_type(other.unwrap_or(&Value::Null))
                    ),
                    rid,
                ))
            }
        };
        if ok {
            let Some(result) = obj.get("result") else {
                return Err(ProtocolError::new(
                    "result.result is required when ok is true",
                    rid,
                ));
            };
            let duration_ms = req_int(obj, "duration_ms", "result", 0, rid)?;
            let Some(request_id) = request_id else {
                return Err(ProtocolError::new(
                    "result.request_id is required when ok is true",
                    None,
                ));
            };
            return Ok(TaskResultMsg::Ok {
                request_id,
                result: result.clone(),
                duration_ms,
            });
        }
        let Some(error) = obj.get("error") else {
            return Err(ProtocolError::new(
                "result.error is required when ok is false",
                rid,
            ));
        };
        let error = ErrorInfo::from_value(error).map_err(|mut e| {
            e.request_id = request_id.clone();
            e
        })?;
        if request_id.is_none() && error.kind != ErrorKind::BadRequest {
            return Err(ProtocolError::new(
                "result.request_id may be null only for bad_request",
                None,
            ));
        }
        Ok(TaskResultMsg::Err { request_id, error })
    }

    /// Like [`TaskResultMsg::from_value`], but moves a (possibly large) result out of `value`
    /// instead of cloning it.
    ///
    /// # Errors
    /// [`ProtocolError`] naming the offending field.
    pub fn from_value_owned(mut value: Value) -> Result<TaskResultMsg, ProtocolError> {
        // The result is swapped for `null`, which keeps the "result key present" rule
        // checkable, and put back after validation.
        let taken = value
            .as_object_mut()
            .and_then(|obj| obj.get_mut("result"))
            .map(Value::take);
        match (TaskResultMsg::from_value(&value)?, taken) {
            (
                TaskResultMsg::Ok {
                    request_id,
                    duration_ms,
                    ..
                },
                Some(result),
            ) => Ok(TaskResultMsg::Ok {
                request_id,
                result,
                duration_ms,
            }),
            (decoded, _) => Ok(decoded),
        }
    }
}

impl TryFrom<Value> for TaskResultMsg {
    type Error = ProtocolError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        TaskResultMsg::from_value_owned(value)
    }
}

impl Serialize for TaskResultMsg {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(4))?;
        match self {
            TaskResultMsg::Ok {
                request_id,
                result,
                duration_ms,
            } => {
                map.serialize_entry("request_id", request_id)?;
                map.serialize_entry("ok", &true)?;
                map.serialize_entry("result", result)?;
                map.serialize_entry("duration_ms", duration_ms)?;
            }
            TaskResultMsg::Err { request_id, error } => {
                map.serialize_entry("request_id", request_id)?;
                map.serialize_entry("ok", &false)?;
                map.serialize_entry("error", error)?;
            }
        }
        map.end()
    }
}
