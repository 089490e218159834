//! The error of every decoder: what is wrong with a message, and its request id when one
//! could be read.

use std::fmt;

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
    pub(super) fn new(message: impl Into<String>, request_id: Option<&str>) -> ProtocolError {
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
