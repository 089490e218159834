//! The mutual challenge-response that opens every connection between a worker and a task
//! service (`docs/protocol.md`, "Connection"; `docs/security.md`).
//!
//! Both sides hold the shared service token; neither ever sends it. The worker connects with a
//! fresh nonce, the service answers in `service:hello` with a nonce of its own and a proof
//! (HMAC-SHA256 keyed with the token) over both nonces, its service name, instance id and
//! advertised address. The worker checks that proof before it sends anything else, then proves
//! itself with a second HMAC under another label. The labels keep one side's proof from ever
//! being valid as the other's; the nonces keep a recorded proof from being replayed on another
//! connection; the address keeps a relay registered under another address from passing a real
//! instance's proof off as its own.
//!
//! The functions here are pure; the fixture `tests/protocol/handshake.json` holds test vectors
//! that the Python package checks as well.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::ProtocolError;

/// Length of a nonce on the wire: 32 random bytes as lowercase hex.
pub const NONCE_HEX_LEN: usize = 64;
/// Length of a proof on the wire: an HMAC-SHA256 as lowercase hex.
pub const PROOF_HEX_LEN: usize = 64;

/// Domain-separation label of the service's proof.
pub const SERVICE_PROOF_LABEL: &str = "gleitzeit/2 service proof";
/// Domain-separation label of the worker's proof.
pub const WORKER_PROOF_LABEL: &str = "gleitzeit/2 worker proof";

type HmacSha256 = Hmac<Sha256>;

/// What both proofs of one connection are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofInput<'a> {
    /// The service name (the worker uses the name it asked for, not the one announced).
    pub service: &'a str,
    /// The instance id the service announced.
    pub instance: &'a str,
    /// The address the service advertises (`http(s)://host:port`).
    pub url: &'a str,
    /// The worker's nonce from the connect `auth`.
    pub worker_nonce: &'a str,
    /// The service's nonce from `service:hello`.
    pub service_nonce: &'a str,
}

impl ProofInput<'_> {
    /// The message a proof authenticates: the label, a zero byte, then every field as
    /// `<byte length>:<bytes>` (so no choice of field values can make two inputs collide).
    pub fn message(&self, label: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(label.as_bytes());
        out.push(0);
        for field in [
            self.service,
            self.instance,
            self.url,
            self.worker_nonce,
            self.service_nonce,
        ] {
            out.extend_from_slice(field.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

fn mac(token: &[u8], label: &str, input: &ProofInput<'_>) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(token).expect("HMAC accepts keys of any length");
    mac.update(&input.message(label));
    mac
}

fn prove(token: &[u8], label: &str, input: &ProofInput<'_>) -> String {
    hex::encode(mac(token, label, input).finalize().into_bytes())
}

fn verify(token: &[u8], label: &str, input: &ProofInput<'_>, proof: &str) -> bool {
    if !is_lower_hex(proof, PROOF_HEX_LEN) {
        return false;
    }
    let Ok(bytes) = hex::decode(proof) else {
        return false;
    };
    // `verify_slice` compares in constant time.
    mac(token, label, input).verify_slice(&bytes).is_ok()
}

/// The service's proof for `input`.
pub fn service_proof(token: &[u8], input: &ProofInput<'_>) -> String {
    prove(token, SERVICE_PROOF_LABEL, input)
}

/// The worker's proof for `input`.
pub fn worker_proof(token: &[u8], input: &ProofInput<'_>) -> String {
    prove(token, WORKER_PROOF_LABEL, input)
}

/// Whether `proof` is the service's proof for `input` under `token` (constant-time compare).
pub fn verify_service_proof(token: &[u8], input: &ProofInput<'_>, proof: &str) -> bool {
    verify(token, SERVICE_PROOF_LABEL, input, proof)
}

/// Whether `proof` is the worker's proof for `input` under `token` (constant-time compare).
pub fn verify_worker_proof(token: &[u8], input: &ProofInput<'_>, proof: &str) -> bool {
    verify(token, WORKER_PROOF_LABEL, input, proof)
}

/// A nonce from 32 bytes of the caller's randomness (the crate itself has no random source).
pub fn nonce_from_bytes(bytes: &[u8; 32]) -> String {
    hex::encode(bytes)
}

/// Checks that `value` (field `what`) is a nonce: exactly 64 lowercase hex digits.
///
/// # Errors
/// [`ProtocolError`] naming the field.
pub fn check_nonce(value: &str, what: &str) -> Result<(), ProtocolError> {
    if is_lower_hex(value, NONCE_HEX_LEN) {
        Ok(())
    } else {
        Err(ProtocolError {
            message: format!("{what} must be {NONCE_HEX_LEN} lowercase hex digits"),
            request_id: None,
        })
    }
}

/// Checks that `value` (field `what`) has the shape of a proof: 64 lowercase hex digits.
///
/// # Errors
/// [`ProtocolError`] naming the field.
pub fn check_proof(value: &str, what: &str) -> Result<(), ProtocolError> {
    if is_lower_hex(value, PROOF_HEX_LEN) {
        Ok(())
    } else {
        Err(ProtocolError {
            message: format!("{what} must be {PROOF_HEX_LEN} lowercase hex digits"),
            request_id: None,
        })
    }
}

fn is_lower_hex(value: &str, len: usize) -> bool {
    value.len() == len
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ProofInput<'static> {
        ProofInput {
            service: "Python Tasks",
            instance: "h-1-00000000",
            url: "http://127.0.0.1:8765",
            worker_nonce: "11111111111111111111111111111111111111111111111111111111111111aa",
            service_nonce: "22222222222222222222222222222222222222222222222222222222222222bb",
        }
    }

    #[test]
    fn proofs_verify_only_with_their_label_token_and_input() {
        let token = b"secret";
        let s = service_proof(token, &input());
        let w = worker_proof(token, &input());
        assert_ne!(s, w, "the labels separate the two proofs");
        assert!(verify_service_proof(token, &input(), &s));
        assert!(verify_worker_proof(token, &input(), &w));
        assert!(!verify_service_proof(token, &input(), &w));
        assert!(!verify_worker_proof(token, &input(), &s));
        assert!(!verify_service_proof(b"other", &input(), &s));
        let moved = ProofInput {
            url: "http://10.0.0.9:8765",
            ..input()
        };
        assert!(!verify_service_proof(token, &moved, &s));
        let replayed = ProofInput {
            worker_nonce: "33333333333333333333333333333333333333333333333333333333333333cc",
            ..input()
        };
        assert!(!verify_service_proof(token, &replayed, &s));
        // Malformed proofs are simply not valid.
        assert!(!verify_service_proof(token, &input(), &s.to_uppercase()));
        assert!(!verify_service_proof(token, &input(), &s[..62]));
        assert!(!verify_service_proof(token, &input(), ""));
    }

    #[test]
    fn fields_are_length_prefixed() {
        let a = ProofInput {
            service: "ab",
            instance: "c",
            ..input()
        };
        let b = ProofInput {
            service: "a",
            instance: "bc",
            ..input()
        };
        assert_ne!(a.message("l"), b.message("l"));
        assert!(a.message("l").starts_with(b"l\x002:ab1:c"));
    }

    #[test]
    fn nonce_and_proof_shapes() {
        assert!(check_nonce(&nonce_from_bytes(&[0xab; 32]), "auth.nonce").is_ok());
        let err = check_nonce("ABCD", "auth.nonce").unwrap_err();
        assert!(err.message.contains("auth.nonce"), "{err}");
        assert!(check_nonce(&"A".repeat(64), "n").is_err());
        assert!(check_proof(&"0".repeat(64), "p").is_ok());
        assert!(check_proof(&"0".repeat(63), "p").is_err());
    }
}
