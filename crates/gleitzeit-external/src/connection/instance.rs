//! The handle of one connection: spawning its supervisor, sending calls and waiting for their
//! answers, closing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use gleitzeit_core::protocol::{self, Call, TaskResultMsg, EVENT_CALL};

use crate::call::{json_size, CallLimits, ExternalCall};
use crate::error::ExternalError;

use super::pending::{lock, PendingGuard, SessionEvent, Shared};
use super::settings::{ConnectionSettings, Credentials, InstanceState, Origin};
use super::supervise::supervise;

/// A connection to one service instance at one address. Dropping it closes the connection.
pub struct InstanceConnection {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for InstanceConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceConnection")
            .field("service", &self.shared.service)
            .field("url", &self.shared.url)
            .field("state", &*self.shared.state.borrow())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl InstanceConnection {
    /// Starts connecting to `url` (an instance of `service`) in the background; must be called
    /// inside a tokio runtime. `changed` is notified on every state change.
    pub fn spawn(
        service: impl Into<String>,
        url: impl Into<String>,
        origin: Origin,
        credentials: Credentials,
        settings: ConnectionSettings,
        changed: Arc<Notify>,
    ) -> InstanceConnection {
        let (state, _) = watch::channel(InstanceState::Connecting);
        let shared = Arc::new(Shared {
            service: service.into(),
            url: url.into(),
            state,
            session: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            attempts: AtomicU64::new(0),
            changed,
            poke: Notify::new(),
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(
            shared.clone(),
            origin,
            credentials,
            settings,
            cancel.clone(),
        ));
        InstanceConnection {
            shared,
            cancel,
            task: Mutex::new(Some(task)),
        }
    }

    /// The service this connection belongs to.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The instance's address.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The current state.
    pub fn state(&self) -> InstanceState {
        self.shared.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<InstanceState> {
        self.shared.state.subscribe()
    }

    /// Calls sent on this connection and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// How many connect attempts have started (the first one included).
    pub fn attempts(&self) -> u64 {
        self.shared.attempts.load(Ordering::Acquire)
    }

    /// Asks a connection waiting to reconnect to try now (no earlier than `reconnect_min`
    /// after its last attempt). Used when a call finds no ready instance.
    pub fn reconnect_soon(&self) {
        self.shared.poke.notify_one();
    }

    /// Waits until the connection is ready, misconfigured or closed, at most `timeout`, and
    /// returns the state then.
    pub async fn wait_settled(&self, timeout: Duration) -> InstanceState {
        let mut rx = self.subscribe();
        let settled = |s: &InstanceState| {
            matches!(
                s,
                InstanceState::Ready(_)
                    | InstanceState::Misconfigured { .. }
                    | InstanceState::Closed
            )
        };
        let waited = tokio::time::timeout(timeout, rx.wait_for(settled)).await;
        match waited {
            Ok(Ok(state)) => state.clone(),
            _ => self.state(),
        }
    }

    /// Sends one call and waits for its answer.
    ///
    /// Cancel-safe: dropping the future forgets the call (its answer, if it comes, is ignored).
    ///
    /// # Errors
    /// [`ExternalError::Disconnected`] when not connected or the connection breaks before the
    /// answer; `Timeout` after the deadline plus grace; `Remote` for the service's error answer;
    /// `ResultTooLarge`; `Protocol` for a malformed answer.
    pub async fn call(
        &self,
        call: &ExternalCall,
        limits: &CallLimits,
    ) -> Result<Value, ExternalError> {
        let deadline = call.timeout.unwrap_or(limits.default_timeout);
        let timeout_ms = u64::try_from(deadline.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let request_id = uuid::Uuid::new_v4().to_string();
        let message = Call {
            request_id: request_id.clone(),
            task_id: call.task_id.clone(),
            idempotency_key: call.idempotency_key.clone(),
            function: call.function.clone(),
            args: call.args.clone(),
            kwargs: call.kwargs.clone(),
            timeout_ms: Some(timeout_ms),
        };
        let payload =
            protocol::to_value(&message).map_err(|e| ExternalError::Protocol(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        // The entry is inserted under the session lock: the supervisor takes the session under
        // the same lock before failing all pending calls, so an entry is either failed by that
        // sweep or never inserted.
        let (client, events, _guard) = {
            let session = lock(&self.shared.session);
            let Some(session) = session.as_ref() else {
                return Err(self.disconnected("not connected"));
            };
            lock(&self.shared.pending).insert(request_id.clone(), (session.id, tx));
            self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
            let guard = PendingGuard {
                shared: self.shared.clone(),
                request_id: request_id.clone(),
            };
            (session.client.clone(), session.events.clone(), guard)
        };
        if let Err(err) = client.emit(EVENT_CALL, payload).await {
            let reason = format!("sending the call failed: {err}");
            let _ = events.send(SessionEvent::SendFailed(reason.clone()));
            return Err(self.disconnected(&reason));
        }
        let wait = deadline.saturating_add(limits.timeout_grace);
        let answer = match tokio::time::timeout(wait, rx).await {
            Err(_) => {
                return Err(ExternalError::Timeout {
                    service: self.shared.service.clone(),
                    function: call.function.clone(),
                    after: wait,
                })
            }
            // The sender went away without an answer: only the supervisor's sweep drops
            // senders, and it answers first, so this is a closed connection too.
            Ok(Err(_)) => return Err(self.disconnected("connection closed")),
            Ok(Ok(answer)) => answer?,
        };
        match answer {
            TaskResultMsg::Ok { result, .. } => {
                let size = json_size(&result);
                if size > limits.max_result_bytes {
                    return Err(ExternalError::ResultTooLarge {
                        function: call.function.clone(),
                        size,
                        limit: limits.max_result_bytes,
                    });
                }
                Ok(result)
            }
            TaskResultMsg::Err { error, .. } => Err(ExternalError::from_remote(error)),
        }
    }

    /// Closes the connection and waits until the supervisor has finished (pending calls fail
    /// as disconnected).
    pub async fn close(&self) {
        self.cancel.cancel();
        let task = lock(&self.task).take();
        if let Some(task) = task {
            // A panic of the supervisor would already have been reported; closing goes on.
            let _ = task.await;
        }
    }

    fn disconnected(&self, reason: &str) -> ExternalError {
        ExternalError::Disconnected {
            service: self.shared.service.clone(),
            url: self.shared.url.clone(),
            reason: reason.to_owned(),
        }
    }
}

impl Drop for InstanceConnection {
    fn drop(&mut self) {
        // The supervisor disconnects the client and fails pending calls on its way out.
        self.cancel.cancel();
    }
}
