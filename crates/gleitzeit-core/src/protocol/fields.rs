//! Validation of single fields, shared by the decoders: objects, strings and integers with the
//! protocol's rules, each error naming the field (`call.args must be an array, got object`).

use serde_json::{Map, Value};

use super::error::ProtocolError;

pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(super) fn require_object<'a>(
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
pub(super) fn opt_str(
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

pub(super) fn req_str(
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
pub(super) fn opt_int(
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

pub(super) fn req_int(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
    minimum: u64,
    request_id: Option<&str>,
) -> Result<u64, ProtocolError> {
    opt_int(obj, key, what, minimum, request_id)?
        .ok_or_else(|| ProtocolError::new(format!("{what}.{key} is required"), request_id))
}
