//! The worker's HTTP server: `/metrics` (Prometheus text format), `/healthz` (liveness) and
//! `/readyz` (readiness), on `metrics_addr`.
//!
//! Liveness says the process's loops run: 200 from start until the drain ended. Readiness
//! says this worker can take work: 200 only while Redis answered the last PING (checked every
//! [`READY_CHECK_INTERVAL`]) and the queue's scripts ran (the first `promote.lua` call
//! succeeded; scripts load on first use and again after a Redis restart), and never once the
//! drain has started, so a load balancer or orchestrator stops counting on the worker.
//!
//! The listener is bound before the worker reads any work, so a port in use is a startup
//! error; the server stops after the drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use gleitzeit_core::now_ms;
use gleitzeit_queue::Queue;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the readiness watcher pings Redis.
pub const READY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A PING older than this no longer counts as "recent" (the watcher itself stalled).
const PING_FRESH: Duration = Duration::from_secs(5);
/// Bound of one readiness PING.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What the health endpoints report; shared by the server and the worker's loops.
#[derive(Debug, Default)]
pub struct HealthState {
    live: AtomicBool,
    scripts_loaded: AtomicBool,
    draining: AtomicBool,
    /// Time (ms since the epoch) of the last PING answered, 0 = the last one failed.
    redis_ok_ms: AtomicU64,
}

impl HealthState {
    /// The loops run (or no longer do).
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Relaxed);
    }

    /// A queue script ran successfully.
    pub fn set_scripts_loaded(&self) {
        self.scripts_loaded.store(true, Ordering::Relaxed);
    }

    /// The drain started: readiness fails from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Records a PING result.
    pub fn set_redis(&self, ok: bool) {
        self.redis_ok_ms
            .store(if ok { now_ms() } else { 0 }, Ordering::Relaxed);
    }

    /// Whether the process's loops run.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    /// `Ok` when ready, otherwise why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining");
        }
        let ok_ms = self.redis_ok_ms.load(Ordering::Relaxed);
        if ok_ms == 0 || now_ms().saturating_sub(ok_ms) > PING_FRESH.as_millis() as u64 {
            return Err("redis unreachable");
        }
        if !self.scripts_loaded.load(Ordering::Relaxed) {
            return Err("queue scripts not loaded yet");
        }
        Ok(())
    }
}

/// A bound, not yet serving, health and metrics server.
#[derive(Debug)]
pub struct HealthServer {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<HealthState>,
}

/// The running server (see [`HealthServer::serve`]).
#[derive(Debug)]
pub struct RunningServer {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting requests and waits for the server to end.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "metrics server ended abnormally");
        }
    }
}

impl HealthServer {
    /// Binds `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// The address cannot be bound (in use, not local, no permission).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<HealthServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(HealthServer {
            listener,
            addr,
            state: Arc::new(HealthState::default()),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The state the endpoints report.
    pub fn state(&self) -> Arc<HealthState> {
        self.state.clone()
    }

    /// Starts serving in the background.
    pub fn serve(self) -> RunningServer {
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(self.state);
        let token = stop.clone();
        let listener = self.listener;
        let handle = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned());
            if let Err(e) = server.await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
        tracing::info!(addr = %self.addr, "serving /metrics, /healthz and /readyz");
        RunningServer { stop, handle }
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

async fn healthz(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    if state.is_live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopped\n")
    }
}

async fn readyz(State(state): State<Arc<HealthState>>) -> impl IntoResponse {
    match state.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Pings Redis every [`READY_CHECK_INTERVAL`] and records the result until `stop`.
pub async fn watch_redis(queue: Queue, state: Arc<HealthState>, stop: CancellationToken) {
    loop {
        let ok = matches!(
            tokio::time::timeout(PING_TIMEOUT, queue.ping()).await,
            Ok(Ok(()))
        );
        state.set_redis(ok);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(READY_CHECK_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_redis_scripts_and_no_drain() {
        let s = HealthState::default();
        assert_eq!(s.readiness(), Err("redis unreachable"));
        s.set_redis(true);
        assert_eq!(s.readiness(), Err("queue scripts not loaded yet"));
        s.set_scripts_loaded();
        assert_eq!(s.readiness(), Ok(()));
        s.set_redis(false);
        assert_eq!(s.readiness(), Err("redis unreachable"));
        s.set_redis(true);
        s.set_draining();
        assert_eq!(s.readiness(), Err("draining"));
    }
}
