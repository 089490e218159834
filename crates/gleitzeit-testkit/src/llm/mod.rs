//! HTTP servers that speak Ollama's native API ([`MockOllama`]), the OpenAI-compatible API
//! ([`MockOpenAi`]) and Anthropic's Messages API ([`MockAnthropic`]) on `127.0.0.1:0`, for
//! tests, benchmarks and demos that must not depend on a real model.
//!
//! Replies are deterministic (by default `"{model}: {prompt}"`, truncated), so chains of tasks
//! can be asserted; embeddings are derived from the text ([`embedding`]). Everything a test
//! needs to provoke is programmable at run time: latency and per-token delay, a queue of
//! faults for the next requests ([`Fault`]), "poison" prompts that always fail, and a gate that
//! holds requests until released. Every request is recorded; counters of received, in-flight
//! and held requests can be awaited (no sleeping in tests).
//!
//! Counters, the gate, faults and poison apply to inference requests (generate, chat, embed,
//! chat completions, embeddings); listing endpoints (`/api/tags`, `/v1/models`, …) are
//! recorded but answer at once; with [`SimConfig::gate_loads`] the gate holds model loads
//! and unloads too.
//!
//! The simulators also model memory the way Ollama does: a model is loaded on first use
//! (paying [`SimConfig::load_delay`]), at most [`SimConfig::max_loaded`] models stay loaded
//! (the least recently used is evicted), `keep_alive: 0` unloads, `/api/generate` without a
//! prompt loads explicitly, `/api/pull` adds a model, and `/api/ps` lists what is loaded
//! now. [`SimServer::loads`] and [`SimServer::loads_of`] count the loads, so tests and
//! benchmarks can compare placement strategies.

mod anthropic;
mod config;
mod http;
mod mocks;
mod ollama;
mod openai;
mod respond;
mod server;
mod state;
mod wire;

pub use config::{
    echo_reply, embedding, Counters, Fault, LoadEvent, RecordedRequest, Reply, SimConfig, SimOp,
    SimRequest,
};
pub use mocks::{MockAnthropic, MockOllama, MockOpenAi};
pub use server::{Flavor, SimServer};
