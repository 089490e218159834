//! Redis over TLS end to end: a TLS-only redis-server with a private CA, `gleitzeit-submit`
//! submitting over `rediss://`, a `gleitzeit-worker` process running the workflow against a
//! simulator, and the harness reading the result over TLS too. Covers the CA from the
//! worker's configuration file and from `SSL_CERT_FILE`, client certificates for a server
//! that requires them, and the error when the worker has none.

use gleitzeit_e2e::sim::echo_openai;
use gleitzeit_e2e::worker::WorkerProcess;
use gleitzeit_e2e::workflows::{diamond, MODEL};
use gleitzeit_e2e::{within, Deployment};
use gleitzeit_testkit::redis::ClientAuth;

fn path(p: std::path::PathBuf) -> String {
    p.to_str().expect("UTF-8 temp path").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_completes_over_tls_with_the_ca_from_ssl_cert_file() {
    let dep = Deployment::start_tls(ClientAuth::Optional).await;
    assert!(dep.url().starts_with("rediss://"));
    let sim = echo_openai().await;
    // No redis_tls_ca: the worker trusts the system store, which SSL_CERT_FILE replaces.
    let spec = dep
        .worker(&sim.url())
        .env("SSL_CERT_FILE", path(dep.tls_files().ca_cert()));
    let _worker = WorkerProcess::spawn("w0", &spec);

    let id = dep.cli.submit_yaml(&diamond("Tls")).await;
    assert_eq!(dep.store.wait_finished(&id).await, "completed");
    assert_eq!(
        dep.store.result_text(&id, "Root").await,
        format!("{MODEL}: Start Tls")
    );
    let status = dep.cli.status_json(&id).await;
    status.assert_code(0);
    assert_eq!(status.json()["status"], "completed", "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_from_the_config_file_satisfy_a_server_that_requires_them() {
    let dep = Deployment::start_tls(ClientAuth::Required).await;
    let sim = echo_openai().await;
    let files = dep.tls_files();
    let spec = dep
        .worker(&sim.url())
        .set("redis_tls_ca", path(files.ca_cert()))
        .set("redis_tls_cert", path(files.client_cert()))
        .set("redis_tls_key", path(files.client_key()));
    let _worker = WorkerProcess::spawn("w0", &spec);

    let id = dep.cli.submit_yaml(&diamond("Mutual")).await;
    assert_eq!(dep.store.wait_finished(&id).await, "completed");
    assert_eq!(
        dep.store.result_text(&id, "Root").await,
        format!("{MODEL}: Start Mutual")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_without_a_client_certificate_stops_with_a_clear_error() {
    let dep = Deployment::start_tls(ClientAuth::Required).await;
    let sim = echo_openai().await;
    let spec = dep
        .worker(&sim.url())
        .set("redis_tls_ca", path(dep.tls_files().ca_cert()));
    let mut worker = WorkerProcess::spawn("w0", &spec);

    let status = within("the worker exits", worker.wait_exit()).await;
    assert_eq!(
        status.code(),
        Some(2),
        "a TLS setting problem is a configuration error"
    );
    let line = worker.wait_log("TLS handshake with redis failed").await;
    assert!(
        line.contains("CertificateRequired") && line.contains("redis_tls_cert"),
        "{line}"
    );
}
