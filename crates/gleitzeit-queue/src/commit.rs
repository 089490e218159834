//! Group commit of completions: the completions a handle is given while its previous
//! completion call is on its way go to Redis together, in one call of
//! `lua/complete_many.lua`, which reads and writes each workflow once for all of its tasks
//! completing there (a diamond's middle tasks end together).
//!
//! Why: a completion is the dearest script of a task, and most of its cost is per call and
//! per workflow touched, not per task — one completion call per task kept Redis near
//! 50 µs per task with one or two workers and above it with four (docs/benchmarks.md, "The
//! fifteenth round"). Why not a timer: a completion that finds nothing on its way is sent at
//! once, so an idle worker waits for nothing; under load the calls group themselves, as
//! many completions per call as arrived during one round trip.
//!
//! How: completions queue per lane (a shard's key prefix and a consumer: a call's keys must
//! share one hash slot, and the fence names one consumer). The first completion of an idle
//! lane spawns its sender, which takes everything queued, sends it (a single completion as
//! a plain `complete` call, several in calls of at most [`MAX_PER_CALL`]), hands each
//! caller its own reply, and goes on until the lane is empty. A call that fails as a whole
//! gives each caller the error when it can be shared (Redis errors, timeouts), and
//! otherwise tells each caller to make its own call: a completion is fenced, so one sent
//! twice is recorded once.

use std::collections::HashMap;
use std::sync::Mutex;

use deadpool_redis::redis::Value;
use tokio::sync::oneshot;

use crate::codes::{self, Returns};
use crate::error::QueueError;
use crate::queue::Queue;
use crate::scripts::Call;
use crate::types::Delivery;

/// The most completions one call carries: the call runs alone in Redis, so a bound keeps
/// it short (64 completions are about a millisecond of Redis time), and more waiting go
/// in several calls sent together.
pub(crate) const MAX_PER_CALL: usize = 64;

/// One completion: a checked delivery and what to record.
#[derive(Debug)]
pub(crate) struct Completion {
    pub delivery: Delivery,
    pub result_json: String,
    pub now_ms: u64,
}

/// What a caller gets back from its lane's sender.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The reply to this completion, the script that gave it (complete.lua or
    /// complete_many.lua), to decode it with, and, for one completion of each call, how
    /// many the call carried ([`crate::Recorded::call_size`]).
    Value(Value, Returns, Option<usize>),
    /// The call carrying it failed with this error.
    Error(QueueError),
    /// The call failed in a way that cannot be handed on: make the call alone.
    Alone,
}

/// Which completions may share a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Lane {
    /// The shard's key prefix (ARGV[1]; every key of a call hashes to its slot).
    prefix: String,
    consumer: String,
}

#[derive(Debug)]
struct Waiting {
    completion: Completion,
    reply: oneshot::Sender<Reply>,
}

/// The lanes of one handle: the completions waiting on each. A lane is in the map exactly
/// while its sender runs (the first completion of an idle lane enters it and spawns the
/// sender, which removes it once it finds it empty).
#[derive(Debug, Default)]
pub(crate) struct Commits {
    lanes: Mutex<HashMap<Lane, Vec<Waiting>>>,
}

impl Commits {
    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<Lane, Vec<Waiting>>> {
        // A panic while holding the lock leaves nothing half-changed: each change is one
        // push, one take or one flag.
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Queue {
    /// Queues a completion on its lane (its workflow's shard, `consumer`) and returns where
    /// its reply arrives; the lane's sender is spawned when none runs.
    pub(crate) fn commit(
        &self,
        consumer: &str,
        completion: Completion,
    ) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        let lane = Lane {
            prefix: self
                .shard_keys(&completion.delivery.workflow_id)
                .prefix()
                .to_owned(),
            consumer: consumer.to_owned(),
        };
        let waiting = Waiting {
            completion,
            reply: tx,
        };
        let start = {
            let mut lanes = self.inner.commits.lanes();
            match lanes.get_mut(&lane) {
                Some(queued) => {
                    queued.push(waiting);
                    false
                }
                None => {
                    lanes.insert(lane.clone(), vec![waiting]);
                    true
                }
            }
        };
        if start {
            // Spawned, not run by the caller: a caller that stops waiting (its task was
            // aborted) must not stop the completions of the others. The guard goes in
            // made: a sender dropped before it first runs (its runtime shutting down)
            // still resets the lane.
            tokio::spawn(send_lane(Idle {
                queue: self.clone(),
                lane,
                armed: true,
            }));
        }
        rx
    }

    async fn send_batch(&self, lane: &Lane, mut batch: Vec<Waiting>) {
        if batch.len() == 1 {
            let w = batch.pop().expect("one");
            let c = &w.completion;
            let call = self.complete_call(&c.delivery, &lane.consumer, &c.result_json, c.now_ms);
            let reply = match self.invoke(&call).await {
                Ok(v) => Reply::Value(v, codes::COMPLETE, Some(1)),
                Err(e) => Reply::Error(e),
            };
            let _ = w.reply.send(reply);
            return;
        }
        // A workflow's completions next to each other: the script reads and writes each
        // run of them once.
        batch.sort_by(|a, b| {
            (a.completion.delivery.workflow_id).cmp(&b.completion.delivery.workflow_id)
        });
        let mut chunks: Vec<Vec<Waiting>> = Vec::new();
        for w in batch {
            match chunks.last_mut() {
                Some(c) if c.len() < MAX_PER_CALL => c.push(w),
                _ => chunks.push(vec![w]),
            }
        }
        let calls: Vec<Call> = chunks
            .iter()
            .map(|c| self.complete_many_call(lane, c))
            .collect();
        let replies = futures::future::join_all(calls.iter().map(|c| self.invoke(c))).await;
        for (chunk, reply) in chunks.into_iter().zip(replies) {
            hand_out(chunk, reply);
        }
    }

    fn complete_many_call(&self, lane: &Lane, chunk: &[Waiting]) -> Call {
        let mut inv = self.inner.scripts.complete_many.prepare_invoke();
        inv.arg(&lane.prefix)
            .arg(&self.inner.cfg.group)
            .arg(&lane.consumer)
            .arg(self.inner.cfg.events_maxlen);
        for w in chunk {
            let (c, d) = (&w.completion, &w.completion.delivery);
            inv.key(self.shard_keys(&d.workflow_id).workflow(&d.workflow_id))
                .key(&d.stream)
                .arg(&d.entry_id)
                .arg(d.deliveries)
                .arg(&c.result_json)
                .arg(c.now_ms)
                .arg(&d.workflow_id)
                .arg(d.task);
        }
        inv
    }
}

/// A lane's sender: sends what is queued until nothing is.
async fn send_lane(mut idle: Idle) {
    loop {
        let batch = {
            let mut lanes = idle.queue.inner.commits.lanes();
            match lanes.get_mut(&idle.lane) {
                Some(queued) if !queued.is_empty() => std::mem::take(queued),
                _ => {
                    // Removed, not kept empty: consumer names come and go with workers, and
                    // the next completion finds no lane and starts a sender.
                    lanes.remove(&idle.lane);
                    idle.armed = false;
                    return;
                }
            }
        };
        idle.queue.send_batch(&idle.lane, batch).await;
    }
}

/// Gives each completion of a call its reply: its element of the script's array, the
/// call's error where it can be shared, or [`Reply::Alone`].
fn hand_out(chunk: Vec<Waiting>, reply: Result<Value, QueueError>) {
    match reply {
        Ok(Value::Array(items)) if items.len() == chunk.len() => {
            let mut size = Some(chunk.len());
            for (w, v) in chunk.into_iter().zip(items) {
                // The call is counted once, by the first caller still waiting for it.
                match w.reply.send(Reply::Value(v, codes::COMPLETE_MANY, size)) {
                    Ok(()) => size = None,
                    Err(Reply::Value(_, _, back)) => size = back,
                    Err(_) => {}
                }
            }
        }
        Ok(other) => {
            // complete_many.lua always answers one reply per completion: anything else is
            // a script and a caller that disagree. The call ran, so sending each again
            // would only meet its own fence: each caller gets the error.
            let detail = format!(
                "expected {} replies, got {}",
                chunk.len(),
                match &other {
                    Value::Array(items) => format!("{} replies", items.len()),
                    v => format!("{v:?}"),
                }
            );
            for w in chunk {
                let _ = w.reply.send(Reply::Error(QueueError::unexpected(
                    codes::COMPLETE_MANY.script,
                    detail.clone(),
                )));
            }
        }
        Err(e) => {
            for w in chunk {
                let _ = w.reply.send(match shared(&e) {
                    Some(e) => Reply::Error(e),
                    None => Reply::Alone,
                });
            }
        }
    }
}

/// The error of a call for each completion it carried, where that error can be copied.
fn shared(e: &QueueError) -> Option<QueueError> {
    match e {
        QueueError::Redis(e) => Some(QueueError::Redis(e.clone())),
        QueueError::Timeout(d) => Some(QueueError::Timeout(*d)),
        QueueError::OutOfMemory => Some(QueueError::OutOfMemory),
        QueueError::Auth(s) => Some(QueueError::Auth(s.clone())),
        QueueError::NoPermission(d) => Some(QueueError::NoPermission(d.clone())),
        _ => None,
    }
}

/// A lane's sender, which resets the lane when it stops before emptying it (its runtime
/// shut down, before or while it ran): the completions still queued are told to go alone,
/// and the next completion starts a new sender.
struct Idle {
    queue: Queue,
    lane: Lane,
    armed: bool,
}

impl Drop for Idle {
    fn drop(&mut self) {
        if self.armed {
            let mut lanes = self.queue.inner.commits.lanes();
            if let Some(queued) = lanes.remove(&self.lane) {
                for w in queued {
                    let _ = w.reply.send(Reply::Alone);
                }
            }
        }
    }
}
