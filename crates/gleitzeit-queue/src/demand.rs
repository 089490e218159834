//! Demand for LLM models as placement sees it: per capability, the tasks that are ready to
//! run (queued, not yet running) and the tasks about to be ready (waiting only for parents
//! that are running now), read from the streams and the workflow DAGs.
//!
//! The entries of a stream not yet delivered to the consumer group (its `lag`; finished
//! entries linger in the stream until `trim.lua` removes them) are ready tasks, and so are
//! the delivered entries whose task has not begun; a task running now is not demand. Each
//! running task's children that still wait are about to be ready: each counts for the share
//! of its unfinished parents that is running (a join waiting on two running parents counts
//! 1, on one running and one queued parent ½), which weights them by how soon they will be
//! ready. The read costs a few pipelined round trips and scales with the running tasks
//! (bounded by the endpoints' slots), not with the queue's length.

use std::collections::HashMap;

use deadpool_redis::redis;

use crate::error::QueueError;
use crate::keys::{validate_capability, Keys};
use crate::layout::TaskReads;
use crate::query::GroupPosition;
use crate::queue::Queue;

/// Queued work of one capability.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CapabilityDemand {
    /// Tasks ready and not running: entries not delivered yet, and delivered entries whose
    /// task has not begun.
    pub ready: u64,
    /// Tasks running now (begun): not demand, but what placement may compare the queue
    /// with.
    pub running: u64,
    /// Waiting tasks whose parents run now, each weighted by the share of its unfinished
    /// parents that runs.
    pub soon: f64,
}

impl CapabilityDemand {
    /// Ready tasks plus the weighted tasks about to be ready.
    pub fn weight(&self) -> f64 {
        self.ready as f64 + self.soon
    }
}

/// One delivered entry: the stream it was read from, its entry id, and the index of its
/// capability.
struct Running {
    stream: String,
    entry: String,
    cap: usize,
}

impl Queue {
    /// The demand of each capability in `capabilities` (`llm:<model>`, in that order),
    /// looking at no more than `max_running` running tasks per stream for the tasks about to
    /// be ready.
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] for a capability that cannot name a stream; Redis
    /// errors (a stream without a consumer group yet counts as all ready).
    pub async fn demand(
        &self,
        capabilities: &[&str],
        max_running: usize,
    ) -> Result<Vec<CapabilityDemand>, QueueError> {
        let mut out = vec![CapabilityDemand::default(); capabilities.len()];
        // Shard by shard (a pipeline stays in one slot), summed.
        for k in self.shards() {
            for (sum, d) in out
                .iter_mut()
                .zip(self.demand_in(k, capabilities, max_running).await?)
            {
                sum.ready += d.ready;
                sum.running += d.running;
                sum.soon += d.soon;
            }
        }
        Ok(out)
    }

    /// [`Queue::demand`] in one shard.
    async fn demand_in(
        &self,
        shard: &Keys,
        capabilities: &[&str],
        max_running: usize,
    ) -> Result<Vec<CapabilityDemand>, QueueError> {
        let mut out = vec![CapabilityDemand::default(); capabilities.len()];
        if capabilities.is_empty() {
            return Ok(out);
        }
        let group = self.config().group.clone();
        let mut streams: Vec<(usize, String)> = Vec::new();
        for (k, c) in capabilities.iter().enumerate() {
            validate_capability(c)?;
            for s in shard.stream_refs(c) {
                streams.push((k, s.key));
            }
        }
        let mut pipe = redis::pipe();
        for (_, key) in &streams {
            pipe.cmd("XLEN").arg(key);
        }
        let lens: Vec<u64> = self.query_pipe(&pipe).await?;
        // Where the group stands in every stream that has entries (those exist, so their
        // XINFO cannot fail the pipeline), in one round trip.
        let held: Vec<usize> = (0..streams.len()).filter(|&s| lens[s] > 0).collect();
        let mut pipe = redis::pipe();
        for &s in &held {
            pipe.cmd("XINFO").arg("GROUPS").arg(&streams[s].1);
        }
        let infos: Vec<redis::Value> = if held.is_empty() {
            Vec::new()
        } else {
            self.query_pipe(&pipe).await?
        };
        let mut positions = vec![GroupPosition::default(); streams.len()];
        for (&s, info) in held.iter().zip(&infos) {
            positions[s] = self.position_from(&streams[s].1, lens[s], info).await?;
        }

        // The pending (running) entries of every stream that has some.
        let asked: Vec<usize> = (0..streams.len())
            .filter(|&s| positions[s].pending > 0)
            .collect();
        let mut pipe = redis::pipe();
        for &s in &asked {
            pipe.cmd("XPENDING")
                .arg(&streams[s].1)
                .arg(&group)
                .arg("-")
                .arg("+")
                .arg(max_running.max(1));
        }
        let pending: Vec<Vec<(String, String, u64, u64)>> = if asked.is_empty() {
            Vec::new()
        } else {
            self.query_pipe(&pipe).await?
        };
        let mut running: Vec<Running> = Vec::new();
        for (&s, entries) in asked.iter().zip(&pending) {
            running.extend(entries.iter().map(|(id, ..)| Running {
                stream: streams[s].1.clone(),
                entry: id.clone(),
                cap: streams[s].0,
            }));
        }
        for (s, p) in positions.iter().enumerate() {
            let k = streams[s].0;
            out[k].ready += p.ready;
            out[k].running += p.pending;
        }
        if running.is_empty() {
            return Ok(out);
        }

        // Which task each delivered entry is, whether it has started, and its children.
        let mut pipe = redis::pipe();
        for r in &running {
            pipe.cmd("XRANGE")
                .arg(&r.stream)
                .arg(&r.entry)
                .arg(&r.entry);
        }
        let entries: Vec<Vec<(String, HashMap<String, String>)>> = self.query_pipe(&pipe).await?;
        let tasks: Vec<(usize, String, u32)> = entries
            .into_iter()
            .zip(&running)
            .filter_map(|(e, r)| {
                let (_, fields) = e.into_iter().next()?;
                Some((
                    r.cap,
                    fields.get("wf")?.clone(),
                    fields.get("t")?.parse().ok()?,
                ))
            })
            .collect();
        if tasks.is_empty() {
            return Ok(out);
        }
        let mut reads = TaskReads::new(&["status", "children"]);
        for (_, wf, t) in &tasks {
            reads.push(shard, wf, *t);
        }
        let states: Vec<(Option<String>, Option<String>)> = reads.run(self).await?;
        let mut kids: Vec<(String, u32)> = Vec::new();
        for ((k, wf, _), (status, list)) in tasks.iter().zip(states) {
            match status.as_deref() {
                Some("running") => {}
                // Delivered to a worker that has not begun it: still waiting to run.
                Some("ready") => {
                    out[*k].ready += 1;
                    out[*k].running = out[*k].running.saturating_sub(1);
                    continue;
                }
                _ => continue,
            }
            for c in list
                .unwrap_or_default()
                .split(',')
                .filter(|c| !c.is_empty())
            {
                if let Ok(c) = c.parse() {
                    kids.push((wf.clone(), c));
                }
            }
        }
        if kids.is_empty() {
            return Ok(out);
        }
        let mut reads = TaskReads::new(&["cap", "status", "pending"]);
        for (wf, c) in &kids {
            reads.push(shard, wf, *c);
        }
        let states: Vec<(Option<String>, Option<String>, Option<u64>)> = reads.run(self).await?;
        let index: HashMap<&str, usize> = capabilities
            .iter()
            .enumerate()
            .map(|(k, c)| (*c, k))
            .collect();
        for (cap, status, parents_left) in states {
            let (Some(cap), Some("waiting"), Some(left)) = (cap, status.as_deref(), parents_left)
            else {
                continue;
            };
            if let Some(&k) = index.get(cap.as_str()) {
                // Each running parent contributes its share: all of a child's running parents
                // together count it once when nothing else holds it back.
                out[k].soon += 1.0 / left.max(1) as f64;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_is_ready_plus_soon() {
        let d = CapabilityDemand {
            ready: 2,
            running: 5,
            soon: 1.5,
        };
        assert_eq!(d.weight(), 3.5);
        assert_eq!(CapabilityDemand::default().weight(), 0.0);
    }
}
