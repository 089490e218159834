//! A namespace spread over several shards, on one real Redis: workflows land in the shard
//! their id hashes to, and every operation — reading, beginning, completing, failing,
//! retrying, dead letters, reclaiming, idempotency, the operator's views — follows them
//! there. The shard count is recorded and checked.

mod common;

use std::time::Duration;

use common::*;
use gleitzeit_queue::{
    shard_of, DeadLetterKind, FailRequest, Queue, QueueConfig, QueueError, ScriptCode,
    SubmitOutcome,
};

const SHARDS: u16 = 3;

fn sharded() -> QueueConfig {
    QueueConfig {
        shards: Some(SHARDS),
        ..QueueConfig::default()
    }
}

/// A one-task workflow whose id hashes to shard `k`.
fn single_in_shard(k: u16) -> gleitzeit_queue::SubmitRequest {
    let mut req = request("fail_fast", &[t("only", &[])]);
    while shard_of(&req.workflow_id, SHARDS) != k {
        req.workflow_id = new_id();
    }
    req
}

/// Reads (without blocking) everything ready in every shard.
async fn read_everything(
    env: &Env,
    c: &mut gleitzeit_queue::Consumer,
) -> Vec<gleitzeit_queue::Delivery> {
    let streams = env.queue.stream_refs(CAP);
    let mut all = Vec::new();
    loop {
        let got = c
            .read_prioritised(&streams, 100, Duration::ZERO)
            .await
            .unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

#[tokio::test]
async fn workflows_spread_over_the_shards_and_every_operation_follows_them() {
    let env = env_with(sharded()).await;
    let q = &env.queue;
    assert_eq!(q.shard_count(), SHARDS);
    let recorded: String = env.cmd(&["GET", &q.keys().shard_count()]).await;
    assert_eq!(recorded, "3");

    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(env.submit(&diamond("fail_fast")).await);
    }
    let mut used = std::collections::BTreeSet::new();
    for id in &ids {
        let shard = q.shard_keys(id);
        assert_ne!(shard.prefix(), q.keys().prefix());
        assert_eq!(
            env.hget(&shard.workflow(id), "status").await.as_deref(),
            Some("running")
        );
        // Nothing of the workflow under the home prefix.
        assert_eq!(env.hget(&q.keys().workflow(id), "status").await, None);
        used.insert(shard.prefix().to_owned());
    }
    assert_eq!(used.len(), 3, "30 workflows over 3 shards: {used:?}");

    // One consumer over every shard's streams drives all of them to the end.
    let mut c = env.consumer("w1").await;
    let mut rounds = 0;
    loop {
        let got = read_everything(&env, &mut c).await;
        if got.is_empty() {
            break;
        }
        // The heartbeat of deliveries from several shards: none is lost.
        assert!(q.heartbeat("w1", &got).await.unwrap().is_empty());
        for d in &got {
            run_ok(&env, d, "w1", "\"ok\"").await;
        }
        rounds += 1;
        assert!(rounds < 10, "a diamond takes three rounds");
    }
    for id in &ids {
        assert_eq!(q.workflow(id).await.unwrap().unwrap().status, "completed");
        assert_eq!(q.tasks(id).await.unwrap().len(), 6);
    }
    // The operator's views cover every shard.
    let listed = q.list(100).await.unwrap();
    assert_eq!(listed.len(), 30);
    assert_eq!(q.workflow_totals().await.unwrap().completed, 30);
    assert_eq!(q.workflow_totals().await.unwrap().submitted, 30);
    assert_eq!(q.capabilities().await.unwrap(), vec![CAP.to_owned()]);
    let removed = q.trim_streams(None).await.unwrap().unwrap();
    assert_eq!(removed, 180, "every finished entry of every shard trimmed");
    let demand = q.demand(&[CAP], 100).await.unwrap();
    assert_eq!(demand[0].ready, 0);
}

#[tokio::test]
async fn retries_dead_letters_and_reclaim_work_in_every_shard() {
    let env = env_with(sharded()).await;
    let q = &env.queue;
    let mut ids = Vec::new();
    for k in 0..SHARDS {
        ids.push(env.submit(&single_in_shard(k)).await);
    }
    let mut c = env.consumer("w1").await;
    let first = read_everything(&env, &mut c).await;
    assert_eq!(first.len(), 3);
    for d in &first {
        begin_ok(&env, d, "w1").await;
        let retry = FailRequest {
            error_json: r#"{"kind":"timeout"}"#.into(),
            retry_at_ms: Some(NOW + 1),
            dead_letter: None,
            now_ms: NOW,
        };
        assert_eq!(
            q.fail(d, "w1", &retry).await.unwrap(),
            ScriptCode::RetryScheduled
        );
    }
    assert_eq!(q.dead_and_delayed_counts().await.unwrap(), (0, 3));
    let promoted = q.promote(NOW + 10, 100).await.unwrap();
    assert_eq!(promoted.moved, 3);
    assert_eq!(promoted.next_due_ms, None);

    // Reclaim: w1 reads the retries, takes an endpoint slot and dies; w2 takes the entries
    // over, shard by shard, and w1's slot comes back with them (leases are home keys, out
    // of the shards' scripts' reach).
    let second = read_everything(&env, &mut c).await;
    assert_eq!(second.len(), 3);
    let _: i64 = env.cmd(&["SADD", &q.keys().endpoints(), "ep1"]).await;
    let lease = gleitzeit_queue::lease_member("w1", "call-1");
    q.lease_acquire(
        &[gleitzeit_queue::LeaseCandidate {
            endpoint: "ep1",
            max: 4,
        }],
        gleitzeit_queue::LeasePick::InOrder,
        &lease,
        0,
        NOW,
        NOW + 600_000,
    )
    .await
    .unwrap();
    assert_eq!(q.lease_counts(&["ep1"], NOW).await.unwrap(), [1]);
    let mut reclaimed = Vec::new();
    for d in &second {
        env.age_entry(d, "w1", 60_000).await;
        let stream = env
            .queue
            .stream_refs(CAP)
            .into_iter()
            .find(|s| s.key == d.stream)
            .unwrap();
        reclaimed.extend(
            q.reclaim("w2", &stream, Duration::from_secs(30), 10)
                .await
                .unwrap(),
        );
    }
    assert_eq!(reclaimed.len(), 3);
    assert_eq!(q.lease_counts(&["ep1"], NOW).await.unwrap(), [0]);
    // The old holder is fenced out in each shard.
    for d in &second {
        assert_eq!(
            q.heartbeat("w1", std::slice::from_ref(d))
                .await
                .unwrap()
                .len(),
            1
        );
    }
    for d in &reclaimed {
        begin_ok(&env, d, "w2").await;
        let last = FailRequest {
            error_json: r#"{"kind":"bad_request"}"#.into(),
            retry_at_ms: None,
            dead_letter: Some(DeadLetterKind::Exhausted),
            now_ms: NOW,
        };
        assert_eq!(q.fail(d, "w2", &last).await.unwrap(), ScriptCode::Failed);
    }

    // Dead letters carry their shard in their id.
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 3);
    let mut shards_seen: Vec<&str> = dead
        .iter()
        .map(|d| d.id.split_once('/').expect("<shard>/<entry id>").0)
        .collect();
    shards_seen.sort_unstable();
    assert_eq!(shards_seen, ["0", "1", "2"]);
    let paged = q.dead_letters_after(None, 2).await.unwrap();
    let rest = q.dead_letters_after(Some(&paged[1].id), 10).await.unwrap();
    assert_eq!(paged.len() + rest.len(), 3);
    let one = &dead[0];
    assert_eq!(q.dead_letter(&one.id).await.unwrap().unwrap().id, one.id);
    let bare = one.id.split_once('/').unwrap().1;
    let err = q.dead_letter(bare).await.unwrap_err();
    assert!(err.to_string().contains("<shard>/<entry id>"), "{err}");
    let err = q.dead_letter(&format!("7/{bare}")).await.unwrap_err();
    assert!(err.to_string().contains("not a shard"), "{err}");

    // Requeued in its own shard: ready again and completed there.
    let outcome = q.requeue_dead(&one.id, NOW).await.unwrap();
    assert_eq!(outcome.code, ScriptCode::Ok);
    let again = read_everything(&env, &mut c).await;
    assert_eq!(again.len(), 1);
    assert_eq!(Some(&again[0].workflow_id), outcome.workflow_id.as_ref());
    run_ok(&env, &again[0], "w1", "\"late\"").await;
    assert_eq!(
        q.workflow(&again[0].workflow_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "completed"
    );
    assert_eq!(q.purge_dead(&[dead[1].id.clone()]).await.unwrap(), 1);
    assert_eq!(q.purge_all_dead().await.unwrap(), 1);
    assert_eq!(q.dead_and_delayed_counts().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn an_idempotency_key_and_its_workflow_share_a_shard() {
    let env = env_with(sharded()).await;
    let q = &env.queue;
    let key = "order-42";
    let mut first = diamond("fail_fast");
    first.idempotency_key = Some(key.into());
    first.workflow_id = q.workflow_id_for(Some(key), new_id);
    assert_eq!(shard_of(&first.workflow_id, SHARDS), shard_of(key, SHARDS));
    let id = env.submit(&first).await;
    // The same submission again, under a new id drawn the same way: the first one stands.
    let mut again = first.clone();
    again.workflow_id = q.workflow_id_for(Some(key), new_id);
    assert_ne!(again.workflow_id, id);
    assert_eq!(
        q.submit(&again).await.unwrap(),
        SubmitOutcome::Existing { id: id.clone() }
    );
    // An id outside the key's shard is refused before anything is written.
    let mut wrong = first.clone();
    wrong.workflow_id = new_id();
    while shard_of(&wrong.workflow_id, SHARDS) == shard_of(key, SHARDS) {
        wrong.workflow_id = new_id();
    }
    let err = q.submit(&wrong).await.unwrap_err();
    assert!(matches!(err, QueueError::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("workflow_id_for"), "{err}");
}

#[tokio::test]
async fn the_shard_count_is_recorded_and_checked() {
    let env = env().await;
    let url = env.server.url();
    let key = env.queue.keys().shard_count();
    // Adopting on a namespace that records nothing: one shard, and nothing written by
    // reading.
    assert_eq!(env.queue.shard_count(), 1);
    assert_eq!(env.cmd::<Option<String>>(&["GET", &key]).await, None);
    // The first submission records it.
    env.submit(&diamond("fail_fast")).await;
    assert_eq!(env.cmd::<String>(&["GET", &key]).await, "1");
    let err = Queue::connect(&url, sharded()).await.unwrap_err();
    assert!(
        matches!(
            err,
            QueueError::ShardCount {
                configured: 3,
                recorded: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("docs/scaling.md"), "{err}");

    // Another namespace, recorded by a sharded handle and adopted by an unset one.
    let ns = |shards| QueueConfig {
        namespace: "team-b".into(),
        shards,
        ..QueueConfig::default()
    };
    Queue::connect(&url, ns(Some(SHARDS))).await.unwrap();
    let adopted = Queue::connect(&url, ns(None)).await.unwrap();
    assert_eq!(adopted.shard_count(), SHARDS);
    let bad = Queue::new(&url, ns(Some(0))).unwrap_err();
    assert!(bad.to_string().contains("shards must be 1-256"), "{bad}");
}

#[tokio::test]
async fn a_full_redis_refuses_the_first_submission_as_full_and_records_nothing() {
    let env = env().await;
    let _: String = env.cmd(&["CONFIG", "SET", "maxmemory", "1"]).await;
    let err = env.queue.submit(&diamond("fail_fast")).await.unwrap_err();
    assert!(matches!(err, QueueError::OutOfMemory), "{err:?}");
    let _: String = env.cmd(&["CONFIG", "SET", "maxmemory", "0"]).await;
    let recorded: Option<String> = env.cmd(&["GET", &env.queue.keys().shard_count()]).await;
    assert_eq!(recorded, None);
    let keys: Vec<String> = env.cmd(&["KEYS", "*"]).await;
    assert!(keys.is_empty(), "{keys:?}");
}

/// Counts the calls of a reader's slot hooks and what each release kept; `regain`
/// answers `slots`, `share` answers `share`.
#[derive(Default)]
struct CountingSlots {
    released: std::sync::atomic::AtomicUsize,
    regained: std::sync::atomic::AtomicUsize,
    kept: std::sync::Mutex<Vec<usize>>,
    slots: usize,
    share: usize,
}

impl CountingSlots {
    /// A reader whose share is all its slots.
    fn answering(slots: usize) -> CountingSlots {
        CountingSlots {
            slots,
            share: slots,
            ..CountingSlots::default()
        }
    }

    fn kept(&self) -> Vec<usize> {
        self.kept.lock().unwrap().clone()
    }
}

impl gleitzeit_queue::WaitSlots for CountingSlots {
    fn share(&self) -> usize {
        self.share
    }

    fn release(&self, keep: usize) {
        self.released
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.kept.lock().unwrap().push(keep);
    }

    fn regain(&self) -> usize {
        self.regained
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.slots
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_gives_slots_back_only_to_wait_and_regains_them_when_work_arrives() {
    let env = env_with(sharded()).await;
    let q = &env.queue;
    let shard = single_in_shard(1);
    let streams: Vec<_> = q.shards()[1].stream_refs(CAP).to_vec();
    let slots = || CountingSlots::answering(3);
    let now = || NOW;
    let counts = |s: &CountingSlots| {
        (
            s.released.load(std::sync::atomic::Ordering::SeqCst),
            s.regained.load(std::sync::atomic::Ordering::SeqCst),
        )
    };

    // Nothing there: the slots are given back for the wait, and regained after it.
    let mut c = env.consumer("w1").await;
    let s = slots();
    let got = c
        .take_or_wait_with(&streams, 5, Duration::from_millis(20), now, &s)
        .await
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(counts(&s), (1, 1));

    // Work arrives during the wait: it is taken, after the slots were regained.
    let s = slots();
    let submitter = submit_once_blocked(&env, shard.clone());
    let got = c
        .take_or_wait_with(&streams, 5, Duration::from_secs(30), now, &s)
        .await
        .unwrap();
    // Asserted before the submitter is awaited: a read that did not wait fails here
    // instead of leaving the submitter looking for a blocked client.
    assert_eq!(got.len(), 1);
    assert_eq!(counts(&s), (1, 1));
    submitter.await.unwrap();

    // Work already there: read at once, the slots never given back.
    let s = slots();
    env.submit(&single_in_shard(1)).await;
    let got = c
        .take_or_wait_with(&streams, 5, Duration::from_secs(30), now, &s)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(counts(&s), (0, 0));
}

/// Idle readers of one shard that give their slots back while they wait (a worker runs one
/// per shard) wait in the consumer group, keeping a slot per stream since each stream may
/// deliver an entry: of two, one wakes for a new entry and the other waits on in the same
/// call. Neither waits with `XREAD`, whose every wake-up woke both, nor reads the streams'
/// tails for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_shard_readers_wait_in_the_group_keeping_a_slot_per_stream() {
    let env = env_with(sharded()).await;
    let streams: Vec<_> = env.queue.shards()[1].stream_refs(CAP).to_vec();
    let slots: std::sync::Arc<Vec<CountingSlots>> = std::sync::Arc::new(vec![
        CountingSlots::answering(5),
        CountingSlots::answering(5),
    ]);
    let turn = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (first, got_first, other) =
        one_entry_for_two_waiters(&env, &streams, &single_in_shard(1), |mut c, streams| {
            let slots = slots.clone();
            let mine = turn.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                c.take_or_wait_with(&streams, 5, Duration::from_secs(60), || NOW, &slots[mine])
                    .await
                    .unwrap()
            }
        })
        .await;
    assert_took_begun(&got_first, &first);
    the_other_waiter_takes(&env, other, &single_in_shard(1)).await;
    for s in slots.iter() {
        assert_eq!(s.kept(), [streams.len()], "one slot kept per stream");
    }
    assert_no_xread_wait(&env).await;
}

/// A shard reader with fewer free slots than streams, or whose share of the slots is less
/// than its streams, keeps one slot and waits with `XREAD`: a wait in the group could
/// deliver an entry of every stream, and keeping a slot for each would take slots the other
/// shards' readers need.
#[tokio::test]
async fn a_shard_reader_without_a_slot_per_stream_waits_with_xread_keeping_one() {
    let env = env_with(sharded()).await;
    let streams: Vec<_> = env.queue.shards()[1].stream_refs(CAP).to_vec();
    let mut c = env.consumer("w1").await;
    let few = CountingSlots::answering(2);
    let small_share = CountingSlots {
        share: 2,
        ..CountingSlots::answering(5)
    };
    for (count, s) in [(2, &few), (5, &small_share)] {
        let got = c
            .take_or_wait_with(&streams, count, Duration::from_millis(20), || NOW, s)
            .await
            .unwrap();
        assert!(got.is_empty());
        assert_eq!(s.kept(), [1]);
    }
    let (calls, stats) = env.command_calls().await;
    assert_eq!(calls.get("xread"), Some(&2), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_over_several_shards_waits_on_each_in_turn() {
    let env = env_with(sharded()).await;
    let q = &env.queue;
    // Shard by shard, shard 0 first: a fresh consumer's first wait is on shard 0, for a third
    // of the block time.
    let streams = q.stream_refs(CAP);
    let mut c = env.consumer("w1").await;
    let submitter = submit_once_blocked(&env, single_in_shard(0));
    let got = c
        .read_prioritised(&streams, 10, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "the wait on shard 0 saw the entry arrive");
    assert_eq!(shard_of(&got[0].workflow_id, SHARDS), 0);
    submitter.await.unwrap();
}

/// Submits `req` once a client of the server is blocked in `XREAD` (the reader under test
/// waiting), from a task of its own.
fn submit_once_blocked(
    env: &Env,
    req: gleitzeit_queue::SubmitRequest,
) -> tokio::task::JoinHandle<()> {
    let q = env.queue.clone();
    let raw = env.raw.clone();
    tokio::spawn(async move {
        loop {
            let list: String = deadpool_redis::redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut raw.clone())
                .await
                .unwrap();
            if list.lines().any(|l| l.contains("cmd=xread")) {
                break;
            }
            tokio::task::yield_now().await;
        }
        q.submit(&req).await.unwrap();
    })
}
