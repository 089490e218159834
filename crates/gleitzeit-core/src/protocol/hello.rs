//! `service:hello` and the functions it announces.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ProtocolError;
use super::fields::{json_type, opt_int, opt_str, req_int, req_str, require_object};

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
