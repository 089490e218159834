//! The fault suite's harness: a seeded mixed workload ([`workload`]), a checker that reads
//! Redis and the simulators afterwards and counts what went wrong ([`check`]), and a
//! fault-injecting HTTP front for the provider simulators ([`proxy`]).
//!
//! A scenario submits a [`workload::Workload`], injects one fault while it runs (a worker
//! killed or stopped, Redis killed or paused, an endpoint refusing, overloaded, rate limited
//! or hanging, a task service killed), restores health, waits for every workflow's end event
//! and runs [`check::check`]. The run is reproducible from the seed it prints
//! (`GLEITZEIT_FAULT_SEED` sets it); `GLEITZEIT_FAULT_FULL=1` selects the full-sized matrix
//! instead of the one sized for every test run.

pub mod check;
pub mod fleet;
pub mod ha;
pub mod proxy;
pub mod workload;

use std::time::{SystemTime, UNIX_EPOCH};

/// Environment variable that fixes the workload seed.
pub const SEED_ENV: &str = "GLEITZEIT_FAULT_SEED";

/// Environment variable that selects the full matrix (`1`).
pub const FULL_ENV: &str = "GLEITZEIT_FAULT_FULL";

/// The seed of this run: `GLEITZEIT_FAULT_SEED` when set, otherwise taken from the clock.
///
/// # Panics
/// When `GLEITZEIT_FAULT_SEED` is set but is not an unsigned integer (the message names it).
pub fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            panic!("{SEED_ENV}={text:?} is not an unsigned integer (e.g. {SEED_ENV}=42)")
        }),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    }
}

/// Whether the full matrix was asked for (`GLEITZEIT_FAULT_FULL=1`).
pub fn full() -> bool {
    std::env::var(FULL_ENV).is_ok_and(|v| v.trim() == "1")
}

/// `ci` in the matrix every test run uses, `full` in the full matrix.
pub fn sized<T>(ci: T, full_size: T) -> T {
    if full() {
        full_size
    } else {
        ci
    }
}
