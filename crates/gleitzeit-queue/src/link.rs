//! [`Link`]: the one multiplexed connection that carries every non-blocking command of a
//! [`crate::Queue`] handle (scripts, single commands, pipelines).
//!
//! Why one connection and not a pool: Redis is single-threaded, and on a small host a large
//! part of its CPU per task is the system calls and wake-ups of each round trip (measured:
//! a three-command script costs 2.5 µs of Redis CPU when 16 calls arrive in one write, and
//! 15 µs when each arrives alone). Requests sent on one multiplexed connection by many tasks
//! at once leave in one write and are read by Redis in one read, and their replies go back
//! in one write; spread over a pool, each costs its own wake-up. Blocking commands never use
//! it (they would stall everyone): they get a connection of their own
//! ([`crate::Queue::dedicated`]).
//!
//! A connection that an error may have broken (I/O, a reconnect-class error, a timeout) is
//! replaced: the next call opens a new one. Calls in flight on the old one finish or fail on
//! their own; the callers retry retryable errors. Callers that waited while an attempt to
//! connect failed get that attempt's error rather than each trying (and, against an
//! unreachable host, each waiting out the connect timeout) in turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use deadpool_redis::redis::RedisError;

use crate::connection::{Conn, Connector, Timeouts};
use crate::error::QueueError;

/// The shared connection, opened on first use and replaced after a breaking error.
pub(crate) struct Link {
    connector: Connector,
    timeouts: Timeouts,
    /// The current connection and its generation (a number that grows with each one opened).
    current: Mutex<Option<(u64, Conn)>>,
    /// Serialises opening, so callers arriving while the connection is down wait for one
    /// connection instead of each opening their own.
    opening: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    /// Attempts to connect so far, and the error of the last one when it failed.
    attempts: AtomicU64,
    last_failure: Mutex<Option<RedisError>>,
}

/// A handle on the shared connection, with the generation it belongs to.
pub(crate) struct Lease {
    pub(crate) conn: Conn,
    generation: u64,
}

impl Link {
    pub(crate) fn new(connector: Connector, timeouts: Timeouts) -> Link {
        Link {
            connector,
            timeouts,
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            last_failure: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<Lease> {
        let guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(|(generation, conn)| Lease {
            conn: conn.clone(),
            generation: *generation,
        })
    }

    /// The current connection, opened when there is none.
    ///
    /// # Errors
    /// Connection errors (retryable).
    pub(crate) async fn get(&self) -> Result<Lease, QueueError> {
        if let Some(lease) = self.cached() {
            return Ok(lease);
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let _opening = self.opening.lock().await;
        if let Some(lease) = self.cached() {
            return Ok(lease);
        }
        if self.attempts.load(Ordering::Acquire) != seen {
            // An attempt made while this caller waited failed (it would have left a
            // connection otherwise): its answer is this caller's too.
            let failure = self
                .last_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(err) = failure {
                return Err(err.into());
            }
        }
        let res = self.connector.connect(self.timeouts).await;
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = res.as_ref().err().cloned();
        self.attempts.fetch_add(1, Ordering::Release);
        let conn = res?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, conn.clone()));
        Ok(Lease { conn, generation })
    }

    /// Drops the connection `lease` came from when `res` is an error that may have broken
    /// it, so the next call opens a new one. A newer connection is left alone.
    pub(crate) fn settle<T>(&self, lease: Lease, res: &Result<T, QueueError>) {
        let Err(err) = res else { return };
        if !err.breaks_connection() {
            return;
        }
        let mut guard = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|(g, _)| *g == lease.generation) {
            *guard = None;
        }
    }
}
