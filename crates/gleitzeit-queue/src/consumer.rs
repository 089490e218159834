//! [`Consumer`]: one worker's reader of ready streams.
//!
//! Blocking reads hold their connection for the whole block time, so a consumer blocks on
//! a connection of its own; the read script, which never blocks, goes over the queue's
//! shared connection. After a connection error or timeout the connection is dropped and
//! the next read opens a new one, so a consumer survives Redis restarts.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::redis::{self, Cmd, Value};

use crate::connection::Conn;

use crate::codes;
use crate::error::QueueError;
use crate::keys::StreamRef;
use crate::queue::{begin_outcome, validate_consumer, Queue};
use crate::reply;
use crate::scripts::Call;
use crate::types::{BeginOutcome, Delivery, Taken};

/// What a `read.lua` call does besides reading (see its header).
#[derive(Clone, Copy)]
enum ReadMode<'a> {
    /// Read; an empty read returns each stream's newest id (for an `XREAD` wait).
    Tails,
    /// Read; no tails (the caller waits in the group).
    NoTails,
    /// Read nothing: begin these entries, delivered by this consumer's group wait.
    Begin(&'a [Delivery]),
}

/// The slots of a reader that waits with [`Consumer::take_or_wait_with`].
pub trait WaitSlots {
    /// The most slots this reader may keep while it waits (its fair share of the slots it
    /// shares with other readers): a wait in the consumer group keeps one per stream, so it
    /// is used only when the streams are no more than this.
    fn share(&self) -> usize;
    /// Before the wait: give back all slots but `keep` (at least one).
    fn release(&self, keep: usize);
    /// After the wait: take the slots free now; how many the reader holds in all.
    fn regain(&self) -> usize;
}

/// A named member of the consumer group, reading with its own connection.
pub struct Consumer {
    queue: Queue,
    name: String,
    conn: Option<Conn>,
    /// Which shard a read over several shards starts with (advanced by each such read, so
    /// no shard is always served last).
    turn: usize,
    /// The last group wait found no backlog (it ran out, or took less than it could): the
    /// next take waits in the group at once, without a read script call first (a group
    /// wait returns at once when entries are there).
    idle: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Queue {
    /// A consumer with its own (non-pooled) connection for blocking reads. `name` must be
    /// unique per process (`<hostname>-<pid>-<random>`).
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] for an empty name or one with control characters.
    pub fn consumer(&self, name: &str) -> Result<Consumer, QueueError> {
        validate_consumer(name)?;
        Ok(Consumer::new(self.clone(), name.to_owned()))
    }
}

impl Consumer {
    pub(crate) fn new(queue: Queue, name: String) -> Consumer {
        Consumer {
            queue,
            name,
            conn: None,
            turn: 0,
            idle: false,
        }
    }

    /// The consumer name used in the group.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn connection(&mut self) -> Result<Conn, QueueError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = self.queue.dedicated().await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs a command bounded by `budget`; drops the connection when it may be unusable.
    async fn run(&mut self, cmd: &Cmd, budget: Duration) -> Result<Value, QueueError> {
        let mut conn = self.connection().await?;
        let res = match tokio::time::timeout(budget, cmd.query_async::<Value>(&mut conn)).await {
            Ok(res) => res.map_err(QueueError::from),
            Err(_) => Err(QueueError::Timeout(budget)),
        };
        if let Err(err) = &res {
            if err.breaks_connection() {
                self.conn = None;
            }
        }
        res
    }

    /// A script call (the read script never blocks): it goes over the queue's shared
    /// connection, where it travels with the other calls of the process, bounded by
    /// `budget`.
    async fn run_script(&mut self, inv: &Call, budget: Duration) -> Result<Value, QueueError> {
        match tokio::time::timeout(budget, self.queue.invoke(inv)).await {
            Ok(res) => res,
            Err(_) => Err(QueueError::Timeout(budget)),
        }
    }

    fn budget(&self, block: Duration) -> Duration {
        block + self.queue.inner.cfg.response_timeout
    }

    /// One `XREADGROUP GROUP <group> <consumer> COUNT <count> [BLOCK <ms>] STREAMS ... > ...`
    /// over `streams` (no `BLOCK` when `block` is zero). A missing group is created at id 0
    /// (with `MKSTREAM`) and the read repeated, so nothing queued before it is lost.
    ///
    /// Redis applies `COUNT` per stream: up to `count` entries per stream can come back.
    /// Use [`Consumer::read_prioritised`] when the total must stay within `count`. On a
    /// cluster the streams must be in one slot (one shard).
    ///
    /// # Errors
    /// Redis errors (retryable when connection-related) or an unexpected reply.
    pub async fn read(
        &mut self,
        streams: &[StreamRef],
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        if streams.is_empty() || count == 0 {
            return Ok(Vec::new());
        }
        let group = self.queue.inner.cfg.group.clone();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count);
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(millis(block));
        }
        cmd.arg("STREAMS");
        for s in streams {
            cmd.arg(&s.key);
        }
        for _ in streams {
            cmd.arg(">");
        }
        let budget = self.budget(block);
        let v = match self.run(&cmd, budget).await {
            Err(QueueError::Redis(err)) if err.code() == Some("NOGROUP") => {
                self.create_groups(streams).await?;
                self.run(&cmd, budget).await?
            }
            other => other?,
        };
        let by_key: HashMap<&str, &StreamRef> =
            streams.iter().map(|s| (s.key.as_str(), s)).collect();
        let mut out = Vec::new();
        let mut malformed: Vec<(String, String)> = Vec::new();
        for (key, entries) in stream_replies(&v)? {
            let stream = by_key.get(key.as_str()).ok_or_else(|| {
                QueueError::unexpected("read", format!("reply for unknown stream {key:?}"))
            })?;
            for entry in reply::array_or_nil("read", entries)? {
                let (id, fields) = entry_parts(entry)?;
                match task_ref(&fields) {
                    Some((workflow_id, task)) => out.push(Delivery {
                        stream: stream.key.clone(),
                        capability: stream.capability.clone(),
                        priority: stream.priority,
                        entry_id: id,
                        workflow_id,
                        task,
                        deliveries: 1,
                    }),
                    None => malformed.push((stream.key.clone(), id)),
                }
            }
        }
        if !malformed.is_empty() {
            self.drop_malformed(&group, &malformed).await?;
        }
        Ok(out)
    }

    /// Reads at most `count` new entries in total, high-priority streams first: the
    /// streams are read in priority order (high, then normal, then low; the given order
    /// within one priority) without blocking, a later stream only for what the earlier
    /// ones could not fill, all in one atomic script call. Only when every stream was
    /// empty does it wait (up to `block`) for the next entry to be added to any of them,
    /// and then reads the streams that got one, without blocking; when another consumer
    /// was faster it waits again, until `block` has passed (so it can still come back
    /// empty).
    ///
    /// Streams of several shards are read one script call per shard (a script stays in one
    /// slot), starting with another shard each time; the wait then goes to each shard in
    /// turn for an equal part of `block`. A worker runs a reader per shard instead.
    ///
    /// # Errors
    /// Redis errors (retryable when connection-related) or an unexpected reply.
    pub async fn read_prioritised(
        &mut self,
        streams: &[StreamRef],
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let read = self.prioritised(streams, count, block, None, None).await?;
        Ok(read.into_iter().map(|(d, _)| d).collect())
    }

    /// Tells the consumer that entries may have arrived since its last wait (its caller let
    /// them gather: the worker's linger), so the next take reads them with one script call
    /// before it would wait in the group, where each entry would wake it alone.
    pub fn expect_entries(&mut self) {
        self.idle = false;
    }

    /// [`Consumer::read_prioritised`], and each entry begun in the same script call as it
    /// is delivered (what [`Queue::begin`] does, without its fence: a fresh delivery is
    /// this consumer's alone), at the time `now_ms()` gives when the script is called. A
    /// task that can no longer run comes back as [`BeginOutcome::NotRunnable`], its entry
    /// acknowledged and deleted; never [`BeginOutcome::Stale`].
    ///
    /// With at least one entry of `count` per stream, a take that finds every stream empty
    /// waits in the consumer group instead of with `XREAD` (see `wait_in_group`): Redis
    /// hands each new entry to one waiting consumer, so idle workers are not all woken for
    /// it. A take whose previous wait found no backlog starts with that wait.
    ///
    /// # Errors
    /// As [`Consumer::read_prioritised`]. When the reply is lost (a connection error after
    /// Redis ran the script), the entries stay pending for this consumer with their tasks
    /// running, and are reclaimed after the claim idle time like those of a crashed worker.
    pub async fn take(
        &mut self,
        streams: &[StreamRef],
        count: usize,
        block: Duration,
        now_ms: impl Fn() -> u64 + Sync,
    ) -> Result<Vec<Taken>, QueueError> {
        let read = self
            .prioritised(streams, count, block, Some(&now_ms), None)
            .await?;
        Self::taken(read)
    }

    /// [`Consumer::take`] for a reader that must not hold all its slots while it waits:
    /// when the first read finds nothing, `slots.release(keep)` is called before the wait
    /// and `slots.regain()` after it. With a slot for every stream (`count` at least the
    /// number of streams, and the streams no more than `slots.share()`) the reader waits in
    /// the consumer group like [`Consumer::take`], keeping one slot per stream (each stream
    /// may deliver one entry), so of several idle readers only one wakes per new entry;
    /// otherwise it keeps one slot, waits with `XREAD` and then reads as many entries as
    /// `regain` says it holds slots for. One read script call fewer per wait than a
    /// non-blocking take followed by a blocking one.
    ///
    /// # Errors
    /// As [`Consumer::take`].
    pub async fn take_or_wait_with(
        &mut self,
        streams: &[StreamRef],
        count: usize,
        block: Duration,
        now_ms: impl Fn() -> u64 + Sync,
        slots: &(dyn WaitSlots + Sync),
    ) -> Result<Vec<Taken>, QueueError> {
        let read = self
            .prioritised(streams, count, block, Some(&now_ms), Some(slots))
            .await?;
        Self::taken(read)
    }

    fn taken(read: Vec<(Delivery, Option<BeginOutcome>)>) -> Result<Vec<Taken>, QueueError> {
        read.into_iter()
            .map(|(delivery, begun)| {
                let begun = begun
                    .ok_or_else(|| QueueError::unexpected("read", "an entry was not begun"))?;
                Ok(Taken { delivery, begun })
            })
            .collect()
    }

    async fn prioritised(
        &mut self,
        streams: &[StreamRef],
        count: usize,
        block: Duration,
        begin: Option<&(dyn Fn() -> u64 + Sync)>,
        slots: Option<&(dyn WaitSlots + Sync)>,
    ) -> Result<Vec<(Delivery, Option<BeginOutcome>)>, QueueError> {
        if streams.is_empty() || count == 0 {
            return Ok(Vec::new());
        }
        let groups = self.by_shard(streams)?;
        if groups.len() == 1 {
            return self
                .prioritised_in_shard(streams, count, block, begin, slots)
                .await;
        }
        // Streams of several shards: one script call per shard (a script stays in one
        // slot), starting with a different shard each time; each shard gets what the ones
        // before it left of `count`. Only when all were empty does it wait, on each shard in
        // turn for an equal part of `block` (a wait, too, is one slot's command).
        let start = self.turn % groups.len();
        self.turn = self.turn.wrapping_add(1);
        let order: Vec<&Vec<StreamRef>> = groups
            .iter()
            .cycle()
            .skip(start)
            .take(groups.len())
            .collect();
        let mut out = Vec::new();
        for group in &order {
            let left = count - out.len();
            if left == 0 {
                break;
            }
            out.extend(
                self.prioritised_in_shard(group, left, Duration::ZERO, begin, None)
                    .await?,
            );
        }
        if !out.is_empty() || block.is_zero() {
            return Ok(out);
        }
        let part = (block / groups.len() as u32).max(Duration::from_millis(1));
        for group in &order {
            let found = self
                .prioritised_in_shard(group, count, part, begin, None)
                .await?;
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Ok(out)
    }

    /// `streams` grouped by the shard they belong to, in the order the shards first appear.
    fn by_shard(&self, streams: &[StreamRef]) -> Result<Vec<Vec<StreamRef>>, QueueError> {
        let mut groups: Vec<(String, Vec<StreamRef>)> = Vec::new();
        for s in streams {
            let prefix = self
                .queue
                .shard_of_key(&s.key)
                .ok_or_else(|| {
                    QueueError::InvalidArgument(format!(
                        "stream {:?} is in none of the namespace's shards",
                        s.key
                    ))
                })?
                .prefix();
            match groups.iter_mut().find(|(p, _)| p == prefix) {
                Some((_, g)) => g.push(s.clone()),
                None => groups.push((prefix.to_owned(), vec![s.clone()])),
            }
        }
        Ok(groups.into_iter().map(|(_, g)| g).collect())
    }

    /// [`Consumer::prioritised`] over the streams of one shard.
    async fn prioritised_in_shard(
        &mut self,
        streams: &[StreamRef],
        count: usize,
        block: Duration,
        begin: Option<&(dyn Fn() -> u64 + Sync)>,
        slots: Option<&(dyn WaitSlots + Sync)>,
    ) -> Result<Vec<(Delivery, Option<BeginOutcome>)>, QueueError> {
        let mut ordered: Vec<&StreamRef> = streams.iter().collect();
        ordered.sort_by_key(|s| s.priority);
        // A taker that holds a slot for at least one entry of every stream waits in the group
        // (see `wait_in_group`); otherwise it waits with `XREAD` after the tails. A reader
        // that gives slots back while it waits keeps one per stream for a group wait, which
        // it does only when that is within its share (else it would hoard the slots other
        // readers need).
        let fits = count >= ordered.len() && slots.is_none_or(|s| ordered.len() <= s.share());
        let in_group = match begin {
            Some(now) if fits && !block.is_zero() => Some(now),
            _ => None,
        };
        if let Some(now) = in_group {
            if self.idle {
                return self.wait_in_group(&ordered, count, block, now, slots).await;
            }
        }
        // The tails serve only an `XREAD` wait: none after a group wait, none for a take that
        // may not wait (a sharded reader's first pass over its shards).
        let mode = if in_group.is_some() || block.is_zero() {
            ReadMode::NoTails
        } else {
            ReadMode::Tails
        };
        let (found, mut tails) = self
            .read_script(&ordered, count, begin.map(|f| f()), mode)
            .await?;
        if !found.is_empty() || block.is_zero() {
            return Ok(found);
        }
        if let Some(now) = in_group {
            return self.wait_in_group(&ordered, count, block, now, slots).await;
        }
        // Wait for anything newer than each stream's newest entry: an entry added after the
        // script looked wakes this at once, so none is missed between the two calls. Then
        // read again only the streams that woke the wait (in priority order): the others
        // had nothing new when it returned, and an entry added to them since is read by the
        // caller's next call. When several workers wait on the same streams, every one of
        // them wakes for each new entry and all but one read nothing; such a reader waits
        // again, after the newest ids its read saw, until `block` has passed, instead of
        // returning to a read of every stream. A wait that ran out (nil) added nothing: no
        // read follows it.
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(millis(left))
                .arg("STREAMS");
            for s in &ordered {
                cmd.arg(&s.key);
            }
            for t in &tails {
                cmd.arg(t);
            }
            if let Some(s) = slots {
                s.release(1);
            }
            let waited = self.run(&cmd, self.budget(left)).await;
            let count = slots.map_or(count, |s| s.regain());
            let woke = waited?;
            let named = stream_replies(&woke)?;
            let woken: Vec<usize> = (0..ordered.len())
                .filter(|&k| named.iter().any(|(key, _)| *key == ordered[k].key))
                .collect();
            if woken.is_empty() {
                return Ok(Vec::new());
            }
            let streams: Vec<&StreamRef> = woken.iter().map(|&k| ordered[k]).collect();
            let (found, seen) = self
                .read_script(&streams, count, begin.map(|f| f()), ReadMode::Tails)
                .await?;
            if !found.is_empty() {
                return Ok(found);
            }
            // Another consumer was faster: wait after what this read saw.
            for (&k, tail) in woken.iter().zip(seen) {
                tails[k] = tail;
            }
        }
    }

    /// Waits up to `block` in the consumer group (`XREADGROUP ... BLOCK`, which returns at
    /// once when entries are there) for entries of `ordered` (one shard's streams, in
    /// priority order), then begins what it was delivered in one `read.lua` call. Redis
    /// hands a new entry to one waiting consumer, so of several idle workers only one wakes
    /// for it, where an `XREAD` wait wakes them all and all but one read nothing. `COUNT`
    /// applies per stream, so each stream gets `count / streams` (the caller holds at least
    /// one slot per stream): the total stays within `count` even when several streams had
    /// entries. A reader with `slots` gives back all but one slot per stream for the wait
    /// (each stream may deliver one entry) and regains the free ones after it. An entry a
    /// reclaim took over since the wait returned is left out (the script fences each one).
    async fn wait_in_group(
        &mut self,
        ordered: &[&StreamRef],
        count: usize,
        block: Duration,
        now: &(dyn Fn() -> u64 + Sync),
        slots: Option<&(dyn WaitSlots + Sync)>,
    ) -> Result<Vec<(Delivery, Option<BeginOutcome>)>, QueueError> {
        let streams: Vec<StreamRef> = ordered.iter().map(|s| (*s).clone()).collect();
        let per_stream = match slots {
            Some(_) => 1,
            None => (count / ordered.len()).max(1),
        };
        // Until the wait returns, the next take starts with a read script call (an error
        // here may have left entries unread).
        self.idle = false;
        if let Some(s) = slots {
            s.release(ordered.len());
        }
        let waited = self.read(&streams, per_stream, block).await;
        if let Some(s) = slots {
            s.regain();
        }
        let mut delivered = waited?;
        // Fewer entries than one stream's batch: no backlog was seen.
        self.idle = delivered.len() < per_stream;
        if delivered.is_empty() {
            return Ok(Vec::new());
        }
        // High-priority streams first, as a read script call returns them.
        delivered.sort_by_key(|d| d.priority);
        let (found, _) = self
            .read_script(
                ordered,
                delivered.len(),
                Some(now()),
                ReadMode::Begin(&delivered),
            )
            .await?;
        Ok(found)
    }

    /// One call of `read.lua`; with `begin_at` (now, ms) each entry is begun too. `mode`
    /// says whether an empty read returns the streams' tails (for an `XREAD` wait), or
    /// whether the call begins entries a group wait delivered instead of reading.
    async fn read_script(
        &mut self,
        streams: &[&StreamRef],
        count: usize,
        begin_at: Option<u64>,
        mode: ReadMode<'_>,
    ) -> Result<(Vec<(Delivery, Option<BeginOutcome>)>, Vec<String>), QueueError> {
        const CTX: &str = "read";
        let queue = self.queue.clone();
        let inner = &queue.inner;
        // The streams are one shard's (`prioritised` groups them): its prefix.
        let prefix = streams
            .first()
            .and_then(|s| queue.shard_of_key(&s.key))
            .unwrap_or(&inner.keys)
            .prefix();
        let mut inv = inner.scripts.read.prepare_invoke();
        inv.arg(prefix)
            .arg(&inner.cfg.group)
            .arg(&self.name)
            .arg(count)
            .arg(begin_at.map(|t| t.to_string()).unwrap_or_default())
            .arg(inner.cfg.events_maxlen);
        match mode {
            ReadMode::Tails => {
                inv.arg("");
            }
            ReadMode::NoTails => {
                inv.arg("group");
            }
            ReadMode::Begin(delivered) => {
                inv.arg("begin");
                for d in delivered {
                    let pos = streams
                        .iter()
                        .position(|s| s.key == d.stream)
                        .ok_or_else(|| {
                            QueueError::unexpected(
                                CTX,
                                format!("delivered entry of unknown stream {:?}", d.stream),
                            )
                        })?;
                    inv.arg(pos + 1)
                        .arg(&d.entry_id)
                        .arg(&d.workflow_id)
                        .arg(d.task);
                }
            }
        }
        for s in streams {
            inv.key(&s.key);
        }
        let v = self.run_script(&inv, inner.cfg.response_timeout).await?;
        let parts = reply::array(CTX, &v)?;
        let [found, tails] = parts else {
            return Err(QueueError::unexpected(CTX, format!("{parts:?}")));
        };
        let found = reply::array_or_nil(CTX, found)?;
        // Per entry: position, id, workflow, task, and the begin reply when beginning.
        let width = if begin_at.is_some() { 5 } else { 4 };
        if found.len() % width != 0 {
            return Err(QueueError::unexpected(CTX, format!("{found:?}")));
        }
        let mut out = Vec::with_capacity(found.len() / width);
        for c in found.chunks(width) {
            let pos = reply::u64_of(CTX, &c[0])? as usize;
            let stream = pos
                .checked_sub(1)
                .and_then(|i| streams.get(i))
                .ok_or_else(|| QueueError::unexpected(CTX, format!("stream position {pos}")))?;
            let delivery = Delivery {
                stream: stream.key.clone(),
                capability: stream.capability.clone(),
                priority: stream.priority,
                entry_id: reply::string(CTX, &c[1])?,
                workflow_id: reply::string(CTX, &c[2])?,
                task: reply::u32_of(CTX, &c[3])?,
                deliveries: 1,
            };
            let begun = match c.get(4) {
                Some(b) => Some(begin_outcome(codes::READ, reply::array(CTX, b)?)?),
                None => None,
            };
            out.push((delivery, begun));
        }
        let tails = reply::array_or_nil(CTX, tails)?
            .iter()
            .map(|t| reply::string(CTX, t))
            .collect::<Result<Vec<_>, _>>()?;
        // An empty read names each stream's newest id, one per stream given, in order: the
        // waits pair them with the streams by position.
        if out.is_empty() && matches!(mode, ReadMode::Tails) && tails.len() != streams.len() {
            return Err(QueueError::unexpected(
                CTX,
                format!("{} tails for {} streams", tails.len(), streams.len()),
            ));
        }
        Ok((out, tails))
    }

    async fn create_groups(&mut self, streams: &[StreamRef]) -> Result<(), QueueError> {
        let group = self.queue.inner.cfg.group.clone();
        let budget = self.queue.inner.cfg.response_timeout;
        for s in streams {
            let mut cmd = redis::cmd("XGROUP");
            cmd.arg("CREATE")
                .arg(&s.key)
                .arg(&group)
                .arg("0")
                .arg("MKSTREAM");
            match self.run(&cmd, budget).await {
                Ok(_) => {}
                Err(QueueError::Redis(err)) if err.code() == Some("BUSYGROUP") => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Entries that are not task references can never be processed: acknowledge and delete
    /// them so they do not come back through reclaim forever.
    async fn drop_malformed(
        &mut self,
        group: &str,
        entries: &[(String, String)],
    ) -> Result<(), QueueError> {
        let budget = self.queue.inner.cfg.response_timeout;
        for (stream, id) in entries {
            tracing::warn!(
                stream,
                entry = id,
                "dropping a stream entry that is not a task reference"
            );
            let mut ack = redis::cmd("XACK");
            ack.arg(stream).arg(group).arg(id);
            self.run(&ack, budget).await?;
            let mut del = redis::cmd("XDEL");
            del.arg(stream).arg(id);
            self.run(&del, budget).await?;
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `(stream key, entries)` pairs of an XREAD/XREADGROUP reply (RESP2 array or RESP3 map).
fn stream_replies(v: &Value) -> Result<Vec<(String, &Value)>, QueueError> {
    const CTX: &str = "read";
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| Ok((reply::string(CTX, k)?, v)))
            .collect(),
        other => reply::array(CTX, other)?
            .iter()
            .map(|s| match reply::array(CTX, s)? {
                [k, v] => Ok((reply::string(CTX, k)?, v)),
                items => Err(QueueError::unexpected(CTX, format!("{items:?}"))),
            })
            .collect(),
    }
}

/// `(id, fields)` of one stream entry.
fn entry_parts(v: &Value) -> Result<(String, Vec<(String, String)>), QueueError> {
    const CTX: &str = "read";
    match reply::array(CTX, v)? {
        [id, fields] => Ok((reply::string(CTX, id)?, reply::field_pairs(CTX, fields)?)),
        items => Err(QueueError::unexpected(CTX, format!("{items:?}"))),
    }
}

/// The `wf` and `t` fields of a ready-stream entry, if it is one.
fn task_ref(fields: &[(String, String)]) -> Option<(String, u32)> {
    let wf = fields.iter().find(|(k, _)| k == "wf")?.1.clone();
    let t = fields.iter().find(|(k, _)| k == "t")?.1.parse().ok()?;
    Some((wf, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ref_needs_both_fields() {
        let f = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            task_ref(&f(&[("wf", "abc"), ("t", "3")])),
            Some(("abc".to_owned(), 3))
        );
        assert_eq!(task_ref(&f(&[("wf", "abc")])), None);
        assert_eq!(task_ref(&f(&[("wf", "abc"), ("t", "x")])), None);
    }

    /// An entry a group wait delivered but another consumer took over before the begin
    /// call (a reclaim) is left out, its task untouched; the others are begun.
    #[tokio::test]
    async fn the_begin_of_delivered_entries_is_fenced() {
        use crate::types::{test_queue, test_request, test_statuses, test_task};

        let (_redis, q) = test_queue().await;
        let wf = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let tasks = vec![test_task("a", &[], &[]), test_task("b", &[], &[])];
        q.submit(&test_request(wf, crate::POLICY_FAIL_FAST, tasks))
            .await
            .unwrap();
        let streams = q.keys().stream_refs("llm:m").to_vec();
        let mut c = q.consumer("w1").unwrap();
        let delivered = c.read(&streams, 10, Duration::ZERO).await.unwrap();
        assert_eq!(delivered.len(), 2);
        // Another consumer reclaims the first entry before the begin call.
        let stream = streams
            .iter()
            .find(|s| s.key == delivered[0].stream)
            .unwrap();
        let reclaimed = q.reclaim("w2", stream, Duration::ZERO, 1).await.unwrap();
        assert_eq!(reclaimed[0].entry_id, delivered[0].entry_id);

        let ordered: Vec<&StreamRef> = streams.iter().collect();
        let (found, _) = c
            .read_script(&ordered, 2, Some(2_000), ReadMode::Begin(&delivered))
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.task, 1);
        assert!(matches!(found[0].1, Some(BeginOutcome::Run(_))));
        assert_eq!(test_statuses(&q, wf).await, ["ready", "running"]);
    }

    #[test]
    fn block_millis_never_zero() {
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }
}
