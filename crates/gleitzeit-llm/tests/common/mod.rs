//! Helpers shared by the integration tests: providers pointed at the simulators.

#![allow(dead_code)]

use gleitzeit_llm::{
    CallOptions, EndpointConfig, GenOptions, LlmRequest, LlmResponse, Message, Op, Provider,
    ProviderKind,
};
use gleitzeit_testkit::llm::{Reply, SimConfig, SimServer};

/// A provider for the simulator's API at its URL.
pub fn provider_for(sim: &SimServer, kind: ProviderKind) -> Provider {
    Provider::new(EndpointConfig::new("sim", sim.url(), kind)).unwrap()
}

/// A provider built from an adjusted configuration.
pub fn provider_with(
    sim: &SimServer,
    kind: ProviderKind,
    adjust: impl FnOnce(EndpointConfig) -> EndpointConfig,
) -> Provider {
    Provider::new(adjust(EndpointConfig::new("sim", sim.url(), kind))).unwrap()
}

/// A one-pixel PNG, base64.
pub const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// A simulator configuration whose reply is `"<system>|<last prompt>"`, to see which system
/// prompt reached the server.
pub fn echoes_system() -> SimConfig {
    SimConfig::default().with_reply(Reply::func(|r| {
        format!("{}|{}", r.system.clone().unwrap_or_default(), r.prompt)
    }))
}

/// A simulator configuration whose reply is `"<n> images"`, to see how many images arrived.
pub fn counts_images() -> SimConfig {
    SimConfig::default().with_reply(Reply::func(|r| format!("{} images", r.images)))
}

/// A conversation of two user turns around one assistant reply: "q1", "a1", "q2".
pub fn two_turns() -> Vec<Message> {
    vec![
        Message::user("q1"),
        Message::assistant("a1"),
        Message::user("q2"),
    ]
}

/// Sets the system prompt of a generate or chat request.
pub fn set_system(req: &mut LlmRequest, prompt: &str) {
    match &mut req.op {
        Op::Generate { system, .. } | Op::Chat { system, .. } => *system = Some(prompt.into()),
        other => panic!("no system prompt on {other:?}"),
    }
}

/// A generate request with images and default options.
pub fn vision_request(
    model: &str,
    prompt: &str,
    system: Option<&str>,
    images: Vec<String>,
    keep_alive: Option<&str>,
) -> LlmRequest {
    LlmRequest {
        model: model.into(),
        op: Op::Generate {
            prompt: prompt.into(),
            system: system.map(Into::into),
            images,
        },
        options: GenOptions::default(),
        keep_alive: keep_alive.map(Into::into),
    }
}

/// The reply to a generate request with default call options; the call must succeed.
pub async fn generate(p: &Provider, model: &str, prompt: impl Into<String>) -> LlmResponse {
    p.call(
        &LlmRequest::generate(model, prompt),
        &CallOptions::default(),
    )
    .await
    .unwrap()
}
