//! Reads for the worker's Prometheus metrics: the fleet-wide workflow counters kept in
//! `{ns}:stats`, the timing fields of a task that has begun, and live service instances.
//! (A workflow's duration needs no read: the completion or failure that ends it returns it,
//! [`crate::Recorded`].)
//!
//! Stream backlogs, endpoint leases and dead/delayed counts come from the operator queries in
//! `query/fleet.rs` ([`Queue::stream_stats`], [`Queue::endpoint_states`],
//! [`Queue::dead_and_delayed_counts`]); this module adds only what metrics need beyond them.
//! Key names come from [`crate::keys`]; the metric names live in the worker.

use std::collections::HashMap;

use deadpool_redis::redis;

use crate::error::QueueError;
use crate::queue::Queue;

/// Fields of `{ns}:stats` (written by `lua/submit.lua` and `finish` in `lua/lib.lua`).
pub const STAT_WORKFLOWS_SUBMITTED: &str = "workflows_submitted";
/// Workflows that ended `completed`.
pub const STAT_WORKFLOWS_COMPLETED: &str = "workflows_completed";
/// Workflows that ended `failed`.
pub const STAT_WORKFLOWS_FAILED: &str = "workflows_failed";
/// Workflows that ended `cancelled`.
pub const STAT_WORKFLOWS_CANCELLED: &str = "workflows_cancelled";

/// Fleet-wide workflow counters since the namespace was first used (they never expire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkflowTotals {
    /// Workflows created by `submit` (idempotent repeats not counted).
    pub submitted: u64,
    /// Workflows that ended completed.
    pub completed: u64,
    /// Workflows that ended failed.
    pub failed: u64,
    /// Workflows that were cancelled.
    pub cancelled: u64,
}

impl Queue {
    /// The fleet-wide workflow counters of `{ns}:stats` (zeros before the first submit),
    /// summed over the shards (each shard counts its own workflows).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn workflow_totals(&self) -> Result<WorkflowTotals, QueueError> {
        let mut m: HashMap<String, u64> = HashMap::new();
        for k in self.shards() {
            let mut cmd = redis::cmd("HGETALL");
            cmd.arg(k.stats());
            let shard: HashMap<String, u64> = self.query(&cmd).await?;
            for (f, v) in shard {
                *m.entry(f).or_default() += v;
            }
        }
        let get = |f: &str| m.get(f).copied().unwrap_or(0);
        Ok(WorkflowTotals {
            submitted: get(STAT_WORKFLOWS_SUBMITTED),
            completed: get(STAT_WORKFLOWS_COMPLETED),
            failed: get(STAT_WORKFLOWS_FAILED),
            cancelled: get(STAT_WORKFLOWS_CANCELLED),
        })
    }

    /// Live instances of a Python task service: members of `{ns}:svc:<service>` whose
    /// expiry score is after `now_ms` (in a namespace over several shards, of the service's
    /// own set and of the home one, where an instance that registered before the namespace
    /// recorded its count may still be; an instance in both counts once).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn service_instance_count(
        &self,
        service: &str,
        now_ms: u64,
    ) -> Result<u64, QueueError> {
        let keys = self.spread_keys().await?;
        let mut live = std::collections::BTreeSet::new();
        for layout in [keys.clone(), keys.with_spread(false)] {
            let mut cmd = redis::cmd("ZRANGEBYSCORE");
            cmd.arg(layout.service(service))
                .arg(format!("({now_ms}"))
                .arg("+inf");
            let members: Vec<String> = self.query(&cmd).await?;
            live.extend(members);
            if !keys.is_spread() {
                break;
            }
        }
        Ok(live.len() as u64)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::types::{test_queue, test_request, test_task, SubmitOutcome, SubmitRequest};

    const WF: &str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

    fn one_task(id: &str, idem: Option<&str>) -> SubmitRequest {
        SubmitRequest {
            idempotency_key: idem.map(str::to_owned),
            ..test_request(id, crate::POLICY_FAIL_FAST, vec![test_task("a", &[], &[])])
        }
    }

    #[tokio::test]
    async fn submit_and_the_workflow_end_count_once_each() {
        let (_redis, q) = test_queue().await;
        assert_eq!(
            q.workflow_totals().await.unwrap(),
            WorkflowTotals::default()
        );
        assert!(matches!(
            q.submit(&one_task(WF, Some("k"))).await.unwrap(),
            SubmitOutcome::Created { .. }
        ));
        // An idempotent repeat creates nothing and counts nothing.
        let mut again = one_task("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", Some("k"));
        again.now_ms = 2_000;
        assert!(matches!(
            q.submit(&again).await.unwrap(),
            SubmitOutcome::Existing { .. }
        ));
        q.cancel(WF, 5_000).await.unwrap();
        assert_eq!(
            q.workflow_totals().await.unwrap(),
            WorkflowTotals {
                submitted: 1,
                cancelled: 1,
                ..WorkflowTotals::default()
            }
        );
    }

    #[tokio::test]
    async fn a_service_without_instances_counts_none() {
        let (_redis, q) = test_queue().await;
        assert_eq!(q.service_instance_count("nobody", 0).await.unwrap(), 0);
    }
}
