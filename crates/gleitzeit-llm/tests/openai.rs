//! Round trips against the OpenAI-compatible simulator: every operation, option mapping,
//! usage, authentication and base URLs.

mod common;

use std::time::Duration;

use common::{
    counts_images, echoes_system, generate, provider_for, provider_with, set_system, two_turns,
    vision_request, PNG,
};
use gleitzeit_llm::{
    CallOptions, EndpointConfig, GenOptions, LlmRequest, Message, Provider, ProviderKind, Secret,
};
use gleitzeit_testkit::llm::{embedding, MockOpenAi, SimConfig};
use serde_json::json;

const KIND: ProviderKind = ProviderKind::OpenAi;

#[tokio::test]
async fn generate_streams_with_usage_and_ttft() {
    let sim = MockOpenAi::start(
        SimConfig::default()
            .with_models(["gpt-4o-mini"])
            .with_latency(Duration::from_millis(30))
            .with_token_delay(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    let p = provider_for(&sim, KIND);
    let r = generate(&p, "gpt-4o-mini", "say hi").await;
    assert_eq!(r.text.as_deref(), Some("gpt-4o-mini: say hi"));
    assert_eq!(r.model, "gpt-4o-mini");
    assert_eq!(r.endpoint, "sim");
    assert_eq!(r.prompt_tokens, Some(2));
    assert_eq!(r.completion_tokens, Some(3));
    assert_eq!(r.load_ms, None);
    let ttft = r.ttft_ms.expect("ttft when streaming");
    assert!(ttft >= 50, "ttft {ttft}");
    assert!(r.total_ms >= ttft);

    let rec = sim.last_request().unwrap();
    assert_eq!(rec.path, "/v1/chat/completions");
    assert_eq!(
        rec.body.unwrap(),
        json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "say hi"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
}

#[tokio::test]
async fn non_streamed_completion() {
    let sim = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let p = provider_for(&sim, KIND);
    let opts = CallOptions {
        stream: false,
        ..CallOptions::default()
    };
    let r = p
        .call(&LlmRequest::generate("m", "one two"), &opts)
        .await
        .unwrap();
    assert_eq!(r.text.as_deref(), Some("m: one two"));
    assert_eq!(r.ttft_ms, None);
    assert_eq!(r.prompt_tokens, Some(2));
    assert_eq!(r.completion_tokens, Some(3));
    let rec = sim.last_request().unwrap();
    assert_eq!(rec.json("stream"), &json!(false));
    assert_eq!(rec.json("stream_options"), &serde_json::Value::Null);
}

#[tokio::test]
async fn chat_with_system_prompt() {
    let sim = MockOpenAi::start(echoes_system()).await.unwrap();
    let p = provider_for(&sim, KIND);
    let mut req = LlmRequest::chat("m", two_turns());
    set_system(&mut req, "terse");
    let r = p.call(&req, &CallOptions::default()).await.unwrap();
    assert_eq!(r.text.as_deref(), Some("terse|q2"));
    assert_eq!(
        sim.last_request().unwrap().json("messages"),
        &json!([
            {"role": "system", "content": "terse"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
        ])
    );
}

#[tokio::test]
async fn vision_sends_image_url_parts() {
    let sim = MockOpenAi::start(counts_images()).await.unwrap();
    let p = provider_for(&sim, KIND);
    let req = vision_request(
        "gpt-4o",
        "describe",
        Some("you see"),
        vec![PNG.into()],
        Some("ignored by openai"),
    );
    let r = p.call(&req, &CallOptions::default()).await.unwrap();
    assert_eq!(r.text.as_deref(), Some("1 images"));
    let rec = sim.last_request().unwrap();
    assert_eq!(
        rec.json("messages"),
        &json!([
            {"role": "system", "content": "you see"},
            {"role": "user", "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}
            ]}
        ])
    );
    assert_eq!(rec.json("keep_alive"), &serde_json::Value::Null);
}

#[tokio::test]
async fn large_images_are_accepted() {
    let sim = MockOpenAi::start(counts_images()).await.unwrap();
    let p = provider_for(&sim, KIND);
    // 4 MB of base64, past common default request body limits.
    let image = format!("{PNG}{}", "A".repeat(4 * 1024 * 1024));
    let mut msg = Message::user("look");
    msg.images = vec![image.clone(), image];
    let r = p
        .call(&LlmRequest::chat("m", vec![msg]), &CallOptions::default())
        .await
        .unwrap();
    assert_eq!(r.text.as_deref(), Some("2 images"));
}

#[tokio::test]
async fn embeddings_in_input_order() {
    let sim = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let p = provider_for(&sim, KIND);
    let r = p
        .call(
            &LlmRequest::embed("text-embedding-3-small", vec!["x y".into(), "z".into()]),
            &CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.embeddings.unwrap(),
        vec![embedding("x y", 8), embedding("z", 8)]
    );
    assert_eq!(r.prompt_tokens, Some(3));
    assert_eq!(r.model, "text-embedding-3-small");
    let rec = sim.last_request().unwrap();
    assert_eq!(rec.path, "/v1/embeddings");
    assert_eq!(
        rec.body.unwrap(),
        json!({"model": "text-embedding-3-small", "input": ["x y", "z"]})
    );
}

#[tokio::test]
async fn options_map_to_openai_fields() {
    let sim = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let p = provider_for(&sim, KIND);
    let mut req = LlmRequest::generate("m", "a b c d e f");
    req.options = GenOptions {
        temperature: Some(0.7),
        top_p: Some(0.5),
        top_k: Some(20),
        max_tokens: Some(2),
        seed: Some(-1),
        stop: vec!["END".into()],
        json: true,
    };
    let r = p.call(&req, &CallOptions::default()).await.unwrap();
    assert_eq!(r.completion_tokens, Some(2));
    assert_eq!(r.text.as_deref(), Some("m: a "));
    let rec = sim.last_request().unwrap();
    assert_eq!(
        rec.body.unwrap(),
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": "a b c d e f"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0.7,
            "top_p": 0.5,
            "top_k": 20,
            "max_tokens": 2,
            "seed": -1,
            "stop": ["END"],
            "response_format": {"type": "json_object"}
        })
    );
}

#[tokio::test]
async fn bearer_key_and_listing() {
    let sim = MockOpenAi::start(
        SimConfig::default()
            .with_models(["m1", "m2"])
            .with_api_key("sk-test-key"),
    )
    .await
    .unwrap();
    let p = provider_with(&sim, KIND, |c| c.with_api_key(Secret::new("sk-test-key")));
    let r = generate(&p, "m1", "hi").await;
    assert_eq!(r.text.as_deref(), Some("m1: hi"));
    let rec = sim.last_request().unwrap();
    assert_eq!(rec.header("authorization"), Some("Bearer sk-test-key"));
    assert!(!format!("{rec:?}").contains("sk-test-key"));

    let names: Vec<String> = p
        .list_models()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["m1", "m2"]);
    assert_eq!(sim.last_request().unwrap().path, "/v1/models");
    assert_eq!(p.loaded_models().await.unwrap(), None);
}

#[tokio::test]
async fn base_url_may_end_in_v1() {
    let sim = MockOpenAi::start(SimConfig::default()).await.unwrap();
    for base in [format!("{}/v1", sim.url()), format!("{}/v1/", sim.url())] {
        let p = Provider::new(EndpointConfig::new("v1", base, KIND)).unwrap();
        let r = generate(&p, "m", "x").await;
        assert_eq!(r.text.as_deref(), Some("m: x"));
        assert_eq!(sim.last_request().unwrap().path, "/v1/chat/completions");
    }
}

#[tokio::test]
async fn concurrent_calls_share_the_provider() {
    let sim = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let p = std::sync::Arc::new(provider_for(&sim, KIND));
    sim.hold();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.call(
                &LlmRequest::generate("m", format!("n{i}")),
                &CallOptions::default(),
            )
            .await
        }));
    }
    // All four are at the server at once before any is answered.
    sim.wait_held(4).await;
    assert_eq!(sim.counters().in_flight, 4);
    sim.open_gate();
    let mut texts = Vec::new();
    for t in tasks {
        texts.push(t.await.unwrap().unwrap().text.unwrap());
    }
    texts.sort();
    assert_eq!(texts, ["m: n0", "m: n1", "m: n2", "m: n3"]);
    let c = sim.wait_idle().await;
    assert_eq!(c.max_in_flight, 4);
    assert_eq!(c.finished, 4);
}
