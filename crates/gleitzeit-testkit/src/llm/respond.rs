//! Inference responses: timing (latency, load, per-token delay), faults, and the body — whole
//! or streamed frame by frame in the wire format, ended normally or by the fault.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::config::{embedding, Fault, SimOp, SimRequest};
use super::ollama::keep_alive_zero;
use super::openai::{completion_id, created};
use super::state::{lock, pause, ConnKill, FlightGuard, Shared};
use super::wire::{json, prompt_tokens, raw, tokens, Gen, Wire};

/// How a response body ends when a stream fault applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    Normal,
    ErrorAfter(usize),
    CutAfter(usize),
    ResetAfter(usize),
}

pub(super) async fn infer(
    shared: Arc<Shared>,
    conn: ConnKill,
    req: SimRequest,
    include_usage: bool,
    flight: FlightGuard,
) -> Response {
    let mut extra = Vec::new();
    let mut resp = answer(shared, conn, req, include_usage, flight, &mut extra).await;
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

/// The answer to one inference request; `extra` collects the headers a normal answer adds
/// (the configured ones and a [`Fault::Headers`]).
async fn answer(
    shared: Arc<Shared>,
    conn: ConnKill,
    req: SimRequest,
    include_usage: bool,
    flight: FlightGuard,
    extra: &mut Vec<(String, String)>,
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
    if matches!(
        fault,
        None | Some(Fault::Delay(_)) | Some(Fault::Headers(_))
    ) {
        extra.extend(cfg.headers.iter().cloned());
    }
    match fault {
        None | Some(Fault::Delay(_)) => {}
        Some(Fault::Headers(headers)) => extra.extend(headers),
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
        let loaded_now = shared.touch(&req.model, cfg.max_loaded, cfg.load_delay);
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
pub(super) fn whole_body(
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
pub(super) async fn flush_point() {
    tokio::task::yield_now().await;
}

pub(super) enum Step {
    Frame(Bytes),
    Token(String),
    End,
    Error,
    Reset,
}

pub(super) struct Streamer {
    wire: &'static dyn Wire,
    gen: Gen,
    steps: VecDeque<Step>,
    token_delay: Duration,
    _flight: FlightGuard,
}

/// A streamed generation: start frames, one frame per token after `token_delay`, then the
/// final frames — or the fault's ending.
pub(super) fn stream_body(
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
