//! Gleitzeit's Redis layer: every key name, the Lua scripts and the queue operations.
//!
//! A workflow is written by one atomic script ([`Queue::submit`]); its tasks wait in
//! per-capability Redis streams as references `{wf, t}`; workers read them through a
//! [`Consumer`] (consumer group `workers`), start them with [`Queue::begin`] and finish them
//! with [`Queue::complete`] / [`Queue::fail`], which are fenced (only the consumer that
//! holds the current delivery can finish a task) and release dependents exactly once.
//! Retries wait in a delayed set until [`Queue::promote`]; idle entries of dead workers
//! are taken over with [`Queue::reclaim`], live ones kept with [`Queue::heartbeat`].
//!
//! Task specs, inputs, results and errors are opaque JSON text to this crate: of the workflow
//! core it uses only the task [`Priority`]. The Redis layout and the script contracts are described
//! in `docs/architecture.md`; key names are built only in [`keys`].
//!
//! Every connection is built from a [`RedisTarget`] (URL plus optional TLS files), so
//! `rediss://` with a private CA or a client certificate works the same everywhere.
//!
//! Every fallible call returns [`QueueError`], whose [`QueueError::is_retryable`] tells
//! whether trying again later can help.

pub mod acl;
mod calls;
mod codes;
mod commit;
pub mod connection;
mod consumer;
mod demand;
mod error;
pub mod keys;
mod layout;
mod lease;
mod link;
pub mod models;
mod ops;
mod prune;
pub mod published;
mod query;
mod queue;
mod reply;
mod scripts;
mod shards;
mod spread;
pub mod stats;
mod types;
mod upkeep;

pub use acl::Role;
pub use codes::ScriptCode;
pub use connection::{
    ClusterUrl, Conn, ConnectionError, Connector, RedisTarget, SentinelUrl, SharedConnection,
    Timeouts, TlsFiles,
};
pub use consumer::{Consumer, WaitSlots};
pub use demand::CapabilityDemand;
pub use error::{Denied, QueueError};
pub use keys::{shard_of, tag_slot, Keys, Priority, StreamRef, CLUSTER_SLOTS, MAX_SHARDS};
pub use lease::{
    lease_member, LeaseBudget, LeaseCandidate, LeaseGrant, LeaseLesson, LeasePick, LEASE_OWNER_SEP,
};
pub use models::{LoadMarks, ModelsRecord};
pub use ops::{RequeueOutcome, WorkerRecord};
pub use prune::{PruneReport, StaleConsumer, StaleHealth};
pub use published::Published;
pub use query::{
    CapabilityBacklog, DeadLetter, EndpointState, Event, StreamStats, TaskInfo, WorkflowInfo,
};
pub use queue::Queue;
pub use stats::WorkflowTotals;
pub use types::{
    BeginOutcome, DeadLetterKind, Delivery, FailRequest, Promoted, QueueConfig, Recorded,
    SubmitOutcome, SubmitRequest, Taken, TaskContext, TaskRecord, WaitLimit, WorkflowEnd,
    POLICY_CONTINUE, POLICY_FAIL_FAST,
};
