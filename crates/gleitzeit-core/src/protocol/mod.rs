//! Messages of the task service protocol v2 (`docs/protocol.md`) between a worker (Socket.IO
//! client) and a Python task service (server).
//!
//! This module depends on `serde` and `serde_json` only, so it can move into `gleitzeit-core`
//! unchanged. Decoders are strict about the fields they know (types, required keys, the closed
//! set of error kinds) and ignore fields they do not know, so a newer peer can add optional
//! fields; encoders always write every known field, which gives each message one canonical form.
//! The rules mirror `python/gleitzeit/protocol.py`; both sides are tested against the fixtures in
//! `tests/protocol/`.

mod auth;
mod call;
mod error;
mod fields;
mod hello;
mod payload;
mod result;

pub use auth::{ConnectAuth, ServiceAuth, WorkerAuth};
pub use call::Call;
pub use error::ProtocolError;
pub use hello::{FunctionInfo, Hello};
pub use payload::{to_value, unwrap_payload, unwrap_payload_owned};
pub use result::{ErrorInfo, ErrorKind, TaskResultMsg};

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
