//! `rediss://` against a real TLS redis-server with a private CA: the pool and the blocking
//! reads connect when the CA (and, where the server demands it, a client certificate) is
//! configured, and fail with an error naming the cause when it is not.

mod common;

use std::time::Duration;

use common::{request, t, CAP};
use gleitzeit_queue::{
    ConnectionError, Queue, QueueConfig, QueueError, RedisTarget, SubmitOutcome, TlsFiles,
};
use gleitzeit_testkit::redis::{ClientAuth, RedisServer};

fn with_ca(server: &RedisServer) -> RedisTarget {
    let files = server.tls_files().expect("tls server");
    RedisTarget::new(server.url()).with_tls(TlsFiles {
        ca: Some(files.ca_cert()),
        ..TlsFiles::default()
    })
}

/// Submits a one-task workflow through the pool and reads it through a consumer's own
/// (blocking-read) connection: both kinds of connection the queue opens.
async fn submit_and_read(queue: &Queue) {
    let req = request("fail_fast", &[t("a", &[])]);
    let outcome = queue.submit(&req).await.expect("submit over TLS");
    assert!(
        matches!(outcome, SubmitOutcome::Created { .. }),
        "{outcome:?}"
    );
    let mut consumer = queue.consumer("tls-reader").expect("consumer");
    let streams = queue.keys().stream_refs(CAP);
    let got = consumer
        .read_prioritised(&streams, 10, Duration::from_millis(100))
        .await
        .expect("blocking read over TLS");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].workflow_id, req.workflow_id);
}

#[tokio::test]
async fn private_ca_setting_connects_pool_and_blocking_reads() {
    let server = RedisServer::start_tls(ClientAuth::Optional).expect("tls redis");
    let queue = Queue::connect(with_ca(&server), QueueConfig::default())
        .await
        .expect("connect with the private CA");
    submit_and_read(&queue).await;
}

#[tokio::test]
async fn untrusted_server_certificate_is_a_clear_error() {
    let server = RedisServer::start_tls(ClientAuth::Optional).expect("tls redis");
    // The system store does not hold the private CA.
    let err = Queue::connect(server.url(), QueueConfig::default())
        .await
        .expect_err("an untrusted certificate must not connect");
    assert!(matches!(err, QueueError::Tls { .. }), "{err}");
    assert!(!err.is_retryable(), "a trust problem is not an outage");
    let text = err.to_string();
    assert!(
        text.contains("UnknownIssuer") && text.contains("redis_tls_ca"),
        "error should say the certificate is not trusted and what to set: {text}"
    );
}

#[tokio::test]
async fn client_certificate_is_presented_when_required() {
    let server = RedisServer::start_tls(ClientAuth::Required).expect("tls redis");
    let files = server.tls_files().expect("tls server");
    let target = RedisTarget::new(server.url()).with_tls(TlsFiles {
        ca: Some(files.ca_cert()),
        cert: Some(files.client_cert()),
        key: Some(files.client_key()),
    });
    let queue = Queue::connect(target, QueueConfig::default())
        .await
        .expect("connect with a client certificate");
    submit_and_read(&queue).await;
}

#[tokio::test]
async fn missing_client_certificate_is_a_clear_error() {
    let server = RedisServer::start_tls(ClientAuth::Required).expect("tls redis");
    let err = Queue::connect(with_ca(&server), QueueConfig::default())
        .await
        .expect_err("the server demands a client certificate");
    assert!(matches!(err, QueueError::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("CertificateRequired") && text.contains("redis_tls_cert"),
        "error should name the missing client certificate: {text}"
    );
}

#[tokio::test]
async fn tls_files_without_rediss_are_refused_before_connecting() {
    let server = RedisServer::start().expect("redis");
    let target = RedisTarget::new(server.url()).with_tls(TlsFiles {
        ca: Some("/nonexistent/ca.pem".into()),
        ..TlsFiles::default()
    });
    let err = Queue::new(target, QueueConfig::default()).expect_err("refused");
    assert!(
        matches!(
            err,
            QueueError::Connection(ConnectionError::TlsWithoutRediss { .. })
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("redis_tls_ca"), "{err}");
}

#[tokio::test]
async fn shared_pool_and_client_connect_over_tls() {
    let server = RedisServer::start_tls(ClientAuth::Required).expect("tls redis");
    let files = server.tls_files().expect("tls server");
    let target = RedisTarget::new(server.url()).with_tls(TlsFiles {
        ca: Some(files.ca_cert()),
        cert: Some(files.client_cert()),
        key: Some(files.client_key()),
    });
    // The shared connection other components (service discovery) build from the same target.
    let shared = target
        .shared(std::time::Duration::from_secs(5))
        .expect("shared connection");
    let mut ping = deadpool_redis::redis::pipe();
    ping.cmd("PING");
    let (pong,): (String,) = shared.pipeline(&ping).await.expect("ping over TLS");
    assert_eq!(pong, "PONG");
    // A single client, as tools and the test harness use.
    let mut conn = target
        .client()
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("TLS connection");
    let pong: String = deadpool_redis::redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("ping");
    assert_eq!(pong, "PONG");
}
