//! The worker's supervisor and its loops: reader, per-delivery task execution, heartbeat,
//! reclaimer and promoter, and the two-phase shutdown.
//!
//! Ownership of an entry is decided by Redis alone (the consumer group's pending list): every
//! script call is fenced by the entry's consumer and delivery count, so this process keeps only
//! what it needs to heartbeat and abort its own in-flight entries.
//!
//! Rooms: [`supervisor`] (start, supervision, two-phase drain), [`connect`] (Redis at start),
//! [`inflight`] (the in-flight table and shared state), [`linger`] (the reader's pause
//! between reads while busy), [`spawn`] (each delivery in its own
//! task, the reclaimed queue), [`pipeline`] (one delivery end to end), and one file per loop:
//! [`reader`], [`reclaim`], [`heartbeat`], [`promote`].

mod connect;
mod heartbeat;
mod inflight;
mod linger;
mod pipeline;
mod promote;
mod reader;
mod reclaim;
mod sleep;
mod spawn;
mod supervisor;

pub use crate::identity::consumer_name;
pub use supervisor::{run, run_with_executor};
