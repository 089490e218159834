//! One Socket.IO connection to one instance of a task service, kept alive by a supervisor task.
//!
//! The design works around what `rust_socketio` 0.6 cannot do reliably:
//!
//! - Requests and responses are two ordinary events matched by our own `request_id` (UUIDv4)
//!   in a pending map; Socket.IO acknowledgements are never used (their ids collide and a
//!   collision can kill the client's reader).
//! - `connect()` returns before the service accepted the namespace connect, so the supervisor
//!   waits for `service:hello` (or a connect error, which is how a refused token shows up) with
//!   a timeout before the instance counts as ready.
//! - The client never reconnects after a server-initiated disconnect, so reconnecting is ours:
//!   the client is built with `reconnect(false)` and rebuilt, with capped exponential backoff,
//!   whenever the connection ends.
//! - `.on(...)` callbacks run one at a time inside the client's reader, so they only push into
//!   a channel or resolve a pending entry; everything else happens in the supervisor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::call::{json_size, CallLimits, ExternalCall};
use crate::config::Token;
use crate::error::ExternalError;
use crate::protocol::{
    self, unwrap_payload_owned, Call, Hello, ProtocolError, TaskResultMsg, EVENT_CALL, EVENT_HELLO,
    EVENT_RESULT, PROTOCOL_VERSION,
};

/// How a connection is established and re-established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Limit for one connect: TCP, handshake and the service's hello.
    pub connect_timeout: Duration,
    /// First reconnect delay (doubled per failed attempt, with jitter).
    pub reconnect_min: Duration,
    /// Cap of the reconnect delay; also the retry delay of a misconfigured instance.
    pub reconnect_max: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            connect_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
        }
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceState {
    /// A connect attempt is under way (the first one, or right after the connection broke).
    Connecting,
    /// Connected and greeted: calls can be sent.
    Ready(Arc<Hello>),
    /// The last connect attempt failed (the instance is unreachable); the next one follows
    /// after a backoff delay.
    Down {
        /// Why the last attempt failed.
        reason: String,
    },
    /// The instance cannot be used as configured: it refused the token (`auth`), speaks
    /// another protocol version or is another service. Retried at the longest backoff so a
    /// corrected deployment is picked up, but never used meanwhile.
    Misconfigured {
        /// What is wrong.
        reason: String,
        /// Whether the token was refused.
        auth: bool,
    },
    /// The connection was closed by the worker.
    Closed,
}

impl InstanceState {
    /// Whether calls can be sent now.
    pub fn is_ready(&self) -> bool {
        matches!(self, InstanceState::Ready(_))
    }
}

/// What the client's callbacks report to the supervisor.
#[derive(Debug)]
enum SessionEvent {
    Hello(Result<Hello, ProtocolError>),
    Error(String),
    Closed,
    /// A caller could not send on this session.
    SendFailed(String),
}

/// A live, greeted connection.
struct Session {
    client: Client,
    events: mpsc::UnboundedSender<SessionEvent>,
}

type Answer = Result<TaskResultMsg, ExternalError>;

struct Shared {
    service: String,
    url: String,
    state: watch::Sender<InstanceState>,
    /// Some exactly while the state is `Ready`.
    session: Mutex<Option<Session>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    in_flight: AtomicUsize,
    /// Connect attempts started so far (lets a caller tell whether the attempt it asked for
    /// has happened yet).
    attempts: AtomicU64,
    /// Notified on every state change (shared with the pool, which waits for "any ready").
    changed: Arc<Notify>,
    /// Asks the supervisor to cut a reconnect delay short.
    poke: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks stays consistent even if a holder panicked (single inserts
    // and removals), so a poisoned lock is used as it is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn set_state(&self, state: InstanceState) {
        self.state.send_replace(state);
        self.changed.notify_waiters();
    }

    /// Fails every call waiting on this connection as disconnected (retryable).
    fn fail_all(&self, reason: &str) {
        let drained: Vec<_> = lock(&self.pending).drain().collect();
        for (_, tx) in drained {
            // The caller may have gone (timeout, cancellation); nothing to tell then.
            let _ = tx.send(Err(ExternalError::Disconnected {
                service: self.service.clone(),
                url: self.url.clone(),
                reason: reason.to_owned(),
            }));
        }
    }

    /// Resolves the pending call a `task:result` answers. Runs inside the client's reader, so
    /// it only decodes and hands over.
    fn resolve(&self, payload: Payload) {
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
        let waiting = lock(&self.pending).remove(&request_id);
        match waiting {
            Some(tx) => {
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
struct PendingGuard {
    shared: Arc<Shared>,
    request_id: String,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.request_id);
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

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
        token: Token,
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
        let task = tokio::spawn(supervise(shared.clone(), token, settings, cancel.clone()));
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
            lock(&self.shared.pending).insert(request_id.clone(), tx);
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

/// Why a connect attempt did not produce a ready session.
enum Failure {
    /// Unreachable, refused for a passing reason, too slow: try again after a backoff.
    Transient(String),
    /// The token was refused.
    Auth(String),
    /// Wrong protocol version or wrong service.
    Misconfigured(String),
}

/// Capped exponential backoff with jitter, so instances of a fleet do not reconnect in step.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        // 75%–100% of the nominal delay.
        let factor = rand::random_range(0.75..=1.0);
        base.mul_f64(factor).max(self.min.min(base))
    }
}

fn build_client(
    shared: &Arc<Shared>,
    token: &Token,
    events: &mpsc::UnboundedSender<SessionEvent>,
) -> ClientBuilder {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let on_hello = events.clone();
    let on_error = events.clone();
    let on_close = events.clone();
    ClientBuilder::new(shared.url.clone())
        .transport_type(TransportType::Websocket)
        .auth(serde_json::json!({ "token": token.expose_secret() }))
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
        .on(EVENT_RESULT, move |payload: Payload, _client: Client| {
            if let Some(shared) = weak.upgrade() {
                shared.resolve(payload);
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
fn payload_text(payload: &Payload) -> String {
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

/// Waits for the hello that completes a connect, or for the reason there will be none.
async fn await_hello(events: &mut mpsc::UnboundedReceiver<SessionEvent>) -> Result<Hello, Failure> {
    // The first event of a session decides it: the hello, or the reason there is none.
    match events.recv().await {
        Some(SessionEvent::Hello(Ok(hello))) => Ok(hello),
        Some(SessionEvent::Hello(Err(err))) => Err(Failure::Misconfigured(format!(
            "malformed service:hello: {err}"
        ))),
        Some(SessionEvent::Error(text)) if text.contains("unauthorized") => {
            Err(Failure::Auth(text))
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

/// Waits until the session ends and says why.
async fn await_end(events: &mut mpsc::UnboundedReceiver<SessionEvent>) -> String {
    while let Some(event) = events.recv().await {
        match event {
            SessionEvent::Closed => return "the service closed the connection".to_owned(),
            SessionEvent::Error(text) => return format!("connection error: {text}"),
            SessionEvent::SendFailed(text) => return text,
            // A repeated hello changes nothing; a malformed one is logged.
            SessionEvent::Hello(Ok(_)) => {}
            SessionEvent::Hello(Err(err)) => {
                tracing::warn!(error = %err, "ignoring a malformed repeated service:hello")
            }
        }
    }
    "the client stopped".to_owned()
}

fn check_hello(service: &str, hello: Hello) -> Result<Hello, Failure> {
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

/// Best-effort disconnect: the peer may be gone already, and a dead TCP connection must not
/// hold up the supervisor.
async fn disconnect(client: &Client, limit: Duration) {
    match tokio::time::timeout(limit, client.disconnect()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "disconnect of a broken connection"),
        Err(_) => tracing::debug!("disconnect did not finish in time"),
    }
}

async fn supervise(
    shared: Arc<Shared>,
    token: Token,
    settings: ConnectionSettings,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
    let mut last_problem: Option<String> = None;
    'attempts: loop {
        let attempt_started = Instant::now();
        shared.attempts.fetch_add(1, Ordering::AcqRel);
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let builder = build_client(&shared, &token, &events_tx);
        let connected = tokio::select! {
            biased;
            _ = cancel.cancelled() => break 'attempts,
            r = tokio::time::timeout(settings.connect_timeout, builder.connect()) => r,
        };
        let outcome = match connected {
            Err(_) => Err(Failure::Transient("connect timed out".to_owned())),
            Ok(Err(err)) => Err(Failure::Transient(format!("connect failed: {err}"))),
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
                    r = tokio::time::timeout(remaining, await_hello(&mut events_rx)) => r,
                };
                let checked = match greeted {
                    Err(_) => Err(Failure::Transient(
                        "no service:hello within the connect timeout".to_owned(),
                    )),
                    Ok(hello) => hello.and_then(|h| check_hello(&shared.service, h)),
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
                *lock(&shared.session) = Some(Session {
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
            Err(Failure::Auth(text)) => {
                let reason = format!("the service refused the token ({text})");
                if last_problem.as_deref() != Some(reason.as_str()) {
                    tracing::error!(service = %shared.service, url = %shared.url, %reason,
                        "task service instance refused this worker's token; not using it");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        let nominal = [100u64, 200, 400, 400, 400];
        for (d, n) in delays.iter().zip(nominal) {
            let n = Duration::from_millis(n);
            assert!(*d <= n && *d >= n.mul_f64(0.75), "{d:?} vs nominal {n:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn hello_must_match_protocol_and_service() {
        let hello = |protocol: u64, service: &str| Hello {
            protocol,
            service: service.to_owned(),
            instance: "h-1-00000000".to_owned(),
            functions: vec![],
            max_concurrency: 1,
        };
        assert!(check_hello("S", hello(1, "S")).is_ok());
        assert!(matches!(
            check_hello("S", hello(2, "S")),
            Err(Failure::Misconfigured(m)) if m.contains("protocol 2")
        ));
        assert!(matches!(
            check_hello("S", hello(1, "T")),
            Err(Failure::Misconfigured(m)) if m.contains("\"T\"")
        ));
    }

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
        lock(&shared.pending).insert("a".into(), tx_a);
        lock(&shared.pending).insert("b".into(), tx_b);
        shared.resolve(Payload::Text(vec![serde_json::json!(
            [{"request_id": "b", "ok": true, "result": 2, "duration_ms": 0}]
        )]));
        shared.resolve(Payload::Text(vec![serde_json::json!(
            {"request_id": "a", "ok": true, "result": "x"}
        )]));
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
        shared.resolve(Payload::Text(vec![serde_json::json!(
            {"request_id": "zzz", "ok": true, "result": 1, "duration_ms": 0}
        )]));
        shared.resolve(Payload::Text(vec![serde_json::json!("garbage")]));

        let (tx_c, mut rx_c) = oneshot::channel();
        lock(&shared.pending).insert("c".into(), tx_c);
        shared.fail_all("gone");
        assert!(matches!(
            rx_c.try_recv().unwrap(),
            Err(ExternalError::Disconnected { reason, .. }) if reason == "gone"
        ));
    }
}
