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

/// A submitter whose user may not read the worker registry (an ACL from before the registry)
/// cannot tell which layouts the fleet runs: it writes this version's, the packed layout,
/// as docs/operations.md says ("Rolling upgrade"), and does not fail.
#[tokio::test]
async fn a_submitter_that_may_not_read_the_registry_writes_the_packed_layout() {
    let redis = RedisServer::start().unwrap();
    let admin = Queue::connect(&redis.url(), QueueConfig::default())
        .await
        .unwrap();
    // A worker of an earlier version is live: a submitter that could see it would write
    // task hashes.
    let old = gleitzeit_queue::WorkerRecord {
        id: "old-1".into(),
        state: "running".into(),
        updated_ms: 1,
        ..gleitzeit_queue::WorkerRecord::default()
    };
    admin
        .publish_worker(&old, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    grant(&redis, "sub", "pw", Role::Submitter, &["zrangebyscore"]);
    let sub = Queue::connect(&redis.url_as("sub", "pw"), QueueConfig::default())
        .await
        .unwrap();
    let id = "acl-layout-1".to_owned();
    let req = gleitzeit_queue::SubmitRequest {
        workflow_id: id.clone(),
        name: "one".into(),
        idempotency_key: None,
        digest: "d".into(),
        policy: "fail_fast".into(),
        input_json: "{}".into(),
        now_ms: 2,
        retention: None,
        watch: false,
        tasks: vec![gleitzeit_queue::TaskRecord {
            name: "A".into(),
            capability: "llm:x".into(),
            priority: gleitzeit_queue::Priority::Normal,
            spec_json: "{}".into(),
            dependencies: vec![],
            children: vec![],
            refs: vec![],
            max_attempts: 1,
            on_failure: None,
        }],
    };
    assert!(matches!(
        sub.submit(&req).await.unwrap(),
        gleitzeit_queue::SubmitOutcome::Created { .. }
    ));
    let layout = redis
        .admin(&["HGET", &admin.keys().workflow(&id), "layout"])
        .unwrap();
    assert_eq!(layout, "packed");
    // The same submission by a user that sees the registry: task hashes, for the old worker.
    let seen = gleitzeit_queue::SubmitRequest {
        workflow_id: "acl-layout-2".into(),
        ..req
    };
    admin.submit(&seen).await.unwrap();
    let exists = redis
        .admin(&["EXISTS", &admin.keys().task("acl-layout-2", 0)])
        .unwrap();
    assert_eq!(exists, "1", "the admin's submission wrote task hashes");
}
