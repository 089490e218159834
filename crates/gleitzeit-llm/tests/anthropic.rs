//! Round trips against the Anthropic Messages simulator: request shape (headers, top-level
//! system, content blocks, max_tokens), streamed and whole responses with usage, and the
//! API's errors (401, 404, 429 with Retry-After, 529, an error event inside a 200 stream).

mod common;

use std::time::Duration;

use common::{
    counts_images, echoes_system, generate, provider_for, provider_with, set_system, two_turns,
    vision_request, PNG,
};
use gleitzeit_llm::{
    CallOptions, ErrorClass, GenOptions, LlmError, LlmRequest, Message, ProviderKind, Secret,
    DEFAULT_MAX_TOKENS,
};
use gleitzeit_testkit::llm::{Fault, MockAnthropic, SimConfig};
use serde_json::json;

const KIND: ProviderKind = ProviderKind::Anthropic;

#[tokio::test]
async fn streamed_message_with_usage_and_headers() {
    let sim = MockAnthropic::start(
        SimConfig::default()
            .with_models(["claude-test"])
            .with_api_key("sk-ant-secret")
            .with_token_delay(Duration::from_millis(5)),
    )
    .await
    .unwrap();
    let p = provider_with(&sim, KIND, |c| c.with_api_key(Secret::new("sk-ant-secret")));
    let r = generate(&p, "claude-test", "say hi").await;
    assert_eq!(r.text.as_deref(), Some("claude-test: say hi"));
    assert_eq!(r.model, "claude-test");
    assert_eq!(r.endpoint, "sim");
    assert_eq!(r.prompt_tokens, Some(2));
    assert_eq!(r.completion_tokens, Some(3));
    assert!(r.ttft_ms.is_some());

    let rec = sim.last_request().unwrap();
    assert_eq!(rec.path, "/v1/messages");
    assert_eq!(rec.header("x-api-key"), Some("sk-ant-secret"));
    assert_eq!(rec.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(rec.header("authorization"), None);
    assert_eq!(
        rec.body.unwrap(),
        json!({
            "model": "claude-test",
            "max_tokens": DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": "say hi"}],
            "stream": true
        })
    );
}

#[tokio::test]
async fn whole_message_and_system_and_options() {
    let sim = MockAnthropic::start(echoes_system()).await.unwrap();
    let p = provider_for(&sim, KIND);
    let mut req = LlmRequest::chat(
        "m",
        [vec![Message::system("short answers")], two_turns()].concat(),
    );
    set_system(&mut req, "terse");
    req.options = GenOptions {
        max_tokens: Some(64),
        temperature: Some(0.5),
        stop: vec!["\n\n".into()],
        ..GenOptions::default()
    };
    let opts = CallOptions {
        stream: false,
        ..CallOptions::default()
    };
    let r = p.call(&req, &opts).await.unwrap();
    assert_eq!(r.text.as_deref(), Some("terse\n\nshort answers|q2"));
    assert_eq!(r.ttft_ms, None);
    assert!(r.prompt_tokens.is_some() && r.completion_tokens.is_some());
    let rec = sim.last_request().unwrap();
    assert_eq!(rec.json("system"), &json!("terse\n\nshort answers"));
    assert_eq!(rec.json("max_tokens"), &json!(64));
    assert_eq!(rec.json("stop_sequences"), &json!(["\n\n"]));
    assert_eq!(rec.json("stream"), &json!(false));
    assert_eq!(
        rec.json("messages"),
        &json!([
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
        ])
    );
}

#[tokio::test]
async fn max_tokens_cuts_the_reply() {
    let sim = MockAnthropic::start(SimConfig::default()).await.unwrap();
    let p = provider_for(&sim, KIND);
    let mut req = LlmRequest::generate("m", "one two three four");
    req.options.max_tokens = Some(2);
    let r = p.call(&req, &CallOptions::default()).await.unwrap();
    assert_eq!(r.text.as_deref(), Some("m: one "));
    assert_eq!(r.completion_tokens, Some(2));
}

#[tokio::test]
async fn vision_sends_base64_image_blocks() {
    let sim = MockAnthropic::start(counts_images()).await.unwrap();
    let p = provider_for(&sim, KIND);
    let req = vision_request("claude", "describe", None, vec![PNG.into()], None);
    let r = p.call(&req, &CallOptions::default()).await.unwrap();
    assert_eq!(r.text.as_deref(), Some("1 images"));
    assert_eq!(
        sim.last_request().unwrap().json("messages"),
        &json!([{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "text", "text": "describe"}
        ]}])
    );
}

#[tokio::test]
async fn listing_and_embeddings() {
    let sim = MockAnthropic::start(SimConfig::default().with_models(["a", "b"]))
        .await
        .unwrap();
    let p = provider_for(&sim, KIND);
    let names: Vec<String> = p
        .list_models()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(p.loaded_models().await.unwrap(), None);
    let received = sim.counters().received;
    assert!(matches!(
        p.call(
            &LlmRequest::embed("a", vec!["x".into()]),
            &CallOptions::default()
        )
        .await,
        Err(LlmError::InvalidRequest { .. })
    ));
    assert_eq!(sim.counters().received, received, "no request was sent");
}

#[tokio::test]
async fn errors_in_the_apis_shapes() {
    let sim = MockAnthropic::start(SimConfig::default().with_models(["m"]).with_api_key("k"))
        .await
        .unwrap();
    let p = provider_with(&sim, KIND, |c| c.with_api_key(Secret::new("k")));
    let req = LlmRequest::generate("m", "hi");
    let opts = CallOptions::default();

    sim.push_fault(Fault::Overloaded);
    let e = p.call(&req, &opts).await.unwrap_err();
    assert!(
        matches!(&e, LlmError::Overloaded { status: 529, message } if message == "Overloaded"),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Retry);

    sim.push_fault(Fault::RateLimit {
        retry_after: Some("7".into()),
    });
    let e = p.call(&req, &opts).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::RetryAfter(Duration::from_secs(7)));

    sim.push_fault(Fault::StreamError { after_chunks: 1 });
    let e = p.call(&req, &opts).await.unwrap_err();
    assert_eq!(
        e,
        LlmError::Stream {
            message: "Overloaded".into()
        }
    );

    sim.push_fault(Fault::StreamCut { after_chunks: 1 });
    assert!(matches!(
        p.call(&req, &opts).await,
        Err(LlmError::Stream { .. })
    ));

    let e = p
        .call(&LlmRequest::generate("other", "hi"), &opts)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        LlmError::ModelNotFound {
            model: "other".into()
        }
    );

    let wrong = provider_with(&sim, KIND, |c| c.with_api_key(Secret::new("wrong")));
    let e = wrong.call(&req, &opts).await.unwrap_err();
    assert!(matches!(&e, LlmError::Auth { status: 401, .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Fatal);

    // The real API answers a too-long prompt with 400 "prompt is too long".
    sim.push_fault(Fault::Status(
        400,
        json!({"type": "error", "error": {"type": "invalid_request_error",
               "message": "prompt is too long: 210000 tokens > 200000 maximum"}})
        .to_string(),
    ));
    assert!(matches!(
        p.call(&req, &opts).await,
        Err(LlmError::ContextTooLong { .. })
    ));
}

#[tokio::test]
async fn simulator_requires_the_version_header() {
    // A client that forgets `anthropic-version` is refused, as by the real API.
    let sim = MockAnthropic::start(SimConfig::default()).await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages", sim.url()))
        .json(
            &json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["type"], json!("error"));
    assert_eq!(body["error"]["type"], json!("invalid_request_error"));
}
