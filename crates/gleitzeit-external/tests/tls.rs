//! TLS between workers and services: a real Python service serving https/wss with a
//! certificate from a private CA made by `openssl` in the test, registered in Redis with its
//! `https://` address, reached by pools that trust that CA, the system store, or another CA.

mod common;

use common::{init_logs, python, redis_pool, test_config, Certs, PyService, ServiceSpec, TOKEN};
use gleitzeit_external::{
    Discovery, ExternalCall, ExternalConfig, ExternalError, InstanceState, ServicePool, ServiceTls,
    Token,
};
use gleitzeit_testkit::redis::RedisServer;
use serde_json::json;

const SERVICE: &str = "Python Tasks";

fn pool(redis_url: &str, ca_file: Option<std::path::PathBuf>) -> ServicePool {
    let config = ExternalConfig {
        tls: ServiceTls { ca_file },
        ..test_config()
    };
    ServicePool::new(&config, Token::new(TOKEN), Some(redis_pool(redis_url))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_service_registers_https_and_is_called_through_the_private_ca() {
    init_logs();
    let Some(py) = python() else { return };
    let certs = Certs::generate();
    let redis_server = RedisServer::start().unwrap();
    let svc = PyService::start(
        &py,
        &ServiceSpec::new(SERVICE)
            .redis(&redis_server.url())
            .tls(&certs),
    )
    .await;
    let expected_url = format!("https://127.0.0.1:{}", svc.port);
    assert_eq!(svc.url, expected_url);
    let discovery = Discovery::new(redis_pool(&redis_server.url()), "gleitzeit").unwrap();
    let records = discovery.live_instances(SERVICE).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].url, expected_url, "the registration says https");

    let pool = pool(&redis_server.url(), Some(certs.ca.clone()));
    let value = pool
        .call(ExternalCall::new(SERVICE, "echo").args(vec![json!("over tls")]))
        .await
        .unwrap();
    assert_eq!(value["value"], json!("over tls"));
    assert_eq!(value["pid"], json!(svc.pid));
    let status = pool.status();
    let InstanceState::Ready(hello) = &status[0].state else {
        panic!("expected ready, got {:?}", status[0].state)
    };
    assert_eq!(hello.url, expected_url, "the proof binds the https address");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_refused() {
    init_logs();
    let Some(py) = python() else { return };
    let certs = Certs::generate();
    let other = Certs::generate();
    let redis_server = RedisServer::start().unwrap();
    let _svc = PyService::start(
        &py,
        &ServiceSpec::new(SERVICE)
            .redis(&redis_server.url())
            .tls(&certs),
    )
    .await;

    // Another private CA, and the system store (which does not know the test CA).
    for ca_file in [Some(other.ca.clone()), None] {
        let pool = pool(&redis_server.url(), ca_file.clone());
        let err = pool
            .call(ExternalCall::new(SERVICE, "echo").args(vec![json!(1)]))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ExternalError::NoInstance { .. }),
            "{ca_file:?}: {err:?}"
        );
        let status = pool.status();
        let InstanceState::Down { reason } = &status[0].state else {
            panic!("{ca_file:?}: expected down, got {:?}", status[0].state)
        };
        assert!(
            reason.contains("certificate"),
            "{ca_file:?}: the reason names the TLS failure: {reason}"
        );
        pool.close().await;
    }
}
