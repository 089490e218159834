//! The handshake step of a connect attempt (see [`gleitzeit_core::handshake`]): the
//! service's hello and its proof, this worker's proof, and the service's verdict.

use rust_socketio::asynchronous::Client;
use tokio::sync::mpsc;

use gleitzeit_core::handshake::{self, ProofInput};
use gleitzeit_core::protocol::{self, Hello, WorkerAuth, EVENT_WORKER_AUTH, PROTOCOL_VERSION};

use crate::config::{normalize_url, Token};

use super::outcome::{Attempt, Failure};
use super::pending::{SessionEvent, Shared};
use super::settings::Origin;

/// Waits for the hello that opens the handshake, or for the reason there will be none.
pub(super) async fn await_hello(
    events: &mut mpsc::UnboundedReceiver<SessionEvent>,
) -> Result<Hello, Failure> {
    // The first event of a session decides it: the hello, or the reason there is none.
    match events.recv().await {
        Some(SessionEvent::Hello(Ok(hello))) => Ok(hello),
        Some(SessionEvent::Hello(Err(err))) => Err(Failure::Misconfigured(format!(
            "malformed service:hello: {err}"
        ))),
        Some(SessionEvent::ServiceAuth(_)) => Err(Failure::Auth(
            "the instance sent service:auth before proving itself in service:hello".to_owned(),
        )),
        // This worker always offers a valid nonce, so a refusal as unauthorized comes from a
        // service that expects something else: protocol 1 wanted the token itself.
        Some(SessionEvent::Error(text)) if text.contains("unauthorized") => {
            Err(Failure::Auth(format!(
                "the instance refused the connect ({text}); a protocol 1 service expects the \
                 token itself, which this worker never sends"
            )))
        }
        Some(SessionEvent::Error(text)) | Some(SessionEvent::SendFailed(text)) => {
            Err(Failure::Transient(text))
        }
        Some(SessionEvent::Closed) => Err(Failure::Transient(
            "the service closed the connection before its hello".to_owned(),
        )),
        None => Err(Failure::Transient("the client stopped".to_owned())),
    }
}

/// Waits for the service's verdict on this worker's proof.
pub(super) async fn await_service_auth(
    events: &mut mpsc::UnboundedReceiver<SessionEvent>,
) -> Result<(), Failure> {
    loop {
        return match events.recv().await {
            Some(SessionEvent::ServiceAuth(Ok(verdict))) if verdict.accepted => Ok(()),
            Some(SessionEvent::ServiceAuth(Ok(verdict))) => Err(Failure::Auth(format!(
                "the instance refused this worker's proof: {}",
                verdict.message.as_deref().unwrap_or("no reason given")
            ))),
            Some(SessionEvent::ServiceAuth(Err(err))) => Err(Failure::Misconfigured(format!(
                "malformed service:auth: {err}"
            ))),
            // A repeated hello changes nothing.
            Some(SessionEvent::Hello(_)) => continue,
            Some(SessionEvent::Error(text)) | Some(SessionEvent::SendFailed(text)) => {
                Err(Failure::Transient(text))
            }
            Some(SessionEvent::Closed) => Err(Failure::Transient(
                "the service closed the connection during the handshake".to_owned(),
            )),
            None => Err(Failure::Transient("the client stopped".to_owned())),
        };
    }
}

/// Checks the service's proof in `hello` and returns this worker's proof for the connection.
/// Nothing has been sent to the instance but the nonce when this runs; on an error nothing
/// else is.
pub(super) fn verify_hello(
    service: &str,
    dialled: &str,
    origin: Origin,
    token: &Token,
    worker_nonce: &str,
    hello: &Hello,
) -> Result<String, Failure> {
    let Some(proof) = hello.proof.as_deref() else {
        return Err(Failure::Auth(format!(
            "instance {} offers no proof (a service started without a token); workers never \
             use such an instance",
            hello.instance
        )));
    };
    let input = ProofInput {
        service,
        instance: &hello.instance,
        url: &hello.url,
        worker_nonce,
        service_nonce: &hello.nonce,
    };
    let key = token.expose_secret().as_bytes();
    if !handshake::verify_service_proof(key, &input, proof) {
        return Err(Failure::Auth(format!(
            "instance {} could not prove it holds the service token (a registration written by \
             someone without the token, or a service configured with another token)",
            hello.instance
        )));
    }
    if origin == Origin::Discovered && normalize_url(&hello.url) != dialled {
        return Err(Failure::Auth(format!(
            "instance {} proved the token for address {} but was reached at {dialled} (its \
             registration points at a relay)",
            hello.instance, hello.url
        )));
    }
    Ok(handshake::worker_proof(key, &input))
}

pub(super) fn check_hello(service: &str, hello: Hello) -> Result<Hello, Failure> {
    if hello.protocol != PROTOCOL_VERSION {
        return Err(Failure::Misconfigured(format!(
            "instance {} speaks protocol {}, this worker speaks {PROTOCOL_VERSION}",
            hello.instance, hello.protocol
        )));
    }
    if hello.service != service {
        return Err(Failure::Misconfigured(format!(
            "instance {} is service {:?}, not {service:?}",
            hello.instance, hello.service
        )));
    }
    Ok(hello)
}

/// Runs the handshake on a connected client: the hello and its proof, then this worker's
/// proof and the service's verdict.
pub(super) async fn authenticate(
    shared: &Shared,
    origin: Origin,
    token: &Token,
    attempt: &Attempt,
    client: &Client,
    events: &mut mpsc::UnboundedReceiver<SessionEvent>,
) -> Result<Hello, Failure> {
    let hello = check_hello(&shared.service, await_hello(events).await?)?;
    let proof = verify_hello(
        &shared.service,
        &shared.url,
        origin,
        token,
        &attempt.nonce,
        &hello,
    )?;
    let message = protocol::to_value(&WorkerAuth { proof })
        .map_err(|e| Failure::Transient(format!("cannot encode worker:auth: {e}")))?;
    client
        .emit(EVENT_WORKER_AUTH, message)
        .await
        .map_err(|e| Failure::Transient(format!("sending worker:auth failed: {e}")))?;
    await_service_auth(events).await?;
    Ok(hello)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_must_match_protocol_and_service() {
        let hello = |protocol: u64, service: &str| Hello {
            protocol,
            service: service.to_owned(),
            ..signed_hello("x", "http://h:1", "t", &"1".repeat(64))
        };
        assert!(check_hello("S", hello(PROTOCOL_VERSION, "S")).is_ok());
        assert!(matches!(
            check_hello("S", hello(1, "S")),
            Err(Failure::Misconfigured(m)) if m.contains("protocol 1")
        ));
        assert!(matches!(
            check_hello("S", hello(PROTOCOL_VERSION, "T")),
            Err(Failure::Misconfigured(m)) if m.contains("\"T\"")
        ));
    }

    /// A hello of service `S`, instance `h-1-00000000`, advertising `url`, proved with `token`
    /// for the worker nonce `worker_nonce`.
    fn signed_hello(service: &str, url: &str, token: &str, worker_nonce: &str) -> Hello {
        let nonce = "2".repeat(64);
        let proof = handshake::service_proof(
            token.as_bytes(),
            &ProofInput {
                service,
                instance: "h-1-00000000",
                url,
                worker_nonce,
                service_nonce: &nonce,
            },
        );
        Hello {
            protocol: PROTOCOL_VERSION,
            service: service.to_owned(),
            instance: "h-1-00000000".to_owned(),
            functions: vec![],
            max_concurrency: 1,
            url: url.to_owned(),
            nonce,
            proof: Some(proof),
        }
    }

    #[test]
    fn the_service_proof_is_checked_before_anything_is_sent() {
        let token = Token::new("right");
        let wn = "1".repeat(64);
        let url = "http://10.0.0.1:8765";
        let good = signed_hello("S", url, "right", &wn);
        let ours = verify_hello("S", url, Origin::Discovered, &token, &wn, &good).unwrap();
        let input = ProofInput {
            service: "S",
            instance: &good.instance,
            url,
            worker_nonce: &wn,
            service_nonce: &good.nonce,
        };
        assert!(handshake::verify_worker_proof(b"right", &input, &ours));

        let auth_err = |r: Result<String, Failure>| match r {
            Err(Failure::Auth(m)) => m,
            other => panic!("expected an auth failure, got {other:?}"),
        };
        // Another token, another nonce (a replayed hello), another service name.
        let forged = signed_hello("S", url, "guess", &wn);
        let m = auth_err(verify_hello("S", url, Origin::Static, &token, &wn, &forged));
        assert!(
            m.contains("h-1-00000000") && m.contains("could not prove"),
            "{m}"
        );
        let other_nonce = "3".repeat(64);
        auth_err(verify_hello(
            "S",
            url,
            Origin::Static,
            &token,
            &other_nonce,
            &good,
        ));
        auth_err(verify_hello("T", url, Origin::Static, &token, &wn, &good));
        // No proof at all (a service without a token).
        let unproven = Hello {
            proof: None,
            ..good.clone()
        };
        let m = auth_err(verify_hello(
            "S",
            url,
            Origin::Static,
            &token,
            &wn,
            &unproven,
        ));
        assert!(m.contains("no proof"), "{m}");
        // A valid proof for another address: fine for a configured address, refused for a
        // registration (a relay in front of a real instance).
        let relayed = "http://relay:9000";
        assert!(verify_hello("S", relayed, Origin::Static, &token, &wn, &good).is_ok());
        let m = auth_err(verify_hello(
            "S",
            relayed,
            Origin::Discovered,
            &token,
            &wn,
            &good,
        ));
        assert!(m.contains("relay"), "{m}");
        // The messages never carry the token.
        assert!(!m.contains("right"));
    }
}
