//! Grouped completions (commit.rs, lua/complete_many.lua): completions given to a handle
//! together go to Redis in one call, with each completion's outcome what it would be alone:
//! fenced, recorded once, each child released exactly once, the workflow's end told once.
//!
//! The tests run on tokio's single-threaded test runtime: completions started together are
//! all queued before the lane's sender first runs, so they share one call (asserted through
//! `INFO commandstats`, which counts each function call once).

mod common;

use std::collections::HashSet;

use common::*;
use futures::future::join_all;
use gleitzeit_queue::{Delivery, Priority, Recorded, ScriptCode, SubmitRequest};
use gleitzeit_testkit::redis::RedisServer;

/// `req`, not watched: a watched workflow's completions go alone (their events).
fn unwatched(mut req: SubmitRequest) -> SubmitRequest {
    req.watch = false;
    req
}

/// Completes each `(delivery, now)` together as `consumer`, each with the result
/// `"r<task>"`.
async fn complete_each<'a>(
    env: &Env,
    ds: impl IntoIterator<Item = (&'a Delivery, u64)>,
    consumer: &str,
) -> Vec<Recorded> {
    join_all(ds.into_iter().map(|(d, now)| {
        let result = format!("\"r{}\"", d.task);
        async move {
            env.queue
                .complete_recorded(d, consumer, &result, now)
                .await
                .unwrap()
        }
    }))
    .await
}

/// Completes `ds` together as `consumer` at `NOW + 1` ([`complete_each`]).
async fn complete_together(env: &Env, ds: &[Delivery], consumer: &str) -> Vec<Recorded> {
    complete_each(env, ds.iter().map(|d| (d, NOW + 1)), consumer).await
}

/// Function calls since the last reset.
async fn fcalls(env: &Env) -> u64 {
    let (calls, _) = env.command_calls().await;
    calls.get("fcall").copied().unwrap_or(0)
}

/// Reads and begins everything ready on [`CAP`] as `w1`.
async fn read_begun(env: &Env, c: &mut gleitzeit_queue::Consumer) -> Vec<Delivery> {
    let ds = env.read_all(c, CAP).await;
    for d in &ds {
        begin_ok(env, d, "w1").await;
    }
    ds
}

/// Submits `req`, runs its root as `w1` and reads and begins what that released: the
/// workflow's id, the consumer and those deliveries.
async fn after_the_root(
    env: &Env,
    req: SubmitRequest,
) -> (String, gleitzeit_queue::Consumer, Vec<Delivery>) {
    let id = env.submit(&req).await;
    let mut c = env.consumer("w1").await;
    let root = read_begun(env, &mut c).await;
    complete_together(env, &root, "w1").await;
    let next = read_begun(env, &mut c).await;
    (id, c, next)
}

/// [`after_the_root`] of the diamond `req`: its four middle tasks.
async fn at_the_middle(
    env: &Env,
    req: SubmitRequest,
) -> (String, gleitzeit_queue::Consumer, Vec<Delivery>) {
    let (id, c, middle) = after_the_root(env, req).await;
    assert_eq!(middle.len(), 4);
    (id, c, middle)
}

/// root → A, B, not watched.
fn root_a_b() -> SubmitRequest {
    unwatched(request(
        "fail_fast",
        &[t("root", &[]), t("A", &[0]), t("B", &[0])],
    ))
}

#[tokio::test]
async fn a_diamonds_middle_completes_in_one_call_and_releases_the_join_once() {
    let env = env().await;
    let (id, mut c, middle) = at_the_middle(&env, unwatched(diamond("fail_fast"))).await;
    assert_eq!(middle.len(), 4);

    env.reset_stats().await;
    let got = complete_together(&env, &middle, "w1").await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    assert!(got.iter().all(|r| r.ended.is_none()), "{got:?}");
    // The call is counted once, with the four it carried.
    let mut sizes: Vec<_> = got.iter().map(|r| r.call_size).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [None, None, None, Some(4)], "{got:?}");
    let (calls, stats) = env.command_calls().await;
    assert_eq!(calls.get("fcall"), Some(&1), "one call for four: {stats}");
    assert_eq!(
        calls.get("xack"),
        Some(&1),
        "one XACK for one stream: {stats}"
    );
    assert_eq!(calls.get("xadd"), Some(&1), "the join queued once: {stats}");

    for d in &middle {
        assert_eq!(env.status(&id, d.task).await, "completed");
        assert_eq!(
            env.task_field(&id, d.task, "result").await,
            Some(format!("\"r{}\"", d.task))
        );
        assert_eq!(
            env.task_field(&id, d.task, "finished_ms").await,
            Some((NOW + 1).to_string())
        );
    }
    assert_eq!(env.status(&id, 5).await, "ready");
    assert_eq!(
        env.task_field(&id, 5, "pending").await.as_deref(),
        Some("0")
    );
    assert_eq!(env.counters(&id).await, (1, 5, 0, 0, 0));
    let stream = env.queue.keys().stream(CAP, Priority::Normal);
    assert_eq!(env.pending(&stream).await, 0, "every entry acknowledged");

    let join = read_begun(&env, &mut c).await;
    assert_eq!(join.iter().map(|d| d.task).collect::<Vec<_>>(), [5]);
    let end = complete_together(&env, &join, "w1").await;
    let ended = end[0].ended.as_ref().expect("the join ended the workflow");
    assert_eq!(ended.status, "completed");
    assert_eq!(
        end[0].call_size,
        Some(1),
        "a lone completion is a call of one"
    );
    assert_eq!(
        env.queue.workflow(&id).await.unwrap().unwrap().status,
        "completed"
    );
}

#[tokio::test]
async fn the_completion_that_ends_a_workflow_in_a_group_is_told_once() {
    let env = env().await;
    // A and B are the last open tasks and complete together.
    let (id, _c, last) = after_the_root(&env, root_a_b()).await;
    assert_eq!(last.len(), 2);

    env.reset_stats().await;
    let got = complete_together(&env, &last, "w1").await;
    let (calls, stats) = env.command_calls().await;
    assert_eq!(calls.get("fcall"), Some(&1), "{stats}");
    assert_eq!(calls.get("xack"), Some(&1), "grouped: {stats}");
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    let ends: Vec<_> = got.iter().filter_map(|r| r.ended.as_ref()).collect();
    assert_eq!(
        ends.len(),
        1,
        "exactly one completion learns the end: {got:?}"
    );
    assert_eq!(ends[0].status, "completed");
    assert_eq!(
        ends[0].duration_ms, 1,
        "created at NOW, finished at NOW + 1"
    );
    let info = env.queue.workflow(&id).await.unwrap().unwrap();
    assert_eq!(
        (info.status.as_str(), info.finished_ms),
        ("completed", Some(NOW + 1))
    );
    assert_eq!(env.counters(&id).await, (0, 3, 0, 0, 0));
    let stats: Option<String> = env
        .cmd(&["HGET", &env.queue.keys().stats(), "workflows_completed"])
        .await;
    assert_eq!(stats.as_deref(), Some("1"), "the end counted once");
    let ttl: i64 = env.cmd(&["TTL", &env.queue.keys().workflow(&id)]).await;
    assert!(ttl > 0, "the retention set: {ttl}");
}

#[tokio::test]
async fn each_completion_of_a_group_gets_its_own_fenced_outcome() {
    let env = env().await;
    let (id, mut c, middle) = at_the_middle(&env, unwatched(diamond("fail_fast"))).await;

    // A: this delivery, twice; B: another delivery count, then this one; C: an entry id
    // the task never had; D: this delivery, grouped with nothing else of its task.
    let mut stale = middle[1].clone();
    stale.deliveries = 7;
    let mut other_entry = middle[2].clone();
    other_entry.entry_id = "1-1".to_owned();
    let sent = [
        middle[0].clone(),
        middle[0].clone(),
        stale,
        other_entry,
        middle[1].clone(),
        middle[3].clone(),
    ];
    env.reset_stats().await;
    let got = complete_together(&env, &sent, "w1").await;
    assert_eq!(
        got.iter().map(|r| r.code).collect::<Vec<_>>(),
        [
            ScriptCode::Ok,
            ScriptCode::Duplicate,
            ScriptCode::Stale,
            ScriptCode::Stale,
            ScriptCode::Ok,
            ScriptCode::Ok,
        ]
    );
    assert_eq!(fcalls(&env).await, 1, "one call for all six");
    for (d, status) in middle
        .iter()
        .zip(["completed", "completed", "running", "completed"])
    {
        assert_eq!(env.status(&id, d.task).await, status, "task {}", d.task);
    }
    // Three parents of four completed: the join waits for one more.
    assert_eq!(
        env.task_field(&id, 5, "pending").await.as_deref(),
        Some("1")
    );
    assert_eq!(env.counters(&id).await, (2, 4, 0, 0, 0));

    // Another consumer's completions share no call with w1's, and are fenced out.
    let got = complete_together(&env, &middle[2..3], "w2").await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Stale), "{got:?}");
    let got = complete_together(&env, &middle[2..3], "w1").await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    assert_eq!(env.status(&id, 5).await, "ready");
    let join = env.read_all(&mut c, CAP).await;
    assert_eq!(join.len(), 1, "the join queued exactly once");
}

#[tokio::test]
async fn workflows_interleaved_in_one_group_each_release_their_own_children() {
    let env = env().await;
    let ids = [
        env.submit(&unwatched(diamond("fail_fast"))).await,
        env.submit(&unwatched(diamond("fail_fast"))).await,
        env.submit(&unwatched(diamond("fail_fast"))).await,
    ];
    let mut c = env.consumer("w1").await;
    let roots = read_begun(&env, &mut c).await;
    assert_eq!(roots.len(), 3);
    env.reset_stats().await;
    let got = complete_together(&env, &roots, "w1").await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    assert_eq!(fcalls(&env).await, 1);

    // Twelve middle tasks, read in the order they were released; sent in another order
    // (the handle puts each workflow's together).
    let mut middle = read_begun(&env, &mut c).await;
    assert_eq!(middle.len(), 12);
    middle.reverse();
    let got = complete_together(&env, &middle, "w1").await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    let joins = read_begun(&env, &mut c).await;
    let joined: HashSet<(String, u32)> = joins
        .iter()
        .map(|d| (d.workflow_id.clone(), d.task))
        .collect();
    assert_eq!(joins.len(), 3, "one join per workflow");
    assert_eq!(
        joined,
        ids.iter().map(|id| (id.clone(), 5)).collect::<HashSet<_>>()
    );
    let got = complete_together(&env, &joins, "w1").await;
    assert_eq!(
        got.iter().filter(|r| r.ended.is_some()).count(),
        3,
        "each workflow's end told to its join: {got:?}"
    );
    for id in &ids {
        assert_eq!(env.counters(id).await, (0, 6, 0, 0, 0));
    }
}

#[tokio::test]
async fn more_completions_than_one_call_carries_go_in_several_calls() {
    let env = env().await;
    let n = 150;
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            env.submit(&unwatched(request("fail_fast", &[t("only", &[])])))
                .await,
        );
    }
    let mut c = env.consumer("w1").await;
    let mut ds = Vec::new();
    while ds.len() < n {
        let got = read_begun(&env, &mut c).await;
        assert!(!got.is_empty(), "every task is ready");
        ds.extend(got);
    }
    env.reset_stats().await;
    let got = complete_together(&env, &ds, "w1").await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok));
    assert_eq!(got.iter().filter(|r| r.ended.is_some()).count(), n);
    assert_eq!(fcalls(&env).await, 3, "150 in calls of at most 64");
    let mut sizes: Vec<usize> = got.iter().filter_map(|r| r.call_size).collect();
    sizes.sort_unstable();
    assert_eq!(
        sizes,
        [22, 64, 64],
        "each call counted once, with what it carried"
    );
    for id in &ids {
        assert_eq!(
            env.queue.workflow(id).await.unwrap().unwrap().status,
            "completed"
        );
    }
}

#[tokio::test]
async fn a_watched_workflow_in_a_group_still_gets_every_event() {
    let env = env().await;
    let (id, _c, middle) = at_the_middle(&env, diamond("fail_fast")).await;
    let got = complete_together(&env, &middle, "w1").await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    let events: Vec<(String, Vec<(String, String)>)> = env
        .cmd(&["XRANGE", &env.queue.keys().events(&id), "-", "+"])
        .await;
    let completed: HashSet<String> = events
        .iter()
        .filter(|(_, f)| f.contains(&("status".to_owned(), "completed".to_owned())))
        .filter_map(|(_, f)| f.iter().find(|(k, _)| k == "i").map(|(_, v)| v.clone()))
        .collect();
    assert_eq!(
        completed,
        ["0", "1", "2", "3", "4"].map(str::to_owned).into(),
        "a completed event per task: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(_, f)| f.contains(&("i".to_owned(), "5".to_owned()))
                && f.contains(&("status".to_owned(), "ready".to_owned()))),
        "the join's ready event: {events:?}"
    );
}

#[tokio::test]
async fn a_cancelled_workflows_group_keeps_the_results_and_releases_nothing() {
    let env = env().await;
    let (id, mut c, middle) = at_the_middle(&env, unwatched(diamond("fail_fast"))).await;
    env.queue.cancel(&id, NOW).await.unwrap();
    let got = complete_together(&env, &middle, "w1").await;
    assert!(
        got.iter().all(|r| r.code == ScriptCode::Cancelled),
        "{got:?}"
    );
    assert_eq!(env.status(&id, 5).await, "cancelled");
    assert!(env.read_all(&mut c, CAP).await.is_empty());
    assert_eq!(
        env.task_field(&id, 1, "result").await.as_deref(),
        Some("\"r1\"")
    );
}

#[tokio::test]
async fn a_caller_that_stops_waiting_does_not_stop_the_group() {
    let env = env().await;
    let (id, _c, middle) = at_the_middle(&env, unwatched(diamond("fail_fast"))).await;

    // The first completion is queued (and its lane's sender spawned), then its caller
    // gives up before the sender runs; the other three follow.
    let mut first = Box::pin(env.queue.complete_recorded(&middle[0], "w1", "\"r1\"", NOW));
    assert!(futures::poll!(first.as_mut()).is_pending());
    drop(first);
    let got = complete_together(&env, &middle[1..], "w1").await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    for d in &middle {
        assert_eq!(env.status(&id, d.task).await, "completed", "{}", d.task);
    }
    assert_eq!(env.status(&id, 5).await, "ready");
}

#[tokio::test]
async fn a_group_call_that_fails_fails_each_completion_retryably_and_a_retry_records_each_once() {
    let mut env = env_on(RedisServer::start_aof().expect("redis-server starts")).await;
    let (id, mut c, middle) = at_the_middle(&env, unwatched(diamond("fail_fast"))).await;

    env.server.kill();
    let errors = join_all(middle.iter().map(|d| {
        let queue = &env.queue;
        async move {
            queue
                .complete_recorded(d, "w1", "\"r\"", NOW + 1)
                .await
                .unwrap_err()
        }
    }))
    .await;
    assert!(errors.iter().all(|e| e.is_retryable()), "{errors:?}");

    // Redis back with what it had written (append-only file): the retries go through.
    env.server.restart().expect("redis-server restarts");
    let got = retried("complete", || async {
        let got = join_all(
            middle
                .iter()
                .map(|d| env.queue.complete_recorded(d, "w1", "\"r\"", NOW + 1)),
        )
        .await;
        got.into_iter().collect::<Result<Vec<_>, _>>()
    })
    .await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    // (The test's own connection died with the server.)
    env.raw = deadpool_redis::redis::Client::open(env.server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(env.status(&id, 5).await, "ready");
    assert_eq!(env.counters(&id).await, (1, 5, 0, 0, 0));
    assert_eq!(
        env.read_all(&mut c, CAP).await.len(),
        1,
        "the join queued once"
    );
}

#[tokio::test]
async fn each_caller_gets_its_own_reply_whatever_order_the_group_is_sent_in() {
    let env = env().await;
    let (a, mut c, am) = at_the_middle(&env, unwatched(diamond("fail_fast"))).await;
    let b = env.submit(&unwatched(diamond("fail_fast"))).await;
    let root = read_begun(&env, &mut c).await;
    complete_together(&env, &root, "w1").await;
    let bm = read_begun(&env, &mut c).await;
    assert!(bm.iter().all(|d| d.workflow_id == b));
    let mut b_stale = bm[3].clone();
    b_stale.deliveries = 9;
    let mut a_other = am[1].clone();
    a_other.entry_id = "1-1".to_owned();
    // The second workflow's first, each workflow's fenced-out completion among the rest.
    let sent = [
        b_stale,
        am[0].clone(),
        bm[0].clone(),
        a_other,
        bm[1].clone(),
        am[2].clone(),
    ];
    env.reset_stats().await;
    let got = complete_together(&env, &sent, "w1").await;
    assert_eq!(
        got.iter().map(|r| r.code).collect::<Vec<_>>(),
        [
            ScriptCode::Stale,
            ScriptCode::Ok,
            ScriptCode::Ok,
            ScriptCode::Stale,
            ScriptCode::Ok,
            ScriptCode::Ok,
        ]
    );
    assert_eq!(fcalls(&env).await, 1);
    for (id, done, running) in [(&a, [0, 2], [1, 3]), (&b, [0, 1], [2, 3])] {
        let m = if *id == a { &am } else { &bm };
        for k in done {
            assert_eq!(env.status(id, m[k].task).await, "completed");
        }
        for k in running {
            assert_eq!(env.status(id, m[k].task).await, "running");
        }
        assert_eq!(env.counters(id).await, (3, 3, 0, 0, 0));
    }
}

#[tokio::test]
async fn a_child_released_in_a_group_became_ready_when_its_last_parent_completed() {
    let env = env().await;
    // root → A, B; C after A; D after A and B.
    let req = request(
        "fail_fast",
        &[
            t("root", &[]),
            t("A", &[0]),
            t("B", &[0]),
            t("C", &[1]),
            t("D", &[1, 2]),
        ],
    );
    let (id, _c, ab) = after_the_root(&env, unwatched(req)).await;
    let [a, b] = [1, 2].map(|i| ab.iter().find(|d| d.task == i).unwrap());
    let got = complete_each(&env, [(a, NOW + 1), (b, NOW + 9)], "w1").await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    assert_eq!(
        env.task_field(&id, 3, "ready_ms").await,
        Some((NOW + 1).to_string()),
        "C was ready when A completed"
    );
    assert_eq!(
        env.task_field(&id, 4, "ready_ms").await,
        Some((NOW + 9).to_string()),
        "D was ready when B completed"
    );
    assert_eq!(
        env.task_field(&id, 1, "finished_ms").await,
        Some((NOW + 1).to_string())
    );
    assert_eq!(
        env.task_field(&id, 2, "finished_ms").await,
        Some((NOW + 9).to_string())
    );
}

#[tokio::test]
async fn a_task_named_twice_leaves_the_end_to_the_completion_that_ends_the_workflow() {
    let env = env().await;
    let (id, _c, ab) = after_the_root(&env, root_a_b()).await;
    let [a, b] = [1, 2].map(|i| ab.iter().find(|d| d.task == i).unwrap());
    let got = complete_each(&env, [(a, NOW + 1), (b, NOW + 2), (a, NOW + 1)], "w1").await;
    assert_eq!(
        got.iter().map(|r| r.code).collect::<Vec<_>>(),
        [ScriptCode::Ok, ScriptCode::Ok, ScriptCode::Duplicate]
    );
    assert_eq!(got[0].ended, None);
    assert_eq!(got[1].ended.as_ref().map(|e| e.duration_ms), Some(2));
    assert_eq!(got[2].ended, None);
    let info = env.queue.workflow(&id).await.unwrap().unwrap();
    assert_eq!(
        info.finished_ms,
        Some(NOW + 2),
        "ended with B, the last to complete"
    );
}

#[tokio::test]
async fn a_workflows_completions_split_over_two_calls_still_release_its_join_once() {
    let env = env().await;
    let n = 20;
    let mut ids = HashSet::new();
    for _ in 0..n {
        ids.insert(env.submit(&unwatched(diamond("fail_fast"))).await);
    }
    let mut c = env.consumer("w1").await;
    let mut roots = Vec::new();
    while roots.len() < n {
        roots.extend(read_begun(&env, &mut c).await);
    }
    complete_together(&env, &roots, "w1").await;
    let mut middle = Vec::new();
    while middle.len() < 4 * n {
        let got = read_begun(&env, &mut c).await;
        assert!(!got.is_empty(), "every middle task is ready");
        middle.extend(got);
    }
    env.reset_stats().await;
    let got = complete_together(&env, &middle, "w1").await;
    assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    // 80 in calls of 64 and 16: the sixteenth workflow's four are split over both.
    assert_eq!(fcalls(&env).await, 2);
    let mut joins = Vec::new();
    loop {
        let got = env.read_all(&mut c, CAP).await;
        if got.is_empty() {
            break;
        }
        joins.extend(got);
    }
    assert!(joins.iter().all(|d| d.task == 5));
    let joined: HashSet<String> = joins.iter().map(|d| d.workflow_id.clone()).collect();
    assert_eq!(
        (joins.len(), joined),
        (n, ids),
        "each join queued exactly once"
    );
}

/// A completion's lane whose sender never ran (its runtime shut down first) takes the next
/// completions: the handle keeps working on another runtime.
#[test]
fn a_lane_whose_sender_never_ran_takes_the_next_completions() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let (env, middle) = first.block_on(async {
        let env = env().await;
        let (_, _c, middle) = at_the_middle(&env, unwatched(diamond("fail_fast"))).await;
        let (queue, d) = (env.queue.clone(), middle[0].clone());
        let mut queued =
            Box::pin(async move { queue.complete_recorded(&d, "w1", "\"r\"", NOW).await });
        assert!(
            futures::poll!(queued.as_mut()).is_pending(),
            "queued, sender spawned"
        );
        drop(queued);
        (env, middle)
    });
    drop(first);

    let second = runtime();
    second.block_on(async {
        // A guard against a hang, not a measure: a stuck lane never answers.
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            retried("complete", || async {
                join_all(
                    middle
                        .iter()
                        .map(|d| env.queue.complete_recorded(d, "w1", "\"r\"", NOW)),
                )
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
            }),
        )
        .await
        .expect("the lane answers");
        assert!(got.iter().all(|r| r.code == ScriptCode::Ok), "{got:?}");
    });
}
