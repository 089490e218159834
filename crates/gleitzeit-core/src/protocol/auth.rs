//! The handshake messages after the connect: the connect `auth` with the worker's nonce,
//! `worker:auth` with its proof, and `service:auth` with the service's verdict.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ProtocolError;
use super::fields::{json_type, opt_str, req_str, require_object};

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
