//! The lease scripts against a real Redis: fleet-wide holds, adapted limits and budgets,
//! limits and expiry, the least-loaded pick, key names per namespace, argument checks.

use super::*;
use crate::types::QueueConfig;
use gleitzeit_testkit::redis::RedisServer;

async fn queue(redis: &RedisServer) -> Queue {
    Queue::connect(&redis.url(), QueueConfig::default())
        .await
        .unwrap()
}

fn c(endpoint: &str, max: u32) -> LeaseCandidate<'_> {
    LeaseCandidate { endpoint, max }
}

/// The fleet-wide lessons: a hold skips the endpoint for every caller until it ends; an
/// overload halves the adapted limit from what was in flight; successes raise it and a
/// limit that reaches the configured max is dropped. The keys are the ones `Keys` names.
#[tokio::test]
async fn holds_and_adapted_limits_are_shared_through_the_leases() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis).await;
    let now = 1_000_000;
    let far = now + 3_600_000;
    // A rate limit on "a": held for 30 s; "b" takes the call.
    let g = q
        .lease_acquire(&[c("a", 0)], LeasePick::InOrder, "x|1", 0, now, far)
        .await
        .unwrap();
    assert_eq!(g.chosen, Some(0));
    q.lease_settle("a", "x|1", LeaseLesson::Hold { ms: 30_000 }, now)
        .await
        .unwrap();
    let g = q
        .lease_acquire(
            &[c("a", 0), c("b", 0)],
            LeasePick::InOrder,
            "x|2",
            0,
            now,
            far,
        )
        .await
        .unwrap();
    assert_eq!(g.chosen, Some(1));
    assert!(g.holds_ms[0] > 25_000 && g.holds_ms[1] == 0, "{g:?}");
    let hold: Option<String> = q
        .query(redis::cmd("GET").arg(q.keys().endpoint_hold("a")))
        .await
        .unwrap();
    assert!(hold.is_some());

    // Six in flight on "c" (unlimited), then an overload answer: limit 3.
    for i in 0..6 {
        q.lease_acquire(
            &[c("c", 0)],
            LeasePick::InOrder,
            &format!("y|{i}"),
            0,
            now,
            far,
        )
        .await
        .unwrap();
    }
    let limit = q
        .lease_settle("c", "y|0", LeaseLesson::Overloaded { ttl_ms: 600_000 }, now)
        .await
        .unwrap();
    assert_eq!(limit, Some(3));
    let g = q
        .lease_acquire(&[c("c", 8)], LeasePick::InOrder, "z|1", 0, now, far)
        .await
        .unwrap();
    assert_eq!((g.chosen, g.limits.clone()), (None, vec![Some(3)]));
    // Successes while adapting raise it (+1/limit each); reaching max drops it.
    let mut last = Some(3);
    for i in 1..6 {
        last = q
            .lease_settle(
                "c",
                &format!("y|{i}"),
                LeaseLesson::Answered {
                    grow: true,
                    max: 4,
                    budget: LeaseBudget::default(),
                },
                now,
            )
            .await
            .unwrap();
    }
    assert_eq!(last, None, "grown back to max 4: no longer adapting");
    let gone: Option<String> = q
        .query(redis::cmd("GET").arg(q.keys().endpoint_limit("c")))
        .await
        .unwrap();
    assert_eq!(gone, None);
}

fn answered(budget: LeaseBudget) -> LeaseLesson {
    LeaseLesson::Answered {
        grow: false,
        max: 0,
        budget,
    }
}

/// A reported budget is kept for the fleet: a spent request line holds the endpoint
/// until its reset, a token line below the call's estimate too; each lease spends from
/// the live lines; the hash expires at the later reset.
#[tokio::test]
async fn reported_budgets_hold_and_are_spent_fleet_wide() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis).await;
    // Far in the future, so the hash's PEXPIREAT does not remove it during the test.
    let now = 4_000_000_000_000;
    let far = now + 3_600_000;
    let key = q.keys().endpoint_budget("a");
    let g = q
        .lease_acquire(&[c("a", 0)], LeasePick::InOrder, "x|1", 10, now, far)
        .await
        .unwrap();
    assert_eq!(g.chosen, Some(0));
    // One request and 100 tokens left until now + 2 s / now + 5 s.
    let budget = LeaseBudget {
        requests: Some((1, now + 2_000)),
        tokens: Some((100, now + 5_000)),
    };
    q.lease_settle("a", "x|1", answered(budget), now)
        .await
        .unwrap();
    let ttl: i64 = q.query(redis::cmd("PEXPIRETIME").arg(&key)).await.unwrap();
    assert_eq!(ttl, (now + 5_000) as i64, "expires at the later reset");
    // A call of 150 tokens does not fit: held until the token reset, "b" takes it.
    let g = q
        .lease_acquire(
            &[c("a", 0), c("b", 0)],
            LeasePick::InOrder,
            "x|2",
            150,
            now,
            far,
        )
        .await
        .unwrap();
    assert_eq!(g.chosen, Some(1));
    assert_eq!(
        (g.holds_ms.clone(), g.token_waits_ms.clone()),
        (vec![0, 0], vec![5_000, 0]),
        "held for this call only"
    );
    // One of 40 fits and spends the last request and 40 tokens.
    let g = q
        .lease_acquire(
            &[c("a", 0), c("b", 0)],
            LeasePick::InOrder,
            "x|3",
            40,
            now,
            far,
        )
        .await
        .unwrap();
    assert_eq!(g.chosen, Some(0));
    let left: Vec<Option<u64>> = q
        .query(redis::cmd("HMGET").arg(&key).arg("requests").arg("tokens"))
        .await
        .unwrap();
    assert_eq!(left, vec![Some(0), Some(60)]);
    // No request left: held until the request reset, for any caller.
    let g = q
        .lease_acquire(&[c("a", 0)], LeasePick::InOrder, "y|1", 1, now + 500, far)
        .await
        .unwrap();
    assert_eq!((g.chosen, g.holds_ms.clone()), (None, vec![1_500]));
    // After the request reset only the token line applies (60 left).
    let g = q
        .lease_acquire(
            &[c("a", 0)],
            LeasePick::InOrder,
            "y|2",
            60,
            now + 2_000,
            far,
        )
        .await
        .unwrap();
    assert_eq!(g.chosen, Some(0));
    // A new answer replaces the lines it reports and keeps the others.
    q.lease_settle(
        "a",
        "y|2",
        answered(LeaseBudget {
            requests: Some((50, now + 62_000)),
            tokens: None,
        }),
        now + 2_000,
    )
    .await
    .unwrap();
    let stored: Vec<Option<u64>> = q
        .query(
            redis::cmd("HMGET")
                .arg(&key)
                .arg("requests")
                .arg("requests_reset")
                .arg("tokens"),
        )
        .await
        .unwrap();
    assert_eq!(stored, vec![Some(50), Some(now + 62_000), Some(0)]);
    let ttl: i64 = q.query(redis::cmd("PEXPIRETIME").arg(&key)).await.unwrap();
    assert_eq!(ttl, (now + 62_000) as i64);
    // An answer without budget headers changes nothing.
    q.lease_acquire(&[c("a", 0)], LeasePick::InOrder, "z|1", 0, now + 2_000, far)
        .await
        .unwrap();
    q.lease_settle("a", "z|1", answered(LeaseBudget::default()), now + 2_000)
        .await
        .unwrap();
    let requests: Option<u64> = q
        .query(redis::cmd("HGET").arg(&key).arg("requests"))
        .await
        .unwrap();
    assert_eq!(requests, Some(49));
}

#[tokio::test]
async fn max_holds_and_expired_leases_come_back() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis).await;
    let cands = [c("a", 2), c("b", 1)];
    let mut got = Vec::new();
    for id in ["l1", "l2", "l3"] {
        got.push(
            q.lease_acquire(&cands, LeasePick::InOrder, id, 0, 1000, 2000)
                .await
                .unwrap(),
        );
    }
    assert_eq!(got[0].chosen, Some(0));
    assert_eq!(got[1].chosen, Some(0));
    assert_eq!(got[1].counts, vec![1, 0]);
    assert_eq!(got[2].chosen, Some(1), "a is full, spills to b");
    let full = q
        .lease_acquire(&cands, LeasePick::InOrder, "l4", 0, 1000, 2000)
        .await
        .unwrap();
    assert_eq!(full.chosen, None);
    assert_eq!(full.counts, vec![2, 1]);
    assert_eq!(q.lease_counts(&["a", "b"], 1000).await.unwrap(), vec![2, 1]);

    // Released slots are free again at once.
    assert!(q.lease_release("a", "l1").await.unwrap());
    assert!(!q.lease_release("a", "l1").await.unwrap());
    // Several at once: those still held are counted, one already returned is not.
    assert_eq!(
        q.lease_release_many(&[("a", "l2"), ("b", "l3"), ("a", "l1")])
            .await
            .unwrap(),
        2
    );
    assert_eq!(q.lease_counts(&["a", "b"], 1000).await.unwrap(), vec![0, 0]);
    assert_eq!(q.lease_release_many(&[]).await.unwrap(), 0);
    // As they were: l2 on a, l3 on b.
    for (cand, id) in [(c("a", 2), "l2"), (c("b", 1), "l3")] {
        q.lease_acquire(&[cand], LeasePick::InOrder, id, 0, 1000, 2000)
            .await
            .unwrap();
    }
    let again = q
        .lease_acquire(&cands, LeasePick::InOrder, "l5", 0, 1000, 2000)
        .await
        .unwrap();
    assert_eq!(again.chosen, Some(0));

    // Renewed leases survive past their first expiry; the others expire.
    assert!(q.lease_renew("a", "l5", 5000).await.unwrap());
    assert!(!q.lease_renew("a", "gone", 5000).await.unwrap());
    assert_eq!(q.lease_counts(&["a", "b"], 2000).await.unwrap(), vec![1, 0]);
    let after = q
        .lease_acquire(&cands, LeasePick::InOrder, "l6", 0, 2000, 3000)
        .await
        .unwrap();
    assert_eq!(after.counts, vec![1, 0], "expired leases do not count");
    assert_eq!(after.chosen, Some(0));

    // Expired members leave the zset with a call whose lease id ends in '0' (one in
    // sixteen of the random ids): l2 and l3 expired at 2000.
    let zcard = |ep: &'static str| {
        let mut cmd = redis::cmd("ZCARD");
        cmd.arg(q.keys().endpoint_leases(ep));
        cmd
    };
    let before: (u64, u64) = (
        q.query(&zcard("a")).await.unwrap(),
        q.query(&zcard("b")).await.unwrap(),
    );
    assert_eq!(before, (3, 1), "l2, l5, l6 on a; l3 on b");
    let last = q
        .lease_acquire(&cands, LeasePick::InOrder, "l7-0", 0, 2500, 3000)
        .await
        .unwrap();
    assert_eq!(last.chosen, Some(1), "a is full with l5 and l6");
    let left: (u64, u64) = (
        q.query(&zcard("a")).await.unwrap(),
        q.query(&zcard("b")).await.unwrap(),
    );
    assert_eq!(left, (2, 1), "l2 and l3 removed; l5, l6 and l7-0 live");
}

#[tokio::test]
async fn least_loaded_compares_load_ratios() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis).await;
    // a: 1 of 2 busy (0.5); b: 1 of 4 busy (0.25) → b.
    q.lease_acquire(&[c("a", 2)], LeasePick::InOrder, "x1", 0, 0, 10_000)
        .await
        .unwrap();
    q.lease_acquire(&[c("b", 4)], LeasePick::InOrder, "x2", 0, 0, 10_000)
        .await
        .unwrap();
    let g = q
        .lease_acquire(
            &[c("a", 2), c("b", 4)],
            LeasePick::LeastLoaded,
            "x3",
            0,
            0,
            10_000,
        )
        .await
        .unwrap();
    assert_eq!(g.chosen, Some(1));
    assert_eq!(g.counts, vec![1, 1]);
    // Equal loads: the first candidate given wins (callers shuffle).
    let g = q
        .lease_acquire(
            &[c("b", 4), c("a", 2)],
            LeasePick::LeastLoaded,
            "x4",
            0,
            0,
            10_000,
        )
        .await
        .unwrap();
    assert_eq!(
        g.chosen,
        Some(0),
        "b and a both at 0.5: the first listed wins"
    );
}

/// The scripts build the hold, limit and budget keys from the prefix they are given, so
/// a second namespace in the same Redis has its own and never sees the first one's.
#[tokio::test]
async fn lesson_keys_follow_the_namespace() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis).await;
    let other = Queue::connect(
        &redis.url(),
        QueueConfig {
            namespace: "team-b".to_owned(),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    let budget = LeaseBudget {
        requests: Some((0, 4_000_000_000_000)),
        tokens: None,
    };
    for (key, lesson) in [
        (
            other.keys().endpoint_hold("a"),
            LeaseLesson::Hold { ms: 60_000 },
        ),
        (
            other.keys().endpoint_limit("a"),
            LeaseLesson::Overloaded { ttl_ms: 60_000 },
        ),
        (other.keys().endpoint_budget("a"), answered(budget)),
    ] {
        other
            .lease_acquire(&[c("a", 0)], LeasePick::InOrder, "x|1", 0, 1_000, 9_000)
            .await
            .unwrap();
        other.lease_settle("a", "x|1", lesson, 1_000).await.unwrap();
        let exists: u64 = other.query(redis::cmd("EXISTS").arg(&key)).await.unwrap();
        assert_eq!(exists, 1, "{key}");
    }
    assert!(other.keys().endpoint_hold("a").starts_with("{team-b}:"));
    // Held in team-b, free in the default namespace.
    let g = q
        .lease_acquire(&[c("a", 0)], LeasePick::InOrder, "y|1", 0, 1_000, 9_000)
        .await
        .unwrap();
    assert_eq!((g.chosen, g.holds_ms.clone()), (Some(0), vec![0]));
    let g = other
        .lease_acquire(&[c("a", 0)], LeasePick::InOrder, "y|2", 0, 1_000, 9_000)
        .await
        .unwrap();
    assert_eq!(g.chosen, None);
}

#[tokio::test]
async fn arguments_are_checked() {
    let redis = RedisServer::start().unwrap();
    let q = queue(&redis).await;
    for (cands, id, now, exp) in [
        (vec![], "id", 0, 1),
        (vec![c("a", 1)], "", 0, 1),
        (vec![c("a", 1)], "id", 5, 5),
    ] {
        assert!(matches!(
            q.lease_acquire(&cands, LeasePick::InOrder, id, 0, now, exp)
                .await,
            Err(QueueError::InvalidArgument(_))
        ));
    }
    assert_eq!(q.lease_counts(&[], 0).await.unwrap(), Vec::<u64>::new());
}
