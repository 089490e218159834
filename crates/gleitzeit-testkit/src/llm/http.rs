//! The simulator's HTTP side: the accept loop (with connections that can be killed), request
//! recording, and routing each request to a direct reply, a model load or pull, or inference.

use std::sync::Arc;
use std::time::Duration;

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
use tokio_util::sync::CancellationToken;

use super::config::RecordedRequest;
use super::ollama::{load_reply, pull_reply};
use super::respond::infer;
use super::state::{lock, pause, ConnKill, FlightGuard, Shared};
use super::wire::Routed;

/// Largest request body the simulators accept.
pub(super) const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
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

pub(super) async fn serve_connection(stream: TcpStream, router: Router, kill: CancellationToken) {
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

pub(super) async fn handle(
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
            if cfg.gate_loads {
                shared.pass_gate().await;
            }
            if unload {
                shared.unload(&model);
            } else {
                if !cfg.serves(&model) {
                    return wire.model_not_found(&model);
                }
                if shared.touch(&model, cfg.max_loaded, cfg.load_delay) {
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
