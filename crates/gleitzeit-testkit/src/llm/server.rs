//! [`SimServer`]: a running simulator of one API ([`Flavor`]) — starting, restarting and stopping
//! it, and the handle tests use to program and inspect it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::anthropic::Anthropic;
use super::config::{Counters, Fault, LoadEvent, RecordedRequest, SimConfig};
use super::http::accept_loop;
use super::ollama::Ollama;
use super::openai::OpenAi;
use super::state::{lock, Shared};
use super::wire::Wire;

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
            load_log: Mutex::new(Vec::new()),
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

    /// Every model load so far, in the order they began.
    pub fn load_log(&self) -> Vec<LoadEvent> {
        lock(&self.shared.load_log).clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

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
        // The load log has every load in the order they began.
        let log = sim.load_log();
        let models: Vec<&str> = log.iter().map(|l| l.model.as_str()).collect();
        assert_eq!(models, ["a", "b", "c", "b"]);
        assert!(log.windows(2).all(|w| w[0].started_ms <= w[1].started_ms));
        assert!(log.iter().all(|l| l.done_ms() == l.started_ms));
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
