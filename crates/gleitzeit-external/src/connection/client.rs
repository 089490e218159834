//! Building the Socket.IO client of one connect attempt (transport, TLS connector, the nonce in
//! the connect `auth`, the callbacks that feed the supervisor), and taking it down.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::Value;
use tokio::sync::mpsc;

use gleitzeit_core::protocol::{
    self, unwrap_payload_owned, ConnectAuth, Hello, ProtocolError, ServiceAuth, EVENT_HELLO,
    EVENT_RESULT, EVENT_SERVICE_AUTH,
};

use super::outcome::Attempt;
use super::pending::{SessionEvent, Shared};
use super::settings::Credentials;

pub(super) fn build_client(
    shared: &Arc<Shared>,
    credentials: &Credentials,
    attempt: &Attempt,
    events: &mpsc::UnboundedSender<SessionEvent>,
) -> ClientBuilder {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let on_hello = events.clone();
    let on_auth = events.clone();
    let on_error = events.clone();
    let on_close = events.clone();
    let verified = attempt.verified.clone();
    let session = attempt.id;
    let auth = ConnectAuth {
        nonce: attempt.nonce.clone(),
    };
    let mut builder = ClientBuilder::new(shared.url.clone())
        .transport_type(TransportType::Websocket)
        // The nonce only: the token never leaves this process.
        .auth(protocol::to_value(&auth).unwrap_or(Value::Null));
    if let Some(tls) = &credentials.tls {
        builder = builder.tls_config(tls.clone());
    }
    builder
        // Reconnecting is the supervisor's job (see the module docs).
        .reconnect(false)
        .reconnect_on_disconnect(false)
        .on(EVENT_HELLO, move |payload: Payload, _client: Client| {
            let decoded = match payload {
                Payload::Text(values) => {
                    unwrap_payload_owned(values).and_then(|v| Hello::from_value(&v))
                }
                _ => Err(ProtocolError {
                    message: "service:hello is not JSON text".to_owned(),
                    request_id: None,
                }),
            };
            // A closed channel means the session is over; the event no longer matters.
            let _ = on_hello.send(SessionEvent::Hello(decoded));
            futures::future::ready(()).boxed()
        })
        .on(
            EVENT_SERVICE_AUTH,
            move |payload: Payload, _client: Client| {
                let decoded = match payload {
                    Payload::Text(values) => {
                        unwrap_payload_owned(values).and_then(|v| ServiceAuth::from_value(&v))
                    }
                    _ => Err(ProtocolError {
                        message: "service:auth is not JSON text".to_owned(),
                        request_id: None,
                    }),
                };
                let _ = on_auth.send(SessionEvent::ServiceAuth(decoded));
                futures::future::ready(()).boxed()
            },
        )
        .on(EVENT_RESULT, move |payload: Payload, _client: Client| {
            if let Some(shared) = weak.upgrade() {
                if verified.load(Ordering::Acquire) {
                    shared.resolve(session, payload);
                } else {
                    // Nothing was called on this connection, so this is no answer: a peer
                    // that has not completed the handshake is trying its luck.
                    tracing::warn!(service = %shared.service, url = %shared.url,
                        "dropping a task:result sent before the handshake completed");
                }
            }
            futures::future::ready(()).boxed()
        })
        .on(Event::Error, move |payload: Payload, _client: Client| {
            let _ = on_error.send(SessionEvent::Error(payload_text(&payload)));
            futures::future::ready(()).boxed()
        })
        .on(Event::Close, move |_payload: Payload, _client: Client| {
            let _ = on_close.send(SessionEvent::Closed);
            futures::future::ready(()).boxed()
        })
}

#[allow(deprecated)] // Payload::String is deprecated but still produced for error texts.
pub(super) fn payload_text(payload: &Payload) -> String {
    match payload {
        Payload::Text(values) => values
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Payload::String(s) => s.clone(),
        Payload::Binary(bytes) => format!("<{} bytes of binary data>", bytes.len()),
    }
}

/// An error with its sources (`EngineIO Error: ...: certificate verify failed`): the client's
/// own message alone does not say what failed.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Best-effort disconnect: the peer may be gone already, and a dead TCP connection must not
/// hold up the supervisor.
pub(super) async fn disconnect(client: &Client, limit: Duration) {
    match tokio::time::timeout(limit, client.disconnect()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "disconnect of a broken connection"),
        Err(_) => tracing::debug!("disconnect did not finish in time"),
    }
}
