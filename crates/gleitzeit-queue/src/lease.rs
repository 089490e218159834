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
use crate::keys::Keys;
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

/// What one lease request asks for, whichever candidates it is put to.
struct Ask<'a> {
    lease_id: &'a str,
    tokens: u64,
    now_ms: u64,
    expiry_ms: u64,
}

impl Queue {
    /// Takes one lease, valid until `expiry_ms`, on one of `candidates` (see [`LeasePick`]),
    /// for a call estimated at `tokens` (what it counts against a token budget): candidates
    /// held back or without the budget for it are skipped, and the chosen one's budget is
    /// spent (`lua/lease_acquire.lua`). With one shard, one call picks atomically among all
    /// candidates; over N > 1 shards each endpoint's state is in a slot of its own, so the
    /// candidates are asked one call each, in the pick's order, until one grants (what is
    /// learned about the candidates not asked stays at its "nothing known" value).
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
        if candidates.is_empty() || lease_id.is_empty() || expiry_ms <= now_ms {
            return Err(QueueError::InvalidArgument(
                "a lease needs candidates, an id and an expiry after now".to_owned(),
            ));
        }
        let ask = Ask {
            lease_id,
            tokens,
            now_ms,
            expiry_ms,
        };
        let keys = self.spread_keys().await?;
        if !keys.is_spread() || candidates.len() == 1 {
            return self.acquire_call(keys, candidates, pick, &ask).await;
        }
        // Each candidate's state is in its own slot: one call per candidate, tried in the
        // pick's order until one grants. "least" orders by the live leases read first (the
        // adapted limits are known only to the calls); the call re-checks atomically, so a
        // candidate that filled up meanwhile is passed over, never overfilled.
        let n = candidates.len();
        let mut order: Vec<usize> = (0..n).collect();
        if pick == LeasePick::LeastLoaded {
            let names: Vec<&str> = candidates.iter().map(|c| c.endpoint).collect();
            let counts = self.lease_counts(&names, now_ms).await?;
            let load = |i: usize| {
                let max = candidates[i].max;
                counts[i] as f64 / if max == 0 { 1e6 } else { f64::from(max) }
            };
            order.sort_by(|&a, &b| load(a).total_cmp(&load(b)));
        }
        let mut grant = LeaseGrant {
            chosen: None,
            counts: vec![0; n],
            holds_ms: vec![0; n],
            limits: vec![None; n],
            token_waits_ms: vec![0; n],
        };
        for i in order {
            let one = self
                .acquire_call(
                    keys,
                    std::slice::from_ref(&candidates[i]),
                    LeasePick::InOrder,
                    &ask,
                )
                .await?;
            grant.counts[i] = one.counts[0];
            grant.holds_ms[i] = one.holds_ms[0];
            grant.limits[i] = one.limits[0];
            grant.token_waits_ms[i] = one.token_waits_ms[0];
            if one.chosen.is_some() {
                grant.chosen = Some(i);
                break;
            }
        }
        Ok(grant)
    }

    /// One `lease_acquire.lua` call over `candidates`, whose keys share one slot.
    async fn acquire_call(
        &self,
        keys: &Keys,
        candidates: &[LeaseCandidate<'_>],
        pick: LeasePick,
        ask: &Ask<'_>,
    ) -> Result<LeaseGrant, QueueError> {
        const CTX: &str = "lease_acquire";
        let mut inv = self.inner.scripts.lease_acquire.prepare_invoke();
        for c in candidates {
            inv.key(keys.endpoint_leases(c.endpoint));
        }
        // The candidates share a slot: the first one's prefix is every one's.
        inv.arg(keys.endpoint_prefix(candidates[0].endpoint).as_ref())
            .arg(ask.now_ms)
            .arg(ask.expiry_ms)
            .arg(ask.lease_id)
            .arg(match pick {
                LeasePick::InOrder => "order",
                LeasePick::LeastLoaded => "least",
            })
            .arg(ask.tokens);
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
        let keys = self.spread_keys().await?;
        let mut inv = self.inner.scripts.lease_settle.prepare_invoke();
        inv.key(keys.endpoint_leases(endpoint))
            .arg(keys.endpoint_prefix(endpoint).as_ref())
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
        let key = self.spread_keys().await?.endpoint_leases(endpoint);
        // XX: only an existing lease is moved, a lost one is never recreated.
        let changed: u64 = self
            .query(
                redis::cmd("ZADD")
                    .arg(&key)
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
            .query(redis::cmd("ZSCORE").arg(&key).arg(lease_id))
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
                    .arg(self.spread_keys().await?.endpoint_leases(endpoint))
                    .arg(lease_id),
            )
            .await?;
        Ok(removed > 0)
    }

    /// Returns several leases, `(endpoint, lease id)` each, in one round trip (one per
    /// endpoint in a namespace over several shards, sent together): one `ZREM` per endpoint.
    /// Returns how many were still held. Nothing to return asks Redis nothing.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn lease_release_many(&self, leases: &[(&str, &str)]) -> Result<u64, QueueError> {
        let mut by_endpoint: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for &(endpoint, lease_id) in leases {
            by_endpoint.entry(endpoint).or_default().push(lease_id);
        }
        if by_endpoint.is_empty() {
            return Ok(0);
        }
        let endpoints: Vec<&str> = by_endpoint.keys().copied().collect();
        let removed: Vec<u64> = self
            .per_name_one(&endpoints, "lease release", |keys, endpoint, pipe| {
                pipe.cmd("ZREM")
                    .arg(keys.endpoint_leases(endpoint))
                    .arg(&by_endpoint[endpoint]);
            })
            .await?;
        Ok(removed.into_iter().sum())
    }

    /// Frees every lease `owners` hold on any endpoint of the fleet (what `reclaim.lua`
    /// does in its own step for an unsharded namespace); returns how many were freed.
    ///
    /// # Errors
    /// Redis errors.
    pub(crate) async fn free_leases_of(&self, owners: &[String]) -> Result<u64, QueueError> {
        let keys = self.spread_keys().await?;
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
        // `(now` = strictly after now: a lease expiring exactly now is expired.
        let after = format!("({now_ms}");
        self.per_name_one(endpoints, "lease_counts", |keys, e, pipe| {
            pipe.cmd("ZCOUNT")
                .arg(keys.endpoint_leases(e))
                .arg(&after)
                .arg("+inf");
        })
        .await
    }
}

#[cfg(test)]
mod tests;
