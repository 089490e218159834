//! The CLI over `rediss://` against a real TLS redis-server with a private CA: the CA and
//! client certificate come from flags or the environment, and a missing one is a usage
//! error naming the cause and the setting that fixes it.

mod common;

use common::{cli, command};
use gleitzeit_testkit::redis::{ClientAuth, RedisServer};

fn path(p: std::path::PathBuf) -> String {
    p.to_str().expect("utf-8 temp path").to_owned()
}

#[test]
fn list_over_tls_with_the_ca_flag_and_with_the_env() {
    let server = RedisServer::start_tls(ClientAuth::Optional).expect("tls redis");
    let ca = path(server.tls_files().expect("tls").ca_cert());
    let out = cli(&server.url(), &["--json", "list", "--redis-tls-ca", &ca]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.json().is_object() || out.json().is_array(), "{out:?}");

    let out = command(&server.url())
        .env("GLEITZEIT_REDIS_TLS_CA", &ca)
        .args(["list"])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn untrusted_certificate_is_a_usage_error_naming_the_setting() {
    let server = RedisServer::start_tls(ClientAuth::Optional).expect("tls redis");
    let out = cli(&server.url(), &["list"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("UnknownIssuer") && out.stderr.contains("redis_tls_ca"),
        "{out:?}"
    );
}

#[test]
fn client_certificate_flags_satisfy_a_server_that_requires_one() {
    let server = RedisServer::start_tls(ClientAuth::Required).expect("tls redis");
    let files = server.tls_files().expect("tls");
    let (ca, cert, key) = (
        path(files.ca_cert()),
        path(files.client_cert()),
        path(files.client_key()),
    );
    let out = cli(&server.url(), &["list", "--redis-tls-ca", &ca]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("redis_tls_cert"), "{out:?}");
    let out = cli(
        &server.url(),
        &[
            "list",
            "--redis-tls-ca",
            &ca,
            "--redis-tls-cert",
            &cert,
            "--redis-tls-key",
            &key,
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn tls_files_with_a_plain_url_are_refused() {
    let server = RedisServer::start().expect("redis");
    let out = cli(&server.url(), &["list", "--redis-tls-ca", "/etc/hostname"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("redis_tls_ca") && out.stderr.contains("rediss://"),
        "{out:?}"
    );
}
