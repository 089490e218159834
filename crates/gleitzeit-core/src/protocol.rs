//! Messages of the task service protocol v2 (`docs/protocol.md`) between a worker (Socket.IO
//! client) and a Python task service (server).
//!
//! This module depends on `serde` and `serde_json` only, so it can move into `gleitzeit-core`
//! unchanged. Decoders are strict about the fields they know (types, required keys, the closed
//! set of error kinds) and ignore fields they do not know, so a newer peer can add optional
//! fields; encoders always write every known field, which gives each message one canonical form.
//! The rules mirror `python/gleitzeit/protocol.py`; both sides are tested against the fixtures in
//! `tests/protocol/`.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// The protocol version this module speaks. A worker refuses a service announcing another one.
/// Version 2 replaced the token in the connect `auth` with the challenge-response of
/// [`crate::handshake`].
pub const PROTOCOL_VERSION: u64 = 2;

/// Service → worker, once after an accepted connect: a [`Hello`] carrying the service's nonce
/// and proof.
pub const EVENT_HELLO: &str = "service:hello";
/// Worker → service, once the worker verified the service's proof: a [`WorkerAuth`].
pub const EVENT_WORKER_AUTH: &str = "worker:auth";
/// Service → worker: whether it accepted the worker's proof, a [`ServiceAuth`].
pub const EVENT_SERVICE_AUTH: &str = "service:auth";
/// Worker → service: run a function, a [`Call`].
pub const EVENT_CALL: &str = "task:call";
/// Service → worker: the outcome of one call, a [`TaskResultMsg`] matched by `request_id`.
pub const EVENT_RESULT: &str = "task:result";

/// A message does not have the shape the protocol requires.
///
/// Never retryable: the same bytes fail the same way. `request_id` is the request id of the
/// offending message when one could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// What is wrong, naming the field (`call.args must be an array, got object`).
    pub message: String,
    /// The message's request id, when it could be read before the fault.
    pub request_id: Option<String>,
}

impl ProtocolError {
    fn new(message: impl Into<String>, request_id: Option<&str>) -> ProtocolError {
        ProtocolError {
            message: message.into(),
            request_id: request_id.map(str::to_owned),
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// Returns the one payload of a Socket.IO event from its arguments.
///
/// Some clients (`rust_socketio` among them) wrap the payload in an extra JSON array, so a
/// single-element array holding an object is unwrapped. Any other number of arguments than one
/// is malformed.
///
/// # Errors
/// [`ProtocolError`] when there is not exactly one argument.
pub fn unwrap_payload(args: &[Value]) -> Result<&Value, ProtocolError> {
    let [payload] = args else {
        return Err(ProtocolError::new(
            format!(
                "an event carries exactly one payload, got {} arguments",
                args.len()
            ),
            None,
        ));
    };
    match payload {
        Value::Array(inner) if inner.len() == 1 && inner[0].is_object() => Ok(&inner[0]),
        other => Ok(other),
    }
}

/// Like [`unwrap_payload`], but takes the arguments by value and returns the payload without
/// copying it.
///
/// # Errors
/// [`ProtocolError`] when there is not exactly one argument.
pub fn unwrap_payload_owned(args: Vec<Value>) -> Result<Value, ProtocolError> {
    let count = args.len();
    let mut args = args.into_iter();
    match (args.next(), args.next()) {
        (Some(Value::Array(inner)), None) if inner.len() == 1 && inner[0].is_object() => {
            Ok(inner.into_iter().next().unwrap_or(Value::Null))
        }
        (Some(payload), None) => Ok(payload),
        _ => Err(ProtocolError::new(
            format!("an event carries exactly one payload, got {count} arguments"),
            None,
        )),
    }
}

/// One function a service offers, as announced in [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct FunctionInfo {
    /// The name calls use.
    pub name: String,
    /// First paragraph of the docstring (may be empty).
    pub description: String,
    /// The function's own time limit in milliseconds, `None` when it has none.
    pub timeout_ms: Option<u64>,
}

impl FunctionInfo {
    /// Decodes and validates a function entry.
    ///
    /// # Errors
    /// [`ProtocolError`] naming the offending field.
    pub fn from_value(value: &Value) -> Result<FunctionInfo, ProtocolError> {
        let obj = require_object(value, "function", None)?;
        Ok(FunctionInfo {
            name: req_str(obj, "name", "function", true, None)?,
            description: opt_str(obj, "description", "function", false, None)?.unwrap_or_default(),
            timeout_ms: opt_int(obj, "timeout_ms", "function", 1, None)?,
        })
    }
}

impl TryFrom<Value> for FunctionInfo {
    type Error = ProtocolError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        FunctionInfo::from_value(&value)
    }
}

/// The connect `auth` object of a worker: `{"nonce": "<64 hex>"}`. The token is never in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct ConnectAuth {
    /// The worker's fresh nonce for this connection.
    pub nonce: String,
}

impl ConnectAuth {
    /// Decodes and validates a connect `auth` object.
    ///
    /// # Errors
    /// [`ProtocolError`] naming the offending field.
    pub fn from_value(value: &Value) -> Result<ConnectAuth, ProtocolError> {
        let obj = require_object(value, "auth", None)?;
        let nonce = req_str(obj, "nonce", "auth", true, None)?;
        crate::handshake::check_nonce(&nonce, "auth.nonce")?;
        Ok(ConnectAuth { nonce })
    }
}

impl TryFrom<Value> for ConnectAuth {
    type Error = ProtocolError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        ConnectAuth::from_value(&value)
    }
}

/// `worker:auth`: the worker's proof, sent only after the service's proof checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct WorkerAuth {
    /// HMAC-SHA256 under the worker label (`crate::handshake::worker_proof`), 64 hex digits.
    pub proof: String,
}

impl WorkerAuth {
    /// Decodes and validates a `worker:auth` payload.
    ///
    /// # Errors
    /// [`ProtocolError`] naming the offending field.
    pub fn from_value(value: &Value) -> Result<WorkerAuth, ProtocolError> {
        let obj = require_object(value, "worker_auth", None)?;
        let proof = req_str(obj, "proof", "worker_auth", true, None)?;
        crate::handshake::check_proof(&proof, "worker_auth.proof")?;
        Ok(WorkerAuth { proof })
    }
}

impl TryFrom<Value> for WorkerAuth {
    type Error = ProtocolError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        WorkerAuth::from_value(&value)
    }
}

/// `service:auth`: the service's verdict on the worker's proof. After `accepted: false` the
/// service closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct ServiceAuth {
    /// Whether the worker's proof checked out; calls are served only after `true`.
    pub accepted: bool,
    /// Why it was refused (`null` when accepted).
    pub message: Option<String>,
}

impl ServiceAuth {
    /// Decodes and validates a `service:auth` payload.
    ///
    /// # Errors
    /// [`ProtocolError`] naming the offending field.
    pub fn from_value(value: &Value) -> Result<ServiceAuth, ProtocolError> {
        let obj = require_object(value, "service_auth", None)?;
        let accepted = match obj.get("accepted") {
            Some(Value::Bool(b)) => *b,
            other => {
                return Err(ProtocolError::new(
                    format!(
                        "service_auth.accepted must be a boolean, got {}",
                        json_type(other.unwrap_or(&Value::Null))
                    ),
                    None,
                ))
            }
        };
        let message = opt_str(obj, "message", "service_auth", false, None)?;
        Ok(ServiceAuth { accepted, message })
    }
}

impl TryFrom<Value> for ServiceAuth {
    type Error = ProtocolError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        ServiceAuth::from_value(&value)
    }
}

/// `service:hello`: what the service is and what it serves, and its half of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct Hello {
    /// Protocol version the service speaks (≥ 1).
    pub protocol: u64,
    /// Service name as workflows use it.
    pub service: String,
    /// Instance id, `<hostname>-<pid>-<8 hex>`.
    pub instance: String,
    /// Every function the service serves.
    pub functions: Vec<FunctionInfo>,
    /// Calls the service runs at once (≥ 1); more are answered `overloaded`.
    pub max_concurrency: u64,
    /// The address the service advertises (and registers), `http(s)://host:port`.
    pub url: String,
    /// The service's fresh nonce for this connection (64 hex digits).
    pub nonce: String,
    /// The service's proof (`crate::handshake::service_proof`), or `None` from a service
    /// started without a token (development only; workers never use such a service).
    pub proof: Option<String>,
}

impl Hello {
    /// Decodes and validates a hello payload.
    ///
    /// # Errors
    /// [`ProtocolError`] naming the offending field.
    pub fn from_value(value: &Value) -> Result<Hello, ProtocolError> {
        let obj = require_object(value, "hello", None)?;
        let protocol = req_int(obj, "protocol", "hello", 1, None)?;
        let service = req_str(obj, "service", "hello", true, None)?;
        let instance = req_str(obj, "instance", "hello", true, None)?;
        let functions = match obj.get("functions") {
            Some(Value::Array(items)) => items
                .iter()
                .map(FunctionInfo::from_value)
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                return Err(ProtocolError::new(
                    format!(
                        "hello.functions must be an array, got {}",
                        json_type(other.unwrap_or(&Value::Null))
                    ),
                    None,
                ))
            }
        };
        let max_concurrency = req_int(obj, "max_concurrency", "hello", 1, None)?;
        let url = req_str(obj, "url", "hello", true, None)?;
        let nonce = req_str(obj, "nonce", "hello", true, None)?;
        crate::handshake::check_nonce(&nonce, "hello.nonce")?;
        let proof = opt_str(obj, "proof", "hello", true, None)?;
        if let Some(proof) = &proof {
            crate::handshake::check_proof(proof, "hello.proof")?;
        }
        Ok(Hello {
            protocol,
            service,
            instance,
            functions,
            max_concurrency,
            url,
            nonce,
            proof,
        })
    }
}

impl TryFrom<Value> for Hello {
    type Error = ProtocolError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Hello::from_value(&value)
    }
}

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

/// Encodes a message into its canonical JSON form (every known field written).
///
/// # Errors
/// Only if a value cannot be represented in JSON, which the types here rule out; the error is
/// still returned rather than hidden.
pub fn to_value<T: Serialize>(message: &T) -> Result<Value, ProtocolError> {
    serde_json::to_value(message)
        .map_err(|e| ProtocolError::new(format!("cannot encode message: {e}"), None))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn require_object<'a>(
    value: &'a Value,
    what: &str,
    request_id: Option<&str>,
) -> Result<&'a Map<String, Value>, ProtocolError> {
    value.as_object().ok_or_else(|| {
        ProtocolError::new(
            format!("{what} must be a JSON object, got {}", json_type(value)),
            request_id,
        )
    })
}

/// A string field that may be absent or `null`.
fn opt_str(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
    non_empty: bool,
    request_id: Option<&str>,
) -> Result<Option<String>, ProtocolError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if non_empty && s.is_empty() => Err(ProtocolError::new(
            format!("{what}.{key} must not be empty"),
            request_id,
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ProtocolError::new(
            format!("{what}.{key} must be a string, got {}", json_type(other)),
            request_id,
        )),
    }
}

fn req_str(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
    non_empty: bool,
    request_id: Option<&str>,
) -> Result<String, ProtocolError> {
    opt_str(obj, key, what, non_empty, request_id)?
        .ok_or_else(|| ProtocolError::new(format!("{what}.{key} is required"), request_id))
}

/// An integer field that may be absent or `null`. JSON has one number type, so an integral
/// float (`2500.0`) is that integer; `1.5` and booleans are not integers.
fn opt_int(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
    minimum: u64,
    request_id: Option<&str>,
) -> Result<Option<u64>, ProtocolError> {
    let value = match obj.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let not_int = || {
        ProtocolError::new(
            format!("{what}.{key} must be an integer, got {}", json_type(value)),
            request_id,
        )
    };
    let Value::Number(n) = value else {
        return Err(not_int());
    };
    let int: i128 = if let Some(u) = n.as_u64() {
        i128::from(u)
    } else if let Some(i) = n.as_i64() {
        i128::from(i)
    } else {
        match n.as_f64() {
            // 2^64 is the first float beyond u64; anything that large is out of range anyway.
            Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1.8e19 => f as i128,
            _ => return Err(not_int()),
        }
    };
    if int < i128::from(minimum) {
        return Err(ProtocolError::new(
            format!("{what}.{key} must be >= {minimum}, got {int}"),
            request_id,
        ));
    }
    u64::try_from(int)
        .map(Some)
        .map_err(|_| ProtocolError::new(format!("{what}.{key} is out of range"), request_id))
}

fn req_int(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
    minimum: u64,
    request_id: Option<&str>,
) -> Result<u64, ProtocolError> {
    opt_int(obj, key, what, minimum, request_id)?
        .ok_or_else(|| ProtocolError::new(format!("{what}.{key} is required"), request_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unwrap_accepts_plain_and_wrapped_payloads() {
        let obj = json!({"request_id": "r"});
        assert_eq!(unwrap_payload(std::slice::from_ref(&obj)).unwrap(), &obj);
        let wrapped = json!([{"request_id": "r"}]);
        assert_eq!(unwrap_payload(&[wrapped]).unwrap(), &obj);
        // A one-element array holding a non-object is a payload of its own, not a wrapper.
        let list = json!([1]);
        assert_eq!(unwrap_payload(std::slice::from_ref(&list)).unwrap(), &list);
        assert!(unwrap_payload(&[]).is_err());
        assert!(unwrap_payload(&[obj.clone(), obj.clone()]).is_err());
        assert_eq!(
            unwrap_payload_owned(vec![json!([{"request_id": "r"}])]).unwrap(),
            obj
        );
        assert_eq!(unwrap_payload_owned(vec![obj.clone()]).unwrap(), obj);
        assert_eq!(unwrap_payload_owned(vec![list.clone()]).unwrap(), list);
        assert!(unwrap_payload_owned(vec![]).is_err());
        assert!(unwrap_payload_owned(vec![obj.clone(), obj]).is_err());
    }

    #[test]
    fn owned_decoding_moves_the_result_and_keeps_the_rules() {
        let msg = TaskResultMsg::from_value_owned(json!({
            "request_id": "r", "ok": true, "result": {"big": [1, 2, 3]}, "duration_ms": 4
        }))
        .unwrap();
        assert_eq!(
            msg,
            TaskResultMsg::Ok {
                request_id: "r".into(),
                result: json!({"big": [1, 2, 3]}),
                duration_ms: 4
            }
        );
        // A missing result key stays an error: the owned path swaps only a present result.
        assert!(TaskResultMsg::from_value_owned(
            json!({"request_id": "r", "ok": true, "duration_ms": 4})
        )
        .is_err());
        assert!(TaskResultMsg::from_value_owned(
            json!({"request_id": null, "ok": true, "result": 1, "duration_ms": 4})
        )
        .is_err());
    }

    #[test]
    fn integers_accept_integral_floats_only() {
        let call =
            Call::from_value(&json!({"request_id": "r", "function": "f", "timeout_ms": 3.0}))
                .unwrap();
        assert_eq!(call.timeout_ms, Some(3));
        for bad in [
            json!(1.5),
            json!(true),
            json!("3"),
            json!(0),
            json!(-2),
            json!(f64::MAX),
        ] {
            let err =
                Call::from_value(&json!({"request_id": "r", "function": "f", "timeout_ms": bad}))
                    .unwrap_err();
            assert_eq!(err.request_id.as_deref(), Some("r"), "{bad}");
        }
    }

    #[test]
    fn error_kind_wire_names_round_trip() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_wire(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        }
        assert_eq!(ErrorKind::from_wire("crash"), None);
        assert!(ErrorKind::NotJson.never_retryable());
        assert!(!ErrorKind::Timeout.never_retryable());
    }

    #[test]
    fn serde_deserialize_applies_the_same_validation() {
        let hello: Result<Hello, _> = serde_json::from_value(json!({
            "protocol": 2, "service": "", "instance": "i", "functions": [], "max_concurrency": 1,
            "url": "http://h:1", "nonce": "0".repeat(64), "proof": null
        }));
        let err = hello.unwrap_err().to_string();
        assert!(err.contains("hello.service must not be empty"), "{err}");
    }
}
