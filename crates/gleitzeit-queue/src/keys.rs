//! Every Redis key name of a deployment, built in one place.
//!
//! All keys start with a prefix `{<tag>}:`; the braces make the tag a Redis Cluster hash
//! tag, so every key under one prefix lives in one slot and every script, which only
//! touches keys under the prefix it is given, stays legal on Cluster.
//!
//! A namespace with one shard (the default) keeps everything under `{<ns>}:`. A namespace
//! spread over N > 1 shards keeps its fleet-wide indexes (the worker index, the set of
//! endpoint names, published endpoints, the shard count) under `{<ns>}:` — the *home*
//! keys —, each LLM endpoint's state (leases, hold, limit, budget, models, marks, busy
//! counts, health) under a prefix of its own, `{<ns>~ep~<endpoint>}:` (so the per-call
//! lease scripts of different endpoints land on different slots, and each still touches
//! one), each worker's registry record under `{<ns>~w~<id>}:`, each service's registry
//! under `{<ns>~svc~<service>}:`, and its workflows under one prefix per shard, `{<ns>~<k>[~<j>]}:` for
//! k in 0..N: every key of one workflow (its hash, events) and the ready
//! streams, delayed set, dead letters and counters those workflows use sit in the shard the
//! workflow id hashes to ([`shard_of`]), so each script still touches one slot. Each shard's
//! tag is chosen so that its slot lies near the middle of the k-th of N equal parts of
//! Redis Cluster's slot space ([`Keys::shard`]): a cluster whose primaries own equal slot
//! ranges (what `redis-cli --cluster create` makes) then gets the shards spread evenly.
//!
//! A workflow's tasks have no keys of their own: task `i`'s fields (`status`, `result`, …)
//! are fields `<i>.<field>` of the workflow hash ([`task_field`]), which records this with
//! [`LAYOUT_FIELD`] = [`LAYOUT_FIELDS`]. Workflows written by earlier versions (no
//! [`LAYOUT_FIELD`]) keep one hash per task instead ([`Keys::task`]); they may still be in
//! flight during a rolling upgrade, so the queries read both layouts until those expire.
//!
//! The Lua scripts build the keys and field names they derive (task fields, streams) from
//! the same prefix with the same patterns (see `lua/lib.lua`); the tests of this module pin
//! the patterns.

use crate::error::QueueError;

pub use gleitzeit_core::Priority;

/// The suffix of a priority's stream key (normal has none).
fn stream_suffix(priority: Priority) -> &'static str {
    match priority {
        Priority::High => "#high",
        Priority::Normal => "",
        Priority::Low => "#low",
    }
}

/// One ready stream: a capability at one priority, with its full key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamRef {
    /// The capability (`llm:<model>`, `ext:<service>`).
    pub capability: String,
    /// Which of the capability's streams.
    pub priority: Priority,
    /// The Redis key, `{ns}:q:<cap>` plus `#high`/`#low`.
    pub key: String,
}

/// Separates a lease's owner from its id in a lease member (`<owner>|<id>`). The owner is the
/// consumer name of the worker that took the lease: when `reclaim.lua` takes over a
/// consumer's entries it also frees that consumer's leases, so a dead worker's slots come
/// back with its work instead of at the leases' expiry.
pub const LEASE_OWNER_SEP: char = '|';

/// The workflow hash field that names how the workflow's tasks are stored. Absent in
/// workflows written by earlier versions, whose tasks have hashes of their own
/// ([`Keys::task`]).
pub const LAYOUT_FIELD: &str = "layout";

/// The value of [`LAYOUT_FIELD`] of a workflow whose task fields are fields of its workflow
/// hash, named by [`task_field`] (every workflow submitted by this version).
pub const LAYOUT_FIELDS: &str = "fields";

/// The value of [`LAYOUT_FIELD`] of a workflow in the packed layout (every workflow submitted
/// by this version once the whole fleet runs it): task fields of the workflow hash as in the
/// fields layout ([`LAYOUT_FIELDS`]), except that the definition a task's start reads is one
/// field ([`DEFINITION_FIELD`]) and the children with their capability and priority another
/// ([`CHILDREN_FIELD`]): a start reads four fields of the workflow hash, a release one per
/// child (`lua/lib.lua`, "Task fields").
pub const LAYOUT_PACKED: &str = "packed";

/// The name of field `field` of task `index` (0-based, file order) in the workflow hash of a
/// workflow in the fields layout ([`LAYOUT_FIELDS`]): `<index>.<field>`, e.g. `3.status`.
pub fn task_field(index: u32, field: &str) -> String {
    format!("{index}.{field}")
}

/// The task field (`<i>.s`, [`task_field`]) that holds a task's state in the fields layout:
/// the values of [`STATE_PARTS`] joined by [`STATE_SEPARATOR`], an empty part for a value not
/// set. The scripts' hot path reads and writes it as one value (`lua/lib.lua`, "Task
/// fields").
pub const STATE_FIELD: &str = "s";

/// The task fields packed into [`STATE_FIELD`], in order.
pub const STATE_PARTS: [&str; 9] = [
    "status",
    "pending",
    "attempts",
    "entry",
    "consumer",
    "delivery",
    "ready_ms",
    "started_ms",
    "finished_ms",
];

/// The separator of [`STATE_FIELD`]'s parts (ASCII unit separator).
pub const STATE_SEPARATOR: char = '\u{1f}';

/// The named task fields a [`STATE_FIELD`] value stands for; parts left empty are not set
/// and left out. `None` for a value that does not have the parts of a state.
pub fn state_fields(value: &str) -> Option<Vec<(&'static str, &str)>> {
    let parts: Vec<&str> = value.split(STATE_SEPARATOR).collect();
    if parts.len() != STATE_PARTS.len() {
        return None;
    }
    Some(
        STATE_PARTS
            .iter()
            .zip(parts)
            .filter(|(_, v)| !v.is_empty())
            .map(|(f, v)| (*f, v))
            .collect(),
    )
}

/// The task field (`<i>.d`) that holds a task's definition in the packed layout
/// ([`LAYOUT_PACKED`]): the values of [`DEFINITION_PARTS`] joined by [`STATE_SEPARATOR`],
/// written once ([`pack_definition`]).
pub const DEFINITION_FIELD: &str = "d";

/// The task fields packed into [`DEFINITION_FIELD`], in order: the references first (a
/// start reads only them in Redis), the spec last and taken whole (it is JSON text, which
/// holds no control character).
pub const DEFINITION_PARTS: [&str; 6] = [
    "refs",
    "name",
    "max_attempts",
    "on_failure",
    "below",
    "spec",
];

/// The task field (`<i>.k`) that holds a task's children in the packed layout
/// ([`pack_children`]); absent for a task without children.
pub const CHILDREN_FIELD: &str = "k";

/// Separates the items of a packed list (the references of a definition, the children).
const ITEM_SEPARATOR: char = '\u{1d}';
/// Separates the parts of one item of a packed list.
const ITEM_PART_SEPARATOR: char = '\u{1e}';

/// A [`DEFINITION_FIELD`] value. `refs` are the referenced tasks' indexes with their names
/// (a start returns the names without reading them). Names hold no control character
/// (`SubmitRequest::validate`).
pub fn pack_definition(
    name: &str,
    max_attempts: u32,
    on_failure: Option<&str>,
    below: u32,
    refs: &[(u32, &str)],
    spec_json: &str,
) -> String {
    let refs: Vec<String> = refs
        .iter()
        .map(|(j, n)| format!("{j}{ITEM_PART_SEPARATOR}{n}"))
        .collect();
    let refs = refs.join(&ITEM_SEPARATOR.to_string());
    let s = STATE_SEPARATOR;
    format!(
        "{refs}{s}{name}{s}{max_attempts}{s}{}{s}{below}{s}{spec_json}",
        on_failure.unwrap_or("")
    )
}

/// A [`DEFINITION_FIELD`] value taken apart ([`parse_definition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition<'a> {
    /// The referenced tasks, in order: index and name.
    pub refs: Vec<(u32, &'a str)>,
    /// The task's name.
    pub name: &'a str,
    /// `max_attempts` as stored.
    pub max_attempts: &'a str,
    /// The task's failure policy, `""` for the workflow's.
    pub on_failure: &'a str,
    /// The longest chain of tasks waiting on it, as stored.
    pub below: &'a str,
    /// The spec (JSON text).
    pub spec: &'a str,
}

/// Takes a [`DEFINITION_FIELD`] value apart; `None` for a value that does not have its
/// parts (or a reference without an index).
pub fn parse_definition(value: &str) -> Option<Definition<'_>> {
    let mut parts = value.splitn(DEFINITION_PARTS.len(), STATE_SEPARATOR);
    let refs = parts.next()?;
    let refs = if refs.is_empty() {
        Vec::new()
    } else {
        refs.split(ITEM_SEPARATOR)
            .map(|item| {
                let (index, name) = item.split_once(ITEM_PART_SEPARATOR)?;
                Some((index.parse().ok()?, name))
            })
            .collect::<Option<Vec<_>>>()?
    };
    Some(Definition {
        refs,
        name: parts.next()?,
        max_attempts: parts.next()?,
        on_failure: parts.next()?,
        below: parts.next()?,
        spec: parts.next()?,
    })
}

/// A [`CHILDREN_FIELD`] value: each child's index, capability and priority (a release
/// queues a child without reading them). Capabilities hold no control character
/// (`validate_capability`).
pub fn pack_children(children: &[(u32, &str, Priority)]) -> String {
    let p = ITEM_PART_SEPARATOR;
    let items: Vec<String> = children
        .iter()
        .map(|(c, cap, prio)| format!("{c}{p}{cap}{p}{}", prio.as_str()))
        .collect();
    items.join(&ITEM_SEPARATOR.to_string())
}

/// The indexes of a packed list, as the other layouts store them: `"i,j"`.
fn index_list(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some(String::new());
    }
    let indexes: Option<Vec<&str>> = value
        .split(ITEM_SEPARATOR)
        .map(|item| {
            let index = item.split(ITEM_PART_SEPARATOR).next()?;
            (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then_some(index)
        })
        .collect();
    Some(indexes?.join(","))
}

/// The named task fields a [`DEFINITION_FIELD`] value stands for, every part (an empty
/// `on_failure` or `refs` is an empty value, as the fields layout stores it); `refs` as
/// `"i,j"`. `None` for a value that does not have the parts of a definition.
pub fn definition_fields(value: &str) -> Option<Vec<(&'static str, String)>> {
    let d = parse_definition(value)?;
    let refs: Vec<String> = d.refs.iter().map(|(j, _)| j.to_string()).collect();
    Some(vec![
        ("refs", refs.join(",")),
        ("name", d.name.to_owned()),
        ("max_attempts", d.max_attempts.to_owned()),
        ("on_failure", d.on_failure.to_owned()),
        ("below", d.below.to_owned()),
        ("spec", d.spec.to_owned()),
    ])
}

/// The named task fields a stored task field stands for when it packs several: the parts of
/// the state ([`state_fields`], parts not set left out), of a definition
/// ([`definition_fields`]), or `children` from a [`CHILDREN_FIELD`]. `None` for a field of
/// its own or a malformed packed value.
pub fn unpacked_task_fields(field: &str, value: &str) -> Option<Vec<(&'static str, String)>> {
    match field {
        STATE_FIELD => Some(
            state_fields(value)?
                .into_iter()
                .map(|(f, v)| (f, v.to_owned()))
                .collect(),
        ),
        DEFINITION_FIELD => definition_fields(value),
        CHILDREN_FIELD => Some(vec![("children", index_list(value)?)]),
        _ => None,
    }
}

/// The task index and the task's field name of a workflow hash field named by
/// [`task_field`]; `None` for the workflow's own fields (whose names never start with
/// `<digits>.`).
pub fn split_task_field(name: &str) -> Option<(u32, &str)> {
    let (index, field) = name.split_once('.')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((index.parse().ok()?, field))
}

/// Redis Cluster's number of hash slots.
pub const CLUSTER_SLOTS: u16 = 16384;

/// The most shards a namespace can be spread over (each shard costs every worker a reader
/// and every background pass a round trip; far more shards than cluster primaries gain
/// nothing).
pub const MAX_SHARDS: u16 = 256;

/// The Redis Cluster slot of keys with hash tag `tag` (CRC16/XMODEM of the tag, modulo
/// 16384, as Redis computes it).
pub fn tag_slot(tag: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % CLUSTER_SLOTS
}

/// The shard (0..`shards`) a workflow lives in: FNV-1a (64 bit) of its id, modulo the
/// shard count. Stable across processes and versions: it decides where a workflow's keys
/// are, so it must never change for a namespace that holds data.
pub fn shard_of(workflow_id: &str, shards: u16) -> u16 {
    if shards <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in workflow_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards)) as u16
}

/// Key builder for one namespace (or one shard of it). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    /// Whether each endpoint's keys and each worker's record have a prefix of their own (a
    /// namespace over N > 1 shards) instead of this one.
    spread: bool,
}

impl Keys {
    /// Validates the namespace: non-empty, at most 64 bytes, no `{`, `}`, whitespace or
    /// control characters (any of them would break the hash tag or the key grammar).
    ///
    /// # Errors
    /// [`QueueError::InvalidNamespace`] naming the problem.
    pub fn new(namespace: &str) -> Result<Keys, QueueError> {
        if namespace.is_empty() {
            return Err(QueueError::InvalidNamespace {
                namespace: namespace.to_owned(),
                reason: "must not be empty",
            });
        }
        if namespace.len() > 64 {
            return Err(QueueError::InvalidNamespace {
                namespace: namespace.to_owned(),
                reason: "must be at most 64 bytes",
            });
        }
        if namespace
            .chars()
            .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
        {
            return Err(QueueError::InvalidNamespace {
                namespace: namespace.to_owned(),
                reason: "must not contain '{', '}', whitespace or control characters",
            });
        }
        Ok(Keys {
            prefix: format!("{{{namespace}}}:"),
            spread: false,
        })
    }

    /// `{ns}:` — passed to every script as `ARGV[1]`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hash tag (what is between the braces).
    pub fn tag(&self) -> &str {
        &self.prefix[1..self.prefix.len() - 2]
    }

    /// The Redis Cluster slot of every key under this prefix.
    pub fn slot(&self) -> u16 {
        tag_slot(self.tag())
    }

    /// The keys of shard `k` of a namespace spread over `shards` shards (`self` being the
    /// namespace's home keys). With one shard, the home keys themselves (the layout of a
    /// namespace that was never sharded). Otherwise the prefix `{<ns>~<k>}:`, or
    /// `{<ns>~<k>~<j>}:` with the smallest j ≥ 1 that puts the slot within a quarter of a
    /// part's width of the middle of the k-th of `shards` equal parts of the slot space.
    /// Deterministic: every process computes the same prefixes.
    ///
    /// # Panics
    /// When `k >= shards` (a caller's bug).
    pub fn shard(&self, k: u16, shards: u16) -> Keys {
        assert!(k < shards, "shard {k} of {shards}");
        if shards <= 1 {
            return self.clone();
        }
        let width = u32::from(CLUSTER_SLOTS) / u32::from(shards);
        let middle = (2 * u32::from(k) + 1) * u32::from(CLUSTER_SLOTS) / (2 * u32::from(shards));
        let window = (width / 4).max(1);
        let base = format!("{}~{k}", self.tag());
        let fits = |tag: &str| u32::from(tag_slot(tag)).abs_diff(middle) <= window;
        let tag = if fits(&base) {
            base
        } else {
            // About 2 * shards candidates are looked at on average (the window is half a
            // part wide); computed once per handle.
            (1u32..)
                .map(|j| format!("{base}~{j}"))
                .find(|t| fits(t))
                .unwrap_or_default()
        };
        Keys {
            prefix: format!("{{{tag}}}:"),
            spread: false,
        }
    }

    /// These keys with each endpoint's state and each worker's record under a prefix of
    /// their own (`spread`, the layout of a namespace over N > 1 shards) or under this one
    /// (one shard).
    pub fn with_spread(&self, spread: bool) -> Keys {
        Keys {
            prefix: self.prefix.clone(),
            spread,
        }
    }

    /// Whether endpoints and workers have prefixes of their own ([`Keys::endpoint_prefix`],
    /// [`Keys::worker_prefix`]).
    pub fn is_spread(&self) -> bool {
        self.spread
    }

    /// `{<ns>~<family>~<name>}:` when spread, else this prefix. (A name holding `}` ends the
    /// tag early; the keys of that name still share one slot.)
    fn own_prefix(&self, family: &str, name: &str) -> std::borrow::Cow<'_, str> {
        if self.spread {
            std::borrow::Cow::Owned(format!("{{{}~{family}~{name}}}:", self.tag()))
        } else {
            std::borrow::Cow::Borrowed(&self.prefix)
        }
    }

    /// The prefix of every key of one LLM endpoint: this namespace's prefix, or in a
    /// namespace over N > 1 shards `{<ns>~ep~<endpoint>}:`, so that each endpoint's state
    /// (touched on every LLM call) lives in a slot of its own. Passed as `ARGV[1]` to the
    /// lease scripts, which build the endpoint's hold, limit and budget keys from it.
    pub fn endpoint_prefix(&self, endpoint: &str) -> std::borrow::Cow<'_, str> {
        self.own_prefix("ep", endpoint)
    }

    /// The prefix of one service's registry (its instance set and instance records): this
    /// namespace's prefix, or in a namespace over N > 1 shards `{<ns>~svc~<service>}:`.
    /// Readers look under both (a service may have registered before the namespace
    /// recorded its shard count; `python/gleitzeit/discovery.py` mirrors this).
    pub fn service_prefix(&self, service: &str) -> std::borrow::Cow<'_, str> {
        self.own_prefix("svc", service)
    }

    /// The prefix of one worker's registry record: this namespace's prefix, or in a
    /// namespace over N > 1 shards `{<ns>~w~<worker id>}:` (each worker rewrites its
    /// record up to twice a second while busy; the index `{<ns>}:workers` stays home).
    pub fn worker_prefix(&self, id: &str) -> std::borrow::Cow<'_, str> {
        self.own_prefix("w", id)
    }

    /// `{ns}:shards` — string: how many shards the namespace's workflows are spread over,
    /// recorded by the first process configured with a count, or else by the first worker
    /// to start or the first submission (the count they adopted), checked by every
    /// process that connects (a process with another count would read and write keys the
    /// rest of the fleet never looks at).
    pub fn shard_count(&self) -> String {
        format!("{}shards", self.prefix)
    }

    /// `{ns}:wf:<wf>` — workflow hash: the workflow's own fields and, in the fields layout
    /// ([`LAYOUT_FIELD`] = [`LAYOUT_FIELDS`]), every task's fields ([`task_field`]).
    pub fn workflow(&self, workflow_id: &str) -> String {
        format!("{}wf:{workflow_id}", self.prefix)
    }

    /// `{ns}:wf:<wf>:t:<i>` — hash of task `i` (0-based, file order) of a workflow written
    /// by an earlier version, in the layout with one hash per task (its workflow hash has no
    /// [`LAYOUT_FIELD`]). Workflows submitted now keep their tasks in the workflow hash
    /// ([`task_field`]) and have no such keys; these are read until the last of them expired.
    pub fn task(&self, workflow_id: &str, index: u32) -> String {
        format!("{}wf:{workflow_id}:t:{index}", self.prefix)
    }

    /// `{ns}:wf:<wf>:events` — the workflow's progress events stream.
    pub fn events(&self, workflow_id: &str) -> String {
        format!("{}wf:{workflow_id}:events", self.prefix)
    }

    /// `{ns}:wf:<wf>:watch` — string: while it exists, every transition of the workflow's
    /// tasks is an event (otherwise only the workflow's own events). Set at submission
    /// (`watch`) without expiry, or by a watcher with a short one that it renews; given the
    /// workflow's retention when it ends.
    pub fn watch(&self, workflow_id: &str) -> String {
        format!("{}wf:{workflow_id}:watch", self.prefix)
    }

    /// `{ns}:workflows` — zset created_ms → workflow id.
    pub fn workflows(&self) -> String {
        format!("{}workflows", self.prefix)
    }

    /// `{ns}:expiring` — zset expiry_ms → workflow id of ended workflows, from which the
    /// promoter trims `{ns}:workflows` once their keys expired.
    pub fn expiring(&self) -> String {
        format!("{}expiring", self.prefix)
    }

    /// `{ns}:idem:<key>` — idempotency record `<wf>\n<digest>`.
    pub fn idem(&self, key: &str) -> String {
        format!("{}idem:{key}", self.prefix)
    }

    /// `{ns}:q:<cap>` (normal), `{ns}:q:<cap>#high`, `{ns}:q:<cap>#low` — ready streams.
    pub fn stream(&self, capability: &str, priority: Priority) -> String {
        format!("{}q:{capability}{}", self.prefix, stream_suffix(priority))
    }

    /// The [`StreamRef`] of a capability at one priority.
    pub fn stream_ref(&self, capability: &str, priority: Priority) -> StreamRef {
        StreamRef {
            capability: capability.to_owned(),
            priority,
            key: self.stream(capability, priority),
        }
    }

    /// The three streams of a capability, in read order (high, normal, low).
    pub fn stream_refs(&self, capability: &str) -> [StreamRef; 3] {
        Priority::ALL.map(|p| self.stream_ref(capability, p))
    }

    /// `{ns}:caps` — set of every capability that has had a stream.
    pub fn caps(&self) -> String {
        format!("{}caps", self.prefix)
    }

    /// `{ns}:trim` — string with a PX expiry: a worker trimmed the streams within that time
    /// (`trim.lua`), so the others skip it.
    pub fn trim_lock(&self) -> String {
        format!("{}trim", self.prefix)
    }

    /// `{ns}:delayed` — zset due_ms → `<wf>|<i>` of tasks waiting for a retry.
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }

    /// `{ns}:dead` — dead-letter stream.
    pub fn dead(&self) -> String {
        format!("{}dead", self.prefix)
    }

    /// `{ns}:ep:<endpoint>:leases` — zset of the in-flight slots (leases) held on one LLM
    /// endpoint across the fleet: member = lease id, score = expiry (ms). Expired members
    /// are dropped by `lease_acquire.lua`, so a dead worker's slots come back by themselves.
    pub fn endpoint_leases(&self, endpoint: &str) -> String {
        format!("{}ep:{endpoint}:leases", self.endpoint_prefix(endpoint))
    }

    /// `{ns}:ep:<endpoint>:hold` — string with a PX expiry: the fleet holds the endpoint back
    /// (it rate limited a call) until the key expires. Written by `lease_settle.lua`, read by
    /// `lease_acquire.lua` (both build it with `hold_key` of `lua/lib.lua`).
    pub fn endpoint_hold(&self, endpoint: &str) -> String {
        format!("{}ep:{endpoint}:hold", self.endpoint_prefix(endpoint))
    }

    /// `{ns}:ep:<endpoint>:limit` — the endpoint's adapted concurrency limit (a float, with an
    /// expiry) after overload answers (`lease_settle.lua`; used by `lease_acquire.lua`).
    pub fn endpoint_limit(&self, endpoint: &str) -> String {
        format!("{}ep:{endpoint}:limit", self.endpoint_prefix(endpoint))
    }

    /// `{ns}:ep:<endpoint>:budget` — hash of the rate-limit budget the endpoint last reported
    /// in its answers' headers: `requests`, `requests_reset`, `tokens`, `tokens_reset`
    /// (remaining, reset in Unix ms), expiring at the later reset. Written by
    /// `lease_settle.lua`; `lease_acquire.lua` holds the endpoint back while a line is spent
    /// and spends from it for each lease. Both build it with `budget_key` of `lua/lib.lua`.
    pub fn endpoint_budget(&self, endpoint: &str) -> String {
        format!("{}ep:{endpoint}:budget", self.endpoint_prefix(endpoint))
    }

    /// `{ns}:svc:<service>` — zset of the live instances of a Python task service: member =
    /// instance id, score = expiry (ms). Written by the services' heartbeat
    /// (`python/gleitzeit/discovery.py` mirrors this pattern; `tests/protocol/keys.json`).
    pub fn service(&self, service: &str) -> String {
        format!("{}svc:{service}", self.service_prefix(service))
    }

    /// `{ns}:svc:<service>:<instance>` — hash describing one service instance (address,
    /// functions, capacity), expiring with its heartbeat.
    pub fn service_instance(&self, service: &str, instance: &str) -> String {
        format!("{}svc:{service}:{instance}", self.service_prefix(service))
    }

    /// The member of [`Keys::delayed`] for task `i` of a workflow.
    pub fn delayed_member(workflow_id: &str, index: u32) -> String {
        format!("{workflow_id}|{index}")
    }

    // --- Shared endpoint state: loaded/pulled models, probe lock, health (docs/routing.md,
    // "Shared endpoint state") ---

    /// `{ns}:endpoints` — set of the names of every endpoint any worker is configured with.
    pub fn endpoints(&self) -> String {
        format!("{}endpoints", self.prefix)
    }

    /// `{ns}:ep:<endpoint>:models` — hash: `loaded` (JSON array, most recently used first),
    /// `pulled` (JSON array of `{name, size}`), `updated_ms`, `loaded_ms`, `probed_by`.
    pub fn endpoint_models(&self, endpoint: &str) -> String {
        format!("{}ep:{endpoint}:models", self.endpoint_prefix(endpoint))
    }

    /// `{ns}:ep:<endpoint>:probe` — string lock (`SET NX PX <interval>`, value = worker id):
    /// the one worker that polls the endpoint in this interval.
    pub fn endpoint_probe(&self, endpoint: &str) -> String {
        format!("{}ep:{endpoint}:probe", self.endpoint_prefix(endpoint))
    }

    /// `{ns}:ep:<endpoint>:loading:<model>` — string with a PX expiry (value = the worker
    /// loading it): a call or a preload is loading `model` on the endpoint now. Set before
    /// the request that loads the model, deleted when it is answered; the expiry bounds a
    /// load whose worker died.
    pub fn endpoint_loading(&self, endpoint: &str, model: &str) -> String {
        format!(
            "{}ep:{endpoint}:loading:{model}",
            self.endpoint_prefix(endpoint)
        )
    }

    /// `{ns}:ep:<endpoint>:unloading:<model>` — string with a PX expiry (value = the worker
    /// unloading it): a worker is unloading `model` from the endpoint to make room, or did
    /// so less than a model-state read ago (so that no worker trusts a cached record that
    /// still lists it). Set before the unload request; a load of the model deletes it.
    pub fn endpoint_unloading(&self, endpoint: &str, model: &str) -> String {
        format!(
            "{}ep:{endpoint}:unloading:{model}",
            self.endpoint_prefix(endpoint)
        )
    }

    /// `{ns}:ep:<endpoint>:busy` — hash: field = model, value = calls of that model in flight
    /// on the endpoint (fleet-wide; the hash expires when no call began for a while, so a
    /// dead worker's count goes). A model in use is not evicted by choice.
    pub fn endpoint_busy(&self, endpoint: &str) -> String {
        format!("{}ep:{endpoint}:busy", self.endpoint_prefix(endpoint))
    }

    /// `{ns}:ep::planner` — string lock (`SET NX PX`, value = worker id): the one worker
    /// that plans model placement for the fleet now (preloads). The empty endpoint name
    /// never names an endpoint, so the lock lives with the endpoint keys.
    pub fn placement_planner(&self) -> String {
        format!("{}ep::planner", self.endpoint_prefix(""))
    }

    /// `{ns}:ep:<endpoint>:health` — hash: field = worker id, value = that worker's view of
    /// the endpoint's health as JSON.
    pub fn endpoint_health(&self, endpoint: &str) -> String {
        format!("{}ep:{endpoint}:health", self.endpoint_prefix(endpoint))
    }

    // --- Worker registry (written by each worker, read by `gleitzeit-submit fleet`) ---

    /// `{ns}:workers` — zset of the live worker processes: member = worker (consumer) id,
    /// score = expiry (ms). Members whose score is in the past belong to workers that stopped
    /// without removing themselves; readers ignore them and writers drop them.
    pub fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }

    /// `{ns}:worker:<id>` — hash describing one worker process (host, pid, version, load,
    /// counters), expiring a few publish intervals after its last update.
    pub fn worker(&self, id: &str) -> String {
        format!("{}worker:{id}", self.worker_prefix(id))
    }

    // --- Endpoints published to the fleet (`gleitzeit-submit endpoints add|remove|strategy`,
    // adopted by workers with `published_endpoints: adopt`) ---

    /// `{ns}:published:endpoints` — hash: field = endpoint name, value = JSON
    /// `{"endpoint": <file endpoint entry>, "routing": <routing.endpoints.<name>>}`.
    pub fn published_endpoints(&self) -> String {
        format!("{}published:endpoints", self.prefix)
    }

    /// `{ns}:published:strategy` — string: the routing strategy published to the fleet.
    pub fn published_strategy(&self) -> String {
        format!("{}published:strategy", self.prefix)
    }

    /// `{ns}:published:version` — counter raised by every change of the published endpoints
    /// or strategy, so workers notice a change with one `GET`.
    pub fn published_version(&self) -> String {
        format!("{}published:version", self.prefix)
    }

    // --- Metrics (docs/metrics.md) ---

    /// `{ns}:stats` — hash of fleet-wide counters that never expire: `workflows_submitted`
    /// (submit.lua), `workflows_completed`, `workflows_failed`, `workflows_cancelled` (the
    /// workflow end in lib.lua). Exported by every worker as absolute counter values.
    pub fn stats(&self) -> String {
        format!("{}stats", self.prefix)
    }
}

/// Checks a capability can be embedded in a stream key: non-empty, at most 512 bytes, no
/// `{`, `}` (hash tag), `#` (priority suffix) or control characters.
pub(crate) fn validate_capability(capability: &str) -> Result<(), QueueError> {
    if capability.is_empty()
        || capability.len() > 512
        || capability
            .chars()
            .any(|c| c == '{' || c == '}' || c == '#' || c.is_control())
    {
        return Err(QueueError::InvalidArgument(format!(
            "capability {capability:?} must be 1-512 bytes without '{{', '}}', '#' or control characters"
        )));
    }
    Ok(())
}

/// Checks a workflow id can be embedded in keys and delayed members: 1-64 ASCII letters,
/// digits, `-` or `_` (UUIDs qualify).
pub(crate) fn validate_workflow_id(id: &str) -> Result<(), QueueError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(QueueError::InvalidArgument(format!(
            "workflow id {id:?} must be 1-64 ASCII letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new("gleitzeit").unwrap()
    }

    #[test]
    fn prefix_is_a_hash_tag() {
        assert_eq!(keys().prefix(), "{gleitzeit}:");
        assert_eq!(Keys::new("team-a").unwrap().prefix(), "{team-a}:");
    }

    #[test]
    fn workflow_task_and_events_patterns() {
        let k = keys();
        assert_eq!(k.workflow("0192-ab"), "{gleitzeit}:wf:0192-ab");
        assert_eq!(k.task("0192-ab", 0), "{gleitzeit}:wf:0192-ab:t:0");
        assert_eq!(k.task("0192-ab", 17), "{gleitzeit}:wf:0192-ab:t:17");
        assert_eq!(k.events("0192-ab"), "{gleitzeit}:wf:0192-ab:events");
        assert_eq!(k.watch("0192-ab"), "{gleitzeit}:wf:0192-ab:watch");
    }

    #[test]
    fn task_field_names_in_the_workflow_hash() {
        assert_eq!(task_field(0, "status"), "0.status");
        assert_eq!(task_field(17, "result"), "17.result");
        assert_eq!(task_field(3, "max_attempts"), "3.max_attempts");
        assert_eq!(split_task_field("3.status"), Some((3, "status")));
        assert_eq!(
            split_task_field("17.max_attempts"),
            Some((17, "max_attempts"))
        );
        assert_eq!(
            split_task_field(&task_field(u32::MAX, "x")),
            Some((u32::MAX, "x"))
        );
        // The workflow's own fields and anything else are not task fields.
        for own in [
            "status",
            "total",
            LAYOUT_FIELD,
            ".status",
            "a.status",
            "1a.status",
            "-1.status",
            "99999999999.status",
        ] {
            assert_eq!(split_task_field(own), None, "{own}");
        }
        assert_eq!((LAYOUT_FIELD, LAYOUT_FIELDS), ("layout", "fields"));
    }

    #[test]
    fn a_state_field_stands_for_its_parts() {
        let v = "running\u{1f}0\u{1f}1\u{1f}17-0\u{1f}w1\u{1f}2\u{1f}100\u{1f}120\u{1f}";
        assert_eq!(
            state_fields(v),
            Some(vec![
                ("status", "running"),
                ("pending", "0"),
                ("attempts", "1"),
                ("entry", "17-0"),
                ("consumer", "w1"),
                ("delivery", "2"),
                ("ready_ms", "100"),
                ("started_ms", "120"),
            ])
        );
        // As lua/lib.lua packs it: nine parts, eight separators.
        assert_eq!(state_fields("waiting\u{1f}2"), None);
        assert_eq!(state_fields(""), None);
        assert_eq!(STATE_FIELD, "s");
    }

    #[test]
    fn a_packed_definition_and_children_stand_for_their_fields() {
        // As lua/lib.lua reads them (DPAT, RPAT, KPAT): the spec last and whole, even with
        // the separators' escapes in it.
        let spec = r#"{"prompt":"a\u001fb"}"#;
        let d = pack_definition("join", 3, Some("continue"), 0, &[(1, "A"), (2, "B")], spec);
        assert_eq!(
            d,
            format!("1\u{1e}A\u{1d}2\u{1e}B\u{1f}join\u{1f}3\u{1f}continue\u{1f}0\u{1f}{spec}")
        );
        assert_eq!(
            definition_fields(&d),
            Some(vec![
                ("refs", "1,2".to_owned()),
                ("name", "join".to_owned()),
                ("max_attempts", "3".to_owned()),
                ("on_failure", "continue".to_owned()),
                ("below", "0".to_owned()),
                ("spec", spec.to_owned()),
            ])
        );
        // No references, no policy: empty parts, as the fields layout stores them.
        let root = pack_definition("root", 1, None, 2, &[], "{}");
        let fields = definition_fields(&root).unwrap();
        assert_eq!(fields[0], ("refs", String::new()));
        assert_eq!(fields[3], ("on_failure", String::new()));
        assert_eq!(
            parse_definition(&d).map(|d| d.refs),
            Some(vec![(1, "A"), (2, "B")])
        );
        assert_eq!(definition_fields("root\u{1f}1"), None);
        assert_eq!(
            definition_fields("x\u{1e}A\u{1f}r\u{1f}1\u{1f}\u{1f}0\u{1f}{}"),
            None,
            "a reference without an index"
        );

        let k = pack_children(&[
            (1, "llm:a", Priority::High),
            (12, "ext:s", Priority::Normal),
        ]);
        assert_eq!(k, "1\u{1e}llm:a\u{1e}high\u{1d}12\u{1e}ext:s\u{1e}normal");
        assert_eq!(
            unpacked_task_fields(CHILDREN_FIELD, &k),
            Some(vec![("children", "1,12".to_owned())])
        );
        assert_eq!(
            unpacked_task_fields(
                STATE_FIELD,
                "ready\u{1f}0\u{1f}0\u{1f}1-0\u{1f}\u{1f}\u{1f}5\u{1f}\u{1f}"
            ),
            Some(vec![
                ("status", "ready".to_owned()),
                ("pending", "0".to_owned()),
                ("attempts", "0".to_owned()),
                ("entry", "1-0".to_owned()),
                ("ready_ms", "5".to_owned()),
            ])
        );
        assert_eq!(unpacked_task_fields("result", "x"), None);
        assert_eq!(
            (LAYOUT_PACKED, DEFINITION_FIELD, CHILDREN_FIELD),
            ("packed", "d", "k")
        );
    }

    #[test]
    fn global_key_patterns() {
        let k = keys();
        assert_eq!(k.workflows(), "{gleitzeit}:workflows");
        assert_eq!(k.expiring(), "{gleitzeit}:expiring");
        assert_eq!(k.idem("order-42"), "{gleitzeit}:idem:order-42");
        assert_eq!(k.caps(), "{gleitzeit}:caps");
        assert_eq!(k.delayed(), "{gleitzeit}:delayed");
        assert_eq!(k.dead(), "{gleitzeit}:dead");
        assert_eq!(Keys::delayed_member("wf1", 3), "wf1|3");
        assert_eq!(k.workers(), "{gleitzeit}:workers");
        assert_eq!(k.published_endpoints(), "{gleitzeit}:published:endpoints");
        assert_eq!(k.published_strategy(), "{gleitzeit}:published:strategy");
        assert_eq!(k.published_version(), "{gleitzeit}:published:version");
        assert_eq!(k.worker("h-1-ab"), "{gleitzeit}:worker:h-1-ab");
    }

    #[test]
    fn stream_patterns_per_priority() {
        let k = keys();
        assert_eq!(
            k.stream("llm:llama3.2:3b", Priority::Normal),
            "{gleitzeit}:q:llm:llama3.2:3b"
        );
        assert_eq!(
            k.stream("llm:llama3.2:3b", Priority::High),
            "{gleitzeit}:q:llm:llama3.2:3b#high"
        );
        assert_eq!(
            k.stream("ext:Python Tasks", Priority::Low),
            "{gleitzeit}:q:ext:Python Tasks#low"
        );
        let refs = k.stream_refs("llm:x");
        assert_eq!(
            refs.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            vec![
                "{gleitzeit}:q:llm:x#high",
                "{gleitzeit}:q:llm:x",
                "{gleitzeit}:q:llm:x#low"
            ]
        );
        assert_eq!(refs[0].priority, Priority::High);
        assert_eq!(refs[2].capability, "llm:x");
    }

    #[test]
    fn one_shard_is_the_home_layout() {
        let k = keys();
        assert_eq!(k.shard(0, 1), k);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(k.shard_count(), "{gleitzeit}:shards");
    }

    #[test]
    fn shard_prefixes_are_stable_distinct_and_spread_over_the_slot_space() {
        let k = keys();
        // Pinned: a change here would move every workflow of a sharded namespace.
        let three: Vec<Keys> = (0..3).map(|i| k.shard(i, 3)).collect();
        let prefixes: Vec<&str> = three.iter().map(Keys::prefix).collect();
        assert_eq!(prefixes, pinned_three_shards());
        for n in [2u16, 3, 4, 7, 10, 16, 64, MAX_SHARDS] {
            let width = u32::from(CLUSTER_SLOTS) / u32::from(n);
            let mut seen = std::collections::HashSet::new();
            for i in 0..n {
                let s = k.shard(i, n);
                assert!(seen.insert(s.prefix().to_owned()));
                assert!(
                    s.tag().starts_with(&format!("gleitzeit~{i}")),
                    "{}",
                    s.tag()
                );
                // Inside its own part of the slot space.
                let slot = u32::from(s.slot());
                assert_eq!(slot / width, u32::from(i), "shard {i} of {n}: slot {slot}");
            }
        }
    }

    fn pinned_three_shards() -> Vec<&'static str> {
        vec!["{gleitzeit~0~3}:", "{gleitzeit~1~2}:", "{gleitzeit~2~2}:"]
    }

    #[test]
    fn tag_slots_are_redis_cluster_slots() {
        // Values Redis gives (`CLUSTER KEYSLOT`; redis-py's `key_slot` agrees).
        assert_eq!(tag_slot("gleitzeit"), 2_466);
        assert_eq!(tag_slot("foo"), 12_182);
        assert_eq!(tag_slot("user1000"), 3_443);
        assert_eq!(keys().slot(), 2_466);
    }

    #[test]
    fn spread_endpoints_workers_and_services_have_a_prefix_each_the_indexes_stay_home() {
        let home = keys();
        assert!(!home.is_spread());
        assert_eq!(home.endpoint_prefix("gpu-1"), "{gleitzeit}:");
        let spread = home.with_spread(true);
        assert_eq!(spread.endpoint_prefix("gpu-1"), "{gleitzeit~ep~gpu-1}:");
        let per_endpoint = [
            spread.endpoint_leases("gpu-1"),
            spread.endpoint_hold("gpu-1"),
            spread.endpoint_limit("gpu-1"),
            spread.endpoint_budget("gpu-1"),
            spread.endpoint_models("gpu-1"),
            spread.endpoint_probe("gpu-1"),
            spread.endpoint_loading("gpu-1", "m"),
            spread.endpoint_unloading("gpu-1", "m"),
            spread.endpoint_busy("gpu-1"),
            spread.endpoint_health("gpu-1"),
        ];
        for k in &per_endpoint {
            // The same key names as unspread, under the endpoint's prefix.
            let rest = k.strip_prefix("{gleitzeit~ep~gpu-1}:").expect(k);
            assert!(rest.starts_with("ep:gpu-1:"), "{k}");
        }
        assert_eq!(spread.placement_planner(), "{gleitzeit~ep~}:ep::planner");
        assert_eq!(spread.worker("w-1"), "{gleitzeit~w~w-1}:worker:w-1");
        assert_eq!(home.worker("w-1"), "{gleitzeit}:worker:w-1");
        assert_eq!(
            spread.service("Py Tasks"),
            "{gleitzeit~svc~Py Tasks}:svc:Py Tasks"
        );
        assert_eq!(
            spread.service_instance("Py Tasks", "i-1"),
            "{gleitzeit~svc~Py Tasks}:svc:Py Tasks:i-1"
        );
        assert_eq!(home.service("Py Tasks"), "{gleitzeit}:svc:Py Tasks");
        // The indexes and the set of names stay under the home prefix.
        assert_eq!(spread.endpoints(), home.endpoints());
        assert_eq!(spread.workers(), home.workers());
        // Different endpoints, different slots (for these names), the namespace's elsewhere.
        let slot = |k: &str| tag_slot(&k[1..k.find('}').unwrap()]);
        let a = slot(&spread.endpoint_leases("gpu-1"));
        let b = slot(&spread.endpoint_leases("gpu-2"));
        assert_ne!(a, b);
        assert_ne!(a, home.slot());
    }

    #[test]
    fn workflows_spread_evenly_over_shards() {
        let n = 3u16;
        let mut counts = [0u32; 3];
        for i in 0..30_000 {
            counts[usize::from(shard_of(&format!("0192f3a1-{i:08x}-7c3e"), n))] += 1;
        }
        for c in counts {
            assert!((9_000..=11_000).contains(&c), "{counts:?}");
        }
        // Pinned values (FNV-1a 64).
        assert_eq!(shard_of("a", 3), (0xaf63_dc4c_8601_ec8c_u64 % 3) as u16);
    }

    #[test]
    fn namespace_validation() {
        for bad in ["", "a{b", "a}b", "a b", "a\tb", "a\nb", &"x".repeat(65)] {
            assert!(
                matches!(Keys::new(bad), Err(QueueError::InvalidNamespace { .. })),
                "{bad:?} must be refused"
            );
        }
        assert!(Keys::new("ns:with-colon_1.2").is_ok());
    }

    #[test]
    fn capability_validation() {
        assert!(validate_capability("llm:llama3.2:3b").is_ok());
        assert!(validate_capability("ext:Python Tasks").is_ok());
        for bad in ["", "llm:a#high", "llm:{x}", "llm:a\nb"] {
            assert!(validate_capability(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn workflow_id_validation() {
        assert!(validate_workflow_id("0192f3e4-7b1c-7d2e-9f00-123456789abc").is_ok());
        for bad in ["", "a|b", "a:b", "a b", "{x}", &"a".repeat(65)] {
            assert!(validate_workflow_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shared_endpoint_state_patterns() {
        let k = keys();
        assert_eq!(k.endpoints(), "{gleitzeit}:endpoints");
        assert_eq!(k.endpoint_models("gpu-1"), "{gleitzeit}:ep:gpu-1:models");
        assert_eq!(k.endpoint_probe("gpu-1"), "{gleitzeit}:ep:gpu-1:probe");
        assert_eq!(k.endpoint_health("gpu-1"), "{gleitzeit}:ep:gpu-1:health");
        assert_eq!(k.endpoint_leases("gpu-1"), "{gleitzeit}:ep:gpu-1:leases");
        assert_eq!(k.endpoint_hold("gpu-1"), "{gleitzeit}:ep:gpu-1:hold");
        assert_eq!(k.endpoint_limit("gpu-1"), "{gleitzeit}:ep:gpu-1:limit");
        assert_eq!(k.endpoint_budget("gpu-1"), "{gleitzeit}:ep:gpu-1:budget");
        assert_eq!(
            k.endpoint_loading("gpu-1", "llama3:70b"),
            "{gleitzeit}:ep:gpu-1:loading:llama3:70b"
        );
        assert_eq!(
            k.endpoint_unloading("gpu-1", "llama3:70b"),
            "{gleitzeit}:ep:gpu-1:unloading:llama3:70b"
        );
        assert_eq!(k.placement_planner(), "{gleitzeit}:ep::planner");
        assert_eq!(k.endpoint_busy("gpu-1"), "{gleitzeit}:ep:gpu-1:busy");
    }
}
