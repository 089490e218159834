//! Credentials and ACL refusals against a real Redis: a wrong password is its own error (not
//! retryable), a refused command is named, and `check_role` finds a missing command of a
//! role before anything runs.

use gleitzeit_queue::acl::Role;
use gleitzeit_queue::{Keys, Queue, QueueConfig, QueueError};
use gleitzeit_testkit::redis::RedisServer;

/// Creates `user` with password `pw` and exactly the rules of `role`, minus `without`.
fn grant(redis: &RedisServer, user: &str, pw: &str, role: Role, without: &[&str]) {
    let keys = Keys::new("gleitzeit").unwrap();
    let mut args = vec![
        "ACL".to_owned(),
        "SETUSER".to_owned(),
        user.to_owned(),
        "reset".to_owned(),
        "on".to_owned(),
        format!(">{pw}"),
    ];
    args.extend(
        role.rules(&keys)
            .into_iter()
            .filter(|r| !without.iter().any(|w| r == &format!("+{w}"))),
    );
    assert_eq!(redis.admin(&args).unwrap(), "OK");
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_that_is_not_retried() {
    let redis = RedisServer::start().unwrap();
    grant(&redis, "sub", "right", Role::Submitter, &[]);
    for url in [redis.url_as("sub", "wrong"), redis.url_as("nobody", "x")] {
        let err = Queue::connect(&url, QueueConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, QueueError::Auth(_)), "{err:?}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("credentials"), "{err}");
    }
    // A password is required and none was given.
    redis
        .admin(&["CONFIG", "SET", "requirepass", "secret"])
        .unwrap();
    let err = Queue::connect(&redis.url(), QueueConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("NOAUTH"), "{err}");
}

#[tokio::test]
async fn a_refused_command_is_named_and_check_role_lists_what_is_missing() {
    let redis = RedisServer::start().unwrap();
    grant(&redis, "mon", "pw", Role::Monitor, &["time"]);
    let q = Queue::connect(&redis.url_as("mon", "pw"), QueueConfig::default())
        .await
        .unwrap();
    let stream = q
        .keys()
        .stream_ref("llm:x", gleitzeit_queue::Priority::Normal);
    let err = q.stream_stats(&stream).await.unwrap_err();
    let QueueError::NoPermission(denied) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(denied.command.as_deref(), Some("time"));
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("`time`"), "{err}");

    // The whole worker role minus one command inside a script (XAUTOCLAIM, reclaim.lua).
    grant(&redis, "wrk", "pw", Role::Worker, &["xautoclaim"]);
    let q = Queue::connect(&redis.url_as("wrk", "pw"), QueueConfig::default())
        .await
        .unwrap();
    let err = q.check_role(Role::Worker).await.unwrap_err();
    let QueueError::NoPermission(denied) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(denied.command.as_deref(), Some("xautoclaim"));
    assert_eq!(
        denied.key.as_deref(),
        Some("{gleitzeit}:q:acl-probe"),
        "{err}"
    );
    // The full role passes, and a key outside the role is refused by name.
    grant(&redis, "wrk", "pw", Role::Worker, &[]);
    q.check_role(Role::Worker).await.unwrap();
    grant(&redis, "sub", "pw", Role::Submitter, &[]);
    let sub = Queue::connect(&redis.url_as("sub", "pw"), QueueConfig::default())
        .await
        .unwrap();
    sub.check_role(Role::Submitter).await.unwrap();
    let err = sub.check_role(Role::Worker).await.unwrap_err();
    assert!(
        err.to_string().contains("{gleitzeit}:worker:acl-probe")
            || err.to_string().contains("multi"),
        "{err}"
    );
}
