//! One Socket.IO connection to one instance of a task service, kept alive by a supervisor task.
//!
//! The design works around what `rust_socketio` 0.6 cannot do reliably:
//!
//! - Requests and responses are two ordinary events matched by our own `request_id` (UUIDv4)
//!   in a pending map; Socket.IO acknowledgements are never used (their ids collide and a
//!   collision can kill the client's reader).
//! - `connect()` returns before the service accepted the namespace connect, so the supervisor
//!   waits for `service:hello` (or a connect error, which is how a refused connect shows up)
//!   with a timeout before the instance counts as ready.
//! - The client never reconnects after a server-initiated disconnect, so reconnecting is ours:
//!   the client is built with `reconnect(false)` and rebuilt, with capped exponential backoff,
//!   whenever the connection ends.
//! - `.on(...)` callbacks run one at a time inside the client's reader, so they only push into
//!   a channel or resolve a pending entry; everything else happens in the supervisor.
//!
//! Every connect runs the handshake of [`gleitzeit_core::handshake`]: the connect `auth`
//! carries a fresh nonce (never the token); the service's proof in `service:hello` is verified
//! before the worker sends anything; only then does the worker send its own proof and wait for
//! `service:auth`. An instance that cannot prove it holds the token gets no call and no proof
//! and is marked [`InstanceState::Misconfigured`] with `auth: true`; answers arriving on a
//! connection whose handshake has not completed are dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use gleitzeit_core::handshake::{self, ProofInput};

use crate::call::{json_size, CallLimits, ExternalCall};
use crate::config::{normalize_url, Token};
use crate::error::ExternalError;
use crate::protocol::{
    self, unwrap_payload_owned, Call, ConnectAuth, Hello, ProtocolError, ServiceAuth,
    TaskResultMsg, WorkerAuth, EVENT_CALL, EVENT_HELLO, EVENT_RESULT, EVENT_SERVICE_AUTH,
    EVENT_WORKER_AUTH, PROTOCOL_VERSION,
};

/// What a worker authenticates with: the shared token (never sent) and, for `https://`
/// instances, the TLS settings.
#[derive(Clone)]
pub struct Credentials {
    /// The shared service token, the key of both handshake proofs.
    pub token: Token,
    /// TLS for `https://` instances: `None` verifies them against the system's trust store;
    /// a connector built by [`crate::ExternalConfig::tls_connector`] trusts a private CA.
    pub tls: Option<native_tls::TlsConnector>,
}

impl Credentials {
    /// The token with the system's trust store for TLS.
    pub fn new(token: Token) -> Credentials {
        Credentials { token, tls: None }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token)
            .field("private_ca", &self.tls.is_some())
            .finish()
    }
}

/// Where an instance's address came from, which decides how strictly its hello is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Listed in the worker's configuration. The address may legitimately differ from the one
    /// the service advertises (a load balancer, a port mapping), and nobody but the operator
    /// can change it.
    Static,
    /// Read from a registration in Redis, which the service writes with the address it
    /// advertises. The service's proof binds that address, so it must equal the address
    /// dialled: otherwise the registration points at a relay in front of a real instance.
    Discovered,
}

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
    /// The instance cannot be used as configured: the handshake failed (`auth`: it could not
    /// prove it holds the token, or refused this worker's proof), or it speaks another protocol
    /// version or is another service. Retried at the longest backoff so a corrected deployment
    /// is picked up, but never used meanwhile.
    Misconfigured {
        /// What is wrong.
        reason: String,
        /// Whether the handshake failed.
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
    ServiceAuth(Result<ServiceAuth, ProtocolError>),
    Error(String),
    Closed,
    /// A caller could not send on this session.
    SendFailed(String),
}

/// A live, authenticated connection.
struct Session {
    /// The connect attempt that opened it; answers are accepted only from this session.
    id: u64,
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
    /// Request id → (session id, waiting caller).
    pending: Mutex<HashMap<String, (u64, oneshot::Sender<Answer>)>>,
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
    fn resolve(&self, session: u64, payload: Payload) {
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

/// Why a connect attempt did not produce a ready session.
#[derive(Debug)]
enum Failure {
    /// Unreachable, refused for a passing reason, too slow: try again after a backoff.
    Transient(String),
    /// The handshake failed: the instance could not prove it holds the token, or refused this
    /// worker's proof.
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

/// One connect attempt's identity: its session id, the nonce sent in the connect `auth`, and
/// whether its handshake has completed (answers are dropped until then).
struct Attempt {
    id: u64,
    nonce: String,
    verified: Arc<AtomicBool>,
}

fn build_client(
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

/// Waits for the hello that opens the handshake, or for the reason there will be none.
async fn await_hello(events: &mut mpsc::UnboundedReceiver<SessionEvent>) -> Result<Hello, Failure> {
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
async fn await_service_auth(
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
fn verify_hello(
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

/// Waits until the session ends and says why.
async fn await_end(events: &mut mpsc::UnboundedReceiver<SessionEvent>) -> String {
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

/// An error with its sources (`EngineIO Error: ...: certificate verify failed`): the client's
/// own message alone does not say what failed.
fn error_chain(err: &dyn std::error::Error) -> String {
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
async fn disconnect(client: &Client, limit: Duration) {
    match tokio::time::timeout(limit, client.disconnect()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "disconnect of a broken connection"),
        Err(_) => tracing::debug!("disconnect did not finish in time"),
    }
}

/// Runs the handshake on a connected client: the hello and its proof, then this worker's
/// proof and the service's verdict.
async fn authenticate(
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

async fn supervise(
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
