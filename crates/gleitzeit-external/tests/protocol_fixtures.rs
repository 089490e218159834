//! The protocol types against every shared fixture in `tests/protocol/` (the Python package
//! checks its own encoders and decoders against the same files): valid messages decode and
//! re-encode to their canonical (`normalized`) form, invalid ones are refused.

use std::path::{Path, PathBuf};

use gleitzeit_core::handshake::{
    service_proof, verify_service_proof, verify_worker_proof, worker_proof, ProofInput,
    SERVICE_PROOF_LABEL, WORKER_PROOF_LABEL,
};
use gleitzeit_external::keys::{instance_key, service_key};
use gleitzeit_external::protocol::{
    to_value, unwrap_payload, unwrap_payload_owned, Call, ConnectAuth, ErrorKind, Hello,
    ServiceAuth, TaskResultMsg, WorkerAuth, EVENT_CALL, EVENT_HELLO, EVENT_RESULT,
    EVENT_SERVICE_AUTH, EVENT_WORKER_AUTH,
};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/protocol")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn cases<'a>(fixture: &'a Value, key: &str) -> &'a Vec<Value> {
    fixture[key].as_array().unwrap()
}

/// Decodes every valid message with `decode`, re-encodes it and compares with `normalized`
/// (or the message itself); checks every invalid message is refused. Returns the decoded
/// valid messages.
fn check<T, D>(file: &str, decode: D) -> Vec<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug + PartialEq,
    D: Fn(&Value) -> Result<T, gleitzeit_external::protocol::ProtocolError>,
{
    let fixture = load(file);
    let mut decoded = Vec::new();
    for case in cases(&fixture, "valid") {
        let name = case["name"].as_str().unwrap();
        let message = &case["message"];
        let value = decode(message).unwrap_or_else(|e| panic!("{file} / {name}: {e}"));
        let expected = case.get("normalized").unwrap_or(message);
        assert_eq!(&to_value(&value).unwrap(), expected, "{file} / {name}");
        // serde's Deserialize applies the same rules.
        let via_serde: T = serde_json::from_value(message.clone())
            .unwrap_or_else(|e| panic!("{file} / {name} via serde: {e}"));
        assert_eq!(via_serde, value, "{file} / {name}");
        // The canonical form decodes to the same message.
        assert_eq!(decode(expected).unwrap(), value, "{file} / {name}");
        decoded.push(value);
    }
    for case in cases(&fixture, "invalid") {
        let name = case["name"].as_str().unwrap();
        let message = &case["message"];
        assert!(decode(message).is_err(), "{file} / {name} must be refused");
        assert!(
            serde_json::from_value::<T>(message.clone()).is_err(),
            "{file} / {name} must be refused via serde"
        );
    }
    decoded
}

#[test]
fn hello_fixtures() {
    let fixture = load("hello.json");
    assert_eq!(fixture["event"], EVENT_HELLO);
    let decoded = check("hello.json", Hello::from_value);
    assert_eq!(decoded[0].functions[0].timeout_ms, Some(10000));
    assert_eq!(decoded[2].functions[0].description, "");
    assert_eq!(
        decoded[1].proof, None,
        "a service without a token sends no proof"
    );
    assert!(decoded[0].proof.is_some());
}

#[test]
fn handshake_message_fixtures() {
    let decoded = check("connect_auth.json", ConnectAuth::from_value);
    assert_eq!(decoded[0].nonce.len(), 64);
    let fixture = load("worker_auth.json");
    assert_eq!(fixture["event"], EVENT_WORKER_AUTH);
    check("worker_auth.json", WorkerAuth::from_value);
    let fixture = load("service_auth.json");
    assert_eq!(fixture["event"], EVENT_SERVICE_AUTH);
    let decoded = check("service_auth.json", ServiceAuth::from_value);
    assert!(decoded[0].accepted && !decoded[2].accepted);
}

#[test]
fn handshake_test_vectors() {
    let fixture = load("handshake.json");
    assert_eq!(fixture["service_label"], SERVICE_PROOF_LABEL);
    assert_eq!(fixture["worker_label"], WORKER_PROOF_LABEL);
    let vectors = cases(&fixture, "vectors");
    assert!(!vectors.is_empty());
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let s = |k: &str| v[k].as_str().unwrap();
        let token = s("token").as_bytes();
        let input = ProofInput {
            service: s("service"),
            instance: s("instance"),
            url: s("url"),
            worker_nonce: s("worker_nonce"),
            service_nonce: s("service_nonce"),
        };
        assert_eq!(
            hex::encode(input.message(SERVICE_PROOF_LABEL)),
            s("service_message_hex"),
            "{name}"
        );
        assert_eq!(service_proof(token, &input), s("service_proof"), "{name}");
        assert_eq!(worker_proof(token, &input), s("worker_proof"), "{name}");
        assert!(verify_service_proof(token, &input, s("service_proof")));
        assert!(verify_worker_proof(token, &input, s("worker_proof")));
        assert!(!verify_worker_proof(token, &input, s("service_proof")));
        assert!(!verify_service_proof(b"wrong", &input, s("service_proof")));
    }
}

#[test]
fn call_fixtures_and_request_ids_of_refused_calls() {
    let fixture = load("call.json");
    assert_eq!(fixture["event"], EVENT_CALL);
    let decoded = check("call.json", Call::from_value);
    assert_eq!(decoded[3].timeout_ms, Some(2500));
    // A refused call still yields its request id when it could be read, so the answer can be
    // addressed; the fixture says which.
    for case in cases(&fixture, "invalid") {
        let err = Call::from_value(&case["message"]).unwrap_err();
        let expected = case["request_id"].as_str();
        assert_eq!(
            err.request_id.as_deref(),
            expected,
            "{}",
            case["name"].as_str().unwrap()
        );
    }
}

#[test]
fn result_fixtures_of_every_kind() {
    let ok = load("result_ok.json");
    assert_eq!(ok["event"], EVENT_RESULT);
    let decoded = check("result_ok.json", TaskResultMsg::from_value);
    assert!(decoded
        .iter()
        .all(|m| matches!(m, TaskResultMsg::Ok { .. })));
    // The owned decoder (used on the hot path) agrees with the borrowing one.
    for case in cases(&ok, "valid") {
        assert_eq!(
            TaskResultMsg::from_value_owned(case["message"].clone()).unwrap(),
            TaskResultMsg::from_value(&case["message"]).unwrap()
        );
    }

    let mut kinds_seen = Vec::new();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if !file.starts_with("result_error_") {
            continue;
        }
        let fixture = load(&file);
        assert_eq!(fixture["event"], EVENT_RESULT);
        let kind = ErrorKind::from_wire(fixture["kind"].as_str().unwrap()).unwrap();
        let decoded = check(&file, TaskResultMsg::from_value);
        assert!(!decoded.is_empty(), "{file}");
        for msg in decoded {
            match msg {
                TaskResultMsg::Err { error, .. } => {
                    assert_eq!(error.kind, kind, "{file}");
                    // The protocol table: these kinds are never retryable, these always are.
                    match kind {
                        ErrorKind::UnknownFunction | ErrorKind::BadRequest | ErrorKind::NotJson => {
                            assert!(!error.retryable, "{file}")
                        }
                        ErrorKind::Timeout | ErrorKind::Overloaded => {
                            assert!(error.retryable, "{file}")
                        }
                        ErrorKind::Exception => {}
                    }
                }
                other => panic!("{file}: expected an error, got {other:?}"),
            }
        }
        kinds_seen.push(kind);
    }
    kinds_seen.sort_by_key(|k| k.as_str());
    let mut all = ErrorKind::ALL.to_vec();
    all.sort_by_key(|k| k.as_str());
    assert_eq!(kinds_seen, all, "one fixture per error kind");
}

#[test]
fn event_argument_fixtures() {
    let fixture = load("event_args.json");
    for case in cases(&fixture, "valid") {
        let args = case["args"].as_array().unwrap();
        assert_eq!(unwrap_payload(args).unwrap(), &case["payload"]);
        assert_eq!(unwrap_payload_owned(args.clone()).unwrap(), case["payload"]);
    }
    for case in cases(&fixture, "invalid") {
        let args = case["args"].as_array().unwrap();
        assert!(unwrap_payload(args).is_err(), "{}", case["name"]);
        assert!(unwrap_payload_owned(args.clone()).is_err());
    }
}

#[test]
fn key_fixtures() {
    let fixture = load("keys.json");
    for ex in cases(&fixture, "examples") {
        let (ns, svc, inst) = (
            ex["namespace"].as_str().unwrap(),
            ex["service"].as_str().unwrap(),
            ex["instance"].as_str().unwrap(),
        );
        assert_eq!(
            service_key(ns, svc).unwrap(),
            ex["service_key"].as_str().unwrap()
        );
        assert_eq!(
            instance_key(ns, svc, inst).unwrap(),
            ex["instance_key"].as_str().unwrap()
        );
    }
}

#[test]
fn every_fixture_file_is_checked() {
    // A new fixture file must get a test here (or in the unit tests of `keys`).
    let known = [
        "call.json",
        "connect_auth.json",
        "event_args.json",
        "handshake.json",
        "hello.json",
        "service_auth.json",
        "worker_auth.json",
        "keys.json",
        "result_ok.json",
    ];
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            known.contains(&file.as_str()) || file.starts_with("result_error_"),
            "fixture {file} is not covered by these tests"
        );
    }
}
