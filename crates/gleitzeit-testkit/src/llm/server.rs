//! The simulator's engine: the accept loop (with connections that can be killed), request
//! recording, counters, the gate, fault selection, timing, and streaming of the wire format's
//! frames.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, Uri};
use axum::response::Response;
use axum::{Extension, Router};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::anthropic::Anthropic;
use super::config::{embedding, Counters, Fault, RecordedRequest, SimConfig, SimOp, SimRequest};
use super::ollama::{keep_alive_zero, load_reply, pull_reply, Ollama};
use super::openai::{completion_id, created, OpenAi};
use super::wire::{json, prompt_tokens, raw, tokens, Gen, Routed, Wire};

/// Which API a simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Ollama's native API.
    Ollama,
    /// The OpenAI-compatible API.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

impl Flavor {
    fn wire(self) -> &'static dyn Wire {
        match self {
            Flavor::Ollama => &Ollama,
            Flavor::OpenAi => &OpenAi,
            Flavor::Anthropic => &Anthropic,
        }
    }
}

/// Sleeps for `d`; returns at once for zero (a zero-length tokio sleep still waits for the
/// next timer tick, which would put a millisecond under every token of a "0ms" simulator).
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// Locks a mutex, recovering the data if a panicking test thread poisoned it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the handle and the request handlers.
struct Shared {
    wire: &'static dyn Wire,
    config: Mutex<SimConfig>,
    faults: Mutex<VecDeque<Fault>>,
    poison: Mutex<Vec<(String, Fault)>>,
    requests: Mutex<Vec<RecordedRequest>>,
    counters: watch::Sender<Counters>,
    gate_open: watch::Sender<bool>,
    gate_permits: Semaphore,
    /// Models loaded now, least recently used first.
    loaded: Mutex<Vec<String>>,
    /// Loads per model.
    loads: Mutex<HashMap<String, u64>>,
    /// Parent of every live connection's token; replaced by `kill_connections`.
    connections: Mutex<CancellationToken>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Marks `model` as just used; loads it (evicting the least recently used model beyond
    /// `max_loaded`, 0 = no limit) when it was not loaded. Returns whether it was loaded now.
    fn touch(&self, model: &str, max_loaded: usize) -> bool {
        let mut loaded = lock(&self.loaded);
        if let Some(pos) = loaded.iter().position(|m| m == model) {
            let m = loaded.remove(pos);
            loaded.push(m);
            return false;
        }
        loaded.push(model.to_owned());
        if max_loaded > 0 {
            while loaded.len() > max_loaded {
                loaded.remove(0);
            }
        }
        drop(loaded);
        *lock(&self.loads).entry(model.to_owned()).or_insert(0) += 1;
        self.counters.send_modify(|c| c.loads += 1);
        true
    }

    /// Unloads `model` (no effect when it is not loaded).
    fn unload(&self, model: &str) {
        lock(&self.loaded).retain(|m| m != model);
    }

    fn next_fault(&self, prompt: &str) -> Option<Fault> {
        let poisoned = lock(&self.poison)
            .iter()
            .find(|(needle, _)| prompt.contains(needle.as_str()))
            .map(|(_, f)| f.clone());
        poisoned.or_else(|| lock(&self.faults).pop_front())
    }

    /// Waits at the gate while it is closed, unless a released permit lets this request on.
    async fn pass_gate(self: &Arc<Self>) {
        let mut open = self.gate_open.subscribe();
        if *open.borrow_and_update() {
            return;
        }
        self.counters.send_modify(|c| c.held += 1);
        let _held = HeldGuard(self.clone());
        tokio::select! {
            _ = open.wait_for(|o| *o) => {}
            permit = self.gate_permits.acquire() => {
                if let Ok(p) = permit {
                    p.forget();
                }
            }
        }
    }
}

/// Decrements `held` when a request leaves the gate (or its client goes away).
struct HeldGuard(Arc<Shared>);

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.0.counters.send_modify(|c| c.held -= 1);
    }
}

/// Counts an inference request in flight until its response finishes or is dropped.
struct FlightGuard(Arc<Shared>);

impl FlightGuard {
    fn new(shared: &Arc<Shared>) -> FlightGuard {
        shared.counters.send_modify(|c| {
            c.received += 1;
            c.in_flight += 1;
            c.max_in_flight = c.max_in_flight.max(c.in_flight);
        });
        FlightGuard(shared.clone())
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.0.counters.send_modify(|c| {
            c.in_flight -= 1;
            c.finished += 1;
        });
    }
}

/// Lets a handler close its own connection (the `DropConnection` fault).
#[derive(Clone)]
struct ConnKill(CancellationToken);

/// A running simulator. Dropping it stops the server and closes every connection.
pub struct SimServer {
    flavor: Flavor,
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl std::fmt::Debug for SimServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServer")
            .field("flavor", &self.flavor)
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimServer {
    /// Starts a simulator on `127.0.0.1` and a free port.
    pub async fn start(flavor: Flavor, cfg: SimConfig) -> io::Result<SimServer> {
        SimServer::start_on(flavor, cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a simulator on `addr` (port 0 picks a free one).
    pub async fn start_on(
        flavor: Flavor,
        cfg: SimConfig,
        addr: SocketAddr,
    ) -> io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            wire: flavor.wire(),
            config: Mutex::new(cfg),
            faults: Mutex::new(VecDeque::new()),
            poison: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            counters: watch::Sender::new(Counters::default()),
            gate_open: watch::Sender::new(true),
            gate_permits: Semaphore::new(0),
            loaded: Mutex::new(Vec::new()),
            loads: Mutex::new(HashMap::new()),
            connections: Mutex::new(CancellationToken::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        });
        let server = SimServer {
            flavor,
            shared,
            addr,
            listener: Mutex::new(None),
        };
        server.listen(listener);
        Ok(server)
    }

    fn listen(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, self.shared.clone(), stop.clone()));
        if let Some((old, _)) = lock(&self.listener).replace((stop, task)) {
            old.cancel();
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API spoken.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> SimConfig {
        lock(&self.shared.config).clone()
    }

    /// Changes the configuration for requests that arrive from now on.
    pub fn update_config(&self, f: impl FnOnce(&mut SimConfig)) {
        f(&mut lock(&self.shared.config));
    }

    /// Sets the delay before each response.
    pub fn set_latency(&self, d: Duration) {
        self.update_config(|c| c.latency = d);
    }

    /// Sets the delay before each token.
    pub fn set_token_delay(&self, d: Duration) {
        self.update_config(|c| c.token_delay = d);
    }

    /// Queues a fault for the next inference request.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    /// Queues the same fault for the next `n` inference requests.
    pub fn push_faults(&self, n: usize, fault: Fault) {
        let mut q = lock(&self.shared.faults);
        for _ in 0..n {
            q.push_back(fault.clone());
        }
    }

    /// Faults still queued.
    pub fn queued_faults(&self) -> usize {
        lock(&self.shared.faults).len()
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Every inference request whose prompt (or any embedding input) contains `needle` gets
    /// `fault`, for as long as the rule stands. Poison takes precedence over the queue.
    pub fn poison(&self, needle: impl Into<String>, fault: Fault) {
        lock(&self.shared.poison).push((needle.into(), fault));
    }

    /// Removes every poison rule.
    pub fn clear_poison(&self) {
        lock(&self.shared.poison).clear();
    }

    /// Closes the gate: inference requests arriving from now on wait (counted in
    /// [`Counters::held`]) until [`SimServer::release`] or [`SimServer::open_gate`].
    pub fn hold(&self) {
        // Permits left over from an earlier release must not let new requests through.
        let spare = self.shared.gate_permits.available_permits();
        self.shared.gate_permits.forget_permits(spare);
        self.shared.gate_open.send_replace(false);
    }

    /// Lets `n` held (or next-arriving) requests through a closed gate.
    pub fn release(&self, n: usize) {
        self.shared.gate_permits.add_permits(n);
    }

    /// Opens the gate: every held request proceeds, and new ones are not held.
    pub fn open_gate(&self) {
        self.shared.gate_open.send_replace(true);
    }

    /// Every request received so far (including listings), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.requests).last().cloned()
    }

    /// Forgets the recorded requests (counters are kept).
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        *self.shared.counters.borrow()
    }

    /// Waits until `pred` holds for the counters.
    pub async fn wait_until(&self, mut pred: impl FnMut(&Counters) -> bool) -> Counters {
        let mut rx = self.shared.counters.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let result = match rx.wait_for(|c| pred(c)).await {
            Ok(c) => *c,
            Err(_) => self.counters(),
        };
        result
    }

    /// Waits until at least `n` inference requests have been received.
    pub async fn wait_received(&self, n: u64) -> Counters {
        self.wait_until(|c| c.received >= n).await
    }

    /// Waits until at least `n` inference requests are in flight.
    pub async fn wait_in_flight(&self, n: u64) -> Counters {
        self.wait_until(|c| c.in_flight >= n).await
    }

    /// Waits until at least `n` requests are held at the gate.
    pub async fn wait_held(&self, n: u64) -> Counters {
        self.wait_until(|c| c.held >= n).await
    }

    /// Waits until at least `n` inference responses have finished.
    pub async fn wait_finished(&self, n: u64) -> Counters {
        self.wait_until(|c| c.finished >= n).await
    }

    /// Waits until no inference request is in flight.
    pub async fn wait_idle(&self) -> Counters {
        self.wait_until(|c| c.in_flight == 0).await
    }

    /// Models loaded now, least recently used first (Ollama's `/api/ps`).
    pub fn loaded_models(&self) -> Vec<String> {
        lock(&self.shared.loaded).clone()
    }

    /// Model loads so far (first use, reload after eviction or unload, explicit loads).
    pub fn loads(&self) -> u64 {
        self.counters().loads
    }

    /// Loads of one model so far.
    pub fn loads_of(&self, model: &str) -> u64 {
        lock(&self.shared.loads).get(model).copied().unwrap_or(0)
    }

    /// Requests received on `path` so far (listings included), e.g. `/api/ps`.
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Closes every open connection at once, mid-response or idle, as a crashing server
    /// would. The server keeps accepting new connections.
    pub fn kill_connections(&self) {
        let old = std::mem::replace(
            &mut *lock(&self.shared.connections),
            CancellationToken::new(),
        );
        old.cancel();
    }

    /// Stops listening and closes every connection: the URL now refuses connections. The
    /// state (faults, records, counters) is kept for [`SimServer::restart`].
    pub async fn stop(&self) {
        let listener = lock(&self.listener).take();
        if let Some((stop, task)) = listener {
            stop.cancel();
            // The listening socket is closed once the loop has returned.
            let _ = task.await;
        }
        self.kill_connections();
    }

    /// Listens again on the same address after [`SimServer::stop`].
    pub async fn restart(&self) -> io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.listen(listener);
        Ok(())
    }

    /// Stops the server and waits until it no longer listens.
    pub async fn shutdown(self) {
        self.stop().await;
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some((stop, task)) = lock(&self.listener).take() {
            stop.cancel();
            task.abort();
        }
        lock(&self.shared.connections).cancel();
        // Held requests must not outlive the server.
        self.shared.gate_open.send_replace(true);
    }
}

/// Largest request body the simulators accept.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    // Vision requests carry base64 images well past axum's default 2 MB body limit.
    let router = Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared.clone());
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                shared.counters.send_modify(|c| c.connections += 1);
                let kill = lock(&shared.connections).child_token();
                tokio::spawn(serve_connection(stream, router.clone(), kill));
            }
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router, kill: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let conn_kill = ConnKill(kill.clone());
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(conn_kill.clone());
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, req).await }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        // Dropping the connection closes the socket without a response.
        _ = kill.cancelled() => {}
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<ConnKill>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    lock(&shared.requests).push(RecordedRequest {
        method: method.as_str().to_owned(),
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: parsed.clone(),
    });
    let cfg = lock(&shared.config).clone();
    let loaded = lock(&shared.loaded).clone();
    let wire = shared.wire;
    let presented = wire.credential(&headers);
    let authorized = match &cfg.api_key {
        None => true,
        Some(key) => presented.as_deref() == Some(key.as_str()),
    };
    if let Some(refusal) = wire.check_headers(&headers) {
        return refusal;
    }
    match wire.route(&method, &path, parsed.as_ref(), &cfg, &loaded) {
        Routed::Direct(resp) if authorized => resp,
        Routed::Direct(_) | Routed::Load { .. } | Routed::Pull { .. } if !authorized => {
            wire.unauthorized(presented.as_deref())
        }
        Routed::Direct(resp) => resp,
        Routed::Load { model, unload } => {
            if unload {
                shared.unload(&model);
            } else {
                if !cfg.serves(&model) {
                    return wire.model_not_found(&model);
                }
                if shared.touch(&model, cfg.max_loaded) {
                    pause(cfg.load_delay).await;
                }
            }
            load_reply(&model, unload)
        }
        Routed::Pull { model } => {
            {
                let mut c = lock(&shared.config);
                // An empty list already serves every model.
                if !c.models.is_empty() && !c.models.contains(&model) {
                    c.models.push(model);
                }
            }
            pull_reply()
        }
        Routed::Inference { req, include_usage } => {
            let flight = FlightGuard::new(&shared);
            if !authorized {
                return wire.unauthorized(presented.as_deref());
            }
            infer(shared, conn, req, include_usage, flight).await
        }
    }
}

/// How a response body ends when a stream fault applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Normal,
    ErrorAfter(usize),
    CutAfter(usize),
    ResetAfter(usize),
}

async fn infer(
    shared: Arc<Shared>,
    conn: ConnKill,
    req: SimRequest,
    include_usage: bool,
    flight: FlightGuard,
) -> Response {
    let started = Instant::now();
    let wire = shared.wire;
    shared.pass_gate().await;
    let mut fault = shared.next_fault(&req.prompt);
    // Read after the gate: a test may reconfigure while requests are held.
    let cfg = lock(&shared.config).clone();
    pause(cfg.latency).await;
    if let Some(Fault::Delay(d)) = fault {
        pause(d).await;
        fault = None;
    }
    let mut ending = Ending::Normal;
    match fault {
        None | Some(Fault::Delay(_)) => {}
        Some(Fault::Status(status, body)) => {
            return raw(status, "application/json; charset=utf-8", body, &[])
        }
        Some(Fault::Response {
            status,
            headers,
            body,
        }) => return raw(status, "application/json; charset=utf-8", body, &headers),
        Some(Fault::RateLimit { retry_after }) => return wire.rate_limited(retry_after.as_deref()),
        Some(Fault::Overloaded) => return wire.overloaded(),
        Some(Fault::ModelNotFound) => return wire.model_not_found(&req.model),
        Some(Fault::Unauthorized) => return wire.unauthorized(None),
        Some(Fault::DropConnection) => {
            conn.0.cancel();
            // The connection task drops this handler together with the socket.
            std::future::pending::<()>().await;
            return json(500, &Value::Null);
        }
        Some(Fault::StreamError { after_chunks }) => ending = Ending::ErrorAfter(after_chunks),
        Some(Fault::StreamCut { after_chunks }) => ending = Ending::CutAfter(after_chunks),
        Some(Fault::StreamReset { after_chunks }) => ending = Ending::ResetAfter(after_chunks),
    }
    if !cfg.serves(&req.model) {
        return wire.model_not_found(&req.model);
    }
    let load_ns = {
        let loaded_now = shared.touch(&req.model, cfg.max_loaded);
        // `keep_alive: 0`: the model leaves memory with this request.
        if keep_alive_zero(&req.body) {
            shared.unload(&req.model);
        }
        if loaded_now {
            pause(cfg.load_delay).await;
            u64::try_from(cfg.load_delay.as_nanos()).unwrap_or(u64::MAX)
        } else {
            0
        }
    };
    let n = shared
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut gen = Gen {
        model: req.model.clone(),
        op: req.op,
        prompt_tokens: prompt_tokens(&req),
        completion_tokens: 0,
        started,
        gen_started: None,
        load_ns,
        id: completion_id(n),
        created: created(),
        include_usage,
        finish_reason: "stop",
    };
    if req.op == SimOp::Embed {
        let vectors: Vec<Vec<f32>> = req
            .inputs
            .iter()
            .map(|i| embedding(i, cfg.embedding_dims))
            .collect();
        let body = wire.embeddings(&gen, vectors);
        return whole_body(wire, body, ending, flight);
    }
    let mut toks = tokens(&cfg.reply.text(&req));
    if let Some(max) = req.max_tokens {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if toks.len() > max {
            toks.truncate(max);
            gen.finish_reason = "length";
        }
    }
    if !req.stream {
        gen.gen_started = Some(Instant::now());
        for _ in &toks {
            pause(cfg.token_delay).await;
        }
        gen.completion_tokens = toks.len() as u64;
        let body = wire.complete(&gen, &toks.concat());
        return whole_body(wire, body, ending, flight);
    }
    stream_body(wire, gen, toks, cfg.token_delay, ending, flight)
}

/// A non-streamed JSON body, possibly damaged by a stream fault.
fn whole_body(
    wire: &'static dyn Wire,
    body: Value,
    ending: Ending,
    flight: FlightGuard,
) -> Response {
    let text = body.to_string();
    let half = Bytes::from(text[..text.len() / 2].to_owned());
    let frames: Vec<Result<Bytes, io::Error>> = match ending {
        Ending::Normal => vec![Ok(Bytes::from(text))],
        Ending::ErrorAfter(_) => vec![Ok(Bytes::from(wire.error_object().to_string()))],
        Ending::CutAfter(_) => vec![Ok(half)],
        Ending::ResetAfter(_) => vec![
            Ok(half),
            Err(io::Error::other("simulated connection reset")),
        ],
    };
    let stream = futures::stream::unfold(
        (frames.into_iter(), flight),
        |(mut it, flight)| async move {
            let frame = it.next()?;
            if frame.is_err() {
                flush_point().await;
            }
            Some((frame, (it, flight)))
        },
    );
    raw(
        200,
        "application/json; charset=utf-8",
        Body::from_stream(stream),
        &[],
    )
}

/// Returns `Pending` once. hyper flushes what it has buffered whenever the body is not ready,
/// so the frames before a simulated reset reach the client before the connection breaks.
async fn flush_point() {
    tokio::task::yield_now().await;
}

enum Step {
    Frame(Bytes),
    Token(String),
    End,
    Error,
    Reset,
}

struct Streamer {
    wire: &'static dyn Wire,
    gen: Gen,
    steps: VecDeque<Step>,
    token_delay: Duration,
    _flight: FlightGuard,
}

/// A streamed generation: start frames, one frame per token after `token_delay`, then the
/// final frames — or the fault's ending.
fn stream_body(
    wire: &'static dyn Wire,
    gen: Gen,
    toks: Vec<String>,
    token_delay: Duration,
    ending: Ending,
    flight: FlightGuard,
) -> Response {
    let mut steps: VecDeque<Step> = wire
        .stream_start(&gen)
        .into_iter()
        .map(Step::Frame)
        .collect();
    let limit = match ending {
        Ending::Normal => toks.len(),
        Ending::ErrorAfter(n) | Ending::CutAfter(n) | Ending::ResetAfter(n) => n.min(toks.len()),
    };
    steps.extend(toks.into_iter().take(limit).map(Step::Token));
    match ending {
        Ending::Normal => steps.push_back(Step::End),
        Ending::ErrorAfter(_) => steps.push_back(Step::Error),
        Ending::CutAfter(_) => {}
        Ending::ResetAfter(_) => steps.push_back(Step::Reset),
    }
    let streamer = Streamer {
        wire,
        gen,
        steps,
        token_delay,
        _flight: flight,
    };
    let stream = futures::stream::unfold(streamer, |mut s| async move {
        loop {
            let item = match s.steps.pop_front()? {
                Step::Frame(b) => Ok(b),
                Step::Token(t) => {
                    pause(s.token_delay).await;
                    s.gen.gen_started.get_or_insert_with(Instant::now);
                    s.gen.completion_tokens += 1;
                    Ok(s.wire.stream_token(&s.gen, &t))
                }
                Step::End => {
                    for (i, frame) in s.wire.stream_end(&s.gen).into_iter().enumerate() {
                        s.steps.insert(i, Step::Frame(frame));
                    }
                    continue;
                }
                Step::Error => Ok(s.wire.stream_error()),
                Step::Reset => {
                    flush_point().await;
                    Err(io::Error::other("simulated connection reset"))
                }
            };
            return Some((item, s));
        }
    });
    let mut resp = raw(
        200,
        wire.stream_content_type(),
        Body::from_stream(stream),
        &[],
    );
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// An Ollama simulator. Derefs to [`SimServer`] for control and inspection.
#[derive(Debug)]
pub struct MockOllama(SimServer);

impl MockOllama {
    /// Starts on `127.0.0.1` and a free port.
    pub async fn start(cfg: SimConfig) -> io::Result<MockOllama> {
        SimServer::start(Flavor::Ollama, cfg).await.map(MockOllama)
    }

    /// Stops the server and waits until it no longer listens.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

impl Deref for MockOllama {
    type Target = SimServer;
    fn deref(&self) -> &SimServer {
        &self.0
    }
}

/// An OpenAI-compatible simulator. Derefs to [`SimServer`] for control and inspection.
#[derive(Debug)]
pub struct MockOpenAi(SimServer);

impl MockOpenAi {
    /// Starts on `127.0.0.1` and a free port.
    pub async fn start(cfg: SimConfig) -> io::Result<MockOpenAi> {
        SimServer::start(Flavor::OpenAi, cfg).await.map(MockOpenAi)
    }

    /// Stops the server and waits until it no longer listens.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

impl Deref for MockOpenAi {
    type Target = SimServer;
    fn deref(&self) -> &SimServer {
        &self.0
    }
}

/// An Anthropic Messages simulator. Derefs to [`SimServer`] for control and inspection.
#[derive(Debug)]
pub struct MockAnthropic(SimServer);

impl MockAnthropic {
    /// Starts on `127.0.0.1` and a free port.
    pub async fn start(cfg: SimConfig) -> io::Result<MockAnthropic> {
        SimServer::start(Flavor::Anthropic, cfg)
            .await
            .map(MockAnthropic)
    }

    /// Stops the server and waits until it no longer listens.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

impl Deref for MockAnthropic {
    type Target = SimServer;
    fn deref(&self) -> &SimServer {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 exchange on a fresh connection; returns the raw response (status line,
    /// headers, body — chunked framing included).
    async fn exchange(sim: &SimServer, method: &str, path: &str, body: &Value) -> String {
        let body = body.to_string();
        let mut conn = TcpStream::connect(sim.addr()).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: sim\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(body.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        // A reset connection ends the read with an error; what arrived before is the answer.
        let _ = conn.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The JSON documents in a response body (NDJSON lines or SSE `data:` lines).
    fn documents(resp: &str) -> Vec<Value> {
        resp.lines()
            .map(|l| l.strip_prefix("data: ").unwrap_or(l))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    #[tokio::test]
    async fn ollama_stream_shape() {
        let sim = SimServer::start(Flavor::Ollama, SimConfig::default())
            .await
            .unwrap();
        let resp = exchange(
            &sim,
            "POST",
            "/api/generate",
            &json!({"model": "m", "prompt": "a b"}),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("application/x-ndjson"));
        let docs = documents(&resp);
        let text: String = docs.iter().filter_map(|d| d["response"].as_str()).collect();
        assert_eq!(text, "m: a b");
        let last = docs.last().unwrap();
        assert_eq!(last["done"], json!(true));
        assert_eq!(last["eval_count"], json!(3));
        assert_eq!(last["prompt_eval_count"], json!(2));
        for key in [
            "total_duration",
            "load_duration",
            "prompt_eval_duration",
            "eval_duration",
        ] {
            assert!(last[key].is_u64(), "{key} in {last}");
        }
        assert!(docs[..docs.len() - 1]
            .iter()
            .all(|d| d["done"] == json!(false)));
    }

    #[tokio::test]
    async fn openai_stream_shape() {
        let sim = SimServer::start(Flavor::OpenAi, SimConfig::default())
            .await
            .unwrap();
        let body =
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        let resp = exchange(&sim, "POST", "/v1/chat/completions", &body).await;
        assert!(resp.contains("text/event-stream"), "{resp}");
        assert!(resp.contains("data: [DONE]"));
        let docs = documents(&resp);
        // No usage chunk unless asked for.
        assert!(docs.iter().all(|d| d.get("usage").is_none()));
        assert_eq!(docs[0]["choices"][0]["delta"]["role"], json!("assistant"));

        let mut body = body;
        body["stream_options"] = json!({"include_usage": true});
        let resp = exchange(&sim, "POST", "/v1/chat/completions", &body).await;
        let docs = documents(&resp);
        let usage = docs.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], json!(2));
    }

    #[tokio::test]
    async fn drop_connection_sends_nothing() {
        let sim = SimServer::start(Flavor::OpenAi, SimConfig::default())
            .await
            .unwrap();
        sim.push_fault(Fault::DropConnection);
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let resp = exchange(&sim, "POST", "/v1/chat/completions", &body).await;
        assert_eq!(resp, "");
        let c = sim.wait_idle().await;
        assert_eq!(c.received, 1);
    }

    #[tokio::test]
    async fn unknown_paths_and_bad_bodies() {
        let ollama = SimServer::start(Flavor::Ollama, SimConfig::default())
            .await
            .unwrap();
        let resp = exchange(&ollama, "POST", "/api/nothing", &json!({})).await;
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        let resp = exchange(&ollama, "POST", "/api/generate", &json!({"prompt": "x"})).await;
        assert!(
            resp.starts_with("HTTP/1.1 400") && resp.contains("model is required"),
            "{resp}"
        );
        let openai = SimServer::start(Flavor::OpenAi, SimConfig::default())
            .await
            .unwrap();
        let resp = exchange(&openai, "GET", "/v1/nothing", &json!({})).await;
        assert!(
            resp.starts_with("HTTP/1.1 404") && resp.contains("Invalid URL"),
            "{resp}"
        );
        // Malformed requests are not inference requests: counters stay at zero.
        assert_eq!(ollama.counters().received, 0);
        assert_eq!(ollama.requests().len(), 2);
    }

    #[tokio::test]
    async fn hold_discards_permits_released_earlier() {
        let sim = Arc::new(
            SimServer::start(Flavor::Ollama, SimConfig::default())
                .await
                .unwrap(),
        );
        sim.release(5);
        sim.hold();
        let s = sim.clone();
        let call = tokio::spawn(async move {
            exchange(
                &s,
                "POST",
                "/api/generate",
                &json!({"model": "m", "prompt": "x", "stream": false}),
            )
            .await
        });
        let c = sim.wait_held(1).await;
        assert_eq!(c.finished, 0);
        sim.release(1);
        let resp = call.await.unwrap();
        assert!(resp.contains("\"done\":true"), "{resp}");
    }

    #[tokio::test]
    async fn show_and_ps() {
        let sim = SimServer::start(Flavor::Ollama, SimConfig::default().with_models(["a"]))
            .await
            .unwrap();
        let resp = exchange(&sim, "POST", "/api/show", &json!({"model": "a"})).await;
        assert!(
            resp.starts_with("HTTP/1.1 200") && resp.contains("capabilities"),
            "{resp}"
        );
        let resp = exchange(&sim, "POST", "/api/show", &json!({"model": "b"})).await;
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        assert!(
            resp.contains(r#"model \"b\" not found, try pulling it first"#),
            "{resp}"
        );
        exchange(
            &sim,
            "POST",
            "/api/generate",
            &json!({"model": "a", "prompt": "x"}),
        )
        .await;
        let resp = exchange(&sim, "GET", "/api/ps", &json!({})).await;
        let docs = documents(&resp);
        assert_eq!(docs[0]["models"][0]["name"], json!("a"));
        assert_eq!(sim.loaded_models(), ["a"]);
    }

    #[tokio::test]
    async fn memory_limit_evicts_the_least_recently_used_model() {
        let cfg = SimConfig::default()
            .with_models(["a", "b", "c"])
            .with_max_loaded(2);
        let sim = SimServer::start(Flavor::Ollama, cfg).await.unwrap();
        let gen = |m: &str, extra: Value| {
            let mut body = json!({"model": m, "prompt": "x", "stream": false});
            if let (Some(o), Value::Object(e)) = (body.as_object_mut(), extra) {
                o.extend(e);
            }
            body
        };
        for m in ["a", "b", "a", "c"] {
            exchange(&sim, "POST", "/api/generate", &gen(m, json!({}))).await;
        }
        // b was the least recently used when c came.
        assert_eq!(sim.loaded_models(), ["a", "c"]);
        assert_eq!(sim.loads(), 3);
        exchange(&sim, "POST", "/api/generate", &gen("b", json!({}))).await;
        assert_eq!(sim.loads_of("b"), 2, "a reload after eviction is a load");
        // keep_alive 0 unloads after the request; an explicit unload takes no prompt.
        exchange(
            &sim,
            "POST",
            "/api/generate",
            &gen("c", json!({"keep_alive": 0})),
        )
        .await;
        assert!(!sim.loaded_models().contains(&"c".to_owned()));
        let resp = exchange(
            &sim,
            "POST",
            "/api/generate",
            &json!({"model": "b", "keep_alive": "0s"}),
        )
        .await;
        assert!(resp.contains("\"done_reason\":\"unload\""), "{resp}");
        assert!(!sim.loaded_models().contains(&"b".to_owned()));
        let before = sim.counters().received;
        let resp = exchange(&sim, "POST", "/api/generate", &json!({"model": "c"})).await;
        assert!(resp.contains("\"done_reason\":\"load\""), "{resp}");
        assert_eq!(
            sim.counters().received,
            before,
            "a load is not an inference request"
        );
        assert!(sim.loaded_models().contains(&"c".to_owned()));
        let resp = exchange(&sim, "POST", "/api/generate", &json!({"model": "zzz"})).await;
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        // A pull adds the model to the listing.
        let resp = exchange(
            &sim,
            "POST",
            "/api/pull",
            &json!({"model": "d", "stream": false}),
        )
        .await;
        assert!(resp.contains("success"), "{resp}");
        let tags = exchange(&sim, "GET", "/api/tags", &json!({})).await;
        assert!(tags.contains("\"name\":\"d\""), "{tags}");
        assert_eq!(sim.hits("/api/pull"), 1);
    }
}
