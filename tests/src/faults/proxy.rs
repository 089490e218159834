//! A fault-injecting HTTP front for a provider simulator, running in the test process on
//! `127.0.0.1`: the workers talk to the proxy, the proxy forwards to the simulator, and in
//! between it misbehaves the way real endpoints do, phase by phase.
//!
//! - [`Mode::Pass`]: forwards every request.
//! - [`Mode::Refuse`]: the listening socket is closed and every open connection dropped, so
//!   a client gets "connection refused" (a server that is down or restarting).
//! - [`Mode::Busy`]: more than `max_in_flight` inference requests at once get
//!   `503 {"error":"server busy, please try again.  maximum pending requests exceeded"}`,
//!   what Ollama answers when its request queue is full.
//! - [`Mode::RateLimit`]: every inference request gets `429` with `Retry-After: <secs>`.
//! - [`Mode::Hang`]: inference requests are accepted and left unanswered until the mode
//!   changes (then they are handled by the new mode).
//!
//! Busy, rate limiting and hanging apply to inference requests (generate, chat, embeddings);
//! listing and health requests (`/api/tags`, `/api/ps`, `/v1/models`, …) always pass, as
//! they do on a busy Ollama. Phases change on events, never on timers: the test calls
//! [`FaultProxy::set_mode`] after awaiting a counter ([`FaultProxy::wait_until`]), or
//! programs the change in advance with [`FaultProxy::then`], which the proxy applies itself
//! when its counters reach the [`Trigger`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::HANG_GUARD;

/// The body Ollama answers with status 503 when its queue of pending requests is full.
pub const OLLAMA_BUSY: &str =
    r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#;

/// How the proxy treats requests now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Not listening: connections are refused, open ones are dropped.
    Refuse,
    /// 503 "server busy" for inference requests beyond `max_in_flight` at once.
    Busy {
        /// Inference requests forwarded at the same time before the next gets a 503.
        max_in_flight: u64,
    },
    /// 429 with `Retry-After: <retry_after_secs>` for every inference request.
    RateLimit {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// Inference requests get no answer until the mode changes.
    Hang,
}

/// What the proxy has seen (inference requests only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Inference requests received.
    pub received: u64,
    /// Forwarded requests the simulator answered (any status) and the proxy passed back.
    pub passed: u64,
    /// Requests being forwarded now.
    pub in_flight: u64,
    /// Highest `in_flight` seen.
    pub max_in_flight: u64,
    /// 503 "server busy" answers.
    pub busy: u64,
    /// 429 answers.
    pub limited: u64,
    /// Requests held unanswered now.
    pub hanging: u64,
    /// Requests ever held.
    pub hung: u64,
    /// Held requests whose client went away (it timed out) before the hang ended.
    pub abandoned: u64,
    /// Forwarded requests that ended without the simulator's answer: it failed (the proxy
    /// answered 502) or the client went away first.
    pub cut_off: u64,
}

/// A counter condition that starts the next programmed phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// At least this many requests passed.
    Passed(u64),
    /// At least this many 503 answers.
    Busy(u64),
    /// At least this many 429 answers.
    Limited(u64),
    /// At least this many requests held.
    Hung(u64),
    /// At least this many held requests abandoned by their client.
    Abandoned(u64),
}

impl Trigger {
    fn holds(self, c: &ProxyCounters) -> bool {
        match self {
            Trigger::Passed(n) => c.passed >= n,
            Trigger::Busy(n) => c.busy >= n,
            Trigger::Limited(n) => c.limited >= n,
            Trigger::Hung(n) => c.hung >= n,
            Trigger::Abandoned(n) => c.abandoned >= n,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    addr: SocketAddr,
    upstream: String,
    client: reqwest::Client,
    mode: watch::Sender<Mode>,
    counters: watch::Sender<ProxyCounters>,
    schedule: Mutex<VecDeque<(Trigger, Mode)>>,
    /// Serialises mode changes (the test's and the schedule's).
    switching: tokio::sync::Mutex<()>,
    listener: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
    connections: Mutex<CancellationToken>,
}

/// A running proxy in front of one upstream URL. Dropping it stops listening and drops
/// every connection.
pub struct FaultProxy {
    inner: Arc<Inner>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1` and a free port, forwarding to `upstream`
    /// (`http://127.0.0.1:<port>`), in [`Mode::Pass`].
    ///
    /// # Panics
    /// When no port can be bound or the HTTP client cannot be built.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("binding the fault proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let client = reqwest::Client::builder()
            // A proxy from the environment must not sit between the proxy and the simulator.
            .no_proxy()
            .build()
            .expect("the proxy's HTTP client");
        let inner = Arc::new(Inner {
            addr,
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            mode: watch::Sender::new(Mode::Pass),
            counters: watch::Sender::new(ProxyCounters::default()),
            schedule: Mutex::new(VecDeque::new()),
            switching: tokio::sync::Mutex::new(()),
            listener: Mutex::new(None),
            connections: Mutex::new(CancellationToken::new()),
        });
        inner.listen(listener);
        FaultProxy { inner }
    }

    /// `http://127.0.0.1:<port>`: the URL to configure as the endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.inner.mode.borrow()
    }

    /// The counters now.
    pub fn counters(&self) -> ProxyCounters {
        *self.inner.counters.borrow()
    }

    /// Switches to `mode`: stops listening for [`Mode::Refuse`], listens again on the same
    /// port when leaving it; held requests are handled by the new mode.
    pub async fn set_mode(&self, mode: Mode) {
        self.inner.clone().set_mode(mode).await;
    }

    /// Programs a phase: once the earlier programmed phases have started and `trigger`
    /// holds, the proxy switches to `mode` by itself.
    pub fn then(&self, trigger: Trigger, mode: Mode) -> &FaultProxy {
        lock(&self.inner.schedule).push_back((trigger, mode));
        self.inner.advance();
        self
    }

    /// Waits until `pred` holds for the counters (bounded by [`HANG_GUARD`]); returns them.
    pub async fn wait_until(&self, pred: impl FnMut(&ProxyCounters) -> bool) -> ProxyCounters {
        let mut rx = self.inner.counters.subscribe();
        let reached =
            tokio::time::timeout(HANG_GUARD, async { rx.wait_for(pred).await.map(|c| *c) }).await;
        match reached {
            Ok(Ok(c)) => c,
            Ok(Err(_)) => unreachable_sender(),
            Err(_) => panic!(
                "proxy {}: condition not reached within {HANG_GUARD:?}; counters {:?}",
                self.url(),
                self.counters()
            ),
        }
    }

    /// Waits until the programmed phases have all started (bounded by [`HANG_GUARD`]).
    pub async fn wait_schedule_done(&self) {
        let mut rx = self.inner.mode.subscribe();
        let done = tokio::time::timeout(HANG_GUARD, async {
            while !lock(&self.inner.schedule).is_empty() {
                if rx.changed().await.is_err() {
                    unreachable_sender();
                }
            }
        })
        .await;
        assert!(
            done.is_ok(),
            "proxy {}: programmed phases not done within {HANG_GUARD:?}: {:?}, counters {:?}",
            self.url(),
            lock(&self.inner.schedule),
            self.counters()
        );
    }
}

/// The senders live as long as the proxy the receiver was taken from.
fn unreachable_sender() -> ! {
    panic!("the proxy's state was dropped while a test waited on it")
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        lock(&self.inner.schedule).clear();
        if let Some((stop, task)) = lock(&self.inner.listener).take() {
            stop.cancel();
            task.abort();
        }
        lock(&self.inner.connections).cancel();
        // Held requests end with their connections; none may wait for a mode change.
        self.inner.mode.send_replace(Mode::Refuse);
    }
}

impl Inner {
    fn listen(self: &Arc<Inner>, listener: TcpListener) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, self.clone(), stop.clone()));
        if let Some((old, _)) = lock(&self.listener).replace((stop, task)) {
            old.cancel();
        }
    }

    async fn set_mode(self: Arc<Inner>, mode: Mode) {
        let _switching = self.switching.lock().await;
        if mode == Mode::Refuse {
            let listening = lock(&self.listener).take();
            if let Some((stop, task)) = listening {
                stop.cancel();
                // The listening socket is closed once the loop has returned.
                let _ = task.await;
            }
            let old = std::mem::replace(&mut *lock(&self.connections), CancellationToken::new());
            old.cancel();
        } else if lock(&self.listener).is_none() {
            let listener = TcpListener::bind(self.addr)
                .await
                .unwrap_or_else(|e| panic!("listening again on {}: {e}", self.addr));
            self.listen(listener);
        }
        self.mode.send_replace(mode);
        self.advance();
    }

    /// Starts the next programmed phase when its trigger holds.
    fn advance(self: &Arc<Inner>) {
        let counters = *self.counters.borrow();
        let next = {
            let mut schedule = lock(&self.schedule);
            match schedule.front() {
                Some((trigger, _)) if trigger.holds(&counters) => schedule.pop_front(),
                _ => None,
            }
        };
        if let Some((_, mode)) = next {
            // set_mode advances again, so phases whose triggers already hold follow in order.
            tokio::spawn(self.clone().set_mode(mode));
        }
    }

    fn count(self: &Arc<Inner>, f: impl FnOnce(&mut ProxyCounters)) {
        self.counters.send_modify(f);
        self.advance();
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, stop: CancellationToken) {
    let router = Router::new().fallback(handle).with_state(inner.clone());
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let kill = lock(&inner.connections).child_token();
                tokio::spawn(serve_connection(stream, router.clone(), kill));
            }
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router, kill: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
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

/// Inference paths of the Ollama and OpenAI-compatible APIs.
fn is_inference(method: &Method, path: &str) -> bool {
    method == Method::POST
        && matches!(
            path,
            "/api/generate"
                | "/api/chat"
                | "/api/embed"
                | "/api/embeddings"
                | "/v1/chat/completions"
                | "/v1/completions"
                | "/v1/embeddings"
        )
}

/// Counts a held request as abandoned if its handler is dropped (the client closed the
/// connection) before the hang ended.
struct Held {
    inner: Arc<Inner>,
    armed: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        let armed = self.armed;
        self.inner.count(|c| {
            c.hanging -= 1;
            if armed {
                c.abandoned += 1;
            }
        });
    }
}

/// Counts a forwarded request in flight until it ends.
struct Flight {
    inner: Arc<Inner>,
    answered: bool,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let answered = self.answered;
        self.inner.count(|c| {
            c.in_flight -= 1;
            if answered {
                c.passed += 1;
            } else {
                c.cut_off += 1;
            }
        });
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_inference(&method, uri.path()) {
        return forward(&inner, method, &uri, &headers, body)
            .await
            .unwrap_or_else(bad_gateway);
    }
    inner.count(|c| c.received += 1);
    let mut modes = inner.mode.subscribe();
    loop {
        let mode = *modes.borrow_and_update();
        let limit = match mode {
            // A request on a connection accepted just before the listener closed.
            Mode::Pass | Mode::Refuse => u64::MAX,
            Mode::Busy { max_in_flight } => max_in_flight,
            Mode::RateLimit { retry_after_secs } => {
                inner.count(|c| c.limited += 1);
                return rate_limited(retry_after_secs);
            }
            Mode::Hang => {
                inner.count(|c| {
                    c.hanging += 1;
                    c.hung += 1;
                });
                let mut held = Held {
                    inner: inner.clone(),
                    armed: true,
                };
                if modes.wait_for(|m| *m != Mode::Hang).await.is_err() {
                    // The proxy is gone; its connections are closed with it.
                    return bad_gateway_text("the fault proxy stopped");
                }
                held.armed = false;
                continue;
            }
        };
        let mut admitted = false;
        inner.counters.send_modify(|c| {
            if c.in_flight < limit {
                c.in_flight += 1;
                c.max_in_flight = c.max_in_flight.max(c.in_flight);
                admitted = true;
            } else {
                c.busy += 1;
            }
        });
        inner.advance();
        if !admitted {
            return busy();
        }
        let mut flight = Flight {
            inner: inner.clone(),
            answered: false,
        };
        return match forward(&inner, method, &uri, &headers, body).await {
            Ok(resp) => {
                flight.answered = true;
                resp
            }
            Err(e) => bad_gateway(e),
        };
    }
}

/// Hop-by-hop headers and the ones the HTTP stack sets itself.
fn passes_through(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "te"
    )
}

async fn forward(
    inner: &Inner,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, reqwest::Error> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = inner
        .client
        .request(method, format!("{}{path}", inner.upstream))
        .body(body);
    for (name, value) in headers {
        if passes_through(name) {
            req = req.header(name, value);
        }
    }
    let resp = req.send().await?;
    let status = resp.status();
    let upstream_headers = resp.headers().clone();
    let bytes = resp.bytes().await?;
    let mut out = (status, bytes).into_response();
    for (name, value) in &upstream_headers {
        if passes_through(name) {
            out.headers_mut().append(name, value.clone());
        }
    }
    Ok(out)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn busy() -> Response {
    json_response(StatusCode::SERVICE_UNAVAILABLE, OLLAMA_BUSY.to_owned())
}

fn rate_limited(retry_after_secs: u64) -> Response {
    let mut resp = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        format!(r#"{{"error":"rate limit exceeded, retry in {retry_after_secs} s"}}"#),
    );
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs),
    );
    resp
}

fn bad_gateway(e: reqwest::Error) -> Response {
    bad_gateway_text(&format!("upstream: {e}"))
}

fn bad_gateway_text(msg: &str) -> Response {
    json_response(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({ "error": msg }).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleitzeit_testkit::llm::{MockOllama, Reply, SimConfig};

    async fn generate(client: &reqwest::Client, url: &str) -> reqwest::Result<reqwest::Response> {
        client
            .post(format!("{url}/api/generate"))
            .json(&serde_json::json!({"model": "m", "prompt": "hi", "stream": false}))
            .send()
            .await
    }

    fn fresh_client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    #[tokio::test]
    async fn modes_answer_like_troubled_endpoints() {
        let sim =
            MockOllama::start(SimConfig::default().with_reply(Reply::Echo { max_chars: 100 }))
                .await
                .unwrap();
        let proxy = FaultProxy::start(&sim.url()).await;
        let client = fresh_client();

        let ok = generate(&client, &proxy.url()).await.unwrap();
        assert_eq!(ok.status(), 200);
        let body: serde_json::Value = ok.json().await.unwrap();
        assert_eq!(body["response"], "m: hi");
        assert_eq!(proxy.counters().passed, 1);

        proxy
            .set_mode(Mode::RateLimit {
                retry_after_secs: 3,
            })
            .await;
        let limited = generate(&client, &proxy.url()).await.unwrap();
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "3");
        // Listing requests are not limited.
        let tags = client
            .get(format!("{}/api/tags", proxy.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(tags.status(), 200);

        proxy.set_mode(Mode::Refuse).await;
        let refused = generate(&fresh_client(), &proxy.url()).await.unwrap_err();
        assert!(refused.is_connect(), "{refused:?}");

        // Busy with one slot: a held request takes it, the next one gets Ollama's 503.
        proxy.set_mode(Mode::Busy { max_in_flight: 1 }).await;
        sim.hold();
        let url = proxy.url();
        let first = tokio::spawn({
            let client = client.clone();
            async move { generate(&client, &url).await.unwrap().status() }
        });
        sim.wait_held(1).await;
        let second = generate(&client, &proxy.url()).await.unwrap();
        assert_eq!(second.status(), 503);
        assert_eq!(second.text().await.unwrap(), OLLAMA_BUSY);
        sim.open_gate();
        assert_eq!(first.await.unwrap(), 200);
        assert_eq!(proxy.counters().busy, 1);
        assert_eq!(proxy.counters().max_in_flight, 1);
    }

    #[tokio::test]
    async fn programmed_phases_follow_the_counters() {
        let sim = MockOllama::start(SimConfig::default()).await.unwrap();
        let proxy = FaultProxy::start(&sim.url()).await;
        proxy.set_mode(Mode::Hang).await;
        // After two held requests: pass again, which releases them.
        proxy.then(Trigger::Hung(2), Mode::Pass);
        let client = fresh_client();
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let (client, url) = (client.clone(), proxy.url());
                tokio::spawn(async move { generate(&client, &url).await.unwrap().status() })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), 200);
        }
        proxy.wait_schedule_done().await;
        assert_eq!(proxy.mode(), Mode::Pass);
        let c = proxy.counters();
        assert_eq!((c.hung, c.hanging, c.passed, c.abandoned), (2, 0, 2, 0));

        // A client that gives up on a held request is counted as abandoning it.
        proxy.set_mode(Mode::Hang).await;
        let impatient = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_millis(200))
            .build()
            .unwrap();
        assert!(generate(&impatient, &proxy.url())
            .await
            .unwrap_err()
            .is_timeout());
        proxy.wait_until(|c| c.abandoned == 1).await;
        proxy.set_mode(Mode::Pass).await;
    }
}
