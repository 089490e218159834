//! Encoding: unwrapping the one payload of a Socket.IO event, and the canonical JSON form of a
//! message.

use serde::Serialize;
use serde_json::Value;

use super::error::ProtocolError;

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

/// Encodes a message into its canonical JSON form (every known field written).
///
/// # Errors
/// Only if a value cannot be represented in JSON, which the types here rule out; the error is
/// still returned rather than hidden.
pub fn to_value<T: Serialize>(message: &T) -> Result<Value, ProtocolError> {
    serde_json::to_value(message)
        .map_err(|e| ProtocolError::new(format!("cannot encode message: {e}"), None))
}
