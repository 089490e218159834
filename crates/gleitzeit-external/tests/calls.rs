//! Calls against a real Python task service: results, remote errors, limits, authentication.

mod common;

use std::time::Duration;

use common::{init_logs, python, static_pool, test_config, PyService, ServiceSpec};
use gleitzeit_external::protocol::ErrorKind;
use gleitzeit_external::{ExternalCall, ExternalConfig, ExternalError, InstanceState, ServicePool};
use serde_json::json;

const SERVICE: &str = "Python Tasks";

/// A pool with `svc` as its only instance of [`SERVICE`].
fn pool_for(svc: &PyService, config: ExternalConfig) -> ServicePool {
    static_pool(SERVICE, &[svc.local_url()], config)
}

/// The error of a call that must fail.
async fn call_err(pool: &ServicePool, call: ExternalCall) -> ExternalError {
    pool.call(call).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_async_functions_return_their_results() {
    init_logs();
    let Some(py) = python() else { return };
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE)).await;
    let pool = pool_for(&svc, test_config());

    let value = pool
        .call(ExternalCall::new(SERVICE, "echo").args(vec![json!({"rows": [1, 2, 3]})]))
        .await
        .unwrap();
    assert_eq!(value["value"], json!({"rows": [1, 2, 3]}));
    assert_eq!(value["pid"], json!(svc.pid));

    let value = pool
        .call(ExternalCall::new(SERVICE, "echo_async").args(vec![json!("ü-text")]))
        .await
        .unwrap();
    assert_eq!(value["value"], json!("ü-text"));

    let mut kwargs = serde_json::Map::new();
    kwargs.insert("b".into(), json!(40));
    let value = pool
        .call(
            ExternalCall::new(SERVICE, "add")
                .args(vec![json!(2)])
                .kwargs(kwargs),
        )
        .await
        .unwrap();
    assert_eq!(value, json!(42));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_errors_keep_kind_type_message_traceback_and_retryability() {
    init_logs();
    let Some(py) = python() else { return };
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE)).await;
    let pool = pool_for(&svc, test_config());

    // An exception of the function: not retryable, with the Python traceback.
    let err = call_err(
        &pool,
        ExternalCall::new(SERVICE, "boom").args(vec![json!("column 'price' is missing")]),
    )
    .await;
    match &err {
        ExternalError::Remote {
            kind,
            r#type,
            message,
            traceback,
            retryable,
        } => {
            assert_eq!(*kind, ErrorKind::Exception);
            assert_eq!(r#type, "ValueError");
            assert_eq!(message, "column 'price' is missing");
            let tb = traceback.as_deref().expect("a traceback");
            assert!(tb.contains("Traceback") && tb.contains("in boom"), "{tb}");
            assert!(!retryable);
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    assert!(!err.retryable());

    // RetryableError (a subclass too) is retryable.
    let err = call_err(
        &pool,
        ExternalCall::new(SERVICE, "busy").args(vec![json!("upstream busy")]),
    )
    .await;
    assert!(
        matches!(&err, ExternalError::Remote { kind: ErrorKind::Exception, message, .. } if message == "upstream busy"),
        "{err:?}"
    );
    assert!(err.retryable());

    // An unknown function is never retryable.
    let err = call_err(&pool, ExternalCall::new(SERVICE, "proces_data")).await;
    assert!(
        matches!(&err, ExternalError::Remote { kind: ErrorKind::UnknownFunction, r#type, message, .. }
            if r#type == "UnknownFunction" && message.contains("proces_data")),
        "{err:?}"
    );
    assert!(!err.retryable());

    // Arguments that do not fit the signature: bad_request, not retryable.
    let err = call_err(&pool, ExternalCall::new(SERVICE, "add")).await;
    assert!(
        matches!(
            &err,
            ExternalError::Remote {
                kind: ErrorKind::BadRequest,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.retryable());

    // A value JSON cannot encode: a clear not_json error naming the type.
    let err = call_err(&pool, ExternalCall::new(SERVICE, "make_set")).await;
    match &err {
        ExternalError::Remote {
            kind: ErrorKind::NotJson,
            message,
            ..
        } => assert!(message.contains("set"), "{message}"),
        other => panic!("expected not_json, got {other:?}"),
    }
    assert!(!err.retryable());
    assert!(err.to_string().contains("not_json"), "{err}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_enforced_by_the_service_and_by_the_worker() {
    init_logs();
    let Some(py) = python() else { return };
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE)).await;
    let config = ExternalConfig {
        timeout_grace: Duration::from_millis(300),
        ..test_config()
    };
    let pool = pool_for(&svc, config);

    // The service stops the call at the deadline and answers `timeout` (retryable).
    let err = call_err(
        &pool,
        ExternalCall::new(SERVICE, "sleep_for")
            .args(vec![json!(30)])
            .timeout(Duration::from_millis(200)),
    )
    .await;
    assert!(
        matches!(
            &err,
            ExternalError::Remote {
                kind: ErrorKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.retryable() && err.is_timeout());

    // A frozen service answers nothing: the worker's own deadline (+ grace) ends the call.
    pool.wait_ready(SERVICE, 1, Duration::from_secs(20))
        .await
        .unwrap();
    svc.signal("STOP");
    let err = call_err(
        &pool,
        ExternalCall::new(SERVICE, "echo")
            .args(vec![json!(1)])
            .timeout(Duration::from_millis(200)),
    )
    .await;
    svc.signal("CONT");
    match &err {
        ExternalError::Timeout {
            after, function, ..
        } => {
            assert_eq!(*after, Duration::from_millis(500));
            assert_eq!(function, "echo");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(err.retryable());
    // The abandoned call left nothing behind, and the connection still works.
    let status = pool.status();
    assert_eq!(status[0].in_flight, 0);
    let value = pool
        .call(ExternalCall::new(SERVICE, "echo").args(vec![json!(2)]))
        .await
        .unwrap();
    assert_eq!(value["value"], json!(2));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_above_the_size_cap_are_rejected() {
    init_logs();
    let Some(py) = python() else { return };
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE)).await;
    let config = ExternalConfig {
        max_result_bytes: 1000,
        ..test_config()
    };
    let pool = pool_for(&svc, config);

    // "x" * 998 encodes as 1000 bytes of JSON (with its quotes): exactly at the cap.
    let value = pool
        .call(ExternalCall::new(SERVICE, "big").args(vec![json!(998)]))
        .await
        .unwrap();
    assert_eq!(value.as_str().map(str::len), Some(998));
    let err = call_err(
        &pool,
        ExternalCall::new(SERVICE, "big").args(vec![json!(999)]),
    )
    .await;
    assert_eq!(
        err,
        ExternalError::ResultTooLarge {
            function: "big".into(),
            size: 1001,
            limit: 1000
        }
    );
    assert!(!err.retryable());
    assert!(err.to_string().contains("1001 bytes"), "{err}");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_another_token_fails_the_handshake_and_is_not_used() {
    init_logs();
    let Some(py) = python() else { return };
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE).token("another-token")).await;
    let pool = pool_for(&svc, test_config());

    let err = call_err(
        &pool,
        ExternalCall::new(SERVICE, "echo").args(vec![json!(1)]),
    )
    .await;
    // Not a failure of the call: no instance that proved the token, which defers the task.
    assert!(
        matches!(&err, ExternalError::NoInstance { detail: Some(d), .. }
            if d.contains("authentication failed") && d.contains(&svc.instance)
                && d.contains("could not prove")),
        "{err:?}"
    );
    assert!(err.retryable());
    let status = pool.status();
    assert_eq!(status.len(), 1);
    assert!(
        matches!(&status[0].state, InstanceState::Misconfigured { auth: true, reason } if reason.contains("token")),
        "{:?}",
        status[0].state
    );
    // The error and the state never carry either token.
    let shown = format!("{err:?} {:?}", status[0].state);
    assert!(!shown.contains(common::TOKEN) && !shown.contains("another-token"));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_another_name_is_not_used() {
    init_logs();
    let Some(py) = python() else { return };
    let svc = PyService::start(&py, &ServiceSpec::new("Other Tasks")).await;
    let pool = pool_for(&svc, test_config());
    let err = call_err(
        &pool,
        ExternalCall::new(SERVICE, "echo").args(vec![json!(1)]),
    )
    .await;
    assert!(
        matches!(&err, ExternalError::NoInstance { detail: Some(d), .. } if d.contains("Other Tasks")),
        "{err:?}"
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_is_no_instance_and_retryable() {
    init_logs();
    // No Python needed: nothing listens on this port.
    let port = common::free_port();
    let pool = static_pool(
        SERVICE,
        &[format!("http://127.0.0.1:{port}")],
        test_config(),
    );
    let err = call_err(&pool, ExternalCall::new(SERVICE, "echo")).await;
    assert!(
        matches!(&err, ExternalError::NoInstance { service, .. } if service == SERVICE),
        "{err:?}"
    );
    assert!(err.retryable());
    // A service nobody configured, without discovery.
    let err = call_err(&pool, ExternalCall::new("Unknown", "f")).await;
    assert!(matches!(&err, ExternalError::NoInstance { .. }), "{err:?}");
    let err = call_err(&pool, ExternalCall::new("bad{name}", "f")).await;
    assert!(matches!(&err, ExternalError::InvalidCall(_)), "{err:?}");
    assert!(!err.retryable());
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_service_answers_overloaded_which_is_retryable() {
    init_logs();
    let Some(py) = python() else { return };
    let redis_server = gleitzeit_testkit::redis::RedisServer::start().unwrap();
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE).max_concurrency(1)).await;
    let pool = std::sync::Arc::new(pool_for(&svc, test_config()));

    // Occupy the only slot, and learn (through Redis) that the call is running.
    let marker = "gleitzeit-external-test:overload";
    let first = tokio::spawn({
        let pool = pool.clone();
        let url = redis_server.url();
        async move {
            pool.call(ExternalCall::new(SERVICE, "mark_and_sleep").args(vec![
                json!(url),
                json!(marker),
                json!(1),
            ]))
            .await
        }
    });
    let mut conn = common::redis_conn(&redis_server.url()).await;
    let _: (String, u32) = deadpool_redis::redis::cmd("BLPOP")
        .arg(marker)
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();

    let err = call_err(
        &pool,
        ExternalCall::new(SERVICE, "echo").args(vec![json!(1)]),
    )
    .await;
    assert!(
        matches!(&err, ExternalError::Remote { kind: ErrorKind::Overloaded, r#type, .. } if r#type == "Overloaded"),
        "{err:?}"
    );
    assert!(err.retryable());
    assert_eq!(first.await.unwrap().unwrap(), json!("slept"));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_connection_greets_calls_and_closes() {
    init_logs();
    let Some(py) = python() else { return };
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE)).await;
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let conn = gleitzeit_external::InstanceConnection::spawn(
        SERVICE,
        svc.local_url(),
        // The service advertises the address dialled, so even the strict check passes.
        gleitzeit_external::Origin::Discovered,
        gleitzeit_external::Credentials::new(gleitzeit_external::Token::new(common::TOKEN)),
        gleitzeit_external::ConnectionSettings::default(),
        changed,
    );
    assert_eq!(conn.url(), svc.local_url());
    assert_eq!(conn.service(), SERVICE);
    let state = conn.wait_settled(Duration::from_secs(30)).await;
    let InstanceState::Ready(hello) = state else {
        panic!("expected ready, got {state:?}")
    };
    assert_eq!(hello.instance, svc.instance);
    assert_eq!(hello.service, SERVICE);
    assert_eq!(hello.max_concurrency, 32);
    assert_eq!(hello.url, svc.local_url());
    assert!(hello.proof.is_some());
    assert!(hello.functions.iter().any(|f| f.name == "echo_async"));
    assert_eq!(conn.attempts(), 1);

    let limits = gleitzeit_external::CallLimits::default();
    let call = ExternalCall::new(SERVICE, "echo")
        .args(vec![json!("direct")])
        .idempotency_key("wf-1/Direct")
        .task_id("wf-1:0");
    let value = conn.call(&call, &limits).await.unwrap();
    assert_eq!(value["value"], json!("direct"));
    assert_eq!(conn.in_flight(), 0);

    // A dropped call future leaves nothing behind.
    let slow = ExternalCall::new(SERVICE, "sleep_for").args(vec![json!(30)]);
    let abandoned =
        tokio::time::timeout(Duration::from_millis(100), conn.call(&slow, &limits)).await;
    assert!(abandoned.is_err());
    assert_eq!(conn.in_flight(), 0);

    conn.close().await;
    assert_eq!(conn.state(), InstanceState::Closed);
    let err = conn.call(&call, &limits).await.unwrap_err();
    assert!(
        matches!(&err, ExternalError::Disconnected { reason, .. } if reason == "not connected"),
        "{err:?}"
    );
}
