//! Call-level endpoint selection (`Router::call_selected`): a tag or a provider narrows the
//! candidates, failover stays inside them, and a selection nothing matches fails at once
//! without a request.

use std::sync::Arc;
use std::time::Duration;

use gleitzeit_llm::router::Selection;
use gleitzeit_llm::{
    CallOptions, EndpointConfig, ErrorClass, LlmRequest, LocalSlots, ProviderKind, RouteError,
    RouteTarget, Router, RouterConfig, Strategy,
};
use gleitzeit_testkit::llm::{MockOllama, MockOpenAi, SimConfig, SimServer};

fn target(name: &str, sim: &SimServer, kind: ProviderKind) -> RouteTarget {
    RouteTarget::new(EndpointConfig::new(name, sim.url(), kind))
}

/// Round robin, so that without a selection calls visibly spread over every endpoint.
fn router(targets: Vec<RouteTarget>) -> Router {
    let cfg = RouterConfig {
        strategy: Strategy::RoundRobin,
        ..RouterConfig::default()
    };
    Router::new(targets, Arc::new(LocalSlots::new()), cfg).unwrap()
}

fn opts() -> CallOptions {
    CallOptions {
        timeout: Some(Duration::from_secs(30)),
        ..CallOptions::default()
    }
}

/// One selected call for model `m` that must succeed; the endpoint that answered it.
async fn answered(r: &Router, selection: &Selection) -> String {
    r.call_selected(&LlmRequest::generate("m", "x"), &opts(), selection)
        .await
        .unwrap()
        .endpoint
}

fn tag(t: &str) -> Selection {
    Selection {
        tag: Some(t.to_owned()),
        ..Selection::default()
    }
}

fn provider(kind: ProviderKind) -> Selection {
    Selection {
        provider: Some(kind),
        ..Selection::default()
    }
}

#[tokio::test]
async fn a_tag_admits_only_the_endpoints_carrying_it() {
    let gpu = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let cpu = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let r = router(vec![
        target("gpu", &gpu, ProviderKind::OpenAi).with_tags(["fast", "gpu"]),
        target("cpu", &cpu, ProviderKind::OpenAi).with_tags(["cheap"]),
    ]);
    for _ in 0..8 {
        assert_eq!(answered(&r, &tag("gpu")).await, "gpu");
    }
    assert_eq!(gpu.counters().received, 8);
    assert_eq!(cpu.counters().received, 0);
    // Without a selection the same router spreads the calls over both.
    for i in 0..4 {
        r.call(&LlmRequest::generate("m", format!("u{i}")), &opts())
            .await
            .unwrap();
    }
    assert_eq!(cpu.counters().received, 2);
    assert_eq!(gpu.counters().received, 10);
}

#[tokio::test]
async fn a_provider_admits_only_endpoints_of_that_kind_and_combines_with_a_tag() {
    let ollama = MockOllama::start(SimConfig::default()).await.unwrap();
    let openai = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let openai_gpu = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let r = router(vec![
        target("local", &ollama, ProviderKind::Ollama).with_tags(["gpu"]),
        target("hosted", &openai, ProviderKind::OpenAi),
        target("hosted-gpu", &openai_gpu, ProviderKind::OpenAi).with_tags(["gpu"]),
    ]);
    for _ in 0..6 {
        assert_ne!(answered(&r, &provider(ProviderKind::OpenAi)).await, "local");
    }
    assert_eq!(ollama.counters().received, 0);
    // Round robin over the two OpenAI endpoints only.
    assert_eq!(openai.counters().received, 3);
    assert_eq!(openai_gpu.counters().received, 3);

    assert_eq!(answered(&r, &provider(ProviderKind::Ollama)).await, "local");
    assert_eq!(ollama.counters().received, 1);

    // Tag and provider together: only the endpoint matching both.
    let both = Selection {
        tag: Some("gpu".into()),
        provider: Some(ProviderKind::OpenAi),
        ..Selection::default()
    };
    for _ in 0..4 {
        assert_eq!(answered(&r, &both).await, "hosted-gpu");
    }
    assert_eq!(openai_gpu.counters().received, 7);
    assert_eq!(openai.counters().received, 3);
    assert_eq!(ollama.counters().received, 1);
}

#[tokio::test]
async fn a_selection_keeps_its_own_strategy() {
    let mut s = Vec::new();
    for _ in 0..3 {
        s.push(MockOpenAi::start(SimConfig::default()).await.unwrap());
    }
    let r = router(vec![
        // The overall first by priority, but not tagged.
        target("plain", &s[0], ProviderKind::OpenAi).with_priority(-1),
        target("second", &s[1], ProviderKind::OpenAi)
            .with_priority(1)
            .with_tags(["gpu"]),
        target("first", &s[2], ProviderKind::OpenAi)
            .with_priority(0)
            .with_tags(["gpu"]),
    ]);
    let sel = Selection {
        strategy: Some(Strategy::Priority),
        ..tag("gpu")
    };
    for _ in 0..5 {
        assert_eq!(answered(&r, &sel).await, "first");
    }
    assert_eq!(s[0].counters().received, 0);
    assert_eq!(s[1].counters().received, 0);
}

#[tokio::test]
async fn failover_stays_inside_the_selection() {
    let gpu = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let cpu = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let r = router(vec![
        target("gpu", &gpu, ProviderKind::OpenAi).with_tags(["gpu"]),
        target("cpu", &cpu, ProviderKind::OpenAi),
    ]);
    gpu.stop().await;
    let e = r
        .call_selected(&LlmRequest::generate("m", "x"), &opts(), &tag("gpu"))
        .await
        .unwrap_err();
    // The tagged endpoint's own error, retryable; the untagged one was never asked.
    assert_eq!(e.endpoint(), Some("gpu"), "{e}");
    assert_eq!(e.class(), ErrorClass::Retry, "{e}");
    assert!(cpu.requests().is_empty());
    // Unselected calls fail over to the live endpoint as usual.
    let resp = r
        .call(&LlmRequest::generate("m", "x"), &opts())
        .await
        .unwrap();
    assert_eq!(resp.endpoint, "cpu");
}

#[tokio::test]
async fn a_selection_nothing_matches_fails_at_once_without_a_request() {
    let ollama = MockOllama::start(SimConfig::default()).await.unwrap();
    let openai = MockOpenAi::start(SimConfig::default()).await.unwrap();
    let r = router(vec![
        target("local", &ollama, ProviderKind::Ollama).with_tags(["gpu"]),
        target("hosted", &openai, ProviderKind::OpenAi).with_models(["m"]),
    ]);
    let req = LlmRequest::generate("m", "x");

    let e = r
        .call_selected(&req, &opts(), &tag("tpu"))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        RouteError::NoEndpoint {
            model: "m".into(),
            tag: Some("tpu".into()),
            provider: None,
        }
    );
    assert_eq!(e.class(), ErrorClass::Fatal);
    assert_eq!(
        e.to_string(),
        r#"no endpoint with tag "tpu" is configured to serve model "m""#
    );

    let e = r
        .call_selected(&req, &opts(), &provider(ProviderKind::Anthropic))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"no endpoint of provider anthropic is configured to serve model "m""#
    );
    assert_eq!(e.class(), ErrorClass::Fatal);

    // Each matches an endpoint, but not the same one.
    let e = r
        .call_selected(
            &req,
            &opts(),
            &Selection {
                tag: Some("gpu".into()),
                provider: Some(ProviderKind::OpenAi),
                ..Selection::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"no endpoint with tag "gpu" and of provider openai is configured to serve model "m""#
    );

    // Not one request of any kind (no inference, no model listing) reached either server.
    assert!(ollama.requests().is_empty());
    assert!(openai.requests().is_empty());

    // The model itself is still served: `serves` is per model, unselected calls work.
    assert!(r.serves("m"));
    r.call(&req, &opts()).await.unwrap();

    // A model no endpoint serves keeps the plain message, selection or not.
    let only_m = router(vec![
        target("hosted", &openai, ProviderKind::OpenAi).with_models(["m"])
    ]);
    let e = only_m
        .call_selected(&LlmRequest::generate("x", "p"), &opts(), &tag("gpu"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"no endpoint is configured to serve model "x""#
    );
}
