//! The supervisor of one connection: connect attempts, the session while it lasts, and
//! reconnecting with backoff whenever it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use gleitzeit_core::handshake;

use super::client::{build_client, disconnect, error_chain};
use super::handshake::authenticate;
use super::outcome::{Attempt, Backoff, Failure};
use super::pending::{lock, Session, SessionEvent, Shared};
use super::settings::{ConnectionSettings, Credentials, InstanceState, Origin};

/// Waits until the session ends and says why.
pub(super) async fn await_end(events: &mut mpsc::UnboundedReceiver<SessionEvent>) -> String {
    while let Some(event) = events.recv().await {
        match event {
            SessionEvent::Closed => return "the service closed the connection".to_owned(),
            SessionEvent::Error(text) => return format!("connection error: {text}"),
            SessionEvent::SendFailed(text) => return text,
            // A repeated hello or verdict changes nothing; a malformed hello is logged.
            SessionEvent::Hello(Ok(_)) | SessionEvent::ServiceAuth(_) => {}
            SessionEvent::Hello(Err(err)) => {
                tracing::warn!(error = %err, "ignoring a malformed repeated service:hello")
            }
        }
    }
    "the client stopped".to_owned()
}

pub(super) async fn supervise(
    shared: Arc<Shared>,
    origin: Origin,
    credentials: Credentials,
    settings: ConnectionSettings,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
    let mut last_problem: Option<String> = None;
    'attempts: loop {
        let attempt_started = Instant::now();
        let attempt = Attempt {
            id: shared.attempts.fetch_add(1, Ordering::AcqRel) + 1,
            nonce: handshake::nonce_from_bytes(&rand::random::<[u8; 32]>()),
            verified: Arc::new(AtomicBool::new(false)),
        };
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let builder = build_client(&shared, &credentials, &attempt, &events_tx);
        let connected = tokio::select! {
            biased;
            _ = cancel.cancelled() => break 'attempts,
            r = tokio::time::timeout(settings.connect_timeout, builder.connect()) => r,
        };
        let outcome = match connected {
            Err(_) => Err(Failure::Transient("connect timed out".to_owned())),
            Ok(Err(err)) => Err(Failure::Transient(format!(
                "connect failed: {}",
                error_chain(&err)
            ))),
            Ok(Ok(client)) => {
                let remaining = settings
                    .connect_timeout
                    .saturating_sub(attempt_started.elapsed());
                let greeted = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        disconnect(&client, settings.connect_timeout).await;
                        break 'attempts;
                    }
                    r = tokio::time::timeout(
                        remaining,
                        authenticate(
                            &shared,
                            origin,
                            &credentials.token,
                            &attempt,
                            &client,
                            &mut events_rx,
                        ),
                    ) => r,
                };
                let checked = match greeted {
                    Err(_) => Err(Failure::Transient(
                        "the handshake did not finish within the connect timeout".to_owned(),
                    )),
                    Ok(hello) => hello,
                };
                match checked {
                    Ok(hello) => Ok((client, hello)),
                    Err(failure) => {
                        disconnect(&client, settings.connect_timeout).await;
                        Err(failure)
                    }
                }
            }
        };

        let delay = match outcome {
            Ok((client, hello)) => {
                let hello = Arc::new(hello);
                attempt.verified.store(true, Ordering::Release);
                *lock(&shared.session) = Some(Session {
                    id: attempt.id,
                    client: client.clone(),
                    events: events_tx.clone(),
                });
                shared.set_state(InstanceState::Ready(hello.clone()));
                if last_problem.take().is_some() {
                    tracing::info!(service = %shared.service, url = %shared.url,
                        instance = %hello.instance, "task service instance reachable again");
                } else {
                    tracing::info!(service = %shared.service, url = %shared.url,
                        instance = %hello.instance, "connected to task service instance");
                }
                backoff.reset();
                let ended = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => None,
                    reason = await_end(&mut events_rx) => Some(reason),
                };
                // The instance stops being picked before its callers learn of the failure, so a
                // caller's immediate retry goes to another instance.
                shared.set_state(if ended.is_some() {
                    InstanceState::Connecting
                } else {
                    InstanceState::Closed
                });
                let session = lock(&shared.session).take();
                let reason = ended
                    .clone()
                    .unwrap_or_else(|| "connection closed by the worker".to_owned());
                shared.fail_all(&format!("{reason} (service disconnected mid-call)"));
                if let Some(session) = session {
                    disconnect(&session.client, settings.connect_timeout).await;
                }
                let Some(reason) = ended else {
                    break 'attempts;
                };
                tracing::warn!(service = %shared.service, url = %shared.url,
                    instance = %hello.instance, %reason,
                    "connection to task service instance lost; reconnecting");
                last_problem = Some(reason);
                // The first attempt after a loss comes quickly: a restarted service is back
                // within moments, a crashed one fails the attempt at once.
                Duration::ZERO
            }
            Err(Failure::Auth(reason)) => {
                if last_problem.as_deref() != Some(reason.as_str()) {
                    tracing::error!(service = %shared.service, url = %shared.url, %reason,
                        "authentication with task service instance failed; not using it");
                }
                shared.set_state(InstanceState::Misconfigured {
                    reason: reason.clone(),
                    auth: true,
                });
                last_problem = Some(reason);
                settings.reconnect_max
            }
            Err(Failure::Misconfigured(reason)) => {
                if last_problem.as_deref() != Some(reason.as_str()) {
                    tracing::error!(service = %shared.service, url = %shared.url, %reason,
                        "task service instance is misconfigured; not using it");
                }
                shared.set_state(InstanceState::Misconfigured {
                    reason: reason.clone(),
                    auth: false,
                });
                last_problem = Some(reason);
                settings.reconnect_max
            }
            Err(Failure::Transient(reason)) => {
                if last_problem.is_none() {
                    tracing::warn!(service = %shared.service, url = %shared.url, %reason,
                        "cannot connect to task service instance; retrying");
                } else {
                    tracing::debug!(service = %shared.service, url = %shared.url, %reason,
                        "reconnect attempt failed");
                }
                // A misconfigured instance stays misconfigured until an attempt succeeds.
                let misconfigured =
                    matches!(*shared.state.borrow(), InstanceState::Misconfigured { .. });
                if !misconfigured {
                    shared.set_state(InstanceState::Down {
                        reason: reason.clone(),
                    });
                }
                last_problem = Some(reason);
                backoff.next_delay()
            }
        };

        // Wait for the delay; a poke (a call found no ready instance) shortens it to the
        // earliest moment `reconnect_min` after this attempt.
        let wake_at = Instant::now() + delay;
        let earliest = (attempt_started + settings.reconnect_min).min(wake_at);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break 'attempts,
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = shared.poke.notified() => {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break 'attempts,
                    _ = tokio::time::sleep_until(earliest) => {}
                }
            }
        }
        let misconfigured = matches!(*shared.state.borrow(), InstanceState::Misconfigured { .. });
        if !misconfigured {
            shared.set_state(InstanceState::Connecting);
        }
    }
    shared.set_state(InstanceState::Closed);
    let session = lock(&shared.session).take();
    shared.fail_all("connection closed by the worker");
    if let Some(session) = session {
        disconnect(&session.client, settings.connect_timeout).await;
    }
}
