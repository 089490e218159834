//! High availability without sharding: Redis Sentinel. Worker processes and the submitter
//! reach Redis through a `redis+sentinel://` URL (a primary, one replica, three sentinels,
//! all real processes); mid-run the primary fails over, once on request (`SENTINEL
//! FAILOVER`, as before maintenance) and once by a crash (SIGKILL, the sentinels elect the
//! replica). The fault suite's checker then reads the promoted primary: every workflow
//! completed, none lost, no result recorded twice, nothing stuck.
//!
//! What asynchronous replication can lose in a failover (the last writes the replica had
//! not received) is work the queue redoes: a lost completion leaves the task's entry pending
//! and it is reclaimed and run again, a lost delivery is delivered again. Submissions are
//! the exception, since nothing would redo them: they are confirmed by a replica before
//! `submit` returns (`replica_acks`, see docs/scaling.md), which the submission here uses.

use std::time::Duration;

use gleitzeit_e2e::cli::{Cli, Output};
use gleitzeit_e2e::faults::check::Report;
use gleitzeit_e2e::faults::ha::{run_with_failover, Failover};
use gleitzeit_e2e::faults::seed;
use gleitzeit_e2e::faults::workload::Workload;
use gleitzeit_e2e::NAMESPACE;
use gleitzeit_queue::{Queue, QueueConfig};
use gleitzeit_testkit::sentinel::SentinelGroup;

/// A sentinel group (started off the async threads: the harness waits synchronously).
async fn start(replicas: usize, sentinels: usize) -> SentinelGroup {
    tokio::task::spawn_blocking(move || SentinelGroup::start(replicas, sentinels))
        .await
        .unwrap()
        .expect("starting the sentinel group")
}

/// `gleitzeit-submit submit <a two-step chain> --replica-acks 1` through the sentinels.
async fn submit_confirmed(group: &SentinelGroup, name: &str) -> Output {
    let file = gleitzeit_e2e::cli::yaml_file(&gleitzeit_e2e::workflows::chain(name, 2));
    Cli::new(&group.url(), NAMESPACE)
        .run(&[
            "submit",
            file.path().to_str().unwrap(),
            "--replica-acks",
            "1",
        ])
        .await
}

async fn run(scenario: &str, how: Failover) -> Report {
    let mut group = start(1, 3).await;
    let url = group.url();
    run_with_failover(scenario, &url, None, 1, move || {
        let old = group.primary_port().expect("the primary");
        let new = match how {
            Failover::Requested => group.failover(),
            Failover::Crash => group.kill_primary(),
        }
        .expect("the failover");
        assert_ne!(new, old);
        (group.server(new).unwrap().url(), group)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_failover_mid_run_loses_nothing() {
    run("sentinel_failover", Failover::Requested)
        .await
        .assert_all_completed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_primary_mid_run_loses_nothing() {
    run("sentinel_primary_killed", Failover::Crash)
        .await
        .assert_all_completed();
}

/// Submissions wait for a replica's confirmation when asked; with no replica to confirm,
/// `submit` says so (naming the workflow, which the primary did write) instead of returning
/// as if it were safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_wait_for_replicas_and_say_when_none_confirms() {
    let group = start(0, 1).await;
    let queue = Queue::connect(
        group.url().as_str(),
        QueueConfig {
            namespace: NAMESPACE.to_owned(),
            replica_acks: 1,
            replica_ack_timeout: Duration::from_millis(200),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("a queue through the sentinels");
    let workload = Workload::diamonds("unconfirmed", seed(), 1);
    let wf = &workload.parsed()[0];
    let id = gleitzeit_e2e::workflows::new_id();
    let req = gleitzeit_e2e::workflows::submit_request(wf, &id);
    let err = queue.submit(&req).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("0 of 1 replica"), "{text}");
    assert!(
        matches!(
            err,
            gleitzeit_queue::QueueError::NotReplicated {
                ref workflow_id,
                acked: 0,
                wanted: 1,
                timeout_ms: 200
            } if *workflow_id == id
        ),
        "{err:?}"
    );
    // The same call again cannot succeed (the id exists now): not retryable.
    assert!(!err.is_retryable(), "{err:?}");
    // The primary did write it.
    let status = group
        .primary()
        .unwrap()
        .admin(&["HGET", &queue.keys().workflow(&id), "status"])
        .unwrap();
    assert_eq!(status, "running");

    // The CLI says the same with its own exit code, 12.
    let out = submit_confirmed(&group, "Unconfirmed").await;
    out.assert_code(12);
    assert!(out.stderr.contains("replica"), "{out:?}");
}

/// The CLI submits through the sentinels, and with `--replica-acks 1` the workflow is on the
/// replica when `submit` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_through_the_sentinels_and_the_replica_has_it() {
    let group = start(1, 1).await;
    let out = submit_confirmed(&group, "Confirmed").await;
    out.assert_code(0);
    let id = out.stdout.trim().to_owned();
    let primary = group.primary_port().unwrap();
    let replica = group
        .server_ports()
        .into_iter()
        .find(|p| *p != primary)
        .unwrap();
    let keys = gleitzeit_queue::Keys::new(NAMESPACE).unwrap();
    let status = group
        .server(replica)
        .unwrap()
        .admin(&["HGET", &keys.workflow(&id), "status"])
        .unwrap();
    assert_eq!(status, "running", "the replica holds the workflow");
}
