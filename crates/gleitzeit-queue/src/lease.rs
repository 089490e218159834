//! Fleet-wide in-flight slots on LLM endpoints, as leases in Redis.
//!
//! Every call to an endpoint holds a lease in `{ns}:ep:<endpoint>:leases` (a zset: member =
//! lease id, score = expiry in ms). [`Queue::lease_acquire`] takes one slot on the best of
//! several candidate endpoints in one script call (`lua/lease_acquire.lua`), so an
//! endpoint's `max_concurrent` holds across every worker and "least loaded" compares the
//! fleet's counts, not one process's. A worker that dies stops renewing its leases and they
//! expire; [`Queue::lease_renew`] keeps the lease of a long call alive and
//! [`Queue::lease_release`] returns it.
//!
//! What calls teach about an endpoint is kept next to its leases ([`Queue::lease_settle`]):
//! holds after a 429, a concurrency limit adapted after overload answers, and the rate-limit
//! budget the endpoint reported (`{ns}:ep:<endpoint>:budget`), which [`Queue::lease_acquire`]
//! applies and spends from.
//!
//! Expiry compares the scores against the callers' clocks (`now_ms`), so the hosts of a
//! fleet should keep their clocks in step to well within the lease time to live.

use deadpool_redis::redis;

use crate::error::QueueError;
use crate::queue::Queue;
use crate::reply;

pub use crate::keys::LEASE_OWNER_SEP;

/// The lease member for `id` taken by `owner` (a consumer name, which never contains
/// [`LEASE_OWNER_SEP`]).
pub fn lease_member(owner: &str, id: &str) -> String {
    format!("{owner}{LEASE_OWNER_SEP}{id}")
}

/// What a call's end teaches the fleet about its endpoint ([`Queue::lease_settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLesson {
    /// The endpoint answered. When `grow` (its limit is adapted) the limit is raised
    /// (additive increase), and one that reaches `max` (0 = none) is dropped. The `budget`
    /// the answer reported is kept for the fleet until its resets.
    Answered {
        /// Whether to raise the adapted limit.
        grow: bool,
        /// The endpoint's configured limit.
        max: u32,
        /// The rate-limit budget the answer reported (empty lines: not reported).
        budget: LeaseBudget,
    },
    /// The endpoint answered that it is overloaded: halve its adapted limit from what was
    /// in flight (multiplicative decrease); the limit lasts `ttl_ms` from now.
    Overloaded {
        /// How long the adapted limit lasts, ms.
        ttl_ms: u64,
    },
    /// The endpoint rate limited the call: every worker holds it back for `ms`.
    Hold {
        /// How long, ms.
        ms: u64,
    },
}

/// The rate-limit budget an answer reported, per limit `(remaining, reset in Unix ms)`;
/// `None` for a limit it did not report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseBudget {
    /// Requests left and when they reset.
    pub requests: Option<(u64, u64)>,
    /// Tokens left and when they reset.
    pub tokens: Option<(u64, u64)>,
}

/// One endpoint a lease may be taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseCandidate<'a> {
    /// Endpoint name (part of the key).
    pub endpoint: &'a str,
    /// Most leases held at once across the fleet; 0 = unlimited (counted, never refused).
    pub max: u32,
}

/// How [`Queue::lease_acquire`] chooses among candidates with a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasePick {
    /// The first candidate, in the order given, with a free slot.
    InOrder,
    /// The candidate with the lowest load (live leases / max); ties go to the earlier
    /// candidate, so shuffle the candidates to break ties at random.
    LeastLoaded,
}

/// The outcome of [`Queue::lease_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Index (into the candidates) of the endpoint the lease was taken on; `None` when every
    /// candidate was full and nothing was written.
    pub chosen: Option<usize>,
    /// Live leases of each candidate before this acquisition.
    pub counts: Vec<u64>,
    /// Per candidate, how many ms the fleet still holds it back for every call, by a hold or
    /// by its spent request budget (0 = not held).
    pub holds_ms: Vec<u64>,
    /// Per candidate, its adapted limit when that is below its max (`None` = not adapting).
    pub limits: Vec<Option<u32>>,
    /// Per candidate, how many ms until its token budget is reset when that budget is below
    /// this call's estimate (0 = the call fits).
    pub token_waits_ms: Vec<u64>,
}

impl Queue {
    /// Takes one lease, valid until `expiry_ms`, on one of `candidates` (see [`LeasePick`]),
    /// for a call estimated at `tokens` (what it counts against a token budget): candidates
    /// held back or without the budget for it are skipped, and the chosen one's budget is
    /// spent (`lua/lease_acquire.lua`).
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] for no candidates, an empty lease id or
    /// `expiry_ms <= now_ms`; Redis errors (retryable); an unexpected reply.
    pub async fn lease_acquire(
        &self,
        candidates: &[LeaseCandidate<'_>],
        pick: LeasePick,
        lease_id: &str,
        tokens: u64,
        now_ms: u64,
        expiry_ms: u64,
    ) -> Result<LeaseGrant, QueueError> {
        const CTX: &str = "lease_acquire";
        if candidates.is_empty() || lease_id.is_empty() || expiry_ms <= now_ms {
            return Err(QueueError::InvalidArgument(
                "a lease needs candidates, an id and an expiry after now".to_owned(),
            ));
        }
        let keys = self.keys();
        let mut inv = self.inner.scripts.lease_acquire.prepare_invoke();
        for c in candidates {
            inv.key(keys.endpoint_leases(c.endpoint));
        }
        inv.arg(keys.prefix())
            .arg(now_ms)
            .arg(expiry_ms)
            .arg(lease_id)
            .arg(match pick {
                LeasePick::InOrder => "order",
                LeasePick::LeastLoaded => "least",
            })
            .arg(tokens);
        for c in candidates {
            inv.arg(c.endpoint).arg(c.max);
        }
        let v = self.invoke(&inv).await?;
        let items = reply::array(CTX, &v)?;
        let (first, rest) = items
            .split_first()
            .ok_or_else(|| QueueError::unexpected(CTX, "empty reply"))?;
        let chosen = reply::u64_of(CTX, first)?;
        let numbers = rest
            .iter()
            .map(|c| reply::u64_of(CTX, c))
            .collect::<Result<Vec<_>, _>>()?;
        let n = candidates.len();
        if numbers.len() != 4 * n || chosen as usize > n {
            return Err(QueueError::unexpected(
                CTX,
                "reply does not match candidates",
            ));
        }
        Ok(LeaseGrant {
            chosen: (chosen > 0).then(|| chosen as usize - 1),
            counts: numbers[..n].to_vec(),
            holds_ms: numbers[n..2 * n].to_vec(),
            limits: numbers[2 * n..3 * n]
                .iter()
                .map(|&l| (l > 0).then(|| u32::try_from(l).unwrap_or(u32::MAX)))
                .collect(),
            token_waits_ms: numbers[3 * n..].to_vec(),
        })
    }

    /// Returns a lease and records what the call taught about its endpoint (see
    /// [`LeaseLesson`]), in one script call. Returns the endpoint's adapted limit after it
    /// (`None` = not adapting).
    ///
    /// # Errors
    /// Redis errors; an unexpected reply.
    pub async fn lease_settle(
        &self,
        endpoint: &str,
        lease_id: &str,
        lesson: LeaseLesson,
        now_ms: u64,
    ) -> Result<Option<u32>, QueueError> {
        const CTX: &str = "lease_settle";
        let (outcome, arg, budget) = match lesson {
            LeaseLesson::Answered {
                grow: true,
                max,
                budget,
            } => ("grow", u64::from(max), budget),
            LeaseLesson::Answered {
                grow: false,
                budget,
                ..
            } => ("answered", 0, budget),
            LeaseLesson::Overloaded { ttl_ms } => {
                ("overloaded", ttl_ms.max(1), LeaseBudget::default())
            }
            LeaseLesson::Hold { ms } => ("hold", ms, LeaseBudget::default()),
        };
        let line = |l: Option<(u64, u64)>| match l {
            Some((remaining, reset)) => (remaining.to_string(), reset.to_string()),
            None => (String::new(), String::new()),
        };
        let (requests, requests_reset) = line(budget.requests);
        let (tokens, tokens_reset) = line(budget.tokens);
        let keys = self.keys();
        let mut inv = self.inner.scripts.lease_settle.prepare_invoke();
        inv.key(keys.endpoint_leases(endpoint))
            .arg(keys.prefix())
            .arg(endpoint)
            .arg(now_ms)
            .arg(lease_id)
            .arg(outcome)
            .arg(arg)
            .arg(requests)
            .arg(requests_reset)
            .arg(tokens)
            .arg(tokens_reset);
        let limit = reply::u64_of(CTX, &self.invoke(&inv).await?)?;
        Ok((limit > 0).then(|| u32::try_from(limit).unwrap_or(u32::MAX)))
    }

    /// Moves a held lease's expiry to `expiry_ms`. `false` when the lease is gone (it
    /// expired and was dropped): the slot may have been handed to another call meanwhile.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn lease_renew(
        &self,
        endpoint: &str,
        lease_id: &str,
        expiry_ms: u64,
    ) -> Result<bool, QueueError> {
        // XX: only an existing lease is moved, a lost one is never recreated.
        let changed: u64 = self
            .query(
                redis::cmd("ZADD")
                    .arg(self.keys().endpoint_leases(endpoint))
                    .arg("XX")
                    .arg("CH")
                    .arg(expiry_ms)
                    .arg(lease_id),
            )
            .await?;
        if changed > 0 {
            return Ok(true);
        }
        // Unchanged can also mean the same expiry was written again.
        let score: Option<f64> = self
            .query(
                redis::cmd("ZSCORE")
                    .arg(self.keys().endpoint_leases(endpoint))
                    .arg(lease_id),
            )
            .await?;
        Ok(score.is_some())
    }

    /// Returns a lease. `false` when it was no longer held (expired).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn lease_release(&self, endpoint: &str, lease_id: &str) -> Result<bool, QueueError> {
        let removed: u64 = self
            .query(
                redis::cmd("ZREM")
                    .arg(self.keys().endpoint_leases(endpoint))
                    .arg(lease_id),
            )
            .await?;
        Ok(removed > 0)
    }

    /// Frees every lease `owners` hold on any endpoint of the fleet (what `reclaim.lua`
    /// does in its own step for an unsharded namespace); returns how many were freed.
    ///
    /// # Errors
    /// Redis errors.
    pub(crate) async fn free_leases_of(&self, owners: &[String]) -> Result<u64, QueueError> {
        let keys = self.keys();
        let endpoints: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(keys.endpoints()))
            .await?;
        let mut freed = 0;
        for ep in endpoints {
            let key = keys.endpoint_leases(&ep);
            let members: Vec<String> = self
                .query(redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1))
                .await?;
            let theirs: Vec<&String> = members
                .iter()
                .filter(|m| {
                    m.split_once(LEASE_OWNER_SEP)
                        .is_some_and(|(owner, _)| owners.iter().any(|o| o == owner))
                })
                .collect();
            if !theirs.is_empty() {
                freed += self
                    .query::<u64>(redis::cmd("ZREM").arg(&key).arg(theirs))
                    .await?;
            }
        }
        Ok(freed)
    }

    /// Live (unexpired at `now_ms`) leases of each endpoint, read without changing anything.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn lease_counts(
        &self,
        endpoints: &[&str],
        now_ms: u64,
    ) -> Result<Vec<u64>, QueueError> {
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for e in endpoints {
            // `(now` = strictly after now: a lease expiring exactly now is expired.
            pipe.cmd("ZCOUNT")
                .arg(self.keys().endpoint_leases(e))
                .arg(format!("({now_ms}"))
                .arg("+inf");
        }
        self.query_pipe(&pipe).await
    }
}

#[cfg(test)]
mod tests {
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
}
