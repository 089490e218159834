//! Every error class, provoked through the simulators' fault injection, for both APIs.

mod common;

use std::time::{Duration, SystemTime};

use common::provider_with;
use gleitzeit_llm::{
    CallOptions, EndpointConfig, ErrorClass, LlmError, LlmRequest, Provider, ProviderKind, Secret,
};
use gleitzeit_testkit::llm::{Fault, Flavor, Reply, SimConfig, SimServer};

const BOTH: [(Flavor, ProviderKind); 2] = [
    (Flavor::Ollama, ProviderKind::Ollama),
    (Flavor::OpenAi, ProviderKind::OpenAi),
];

async fn setup(flavor: Flavor, kind: ProviderKind, cfg: SimConfig) -> (SimServer, Provider) {
    let sim = SimServer::start(flavor, cfg).await.unwrap();
    let p = provider_with(&sim, kind, |c| c);
    (sim, p)
}

fn gen(prompt: &str) -> LlmRequest {
    LlmRequest::generate("m", prompt)
}

fn streamed() -> CallOptions {
    CallOptions::default()
}

fn whole() -> CallOptions {
    CallOptions {
        stream: false,
        ..CallOptions::default()
    }
}

#[tokio::test]
async fn connection_refused_is_connect() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.stop().await;
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert!(matches!(e, LlmError::Connect { .. }), "{flavor:?}: {e:?}");
        assert_eq!(e.class(), ErrorClass::Retry);
        // The same provider works again once the server is back.
        sim.restart().await.unwrap();
        p.call(&gen("x"), &streamed()).await.unwrap();
    }
}

#[tokio::test]
async fn dropped_connection_is_connect() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::DropConnection);
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert!(matches!(e, LlmError::Connect { .. }), "{flavor:?}: {e:?}");
        assert!(e.is_retryable());
        // The fault was used up: the next call succeeds.
        p.call(&gen("x"), &streamed()).await.unwrap();
    }
}

#[tokio::test]
async fn server_killed_while_request_held_is_connect() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.hold();
        let call = tokio::spawn(async move { p.call(&gen("x"), &streamed()).await });
        sim.wait_held(1).await;
        sim.kill_connections();
        let e = call.await.unwrap().unwrap_err();
        assert!(matches!(e, LlmError::Connect { .. }), "{flavor:?}: {e:?}");
    }
}

#[tokio::test]
async fn timeout_before_the_response_starts() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        // Held forever: the only way out is the timeout.
        sim.hold();
        let opts = CallOptions {
            timeout: Some(Duration::from_millis(200)),
            ..CallOptions::default()
        };
        let e = p.call(&gen("x"), &opts).await.unwrap_err();
        assert_eq!(
            e,
            LlmError::Timeout {
                before_first_byte: true
            },
            "{flavor:?}"
        );
        assert_eq!(e.class(), ErrorClass::Retry);
    }
}

#[tokio::test]
async fn timeout_while_streaming() {
    for (flavor, kind) in BOTH {
        // An hour per token: the response starts, the stream never finishes in time.
        let (sim, _) = setup(
            flavor,
            kind,
            SimConfig::default().with_token_delay(Duration::from_secs(3600)),
        )
        .await;
        let p = provider_with(&sim, kind, |c| {
            c.with_request_timeout(Duration::from_millis(300))
        });
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert_eq!(
            e,
            LlmError::Timeout {
                before_first_byte: false
            },
            "{flavor:?}"
        );
    }
}

#[tokio::test]
async fn overloaded_5xx() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::Overloaded);
        sim.push_fault(Fault::Status(500, r#"{"error":"boom"}"#.into()));
        sim.push_fault(Fault::Status(502, "<html>bad gateway</html>".into()));
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert!(
            matches!(e, LlmError::Overloaded { status: 503, .. }),
            "{flavor:?}: {e:?}"
        );
        assert_eq!(e.class(), ErrorClass::Retry);
        let e = p.call(&gen("x"), &whole()).await.unwrap_err();
        assert_eq!(
            e,
            LlmError::Overloaded {
                status: 500,
                message: "boom".into()
            }
        );
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert_eq!(
            e,
            LlmError::Overloaded {
                status: 502,
                message: "<html>bad gateway</html>".into()
            }
        );
    }
}

#[tokio::test]
async fn rate_limited_with_retry_after_seconds() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::RateLimit {
            retry_after: Some("7".into()),
        });
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        match &e {
            LlmError::RateLimited { retry_after, .. } => {
                assert_eq!(*retry_after, Some(Duration::from_secs(7)), "{flavor:?}")
            }
            other => panic!("{flavor:?}: {other:?}"),
        }
        assert_eq!(e.class(), ErrorClass::RetryAfter(Duration::from_secs(7)));
    }
}

#[tokio::test]
async fn rate_limited_with_retry_after_http_date() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        let at = SystemTime::now() + Duration::from_secs(120);
        sim.push_fault(Fault::RateLimit {
            retry_after: Some(httpdate::fmt_http_date(at)),
        });
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        let LlmError::RateLimited {
            retry_after: Some(d),
            ..
        } = e
        else {
            panic!("{flavor:?}: {e:?}");
        };
        // HTTP dates have whole seconds; the wait is the rest of the two minutes.
        assert!(
            d <= Duration::from_secs(120) && d > Duration::from_secs(60),
            "{d:?}"
        );
    }
}

#[tokio::test]
async fn rate_limited_without_a_hint_is_plain_retry() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::RateLimit { retry_after: None });
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert!(
            matches!(
                e,
                LlmError::RateLimited {
                    retry_after: None,
                    ..
                }
            ),
            "{flavor:?}: {e:?}"
        );
        assert_eq!(e.class(), ErrorClass::Retry);
    }
}

#[tokio::test]
async fn rate_limited_with_openai_reset_headers() {
    let (sim, p) = setup(Flavor::OpenAi, ProviderKind::OpenAi, SimConfig::default()).await;
    sim.push_fault(Fault::Response {
        status: 429,
        headers: vec![
            ("x-ratelimit-remaining-requests".into(), "12".into()),
            ("x-ratelimit-reset-requests".into(), "1s".into()),
            ("x-ratelimit-remaining-tokens".into(), "0".into()),
            ("x-ratelimit-reset-tokens".into(), "1m30s".into()),
        ],
        body: r#"{"error":{"message":"Rate limit reached for tokens","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#.into(),
    });
    let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
    assert_eq!(
        e,
        LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(90)),
            message: "Rate limit reached for tokens".into()
        }
    );
}

#[tokio::test]
async fn unauthorized_never_shows_the_key() {
    for (flavor, kind) in BOTH {
        let sim = SimServer::start(flavor, SimConfig::default().with_api_key("the-right-key"))
            .await
            .unwrap();
        let secret = "sk-wrong-but-secret-0123456789";
        let p = provider_with(&sim, kind, |c| c.with_api_key(Secret::new(secret)));
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert!(
            matches!(e, LlmError::Auth { status: 401, .. }),
            "{flavor:?}: {e:?}"
        );
        assert_eq!(e.class(), ErrorClass::Fatal);
        assert!(!e.to_string().contains(secret), "{e}");
        assert!(!format!("{e:?}").contains(secret), "{e:?}");
        // The server did get the key (and, for OpenAI, echoed it back in its error body).
        assert_eq!(
            sim.last_request().unwrap().header("authorization"),
            Some(format!("Bearer {secret}").as_str())
        );
        assert!(!format!("{p:?}").contains(secret));

        // No key at all.
        let p = provider_with(&sim, kind, |c| c);
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert!(matches!(e, LlmError::Auth { status: 401, .. }));
    }
}

#[tokio::test]
async fn forbidden_is_auth() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::Status(403, r#"{"error":"forbidden"}"#.into()));
        sim.push_fault(Fault::Unauthorized);
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert!(matches!(e, LlmError::Auth { status: 403, .. }), "{e:?}");
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert!(matches!(e, LlmError::Auth { status: 401, .. }), "{e:?}");
    }
}

#[tokio::test]
async fn unknown_model_is_model_not_found() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default().with_models(["known"])).await;
        let e = p
            .call(&LlmRequest::generate("missing:7b", "x"), &streamed())
            .await
            .unwrap_err();
        assert_eq!(
            e,
            LlmError::ModelNotFound {
                model: "missing:7b".into()
            },
            "{flavor:?}"
        );
        assert_eq!(e.class(), ErrorClass::Fatal);
        let e = p
            .call(
                &LlmRequest::embed("missing:7b", vec!["x".into()]),
                &streamed(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::ModelNotFound { .. }));
        // The fault does the same for a known model.
        sim.push_fault(Fault::ModelNotFound);
        let e = p
            .call(&LlmRequest::generate("known", "x"), &streamed())
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::ModelNotFound { .. }));
        p.call(&LlmRequest::generate("known", "x"), &streamed())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn model_not_found_in_a_400_body() {
    let (sim, p) = setup(Flavor::Ollama, ProviderKind::Ollama, SimConfig::default()).await;
    sim.push_fault(Fault::Status(
        400,
        r#"{"error":"model 'm' not found"}"#.into(),
    ));
    let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
    assert_eq!(e, LlmError::ModelNotFound { model: "m".into() });
}

#[tokio::test]
async fn context_too_long() {
    let cases = [
        (
            Flavor::OpenAi,
            ProviderKind::OpenAi,
            r#"{"error":{"message":"This model's maximum context length is 4097 tokens. However, your messages resulted in 5000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        ),
        (
            Flavor::OpenAi,
            ProviderKind::OpenAi,
            r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#,
        ),
        (
            Flavor::Ollama,
            ProviderKind::Ollama,
            r#"{"error":"input length exceeds the context length"}"#,
        ),
    ];
    for (flavor, kind, body) in cases {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::Status(400, body.into()));
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert!(matches!(e, LlmError::ContextTooLong { .. }), "{e:?}");
        assert_eq!(e.class(), ErrorClass::Fatal);
    }
}

#[tokio::test]
async fn other_4xx_is_bad_request() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::Status(
            400,
            r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error"}}"#.into(),
        ));
        sim.push_fault(Fault::Status(422, r#"{"detail":"field required"}"#.into()));
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert_eq!(
            e,
            LlmError::BadRequest {
                status: 400,
                message: "Invalid value for 'temperature'".into()
            }
        );
        assert_eq!(e.class(), ErrorClass::Fatal);
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert_eq!(
            e,
            LlmError::BadRequest {
                status: 422,
                message: "field required".into()
            }
        );
    }
}

#[tokio::test]
async fn error_inside_a_200_stream() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::StreamError { after_chunks: 2 });
        let e = p
            .call(&gen("a long enough prompt"), &streamed())
            .await
            .unwrap_err();
        let LlmError::Stream { message } = &e else {
            panic!("{flavor:?}: {e:?}");
        };
        assert!(
            message.contains("error"),
            "the server's message is kept: {message}"
        );
        assert_eq!(e.class(), ErrorClass::Retry);
        // Non-streamed: a 200 body that is an error object.
        sim.push_fault(Fault::StreamError { after_chunks: 0 });
        let e = p.call(&gen("x"), &whole()).await.unwrap_err();
        assert!(matches!(e, LlmError::Stream { .. }), "{flavor:?}: {e:?}");
    }
}

#[tokio::test]
async fn stream_ending_before_done() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::StreamCut { after_chunks: 1 });
        let e = p
            .call(&gen("some words here"), &streamed())
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::Stream { .. }), "{flavor:?}: {e:?}");
        // Connection broken mid-stream.
        sim.push_fault(Fault::StreamReset { after_chunks: 1 });
        let e = p
            .call(&gen("some words here"), &streamed())
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::Stream { .. }), "{flavor:?}: {e:?}");
        // Half a non-streamed body cannot be decoded.
        sim.push_fault(Fault::StreamCut { after_chunks: 0 });
        let e = p.call(&gen("x"), &whole()).await.unwrap_err();
        assert!(matches!(e, LlmError::Decode { .. }), "{flavor:?}: {e:?}");
        // And the endpoint still works.
        p.call(&gen("x"), &streamed()).await.unwrap();
    }
}

#[tokio::test]
async fn garbage_is_decode() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::Status(200, "this is not json\n".into()));
        sim.push_fault(Fault::Status(200, r#"{"unexpected":true}"#.into()));
        let e = p.call(&gen("x"), &whole()).await.unwrap_err();
        assert!(matches!(e, LlmError::Decode { .. }), "{flavor:?}: {e:?}");
        let e = p
            .call(&LlmRequest::embed("m", vec!["x".into()]), &streamed())
            .await
            .unwrap_err();
        assert!(matches!(e, LlmError::Decode { .. }), "{flavor:?}: {e:?}");
        assert_eq!(e.class(), ErrorClass::Retry);
    }
}

#[tokio::test]
async fn response_over_the_cap() {
    for (flavor, kind) in BOTH {
        let big = "word ".repeat(2000);
        let sim = SimServer::start(
            flavor,
            SimConfig::default().with_reply(Reply::func(move |_| big.clone())),
        )
        .await
        .unwrap();
        let p = provider_with(&sim, kind, |c| c.with_max_response_bytes(4096));
        // Streamed: the cap trips while chunks arrive.
        let e = p.call(&gen("x"), &streamed()).await.unwrap_err();
        assert_eq!(e, LlmError::ResponseTooLarge { limit: 4096 }, "{flavor:?}");
        assert_eq!(e.class(), ErrorClass::Fatal);
        // Whole body.
        let e = p.call(&gen("x"), &whole()).await.unwrap_err();
        assert_eq!(e, LlmError::ResponseTooLarge { limit: 4096 }, "{flavor:?}");
        // Embeddings too.
        sim.update_config(|c| c.embedding_dims = 4096);
        let e = p
            .call(&LlmRequest::embed("m", vec!["x".into()]), &streamed())
            .await
            .unwrap_err();
        assert_eq!(e, LlmError::ResponseTooLarge { limit: 4096 });
        // A small response passes the same provider.
        let small = provider_with(&sim, kind, |c| c.with_max_response_bytes(4 * 1024 * 1024));
        assert!(small.call(&gen("x"), &streamed()).await.is_ok());
    }
}

#[tokio::test]
async fn poison_fails_only_matching_prompts() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.poison("POISON", Fault::Status(500, r#"{"error":"crash"}"#.into()));
        for _ in 0..3 {
            let e = p
                .call(&gen("contains POISON here"), &streamed())
                .await
                .unwrap_err();
            assert!(matches!(e, LlmError::Overloaded { status: 500, .. }));
        }
        assert!(p.call(&gen("healthy"), &streamed()).await.is_ok());
        sim.clear_poison();
        assert!(p.call(&gen("POISON"), &streamed()).await.is_ok());
    }
}

#[tokio::test]
async fn delay_fault_then_success() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        sim.push_fault(Fault::Delay(Duration::from_millis(60)));
        let r = p.call(&gen("x"), &streamed()).await.unwrap();
        assert!(r.ttft_ms.unwrap() >= 60);
        assert_eq!(sim.queued_faults(), 0);
    }
}

#[tokio::test]
async fn gate_releases_one_at_a_time() {
    for (flavor, kind) in BOTH {
        let (sim, p) = setup(flavor, kind, SimConfig::default()).await;
        let p = std::sync::Arc::new(p);
        sim.hold();
        let mut calls = Vec::new();
        for i in 0..3 {
            let p = p.clone();
            calls.push(tokio::spawn(async move {
                p.call(&gen(&format!("n{i}")), &streamed()).await
            }));
        }
        sim.wait_held(3).await;
        sim.release(1);
        let c = sim.wait_finished(1).await;
        assert_eq!(c.held, 2);
        sim.open_gate();
        for c in calls {
            assert!(c.await.unwrap().is_ok());
        }
        let c = sim.wait_idle().await;
        assert_eq!((c.received, c.finished, c.held), (3, 3, 0));
        assert_eq!(c.max_in_flight, 3);
    }
}

#[tokio::test]
async fn endpoint_config_errors() {
    let e = Provider::new(EndpointConfig::new(
        "bad",
        "localhost:11434",
        ProviderKind::Ollama,
    ))
    .unwrap_err();
    assert!(matches!(e, LlmError::Config { .. }), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Fatal);
}

/// Successful answers carry the budget their headers report, in both vendors' formats and
/// streamed or not; an answer without such headers (or with unreadable ones) carries none.
#[tokio::test]
async fn successful_answers_carry_the_reported_budget() {
    let before = SystemTime::now();
    let (sim, p) = setup(Flavor::OpenAi, ProviderKind::OpenAi, SimConfig::default()).await;
    for opts in [
        streamed(),
        CallOptions {
            stream: false,
            ..streamed()
        },
    ] {
        sim.push_fault(Fault::Headers(vec![
            ("x-ratelimit-remaining-requests".into(), "0".into()),
            ("x-ratelimit-reset-requests".into(), "2s".into()),
            ("x-ratelimit-remaining-tokens".into(), "1500".into()),
            ("x-ratelimit-reset-tokens".into(), "6m0s".into()),
        ]));
        let r = p.call(&gen("x"), &opts).await.unwrap();
        let b = r.budget.expect("budget reported");
        let at = |d: Duration| {
            (before + d)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let requests = b.requests.unwrap();
        assert_eq!(requests.remaining, 0);
        assert!(requests.reset_ms >= at(Duration::from_secs(2)), "{b:?}");
        let tokens = b.tokens.unwrap();
        assert_eq!(tokens.remaining, 1500);
        assert!(tokens.reset_ms >= at(Duration::from_secs(360)), "{b:?}");
    }
    assert_eq!(p.call(&gen("x"), &streamed()).await.unwrap().budget, None);
    sim.push_fault(Fault::Headers(vec![
        ("x-ratelimit-remaining-requests".into(), "many".into()),
        ("x-ratelimit-reset-requests".into(), "2s".into()),
    ]));
    assert_eq!(p.call(&gen("x"), &streamed()).await.unwrap().budget, None);

    let sim = SimServer::start(
        Flavor::Anthropic,
        SimConfig::default()
            .with_header("anthropic-ratelimit-requests-remaining", "7")
            .with_header("anthropic-ratelimit-requests-reset", "2030-01-01T00:00:00Z")
            .with_header("anthropic-ratelimit-input-tokens-remaining", "900")
            .with_header(
                "anthropic-ratelimit-input-tokens-reset",
                "2030-01-01T00:00:30Z",
            )
            .with_header("anthropic-ratelimit-output-tokens-remaining", "80")
            .with_header(
                "anthropic-ratelimit-output-tokens-reset",
                "2030-01-01T00:00:10Z",
            ),
    )
    .await
    .unwrap();
    let p = provider_with(&sim, ProviderKind::Anthropic, |c| c);
    let b = p
        .call(&gen("x"), &streamed())
        .await
        .unwrap()
        .budget
        .unwrap();
    assert_eq!(
        (b.requests.unwrap().remaining, b.requests.unwrap().reset_ms),
        (7, 1_893_456_000_000)
    );
    assert_eq!(
        (b.tokens.unwrap().remaining, b.tokens.unwrap().reset_ms),
        (80, 1_893_456_010_000),
        "the token limit with the least left"
    );
}
