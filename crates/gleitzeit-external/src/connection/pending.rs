//! What a connection's handle, its supervisor and its client callbacks share: the current
//! state, the live session, and the table of pending requests that answers are matched to by
//! request id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rust_socketio::asynchronous::Client;
use rust_socketio::Payload;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use gleitzeit_core::protocol::{
    unwrap_payload_owned, Hello, ProtocolError, ServiceAuth, TaskResultMsg,
};

use crate::error::ExternalError;

use super::settings::InstanceState;

/// What the client's callbacks report to the supervisor.
#[derive(Debug)]
pub(super) enum SessionEvent {
    Hello(Result<Hello, ProtocolError>),
    ServiceAuth(Result<ServiceAuth, ProtocolError>),
    Error(String),
    Closed,
    /// A caller could not send on this session.
    SendFailed(String),
}

/// A live, authenticated connection.
pub(super) struct Session {
    /// The connect attempt that opened it; answers are accepted only from this session.
    pub(super) id: u64,
    pub(super) client: Client,
    pub(super) events: mpsc::UnboundedSender<SessionEvent>,
}

pub(super) type Answer = Result<TaskResultMsg, ExternalError>;

pub(super) struct Shared {
    pub(super) service: String,
    pub(super) url: String,
    pub(super) state: watch::Sender<InstanceState>,
    /// Some exactly while the state is `Ready`.
    pub(super) session: Mutex<Option<Session>>,
    /// Request id → (session id, waiting caller).
    pub(super) pending: Mutex<HashMap<String, (u64, oneshot::Sender<Answer>)>>,
    pub(super) in_flight: AtomicUsize,
    /// Connect attempts started so far (lets a caller tell whether the attempt it asked for
    /// has happened yet).
    pub(super) attempts: AtomicU64,
    /// Notified on every state change (shared with the pool, which waits for "any ready").
    pub(super) changed: Arc<Notify>,
    /// Asks the supervisor to cut a reconnect delay short.
    pub(super) poke: Notify,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks stays consistent even if a holder panicked (single inserts
    // and removals), so a poisoned lock is used as it is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn set_state(&self, state: InstanceState) {
        self.state.send_replace(state);
        self.changed.notify_waiters();
    }

    /// Fails every call waiting on this connection as disconnected (retryable).
    pub(super) fn fail_all(&self, reason: &str) {
        let drained: Vec<_> = lock(&self.pending).drain().collect();
        for (_, (_, tx)) in drained {
            // The caller may have gone (timeout, cancellation); nothing to tell then.
            let _ = tx.send(Err(ExternalError::Disconnected {
                service: self.service.clone(),
                url: self.url.clone(),
                reason: reason.to_owned(),
            }));
        }
    }

    /// Resolves the pending call a `task:result` of session `session` answers. Runs inside the
    /// client's reader, so it only decodes and hands over.
    pub(super) fn resolve(&self, session: u64, payload: Payload) {
        let values = match payload {
            Payload::Text(values) => values,
            other => {
                tracing::warn!(service = %self.service, url = %self.url, payload = ?other,
                    "ignoring a task:result that is not JSON text");
                return;
            }
        };
        let decoded = unwrap_payload_owned(values).and_then(TaskResultMsg::from_value_owned);
        let (request_id, answer) = match decoded {
            Ok(msg) => match msg.request_id() {
                Some(id) => (id.to_owned(), Ok(msg)),
                None => {
                    // Only a bad_request answer to a call whose id the service could not read
                    // has no id; the caller's own timeout ends that call.
                    tracing::warn!(service = %self.service, url = %self.url, answer = ?msg,
                        "the service could not read a call's request id");
                    return;
                }
            },
            Err(err) => match err.request_id.clone() {
                Some(id) => (
                    id,
                    Err(ExternalError::Protocol(format!(
                        "malformed task:result from {}: {err}",
                        self.url
                    ))),
                ),
                None => {
                    tracing::warn!(service = %self.service, url = %self.url, error = %err,
                        "ignoring a malformed task:result without a readable request id");
                    return;
                }
            },
        };
        let waiting = {
            let mut pending = lock(&self.pending);
            match pending.get(&request_id) {
                Some((id, _)) if *id == session => pending.remove(&request_id),
                _ => None,
            }
        };
        match waiting {
            Some((_, tx)) => {
                let _ = tx.send(answer);
            }
            // A late answer to a call that timed out or was abandoned.
            None => tracing::debug!(service = %self.service, url = %self.url, %request_id,
                "answer for a call nobody waits for"),
        }
    }
}

/// Removes a call's pending entry and in-flight count however the call ends (answer, timeout,
/// send failure, or the caller dropping the future).
pub(super) struct PendingGuard {
    pub(super) shared: Arc<Shared>,
    pub(super) request_id: String,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.request_id);
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_routes_answers_by_request_id() {
        let (state, _) = watch::channel(InstanceState::Connecting);
        let shared = Shared {
            service: "S".into(),
            url: "http://x:1".into(),
            state,
            session: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            attempts: AtomicU64::new(0),
            changed: Arc::new(Notify::new()),
            poke: Notify::new(),
        };
        let (tx_a, mut rx_a) = oneshot::channel();
        let (tx_b, mut rx_b) = oneshot::channel();
        lock(&shared.pending).insert("a".into(), (1, tx_a));
        lock(&shared.pending).insert("b".into(), (1, tx_b));
        // An answer arriving on another session (an earlier connection) resolves nothing.
        shared.resolve(
            2,
            Payload::Text(vec![serde_json::json!(
                {"request_id": "b", "ok": true, "result": "other session", "duration_ms": 0}
            )]),
        );
        assert_eq!(lock(&shared.pending).len(), 2);
        shared.resolve(
            1,
            Payload::Text(vec![serde_json::json!(
                [{"request_id": "b", "ok": true, "result": 2, "duration_ms": 0}]
            )]),
        );
        shared.resolve(
            1,
            Payload::Text(vec![serde_json::json!(
                {"request_id": "a", "ok": true, "result": "x"}
            )]),
        );
        let b = rx_b.try_recv().unwrap().unwrap();
        assert_eq!(
            b,
            TaskResultMsg::Ok {
                request_id: "b".into(),
                result: serde_json::json!(2),
                duration_ms: 0
            }
        );
        // A malformed answer whose id is readable fails that call as a protocol error.
        assert!(matches!(
            rx_a.try_recv().unwrap(),
            Err(ExternalError::Protocol(m)) if m.contains("duration_ms")
        ));
        assert!(lock(&shared.pending).is_empty());
        // Unknown ids and unreadable answers are dropped without touching anything.
        shared.resolve(
            1,
            Payload::Text(vec![serde_json::json!(
                {"request_id": "zzz", "ok": true, "result": 1, "duration_ms": 0}
            )]),
        );
        shared.resolve(1, Payload::Text(vec![serde_json::json!("garbage")]));

        let (tx_c, mut rx_c) = oneshot::channel();
        lock(&shared.pending).insert("c".into(), (1, tx_c));
        shared.fail_all("gone");
        assert!(matches!(
            rx_c.try_recv().unwrap(),
            Err(ExternalError::Disconnected { reason, .. }) if reason == "gone"
        ));
    }
}
