//! Round trips against the Ollama simulator: every operation, option mapping, usage and
//! timings, listings.

mod common;

use std::time::Duration;

use common::{generate, provider_for, provider_with, set_system, vision_request, PNG};
use gleitzeit_llm::{CallOptions, GenOptions, LlmRequest, Message, ModelInfo, ProviderKind};
use gleitzeit_testkit::llm::{embedding, MockOllama, Reply, SimConfig};
use serde_json::json;

const KIND: ProviderKind = ProviderKind::Ollama;

#[tokio::test]
async fn generate_streams_text_usage_and_timings() {
    let sim = MockOllama::start(
        SimConfig::default()
            .with_models(["llama3.2"])
            .with_latency(Duration::from_millis(30))
            .with_token_delay(Duration::from_millis(10)),
    )
    .await
    .unwrap();
    sim.update_config(|c| c.load_delay = Duration::from_millis(40));
    let p = provider_for(&sim, KIND);
    let r = generate(&p, "llama3.2", "why is the sky blue").await;
    assert_eq!(r.text.as_deref(), Some("llama3.2: why is the sky blue"));
    assert_eq!(r.model, "llama3.2");
    assert_eq!(r.endpoint, "sim");
    assert_eq!(r.prompt_tokens, Some(5));
    // "llama3.2: " "why " "is " "the " "sky " "blue"
    assert_eq!(r.completion_tokens, Some(6));
    assert_eq!(r.load_ms, Some(40), "first use loads the model");
    // Latency + load + one token delay all pass before the first token.
    let ttft = r.ttft_ms.expect("ttft when streaming");
    assert!(ttft >= 80, "ttft {ttft}");
    assert!(r.total_ms >= ttft);
    assert!(r.embeddings.is_none());

    let body = sim.last_request().unwrap();
    assert_eq!(body.path, "/api/generate");
    assert_eq!(
        body.body.unwrap(),
        json!({"model": "llama3.2", "prompt": "why is the sky blue", "stream": true})
    );

    // Second call: model already loaded.
    let r = generate(&p, "llama3.2", "again").await;
    assert_eq!(r.load_ms, Some(0));
}

#[tokio::test]
async fn generate_without_streaming_has_no_ttft() {
    let sim = MockOllama::start(SimConfig::default()).await.unwrap();
    let p = provider_for(&sim, KIND);
    let opts = CallOptions {
        stream: false,
        ..CallOptions::default()
    };
    let r = p
        .call(&LlmRequest::generate("m", "hello there"), &opts)
        .await
        .unwrap();
    assert_eq!(r.text.as_deref(), Some("m: hello there"));
    assert_eq!(r.ttft_ms, None);
    assert_eq!(r.completion_tokens, Some(3));
    assert_eq!(sim.last_request().unwrap().json("stream"), &json!(false));
}

#[tokio::test]
async fn chat_sends_system_and_history() {
    let sim = MockOllama::start(SimConfig::default().with_reply(Reply::func(|r| {
        format!("system={:?} last={}", r.system, r.prompt)
    })))
    .await
    .unwrap();
    let p = provider_for(&sim, KIND);
    let mut req = LlmRequest::chat(
        "m",
        vec![
            Message::user("first"),
            Message::assistant("reply"),
            Message::user("second"),
        ],
    );
    set_system(&mut req, "be brief");
    let r = p.call(&req, &CallOptions::default()).await.unwrap();
    assert_eq!(
        r.text.as_deref(),
        Some("system=Some(\"be brief\") last=second")
    );
    assert!(r.ttft_ms.is_some());
    let rec = sim.last_request().unwrap();
    assert_eq!(rec.path, "/api/chat");
    assert_eq!(
        rec.json("messages"),
        &json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "second"},
        ])
    );
}

#[tokio::test]
async fn vision_images_reach_the_server() {
    let sim = MockOllama::start(
        SimConfig::default().with_reply(Reply::func(|r| format!("images={}", r.images))),
    )
    .await
    .unwrap();
    let p = provider_for(&sim, KIND);
    let req = vision_request(
        "llava",
        "what is this",
        None,
        vec![PNG.into(), format!("data:image/png;base64,{PNG}")],
        None,
    );
    let r = p.call(&req, &CallOptions::default()).await.unwrap();
    assert_eq!(r.text.as_deref(), Some("images=2"));
    // Ollama takes bare base64: the data URL prefix is stripped.
    assert_eq!(
        sim.last_request().unwrap().json("images"),
        &json!([PNG, PNG])
    );

    // Images on chat messages.
    let mut msg = Message::user("and this?");
    msg.images = vec![PNG.into()];
    let r = p
        .call(
            &LlmRequest::chat("llava", vec![msg]),
            &CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.text.as_deref(), Some("images=1"));
    assert_eq!(
        sim.last_request().unwrap().json("messages")[0]["images"],
        json!([PNG])
    );
}

#[tokio::test]
async fn embed_returns_one_vector_per_input() {
    let sim = MockOllama::start(SimConfig::default()).await.unwrap();
    sim.update_config(|c| c.embedding_dims = 12);
    let p = provider_for(&sim, KIND);
    let r = p
        .call(
            &LlmRequest::embed("nomic", vec!["alpha".into(), "beta gamma".into()]),
            &CallOptions::default(),
        )
        .await
        .unwrap();
    let e = r.embeddings.unwrap();
    assert_eq!(e, vec![embedding("alpha", 12), embedding("beta gamma", 12)]);
    assert_eq!(r.prompt_tokens, Some(3));
    assert_eq!(r.text, None);
    let rec = sim.last_request().unwrap();
    assert_eq!(rec.path, "/api/embed");
    assert_eq!(
        rec.body.unwrap(),
        json!({"model": "nomic", "input": ["alpha", "beta gamma"]})
    );
}

#[tokio::test]
async fn options_map_to_ollama_fields() {
    let sim = MockOllama::start(SimConfig::default()).await.unwrap();
    let p = provider_for(&sim, KIND);
    let mut req = LlmRequest::generate("m", "count to ten slowly please");
    req.options = GenOptions {
        temperature: Some(0.2),
        top_p: Some(0.9),
        top_k: Some(40),
        max_tokens: Some(3),
        seed: Some(42),
        stop: vec!["\n\n".into()],
        json: true,
    };
    req.keep_alive = Some("10m".into());
    set_system(&mut req, "sys");
    let r = p.call(&req, &CallOptions::default()).await.unwrap();
    // num_predict limits the reply (the simulator honours it).
    assert_eq!(r.completion_tokens, Some(3));
    assert_eq!(r.text.as_deref(), Some("m: count to "));
    let rec = sim.last_request().unwrap();
    assert_eq!(
        rec.body.unwrap(),
        json!({
            "model": "m",
            "prompt": "count to ten slowly please",
            "system": "sys",
            "stream": true,
            "options": {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "num_predict": 3, "seed": 42, "stop": ["\n\n"]},
            "format": "json",
            "keep_alive": "10m"
        })
    );
}

#[tokio::test]
async fn listings() {
    let sim = MockOllama::start(SimConfig::default().with_models(["a:1b", "b:3b"]))
        .await
        .unwrap();
    let p = provider_for(&sim, KIND);
    let models = p.list_models().await.unwrap();
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a:1b", "b:3b"]);
    assert!(models.iter().all(|m| m.size_bytes.is_some()));
    assert_eq!(sim.last_request().unwrap().path, "/api/tags");

    assert_eq!(p.loaded_models().await.unwrap(), Some(vec![]));
    generate(&p, "b:3b", "x").await;
    let loaded = p.loaded_models().await.unwrap().unwrap();
    assert_eq!(
        loaded.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["b:3b"]
    );
    assert_eq!(sim.last_request().unwrap().path, "/api/ps");
    let _: &ModelInfo = &loaded[0];
}

#[tokio::test]
async fn connections_are_reused() {
    let sim = MockOllama::start(SimConfig::default()).await.unwrap();
    let p = provider_for(&sim, KIND);
    for i in 0..5 {
        generate(&p, "m", format!("n{i}")).await;
    }
    let c = sim.counters();
    assert_eq!(c.received, 5);
    assert_eq!(
        c.connections, 1,
        "one pooled connection for sequential calls"
    );
}

#[tokio::test]
async fn bearer_token_is_sent_when_configured() {
    let sim = MockOllama::start(SimConfig::default().with_api_key("proxy-token"))
        .await
        .unwrap();
    let p = provider_with(&sim, KIND, |c| {
        c.with_api_key(gleitzeit_llm::Secret::new("proxy-token"))
    });
    generate(&p, "m", "x").await;
    assert_eq!(
        sim.last_request().unwrap().header("authorization"),
        Some("Bearer proxy-token")
    );
}
