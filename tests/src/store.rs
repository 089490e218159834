//! Direct inspection of a deployment's keys in Redis, independent of the code under test's
//! own queries: hashes, events, dead letters, pending entries, whole-database snapshots, and
//! waiting for a workflow to end by following its events stream with blocking reads.

use std::collections::{BTreeMap, HashMap};

use std::time::Duration;

use deadpool_redis::redis::{self, FromRedisValue};
use gleitzeit_queue::keys::{split_task_field, unpacked_task_fields, LAYOUT_FIELD, LAYOUT_PACKED};
use gleitzeit_queue::{shard_of, Conn, Connector, Keys, Priority, RedisTarget, Timeouts};
use serde_json::Value;

use crate::HANG_GUARD;

/// One stream entry: its id and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stream entry id.
    pub id: String,
    /// Field → value.
    pub fields: HashMap<String, String>,
}

impl Entry {
    /// A field's value, or `""`.
    pub fn get(&self, field: &str) -> &str {
        self.fields.get(field).map(String::as_str).unwrap_or("")
    }
}

/// A pending entry of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Stream entry id.
    pub id: String,
    /// Consumer that holds it.
    pub consumer: String,
    /// Times it was delivered.
    pub deliveries: u64,
}

/// Statuses after which a workflow never changes again.
pub const WORKFLOW_TERMINAL: [&str; 3] = ["completed", "failed", "cancelled"];

/// A connection to one deployment (namespace) in one Redis, or in a Redis Cluster (a
/// `redis+cluster://` URL). Per-workflow keys are read in the workflow's shard; the other
/// per-shard keys (dead letters, streams) are the home keys', so those readers are for
/// unsharded namespaces.
pub struct Store {
    connector: Connector,
    conn: Conn,
    keys: Keys,
    /// The keys of each shard (the home keys alone when unsharded).
    shards: Vec<Keys>,
    group: String,
}

/// Bound on connecting and on each reply of the store's own connection.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

fn pairs(flat: Vec<String>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        map.insert(k, v);
    }
    map
}

/// A workflow hash split into the workflow's own fields and each task's fields (by index,
/// named without their `<index>.` prefix, the state field taken apart into its named parts):
/// the tasks of a workflow live in its hash, as fields `<index>.<field>`.
fn split_workflow_hash(
    hash: HashMap<String, String>,
) -> (
    HashMap<String, String>,
    BTreeMap<u32, HashMap<String, String>>,
) {
    let mut own = HashMap::new();
    let mut tasks: BTreeMap<u32, HashMap<String, String>> = BTreeMap::new();
    for (name, value) in hash {
        match split_task_field(&name) {
            Some((index, field)) => {
                let task = tasks.entry(index).or_default();
                // A packed field (the state; in the packed layout the definition and the
                // children) stands for its parts, named as the task's other fields.
                match unpacked_task_fields(field, &value) {
                    Some(parts) => {
                        for (f, v) in parts {
                            task.insert(f.to_owned(), v);
                        }
                    }
                    None => {
                        task.insert(field.to_owned(), value);
                    }
                }
            }
            None => {
                own.insert(name, value);
            }
        }
    }
    // A packed task without children has no children field; the other layouts store "".
    if own.get(LAYOUT_FIELD).map(String::as_str) == Some(LAYOUT_PACKED) {
        for task in tasks.values_mut() {
            task.entry("children".to_owned()).or_default();
        }
    }
    (own, tasks)
}

fn entries(raw: Vec<(String, Vec<String>)>) -> Vec<Entry> {
    raw.into_iter()
        .map(|(id, flat)| Entry {
            id,
            fields: pairs(flat),
        })
        .collect()
}

impl Store {
    /// Connects to `url` for namespace `namespace` (consumer group `workers`).
    pub async fn connect(url: &str, namespace: &str) -> Store {
        Store::connect_to(&RedisTarget::new(url), namespace).await
    }

    /// [`Store::connect`] to a target that may carry TLS files (a `rediss://` deployment).
    pub async fn connect_to(target: &RedisTarget, namespace: &str) -> Store {
        let connector = target
            .connector(STORE_TIMEOUT)
            .expect("redis url and TLS files");
        let conn = connector
            .connect(Timeouts {
                connect: STORE_TIMEOUT,
                response: Some(STORE_TIMEOUT),
            })
            .await
            .expect("connecting to redis");
        let keys = Keys::new(namespace).expect("valid namespace");
        // The shard count the namespace records (one when none).
        let mut c = conn.clone();
        let n: Option<u16> = redis::cmd("GET")
            .arg(keys.shard_count())
            .query_async(&mut c)
            .await
            .expect("reading the shard count");
        let n = n.unwrap_or(1);
        Store {
            connector,
            conn,
            shards: (0..n).map(|k| keys.shard(k, n)).collect(),
            keys,
            group: "workers".to_owned(),
        }
    }

    /// The deployment's home key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The keys of the shard workflow `id` lives in.
    pub fn shard_keys(&self, id: &str) -> &Keys {
        &self.shards[usize::from(shard_of(id, self.shards.len() as u16))]
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("redis command {:?} failed: {e}", cmd_name(cmd)))
    }

    /// Number of keys in the database.
    pub async fn dbsize(&self) -> u64 {
        self.query(&redis::cmd("DBSIZE")).await
    }

    /// Every key in the database, sorted.
    pub async fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.query(redis::cmd("KEYS").arg("*")).await;
        keys.sort();
        keys
    }

    /// A hash's fields (empty when the key does not exist).
    pub async fn hash(&self, key: &str) -> HashMap<String, String> {
        self.query(redis::cmd("HGETALL").arg(key)).await
    }

    /// The workflow hash as stored: the workflow's own fields and its tasks' `<i>.<field>`.
    pub async fn workflow_hash(&self, id: &str) -> HashMap<String, String> {
        self.hash(&self.shard_keys(id).workflow(id)).await
    }

    /// The workflow's own fields (its tasks' fields left out; see [`Store::tasks`]).
    pub async fn workflow(&self, id: &str) -> HashMap<String, String> {
        split_workflow_hash(self.workflow_hash(id).await).0
    }

    /// The fields of task `index` of workflow `id`, named without their `<index>.` prefix
    /// (empty when the workflow or the task does not exist).
    pub async fn task(&self, id: &str, index: u32) -> HashMap<String, String> {
        split_workflow_hash(self.workflow_hash(id).await)
            .1
            .remove(&index)
            .unwrap_or_default()
    }

    /// Every task's fields (as [`Store::task`]), in index order (the workflow's `total` says
    /// how many), from one read of the workflow hash.
    pub async fn tasks(&self, id: &str) -> Vec<HashMap<String, String>> {
        let (own, mut tasks) = split_workflow_hash(self.workflow_hash(id).await);
        let total: u32 = own.get("total").and_then(|t| t.parse().ok()).unwrap_or(0);
        (0..total)
            .map(|i| tasks.remove(&i).unwrap_or_default())
            .collect()
    }

    /// The fields of the task named `name`.
    pub async fn task_named(&self, id: &str, name: &str) -> HashMap<String, String> {
        self.tasks(id)
            .await
            .into_iter()
            .find(|t| t.get("name").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("workflow {id} has no task {name:?}"))
    }

    /// A workflow counter (`total`, `open`, `completed`, `failed`, `skipped`, `cancelled`).
    pub async fn counter(&self, id: &str, field: &str) -> u64 {
        self.workflow(id)
            .await
            .get(field)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("workflow {id} has no numeric {field}"))
    }

    /// How many `completed` events each task has (task name → count).
    pub async fn completions(&self, id: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for e in self.events(id).await {
            if e.get("kind") == "task" && e.get("status") == "completed" {
                *out.entry(e.get("task").to_owned()).or_insert(0) += 1;
            }
        }
        out
    }

    /// The events of one task, oldest first.
    pub async fn task_events(&self, id: &str, name: &str) -> Vec<Entry> {
        self.events(id)
            .await
            .into_iter()
            .filter(|e| e.get("kind") == "task" && e.get("task") == name)
            .collect()
    }

    /// The stored result of the task named `name` (its `result` JSON field).
    pub async fn result(&self, id: &str, name: &str) -> Value {
        let task = self.task_named(id, name).await;
        let raw = task
            .get("result")
            .unwrap_or_else(|| panic!("task {name:?} of {id} has no result: {task:?}"));
        serde_json::from_str(raw)
            .unwrap_or_else(|e| panic!("result of {name:?} is not JSON ({e}): {raw}"))
    }

    /// The result value of a text task (`result.value` as a string).
    pub async fn result_text(&self, id: &str, name: &str) -> String {
        let result = self.result(id, name).await;
        result
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("result of {name:?} has no text value: {result}"))
            .to_owned()
    }

    /// Every event of a workflow, oldest first.
    pub async fn events(&self, id: &str) -> Vec<Entry> {
        self.stream(&self.shard_keys(id).events(id)).await
    }

    /// Every entry of a stream.
    pub async fn stream(&self, key: &str) -> Vec<Entry> {
        let raw: Vec<(String, Vec<String>)> = self
            .query(redis::cmd("XRANGE").arg(key).arg("-").arg("+"))
            .await;
        entries(raw)
    }

    /// The dead-letter stream.
    pub async fn dead_letters(&self) -> Vec<Entry> {
        self.stream(&self.keys.dead()).await
    }

    /// Entries of work in the normal-priority stream of `capability`: pending, or not yet
    /// delivered to the workers' group. (Finished entries stay in the stream until the
    /// workers' trim, so the stream's length is not this.)
    pub async fn stream_len(&self, capability: &str) -> u64 {
        let key = self.keys.stream(capability, Priority::Normal);
        let exists: u64 = self.query(redis::cmd("EXISTS").arg(&key)).await;
        if exists == 0 {
            return 0;
        }
        let groups: Vec<Vec<redis::Value>> = self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(&key))
            .await;
        let field = |g: &[redis::Value], name: &str| -> Option<redis::Value> {
            g.chunks(2)
                .find(|kv| matches!(&kv[0], redis::Value::BulkString(b) if b == name.as_bytes()))
                .map(|kv| kv[1].clone())
        };
        let ours = groups.iter().find(|g| {
            matches!(field(g, "name"), Some(redis::Value::BulkString(b)) if b == self.group.as_bytes())
        });
        let Some(g) = ours else {
            return self.query(redis::cmd("XLEN").arg(&key)).await;
        };
        let pending = match field(g, "pending") {
            Some(redis::Value::Int(n)) => u64::try_from(n).unwrap_or(0),
            other => panic!("pending: {other:?}"),
        };
        let last = match field(g, "last-delivered-id") {
            Some(redis::Value::BulkString(b)) => String::from_utf8(b).unwrap(),
            other => panic!("last-delivered-id: {other:?}"),
        };
        let after: Vec<redis::Value> = self
            .query(
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(format!("({last}"))
                    .arg("+"),
            )
            .await;
        pending + after.len() as u64
    }

    /// Pending entries of the normal-priority stream of `capability`.
    pub async fn pending(&self, capability: &str) -> Vec<Pending> {
        let key = self.keys.stream(capability, Priority::Normal);
        let raw: Vec<(String, String, u64, u64)> = self
            .query(
                redis::cmd("XPENDING")
                    .arg(&key)
                    .arg(&self.group)
                    .arg("-")
                    .arg("+")
                    .arg(10_000),
            )
            .await;
        raw.into_iter()
            .map(|(id, consumer, _idle, deliveries)| Pending {
                id,
                consumer,
                deliveries,
            })
            .collect()
    }

    /// Pending entries of the normal-priority stream of `capability` held by `consumer`.
    pub async fn pending_of(&self, capability: &str, consumer: &str) -> Vec<Pending> {
        self.pending(capability)
            .await
            .into_iter()
            .filter(|p| p.consumer == consumer)
            .collect()
    }

    /// The entry `id` of the normal-priority stream of `capability`, if it is still there.
    pub async fn stream_entry(&self, capability: &str, id: &str) -> Option<Entry> {
        let key = self.keys.stream(capability, Priority::Normal);
        let raw: Vec<(String, Vec<String>)> = self
            .query(redis::cmd("XRANGE").arg(&key).arg(id).arg(id))
            .await;
        entries(raw).into_iter().next()
    }

    /// Like [`Store::wait_finished`], but gives up at `deadline` instead of failing the test:
    /// the final status, or `None` when the workflow had not ended by then (a checker counts
    /// that as stuck).
    pub async fn wait_finished_until(
        &self,
        id: &str,
        deadline: tokio::time::Instant,
    ) -> Option<String> {
        let wanted =
            |e: &Entry| e.get("kind") == "workflow" && WORKFLOW_TERMINAL.contains(&e.get("status"));
        let found = tokio::time::timeout_at(deadline, self.follow_events(id, wanted)).await;
        found.ok().flatten().map(|e| e.get("status").to_owned())
    }

    /// `BLPOP key` on a connection of its own (no response timeout): the popped value, or
    /// `None` when nothing was pushed within [`HANG_GUARD`].
    pub async fn blpop(&self, key: &str) -> Option<String> {
        let mut conn = self.blocking_connection().await;
        let popped: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(key)
            .arg(HANG_GUARD.as_secs())
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("BLPOP {key}: {e}"));
        popped.map(|(_, value)| value)
    }

    /// A dedicated connection without a response timeout, for blocking reads.
    async fn blocking_connection(&self) -> Conn {
        self.connector
            .connect(Timeouts {
                connect: STORE_TIMEOUT,
                response: None,
            })
            .await
            .expect("connecting to redis")
    }

    /// Follows the workflow's events stream (blocking `XREAD`, no polling) until the workflow
    /// ends; returns its final status. Bounded by [`HANG_GUARD`].
    pub async fn wait_finished(&self, id: &str) -> String {
        let found = self
            .follow_events(id, |e| {
                e.get("kind") == "workflow" && WORKFLOW_TERMINAL.contains(&e.get("status"))
            })
            .await;
        match found {
            Some(e) => e.get("status").to_owned(),
            None => panic!(
                "workflow {id} did not end within {HANG_GUARD:?}; hash: {:?}",
                self.workflow(id).await
            ),
        }
    }

    /// Waits until the task named `name` has an event with this status (blocking reads on the
    /// events stream); returns that event.
    pub async fn wait_task_status(&self, id: &str, name: &str, status: &str) -> Entry {
        self.follow_events(id, |e| e.get("task") == name && e.get("status") == status)
            .await
            .unwrap_or_else(|| {
                panic!("task {name:?} of {id} never reached {status} within {HANG_GUARD:?}")
            })
    }

    /// The first event of the workflow's events stream (from its start) that `wanted`
    /// accepts, read with blocking `XREAD`; `None` after [`HANG_GUARD`].
    async fn follow_events(&self, id: &str, wanted: impl Fn(&Entry) -> bool) -> Option<Entry> {
        let key = self.shard_keys(id).events(id);
        let mut conn = self.blocking_connection().await;
        let follow = async {
            let mut last = "0-0".to_owned();
            loop {
                type Reply = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;
                let reply: Reply = redis::cmd("XREAD")
                    .arg("BLOCK")
                    .arg(10_000)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(&last)
                    .query_async(&mut conn)
                    .await
                    .expect("XREAD on the events stream");
                for (_, raw) in reply.unwrap_or_default() {
                    for e in entries(raw) {
                        last = e.id.clone();
                        if wanted(&e) {
                            return e;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(HANG_GUARD, follow).await.ok()
    }

    /// Everything in the database, rendered comparably: each key with its type, whether it
    /// has a TTL, and its full content (streams with their groups and pending entries, idle
    /// times left out because they change by themselves).
    pub async fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for key in self.all_keys().await {
            let kind: String = self.query(redis::cmd("TYPE").arg(&key)).await;
            let pttl: i64 = self.query(redis::cmd("PTTL").arg(&key)).await;
            let content = match kind.as_str() {
                "string" => {
                    let v: String = self.query(redis::cmd("GET").arg(&key)).await;
                    v
                }
                "hash" => {
                    let h: BTreeMap<String, String> =
                        self.query(redis::cmd("HGETALL").arg(&key)).await;
                    format!("{h:?}")
                }
                "set" => {
                    let mut s: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&key)).await;
                    s.sort();
                    format!("{s:?}")
                }
                "zset" => {
                    let z: Vec<String> = self
                        .query(
                            redis::cmd("ZRANGE")
                                .arg(&key)
                                .arg(0)
                                .arg(-1)
                                .arg("WITHSCORES"),
                        )
                        .await;
                    format!("{z:?}")
                }
                "list" => {
                    let l: Vec<String> = self
                        .query(redis::cmd("LRANGE").arg(&key).arg(0).arg(-1))
                        .await;
                    format!("{l:?}")
                }
                "stream" => self.stream_snapshot(&key).await,
                other => format!("<{other}>"),
            };
            out.insert(key, format!("{kind} ttl={} {content}", pttl > 0));
        }
        out
    }

    async fn stream_snapshot(&self, key: &str) -> String {
        let entries = self.stream(key).await;
        let mut text = format!("entries={:?}", {
            let mut e: Vec<(String, BTreeMap<String, String>)> = entries
                .into_iter()
                .map(|e| (e.id, e.fields.into_iter().collect()))
                .collect();
            e.sort();
            e
        });
        let groups: deadpool_redis::redis::Value =
            self.query(redis::cmd("XINFO").arg("GROUPS").arg(key)).await;
        text.push_str(&format!(" groups={groups:?}"));
        let mut conn = self.conn.clone();
        let pending: Result<Vec<(String, String, u64, u64)>, _> = redis::cmd("XPENDING")
            .arg(key)
            .arg(&self.group)
            .arg("-")
            .arg("+")
            .arg(10_000)
            .query_async(&mut conn)
            .await;
        if let Ok(p) = pending {
            let p: Vec<(String, String, u64)> =
                p.into_iter().map(|(id, c, _idle, n)| (id, c, n)).collect();
            text.push_str(&format!(" pending={p:?}"));
        }
        text
    }
}

fn cmd_name(cmd: &redis::Cmd) -> String {
    cmd.args_iter()
        .next()
        .map(|a| match a {
            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_hash_splits_into_its_own_fields_and_each_tasks() {
        let hash: HashMap<String, String> = [
            ("status", "running"),
            ("total", "2"),
            ("layout", "fields"),
            (
                "0.s",
                "completed\u{1f}0\u{1f}0\u{1f}5-0\u{1f}w1\u{1f}1\u{1f}1\u{1f}2\u{1f}3",
            ),
            ("0.result", "{}"),
            (
                "1.s",
                "waiting\u{1f}1\u{1f}0\u{1f}\u{1f}\u{1f}\u{1f}\u{1f}\u{1f}",
            ),
            ("10.name", "K"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (own, tasks) = split_workflow_hash(hash);
        let mut own_names: Vec<&str> = own.keys().map(String::as_str).collect();
        own_names.sort_unstable();
        assert_eq!(own_names, ["layout", "status", "total"]);
        assert_eq!(tasks.keys().copied().collect::<Vec<_>>(), [0, 1, 10]);
        assert_eq!(tasks[&0]["status"], "completed");
        assert_eq!(tasks[&0]["entry"], "5-0");
        assert_eq!(tasks[&0]["finished_ms"], "3");
        assert_eq!(tasks[&0]["result"], "{}");
        // Empty parts are fields not set.
        let mut one: Vec<(&str, &str)> = tasks[&1]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        one.sort_unstable();
        assert_eq!(
            one,
            [("attempts", "0"), ("pending", "1"), ("status", "waiting")]
        );
        assert_eq!(tasks[&10]["name"], "K");
    }
}
