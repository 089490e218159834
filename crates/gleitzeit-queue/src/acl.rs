// Over 800 lines on purpose: most of it is the per-role command tables, one entry per
// command, kept in one file with the test that checks them against every Lua script.

//! Least privilege: the Redis commands and keys each Gleitzeit role uses, the `ACL SETUSER`
//! rules that grant exactly those, and [`Queue::check_role`], which asks Redis whether the
//! connected user holds a role before anything is written.
//!
//! The tables here are the single source of `gleitzeit-submit acl` and of `docs/acl.md`.
//! Commands run inside a script are checked against the caller's ACL like direct ones, so a
//! role lists the commands of every script it runs (and of the `lua/lib.lua` helpers those
//! scripts call); a test of this module reads the scripts and keeps the tables honest.

use std::fmt;
use std::str::FromStr;

use deadpool_redis::redis::Script;

use crate::error::{Denied, QueueError};
use crate::keys::{Keys, Priority};
use crate::queue::Queue;
use crate::reply;

/// Who talks to Redis, each with its own ACL user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `gleitzeit-submit submit|status|results|cancel|list|watch`.
    Submitter,
    /// `gleitzeit-worker`: the queue loops, the worker registry, shared endpoint state, the
    /// discovery of Python services and the fleet gauges of its metrics.
    Worker,
    /// A Python task service: its registration heartbeat in `{ns}:svc:*`.
    Service,
    /// Read-only operations: `gleitzeit-submit queues|fleet|endpoints|dead list|dead inspect`.
    Monitor,
    /// The monitor's reads plus repair: `dead requeue`, `dead purge`, `endpoints add|remove`,
    /// `prune`.
    Operator,
}

impl Role {
    /// Every role, in the order `gleitzeit-submit acl --role all` prints them.
    pub const ALL: [Role; 5] = [
        Role::Submitter,
        Role::Worker,
        Role::Service,
        Role::Monitor,
        Role::Operator,
    ];

    /// The name used on the command line and in user names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Worker => "worker",
            Role::Service => "service",
            Role::Monitor => "monitor",
            Role::Operator => "operator",
        }
    }

    /// The ACL user name for this role in namespace `namespace`: `<namespace>-<role>`.
    pub fn user(self, namespace: &str) -> String {
        format!("{namespace}-{}", self.as_str())
    }

    /// Every command this role sends (directly or from a script), with the key families it
    /// uses each one on.
    pub fn usage(self) -> &'static [Usage] {
        match self {
            Role::Submitter => SUBMITTER,
            Role::Worker => WORKER,
            Role::Service => SERVICE,
            Role::Monitor => MONITOR,
            Role::Operator => OPERATOR,
        }
    }

    /// The keys this role may touch and how.
    pub fn keys(self) -> &'static [(KeyFamily, Access)] {
        use Access::{Read, ReadWrite};
        use KeyFamily as K;
        match self {
            Role::Submitter => &[
                (K::Workflow, ReadWrite),
                (K::Idem, ReadWrite),
                (K::Stream, ReadWrite),
                (K::Caps, ReadWrite),
                (K::Workflows, ReadWrite),
                (K::Expiring, ReadWrite),
                (K::Delayed, ReadWrite),
                (K::Stats, ReadWrite),
                (K::Workers, Read),
                (K::Worker, Read),
                (K::Service, Read),
                (K::Shards, ReadWrite),
            ],
            Role::Worker => &[
                (K::Workflow, ReadWrite),
                (K::Idem, ReadWrite),
                (K::Stream, ReadWrite),
                (K::Caps, ReadWrite),
                (K::Workflows, ReadWrite),
                (K::Expiring, ReadWrite),
                (K::Delayed, ReadWrite),
                (K::Dead, ReadWrite),
                (K::Stats, ReadWrite),
                (K::Workers, ReadWrite),
                (K::Worker, ReadWrite),
                (K::Endpoints, ReadWrite),
                (K::Endpoint, ReadWrite),
                (K::Service, ReadWrite),
                (K::Published, Read),
                (K::Trim, ReadWrite),
                (K::Shards, ReadWrite),
            ],
            Role::Service => &[(K::Service, ReadWrite), (K::Shards, Read)],
            Role::Monitor => &[
                (K::Workflow, Read),
                (K::Stream, Read),
                (K::Caps, Read),
                (K::Delayed, Read),
                (K::Dead, Read),
                (K::Workers, Read),
                (K::Worker, Read),
                (K::Endpoints, Read),
                (K::Endpoint, Read),
                (K::Published, Read),
                (K::Shards, Read),
            ],
            Role::Operator => &[
                (K::Workflow, ReadWrite),
                (K::Idem, ReadWrite),
                (K::Stream, ReadWrite),
                (K::Dead, ReadWrite),
                (K::Expiring, ReadWrite),
                (K::Caps, ReadWrite),
                (K::Delayed, Read),
                (K::Workers, Read),
                (K::Worker, Read),
                (K::Endpoints, ReadWrite),
                (K::Endpoint, ReadWrite),
                (K::Published, ReadWrite),
                (K::Shards, Read),
            ],
        }
    }

    /// The commands of [`Role::usage`], sorted, each once (ACL notation: `script|load`).
    pub fn commands(self) -> Vec<&'static str> {
        let mut c: Vec<&'static str> = self.usage().iter().map(|u| u.command).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    /// The ACL rules of this role after `reset` and the password: key patterns (`~` read and
    /// write, `%R~` read only), no channels, no command but the role's. The families that
    /// live in a namespace's shards are granted under the home prefix and under every shard
    /// prefix (`{<ns>~*}:`), so the same users serve the namespace whatever its shard count.
    pub fn rules(self, keys: &Keys) -> Vec<String> {
        let mut rules: Vec<String> = self
            .keys()
            .iter()
            .flat_map(|(family, access)| {
                let sigil = match access {
                    Access::Read => "%R~",
                    Access::ReadWrite => "~",
                };
                let home = format!("{sigil}{}", family.pattern(keys));
                let shards = family
                    .is_sharded()
                    .then(|| format!("{sigil}{}", family.shard_pattern(keys)));
                std::iter::once(home).chain(shards)
            })
            .collect();
        rules.push("resetchannels".to_owned());
        rules.push("-@all".to_owned());
        rules.extend(self.commands().into_iter().map(|c| format!("+{c}")));
        rules
    }

    /// Whether this role runs scripts (and so can run the [`Queue::check_role`] probe).
    pub fn runs_scripts(self) -> bool {
        self.commands().contains(&"evalsha")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = QueueError;

    fn from_str(s: &str) -> Result<Role, QueueError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                QueueError::InvalidArgument(format!(
                    "unknown role {s:?} (expected submitter, worker, service, monitor or operator)"
                ))
            })
    }
}

/// Read only, or read and write (`%R~` / `~` in ACL rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read commands only.
    Read,
    /// Any command.
    ReadWrite,
}

/// A group of keys with one pattern (see `docs/architecture.md`, "Redis layout").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyFamily {
    /// `{ns}:wf:*` — workflow hashes (their tasks' fields included), the task hashes of earlier versions, events streams.
    Workflow,
    /// `{ns}:idem:*` — idempotency keys.
    Idem,
    /// `{ns}:q:*` — ready streams.
    Stream,
    /// `{ns}:caps`.
    Caps,
    /// `{ns}:workflows`.
    Workflows,
    /// `{ns}:expiring`.
    Expiring,
    /// `{ns}:delayed`.
    Delayed,
    /// `{ns}:dead`.
    Dead,
    /// `{ns}:stats`.
    Stats,
    /// `{ns}:workers`.
    Workers,
    /// `{ns}:worker:*`.
    Worker,
    /// `{ns}:endpoints`.
    Endpoints,
    /// `{ns}:ep:*` — leases, models, probe lock and health of LLM endpoints.
    Endpoint,
    /// `{ns}:svc:*` — Python service registrations.
    Service,
    /// `{ns}:published:*` — endpoints and strategy published to the fleet, and their version.
    Published,
    /// `{ns}:trim` — the lock of the fleet's stream trimming.
    Trim,
    /// `{ns}:shards` — the namespace's shard count.
    Shards,
}

impl KeyFamily {
    /// The part after `{ns}:`.
    pub fn suffix(self) -> &'static str {
        match self {
            KeyFamily::Workflow => "wf:*",
            KeyFamily::Idem => "idem:*",
            KeyFamily::Stream => "q:*",
            KeyFamily::Caps => "caps",
            KeyFamily::Workflows => "workflows",
            KeyFamily::Expiring => "expiring",
            KeyFamily::Delayed => "delayed",
            KeyFamily::Dead => "dead",
            KeyFamily::Stats => "stats",
            KeyFamily::Workers => "workers",
            KeyFamily::Worker => "worker:*",
            KeyFamily::Endpoints => "endpoints",
            KeyFamily::Endpoint => "ep:*",
            KeyFamily::Service => "svc:*",
            KeyFamily::Published => "published:*",
            KeyFamily::Trim => "trim",
            KeyFamily::Shards => "shards",
        }
    }

    /// The ACL glob pattern in one namespace; glob characters of the namespace are escaped
    /// so the pattern matches that namespace only.
    pub fn pattern(self, keys: &Keys) -> String {
        let mut out = escape_glob(keys.prefix());
        out.push_str(self.suffix());
        out
    }

    /// Whether the family's keys live under other prefixes than the home one when the
    /// namespace is spread over shards: per-workflow data and the queues (in the shards),
    /// each LLM endpoint's state (under `{<ns>~ep~<endpoint>}:`), each worker's record
    /// (under `{<ns>~w~<id>}:`) and each service's registry (under `{<ns>~svc~<service>}:`).
    pub fn is_sharded(self) -> bool {
        matches!(
            self,
            KeyFamily::Endpoint
                | KeyFamily::Worker
                | KeyFamily::Service
                | KeyFamily::Workflow
                | KeyFamily::Idem
                | KeyFamily::Stream
                | KeyFamily::Caps
                | KeyFamily::Workflows
                | KeyFamily::Expiring
                | KeyFamily::Delayed
                | KeyFamily::Dead
                | KeyFamily::Stats
                | KeyFamily::Trim
        )
    }

    /// The ACL glob pattern of this family in every shard of a namespace: `{<ns>~*}:<suffix>`
    /// (the shard prefixes of [`Keys::shard`], and the endpoint prefixes of
    /// [`Keys::endpoint_prefix`]).
    pub fn shard_pattern(self, keys: &Keys) -> String {
        let mut out = String::from("{");
        out.push_str(&escape_glob(keys.tag()));
        out.push_str("~*}:");
        out.push_str(self.suffix());
        out
    }

    /// A key of this family, built by [`Keys`], for the permission probe (never touched).
    fn sample(self, keys: &Keys) -> String {
        const P: &str = "acl-probe";
        match self {
            KeyFamily::Workflow => keys.workflow(P),
            KeyFamily::Idem => keys.idem(P),
            KeyFamily::Stream => keys.stream(P, Priority::Normal),
            KeyFamily::Caps => keys.caps(),
            KeyFamily::Workflows => keys.workflows(),
            KeyFamily::Expiring => keys.expiring(),
            KeyFamily::Delayed => keys.delayed(),
            KeyFamily::Dead => keys.dead(),
            KeyFamily::Stats => keys.stats(),
            KeyFamily::Workers => keys.workers(),
            KeyFamily::Worker => keys.worker(P),
            KeyFamily::Endpoints => keys.endpoints(),
            KeyFamily::Endpoint => keys.endpoint_models(P),
            KeyFamily::Service => keys.service(P),
            KeyFamily::Published => keys.published_endpoints(),
            KeyFamily::Trim => keys.trim_lock(),
            KeyFamily::Shards => keys.shard_count(),
        }
    }
}

/// `text` with the ACL glob characters escaped.
fn escape_glob(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One command of a role and the key families it is used on (empty: a command without keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// ACL notation: `hset`, `script|load`, `xgroup|create`.
    pub command: &'static str,
    /// Where it is used.
    pub keys: &'static [KeyFamily],
    /// Who sends it (for the documentation).
    pub why: &'static str,
}

const fn u(command: &'static str, keys: &'static [KeyFamily], why: &'static str) -> Usage {
    Usage { command, keys, why }
}

use KeyFamily::{
    Caps, Dead, Delayed, Endpoint, Endpoints, Expiring, Idem, Published, Service as Svc, Shards,
    Stats, Stream, Trim, Worker, Workers, Workflow, Workflows,
};

/// The `PING` every client sends when it connects.
const CONNECTION: &str = "connection check (PING)";
/// The worker's service-discovery pool checks a connection that sat idle (`UNWATCH` + `PING`).
const DISCOVERY_POOL: &str = "service discovery's pool (UNWATCH + PING of an idle connection)";
/// The scripts are functions of one library, called with `FCALL` and loaded with
/// `FUNCTION LOAD` when Redis does not know them.
const FUNCTIONS: &str = "every script (FCALL, FUNCTION LOAD when Redis lacks the library)";
/// The permission check at start is an `EVAL` script of its own (it must run before the
/// library is known to be loadable).
const PROBE_USE: &str = "permission check at start (EVALSHA, SCRIPT LOAD on NOSCRIPT)";

const SUBMITTER: &[Usage] = &[
    u("ping", &[], CONNECTION),
    u("fcall", &[Workflow], FUNCTIONS),
    u("function|load", &[], FUNCTIONS),
    u("evalsha", &[], PROBE_USE),
    u("script|load", &[], PROBE_USE),
    u("exists", &[Workflow], "submit.lua, watch.lua"),
    u("get", &[Idem, Shards], "submit.lua; connect (the namespace's shard count)"),
    u(
        "set",
        &[Idem, Workflow, Shards],
        "submit.lua (idempotency key, watch key), watch.lua for watch and submit --wait (watch key), the first submission (the shard count)",
    ),
    u(
        "pexpire",
        &[Workflow],
        "watch.lua for watch and submit --wait (the watch key lengthened)",
    ),
    u("expire", &[Workflow, Idem], "cancel.lua (workflow end)"),
    u("hget", &[Workflow], "status, results, cancel.lua"),
    u(
        "hmget",
        &[Workflow, Worker],
        "status, results, list, cancel.lua; submit (the layouts the live workers run)",
    ),
    u("hset", &[Workflow], "submit.lua, cancel.lua, watch.lua"),
    u("hincrby", &[Workflow, Stats], "submit.lua, cancel.lua"),
    u("sadd", &[Caps], "submit.lua"),
    u(
        "zadd",
        &[Workflows, Expiring],
        "submit.lua, cancel.lua (workflow end)",
    ),
    u("zrevrange", &[Workflows], "list"),
    u(
        "zrangebyscore",
        &[Workers, Svc],
        "submit, watch (which live workers and service instances serve the workflow)",
    ),
    u(
        "hgetall",
        &[Worker],
        "submit, watch (which live workers serve the workflow)",
    ),
    u(
        "zrem",
        &[Workflows, Delayed],
        "list (expired entries), cancel.lua",
    ),
    u(
        "xadd",
        &[Stream, Workflow],
        "submit.lua (ready entries, events), cancel.lua",
    ),
    u("xdel", &[Stream], "cancel.lua"),
    u("xgroup|create", &[Stream], "submit.lua"),
    u(
        "xread",
        &[Workflow],
        "watch, submit --wait (XREAD BLOCK on events)",
    ),
];

const WORKER: &[Usage] = &[
    u("ping", &[], CONNECTION),
    u("unwatch", &[], DISCOVERY_POOL),
    u(
        "fcall",
        &[Stream, Workflow, Delayed, Endpoint, Caps, Trim],
        FUNCTIONS,
    ),
    u("function|load", &[], FUNCTIONS),
    u("evalsha", &[], PROBE_USE),
    u("script|load", &[], PROBE_USE),
    u(
        "multi",
        &[],
        "worker registry, service discovery (MULTI/EXEC)",
    ),
    u(
        "exec",
        &[],
        "worker registry, service discovery (MULTI/EXEC)",
    ),
    u("time", &[], "fleet gauges (age of the oldest ready entry)"),
    u(
        "del",
        &[Worker, Endpoint],
        "worker registry (removal), lease_settle.lua (adapted limit dropped, spent budget), model loading marks",
    ),
    u(
        "exists",
        &[Workflow],
        "complete.lua, complete_many.lua, fail.lua, scripts (the watch key)",
    ),
    u(
        "mget",
        &[Endpoint],
        "model loading and unloading marks",
    ),
    u(
        "expire",
        &[Workflow, Idem],
        "complete.lua, complete_many.lua, fail.lua (workflow end)",
    ),
    u(
        "pexpire",
        &[Worker, Endpoint],
        "worker registry, endpoint health, calls in flight per model",
    ),
    u(
        "pexpireat",
        &[Endpoint],
        "lease_settle.lua (budget forgotten at its reset)",
    ),
    u(
        "set",
        &[Endpoint, Trim, Shards],
        "endpoint probe lock, model loading marks, placement planner lock (SET NX PX), lease_settle.lua (holds, adapted limits), trim.lua (the fleet's trim lock), connect (the shard count)",
    ),
    u(
        "get",
        &[Endpoint, Published, Shards],
        "lease_acquire.lua, lease_settle.lua (adapted limits), published endpoints (version, strategy), model loading marks, connect (the shard count)",
    ),
    u(
        "pttl",
        &[Workflow, Endpoint],
        "promote.lua (index trimming), lease_acquire.lua, lease_settle.lua (holds)",
    ),
    u("hget", &[Workflow], "scripts, placement demand"),
    u(
        "hdel",
        &[Workflow],
        "fail.lua (the wait-for-capacity clock)",
    ),
    u(
        "hmget",
        &[Workflow, Endpoint],
        "scripts, lease_acquire.lua and lease_settle.lua (budgets)",
    ),
    u(
        "hset",
        &[Workflow, Worker, Endpoint],
        "scripts, worker registry, endpoint state, endpoint budgets",
    ),
    u(
        "hincrby",
        &[Workflow, Stats, Endpoint],
        "scripts, calls in flight per model",
    ),
    u(
        "hgetall",
        &[Stats, Endpoint, Svc, Published],
        "metrics, endpoint state, service discovery, published endpoints (adopted)",
    ),
    u(
        "hlen",
        &[Published],
        "published endpoints (the notice of a worker that does not adopt them)",
    ),
    u(
        "sadd",
        &[Endpoints, Caps],
        "endpoint health; a released task registers its capability (make_ready)",
    ),
    u(
        "smembers",
        &[Caps, Endpoints],
        "reader (capabilities), fleet gauges, trim.lua",
    ),
    u(
        "zadd",
        &[Delayed, Expiring, Workers, Endpoint],
        "fail.lua, workflow end, promote.lua, registry, leases",
    ),
    u(
        "zrem",
        &[Delayed, Workflows, Expiring, Workers, Endpoint],
        "promote.lua (due retries, index trimming), fail.lua, registry, leases",
    ),
    u(
        "zcard",
        &[Delayed, Endpoint],
        "fleet gauges, lease_acquire.lua",
    ),
    u("zcount", &[Endpoint], "lease counts"),
    u("zscore", &[Endpoint], "lease renewal"),
    u(
        "zrange",
        &[Delayed, Endpoint],
        "promote.lua, reclaim.lua (leases of the consumers taken over)",
    ),
    u(
        "zrangebyscore",
        &[Delayed, Expiring, Svc],
        "promote.lua, service discovery",
    ),
    u(
        "zremrangebyscore",
        &[Workers, Endpoint, Svc],
        "registry, lease_acquire.lua, service discovery",
    ),
    u(
        "xadd",
        &[Stream, Workflow, Dead],
        "scripts (ready entries, events, dead letters)",
    ),
    u("xack", &[Stream], "scripts"),
    u(
        "xdel",
        &[Stream],
        "scripts (a cancelled task's ready entry)",
    ),
    u("xtrim", &[Stream], "trim.lua (finished entries)"),
    u(
        "xlen",
        &[Stream, Dead],
        "model affinity routing, fleet gauges, placement demand, trim.lua",
    ),
    u(
        "xrange",
        &[Stream],
        "fleet gauges, placement demand (ready entries)",
    ),
    u("xrevrange", &[Stream], "read.lua"),
    u(
        "xpending",
        &[Stream],
        "fencing in the scripts, reclaim.lua, leaving the groups, placement demand, trim.lua",
    ),
    u(
        "xgroup|delconsumer",
        &[Stream],
        "leaving the consumer groups at the end of the drain",
    ),
    u("xclaim", &[Stream], "heartbeat.lua"),
    u("xautoclaim", &[Stream], "reclaim.lua"),
    u("xread", &[Stream], "reader (XREAD BLOCK)"),
    u("xreadgroup", &[Stream], "read.lua"),
    u("xgroup|create", &[Stream], "read.lua, reader"),
    u(
        "xinfo|groups",
        &[Stream],
        "fleet gauges, placement demand, trim.lua",
    ),
];

const SERVICE: &[Usage] = &[
    u(
        "get",
        &[Shards],
        "heartbeat (the namespace's shard count: where its registration lives)",
    ),
    u("multi", &[], "registration heartbeat (MULTI/EXEC)"),
    u("exec", &[], "registration heartbeat (MULTI/EXEC)"),
    u(
        "zremrangebyscore",
        &[Svc],
        "heartbeat (drops expired instances)",
    ),
    u("zadd", &[Svc], "heartbeat"),
    u("hset", &[Svc], "heartbeat"),
    u("pexpire", &[Svc], "heartbeat"),
    u("zrem", &[Svc], "deregistration"),
    u("del", &[Svc], "deregistration"),
];

const MONITOR: &[Usage] = &[
    u("ping", &[], CONNECTION),
    u(
        "time",
        &[],
        "queues, fleet (age of the oldest ready entry, server clock)",
    ),
    u("smembers", &[Caps, Endpoints], "queues, fleet, endpoints"),
    u("xlen", &[Stream, Dead], "queues, fleet"),
    u("xinfo|groups", &[Stream], "queues, fleet"),
    u("xrange", &[Stream, Dead], "queues, dead list/inspect"),
    u("xrevrange", &[Dead], "dead list"),
    u("zcard", &[Delayed], "queues, fleet"),
    u("zrange", &[Delayed], "queues (retries per capability)"),
    u("hget", &[Workflow], "queues, dead inspect"),
    u("hmget", &[Workflow], "dead inspect"),
    u(
        "hgetall",
        &[Worker, Endpoint, Published],
        "fleet, endpoints, endpoints published",
    ),
    u("zrangebyscore", &[Workers], "fleet"),
    u("zcount", &[Endpoint], "fleet, endpoints"),
    u(
        "get",
        &[Published, Shards],
        "endpoints published (strategy), connect (the shard count)",
    ),
];

const OPERATOR: &[Usage] = &[
    u("ping", &[], CONNECTION),
    u(
        "time",
        &[],
        "queues, fleet (age of the oldest ready entry, server clock)",
    ),
    u("smembers", &[Caps, Endpoints], "queues, fleet, endpoints"),
    u("xlen", &[Stream, Dead], "queues, fleet, dead purge --all"),
    u("xinfo|groups", &[Stream], "queues, fleet, prune.lua"),
    u(
        "xrange",
        &[Stream, Dead],
        "queues, dead list/inspect, requeue.lua, prune.lua",
    ),
    u("xrevrange", &[Dead], "dead list"),
    u("zcard", &[Delayed], "queues, fleet"),
    u("zrange", &[Delayed], "queues (retries per capability)"),
    u("hget", &[Workflow], "queues, dead inspect, requeue.lua"),
    u("hmget", &[Workflow], "dead inspect, requeue.lua"),
    u(
        "hgetall",
        &[Worker, Endpoint, Published],
        "fleet, endpoints, endpoints published/add/remove/strategy",
    ),
    u("zrangebyscore", &[Workers], "fleet"),
    u("zcount", &[Endpoint], "fleet, endpoints"),
    u("fcall", &[Dead], FUNCTIONS),
    u("function|load", &[], FUNCTIONS),
    u("evalsha", &[], PROBE_USE),
    u("script|load", &[], PROBE_USE),
    u("hset", &[Workflow, Published], "requeue.lua, endpoints add"),
    u(
        "hdel",
        &[Workflow, Published, Endpoint],
        "requeue.lua, endpoints remove, prune",
    ),
    u("hincrby", &[Workflow], "requeue.lua"),
    u(
        "zrem",
        &[Expiring],
        "requeue.lua (a reopened workflow no longer expires)",
    ),
    u(
        "persist",
        &[Workflow, Idem],
        "requeue.lua (a reopened workflow keeps its keys)",
    ),
    u(
        "xadd",
        &[Stream, Workflow],
        "requeue.lua (ready entry, events)",
    ),
    u("xdel", &[Dead], "requeue.lua, dead purge"),
    u(
        "multi",
        &[],
        "dead purge --all, endpoints add/remove/strategy (MULTI/EXEC)",
    ),
    u(
        "exec",
        &[],
        "dead purge --all, endpoints add/remove/strategy (MULTI/EXEC)",
    ),
    u("del", &[Dead, Stream, Endpoint], "dead purge --all, prune"),
    u(
        "get",
        &[Published, Shards],
        "endpoints published (strategy), connect (the shard count)",
    ),
    u("set", &[Published], "endpoints strategy"),
    u(
        "sadd",
        &[Caps],
        "requeue.lua (make_ready registers the capability)",
    ),
    u("srem", &[Caps, Endpoints], "prune"),
    u("xinfo|consumers", &[Stream], "prune"),
    u("xinfo|stream", &[Stream], "prune"),
    u("xpending", &[Stream], "prune.lua"),
    u("xgroup|delconsumer", &[Stream], "prune.lua"),
    u(
        "exists",
        &[Endpoint, Workflow],
        "prune, requeue.lua (the watch key)",
    ),
    u(
        "incr",
        &[Published],
        "endpoints add/remove/strategy (version)",
    ),
];

/// The permission probe: asks Redis, for each command line it is given, whether the calling
/// user may run it (`redis.acl_check_cmd`, Redis 7.0+). Nothing is run and no key touched.
///
/// KEYS: none (the keys to check are arguments: they are checked, never accessed).
/// ARGV: groups, each `n` followed by the `n` words of one command line.
/// Returns: the 1-based positions of the refused groups (empty: all allowed), or `{-1}` when
/// this Redis has no `redis.acl_check_cmd` (nothing was checked; see [`ProbeCode`]).
const PROBE: &str = r"
if not redis.acl_check_cmd then return { -1 } end
local refused, i, group = {}, 1, 0
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  group = group + 1
  if not redis.acl_check_cmd(unpack(ARGV, i + 1, i + n)) then
    refused[#refused + 1] = group
  end
  i = i + n + 1
end
return refused
";

/// The probe's special return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeCode {
    /// `-1`: this Redis cannot check permissions from a script (before 7.0); not checked.
    Unsupported = -1,
}

/// The command line the probe checks for one use: the command with `key` where Redis looks
/// for its key (the other words only have to place the key right).
fn probe_line(command: &str, key: Option<&str>) -> Vec<String> {
    let k = key.unwrap_or_default().to_owned();
    let words: Vec<&str> = match command {
        "script|load" => vec!["script", "load", "return 1"],
        "function|load" => vec!["function", "load", "#!lua name=probe\nreturn 1"],
        "fcall" => vec!["fcall", "probe", "1", &k],
        // The probe itself runs with no keys.
        "evalsha" => vec!["evalsha", "0000000000000000000000000000000000000000", "0"],
        "xread" => vec!["xread", "COUNT", "1", "STREAMS", &k, "0"],
        "xreadgroup" => vec!["xreadgroup", "GROUP", "g", "c", "STREAMS", &k, ">"],
        "xgroup|create" => vec!["xgroup", "create", &k, "g", "0"],
        "xinfo|groups" => vec!["xinfo", "groups", &k],
        "xinfo|consumers" => vec!["xinfo", "consumers", &k, "g"],
        "xinfo|stream" => vec!["xinfo", "stream", &k],
        "xgroup|delconsumer" => vec!["xgroup", "delconsumer", &k, "g", "c"],
        other if key.is_none() => vec![other],
        other => vec![other, &k],
    };
    words.into_iter().map(str::to_owned).collect()
}

impl Queue {
    /// Asks Redis whether the connected user may run every command of `role` on every key
    /// family it uses (one script call that runs and touches nothing). Roles that run no
    /// script cannot run the probe and are not checked; their commands are refused one by
    /// one with a [`QueueError::NoPermission`] naming the command.
    ///
    /// # Errors
    /// [`QueueError::NoPermission`] naming the first refused command and key (the message
    /// lists all); Redis errors.
    pub async fn check_role(&self, role: Role) -> Result<(), QueueError> {
        const CTX: &str = "check_role";
        if !role.runs_scripts() {
            return Ok(());
        }
        let keys = self.keys();
        let mut checks: Vec<(&'static str, Option<String>)> = Vec::new();
        for usage in role.usage() {
            if usage.keys.is_empty() {
                checks.push((usage.command, None));
            }
            for family in usage.keys {
                checks.push((usage.command, Some(family.sample(keys))));
                // A sharded namespace's data is under the shard prefixes.
                if family.is_sharded() && self.shard_count() > 1 {
                    checks.push((usage.command, Some(family.sample(&self.shards()[0]))));
                }
            }
        }
        let script = Script::new(PROBE);
        let mut inv = script.prepare_invoke();
        for (command, key) in &checks {
            let line = probe_line(command, key.as_deref());
            inv.arg(line.len());
            for word in line {
                inv.arg(word);
            }
        }
        let v = self.invoke_script(&inv).await?;
        let refused: Vec<i64> = reply::array_or_nil(CTX, &v)?
            .iter()
            .map(|x| reply::int(CTX, x))
            .collect::<Result<_, _>>()?;
        if refused.first() == Some(&(ProbeCode::Unsupported as i64)) {
            tracing::debug!("Redis cannot check ACL permissions from a script; not checked");
            return Ok(());
        }
        let denied: Vec<&(&str, Option<String>)> = refused
            .iter()
            .filter_map(|pos| usize::try_from(*pos - 1).ok())
            .filter_map(|i| checks.get(i))
            .collect();
        let Some((command, key)) = denied.first() else {
            return Ok(());
        };
        let list = denied
            .iter()
            .map(|(c, k)| match k {
                Some(k) => format!("{c} on {k}"),
                None => (*c).to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        Err(QueueError::NoPermission(Box::new(Denied {
            command: Some((*command).to_owned()),
            key: key.clone(),
            key_refused: key.is_some(),
            script: None,
            message: format!("refused for role {role}: {list}"),
        })))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// The commands each function of `lua/lib.lua` runs and the helpers it calls.
    fn lua_commands(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        // The scripts call redis.call and redis.pcall through lib.lua's locals rcall and
        // rpcall; a direct call (written before the library locals were taken, or anew) is
        // a command all the same.
        for pat in [
            "rcall('",
            "rpcall('",
            "redis.call('",
            "redis.pcall('",
            "local args = { '",
        ] {
            let mut rest = text;
            while let Some(i) = rest.find(pat) {
                rest = &rest[i + pat.len()..];
                let word: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                let mut cmd = word.to_ascii_lowercase();
                if cmd == "xgroup" || cmd == "xinfo" || cmd == "script" {
                    let sub: String = rest[word.len()..]
                        .trim_start_matches(['\'', ',', ' '])
                        .chars()
                        .take_while(|c| c.is_ascii_alphabetic())
                        .collect();
                    cmd = format!("{cmd}|{}", sub.to_ascii_lowercase());
                }
                out.insert(cmd);
            }
        }
        out
    }

    /// lib.lua split into its `local function`s: name -> body.
    fn lib_functions(lib: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let parts: Vec<&str> = lib.split("\nlocal function ").collect();
        for part in &parts[1..] {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(name, (*part).to_owned());
        }
        out
    }

    /// The commands a script runs: its own and those of the lib helpers it reaches.
    fn script_commands(body: &str) -> BTreeSet<String> {
        let lib = include_str!("../../../lua/lib.lua");
        let funcs = lib_functions(lib);
        let mut cmds = lua_commands(body);
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = funcs
            .keys()
            .filter(|f| body.contains(&format!("{f}(")))
            .cloned()
            .collect();
        while let Some(f) = todo.pop() {
            if !seen.insert(f.clone()) {
                continue;
            }
            let text = &funcs[&f];
            cmds.extend(lua_commands(text));
            for g in funcs.keys() {
                if g != &f && text.contains(&format!("{g}(")) {
                    todo.push(g.clone());
                }
            }
        }
        cmds
    }

    #[test]
    fn every_command_a_script_runs_is_in_the_roles_that_run_it() {
        let scripts: &[(&str, &str, &[Role])] = &[
            (
                "submit",
                include_str!("../../../lua/submit.lua"),
                &[Role::Submitter],
            ),
            (
                "cancel",
                include_str!("../../../lua/cancel.lua"),
                &[Role::Submitter],
            ),
            (
                "begin",
                include_str!("../../../lua/begin.lua"),
                &[Role::Worker],
            ),
            (
                "complete",
                include_str!("../../../lua/complete.lua"),
                &[Role::Worker],
            ),
            (
                "complete_many",
                include_str!("../../../lua/complete_many.lua"),
                &[Role::Worker],
            ),
            (
                "fail",
                include_str!("../../../lua/fail.lua"),
                &[Role::Worker],
            ),
            (
                "promote",
                include_str!("../../../lua/promote.lua"),
                &[Role::Worker],
            ),
            (
                "heartbeat",
                include_str!("../../../lua/heartbeat.lua"),
                &[Role::Worker],
            ),
            (
                "read",
                include_str!("../../../lua/read.lua"),
                &[Role::Worker],
            ),
            (
                "reclaim",
                include_str!("../../../lua/reclaim.lua"),
                &[Role::Worker],
            ),
            (
                "lease_acquire",
                include_str!("../../../lua/lease_acquire.lua"),
                &[Role::Worker],
            ),
            (
                "lease_settle",
                include_str!("../../../lua/lease_settle.lua"),
                &[Role::Worker],
            ),
            (
                "requeue",
                include_str!("../../../lua/requeue.lua"),
                &[Role::Operator],
            ),
            (
                "prune",
                include_str!("../../../lua/prune.lua"),
                &[Role::Operator],
            ),
            (
                "trim",
                include_str!("../../../lua/trim.lua"),
                &[Role::Worker],
            ),
        ];
        for (name, body, roles) in scripts {
            let needed = script_commands(body);
            assert!(!needed.is_empty(), "{name}: no command found");
            for role in *roles {
                let has: BTreeSet<String> =
                    role.commands().into_iter().map(str::to_owned).collect();
                let missing: Vec<&String> = needed.difference(&has).collect();
                assert!(
                    missing.is_empty(),
                    "{name}.lua runs {missing:?}, not in role {role}"
                );
                assert!(has.contains("fcall") && has.contains("function|load"));
            }
        }
        // The helper analysis follows calls: cancel reaches finish() and its EXPIRE.
        assert!(script_commands(include_str!("../../../lua/cancel.lua")).contains("expire"));
    }

    #[test]
    fn every_key_family_used_is_granted_and_read_only_roles_only_read() {
        for role in Role::ALL {
            let granted: BTreeMap<KeyFamily, Access> = role.keys().iter().copied().collect();
            for usage in role.usage() {
                for family in usage.keys {
                    assert!(
                        granted.contains_key(family),
                        "role {role}: {} uses {family:?}, which is not granted",
                        usage.command
                    );
                }
            }
            for family in granted.keys() {
                assert!(
                    role.usage().iter().any(|u| u.keys.contains(family)),
                    "role {role} is granted {family:?} but uses none of it"
                );
            }
        }
        assert!(Role::Monitor.keys().iter().all(|(_, a)| *a == Access::Read));
        assert!(!Role::Monitor.runs_scripts());
        // A submitter never touches the endpoints' keys or the dead letters, and only reads
        // the fleet's registries (to say who will run a workflow).
        assert!(Role::Submitter.keys().iter().all(|(f, a)| match f {
            KeyFamily::Endpoint | KeyFamily::Dead => false,
            KeyFamily::Workers | KeyFamily::Worker | KeyFamily::Service => *a == Access::Read,
            _ => true,
        }));
    }

    #[test]
    fn patterns_escape_glob_characters_of_the_namespace() {
        let keys = Keys::new("gleitzeit").unwrap();
        assert_eq!(KeyFamily::Workflow.pattern(&keys), "{gleitzeit}:wf:*");
        let odd = Keys::new("a*b?[c]").unwrap();
        assert_eq!(KeyFamily::Caps.pattern(&odd), r"{a\*b\?\[c\]}:caps");
        let rules = Role::Monitor.rules(&keys);
        assert!(rules.contains(&"%R~{gleitzeit}:dead".to_owned()));
        assert!(rules.contains(&"+time".to_owned()));
        assert_eq!(
            rules.iter().position(|r| r == "-@all").unwrap() + 1,
            rules.iter().position(|r| r.starts_with('+')).unwrap(),
            "-@all comes before the grants"
        );
    }

    #[test]
    fn roles_parse_and_name_users() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("admin".parse::<Role>().is_err());
        assert_eq!(Role::Worker.user("team-a"), "team-a-worker");
    }
}
