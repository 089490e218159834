//! `rediss://` without a CA setting trusts the system store, which honours `SSL_CERT_FILE`.
//! A test binary of its own: it sets a process-wide environment variable.

use gleitzeit_queue::{Queue, QueueConfig};
use gleitzeit_testkit::redis::{ClientAuth, RedisServer};

#[tokio::test]
async fn ssl_cert_file_makes_the_private_ca_trusted() {
    let server = RedisServer::start_tls(ClientAuth::Optional).expect("tls redis");
    let ca = server.tls_files().expect("tls server").ca_cert();
    std::env::set_var("SSL_CERT_FILE", &ca);
    let queue = Queue::connect(server.url(), QueueConfig::default())
        .await
        .expect("the CA named by SSL_CERT_FILE is trusted");
    queue.ping().await.expect("ping over TLS");
}
