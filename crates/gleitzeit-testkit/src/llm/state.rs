//! The simulator's shared state: configuration, recorded requests, counters, the gate, faults
//! and poison, the loaded models, and the guards that keep the counters true.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use super::config::{Counters, Fault, LoadEvent, RecordedRequest, SimConfig};
use super::wire::Wire;

/// Sleeps for `d`; returns at once for zero (a zero-length tokio sleep still waits for the
/// next timer tick, which would put a millisecond under every token of a "0ms" simulator).
pub(super) async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// Unix time in ms (what the queue's task records use, so loads can be ordered against them).
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Locks a mutex, recovering the data if a panicking test thread poisoned it.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the handle and the request handlers.
pub(super) struct Shared {
    pub(super) wire: &'static dyn Wire,
    pub(super) config: Mutex<SimConfig>,
    pub(super) faults: Mutex<VecDeque<Fault>>,
    pub(super) poison: Mutex<Vec<(String, Fault)>>,
    pub(super) requests: Mutex<Vec<RecordedRequest>>,
    pub(super) counters: watch::Sender<Counters>,
    pub(super) gate_open: watch::Sender<bool>,
    pub(super) gate_permits: Semaphore,
    /// Models loaded now, least recently used first.
    pub(super) loaded: Mutex<Vec<String>>,
    /// Loads per model.
    pub(super) loads: Mutex<HashMap<String, u64>>,
    /// Every load in order: which model, when it began, how long it takes.
    pub(super) load_log: Mutex<Vec<LoadEvent>>,
    /// Parent of every live connection's token; replaced by `kill_connections`.
    pub(super) connections: Mutex<CancellationToken>,
    pub(super) next_id: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Marks `model` as just used; loads it (evicting the least recently used model beyond
    /// `max_loaded`, 0 = no limit) when it was not loaded, logging the load (which takes
    /// `load_delay`). Returns whether it was loaded now.
    pub(super) fn touch(&self, model: &str, max_loaded: usize, load_delay: Duration) -> bool {
        let mut loaded = lock(&self.loaded);
        if let Some(pos) = loaded.iter().position(|m| m == model) {
            let m = loaded.remove(pos);
            loaded.push(m);
            return false;
        }
        loaded.push(model.to_owned());
        if max_loaded > 0 {
            while loaded.len() > max_loaded {
                loaded.remove(0);
            }
        }
        drop(loaded);
        *lock(&self.loads).entry(model.to_owned()).or_insert(0) += 1;
        lock(&self.load_log).push(LoadEvent {
            model: model.to_owned(),
            started_ms: unix_ms(),
            duration: load_delay,
        });
        self.counters.send_modify(|c| c.loads += 1);
        true
    }

    /// Unloads `model` (no effect when it is not loaded).
    pub(super) fn unload(&self, model: &str) {
        lock(&self.loaded).retain(|m| m != model);
    }

    pub(super) fn next_fault(&self, prompt: &str) -> Option<Fault> {
        let poisoned = lock(&self.poison)
            .iter()
            .find(|(needle, _)| prompt.contains(needle.as_str()))
            .map(|(_, f)| f.clone());
        poisoned.or_else(|| lock(&self.faults).pop_front())
    }

    /// Waits at the gate while it is closed, unless a released permit lets this request on.
    pub(super) async fn pass_gate(self: &Arc<Self>) {
        let mut open = self.gate_open.subscribe();
        if *open.borrow_and_update() {
            return;
        }
        self.counters.send_modify(|c| c.held += 1);
        let _held = HeldGuard(self.clone());
        tokio::select! {
            _ = open.wait_for(|o| *o) => {}
            permit = self.gate_permits.acquire() => {
                if let Ok(p) = permit {
                    p.forget();
                }
            }
        }
    }
}

/// Decrements `held` when a request leaves the gate (or its client goes away).
pub(super) struct HeldGuard(pub(super) Arc<Shared>);

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.0.counters.send_modify(|c| c.held -= 1);
    }
}

/// Counts an inference request in flight until its response finishes or is dropped.
pub(super) struct FlightGuard(pub(super) Arc<Shared>);

impl FlightGuard {
    pub(super) fn new(shared: &Arc<Shared>) -> FlightGuard {
        shared.counters.send_modify(|c| {
            c.received += 1;
            c.in_flight += 1;
            c.max_in_flight = c.max_in_flight.max(c.in_flight);
        });
        FlightGuard(shared.clone())
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.0.counters.send_modify(|c| {
            c.in_flight -= 1;
            c.finished += 1;
        });
    }
}

/// Lets a handler close its own connection (the `DropConnection` fault).
#[derive(Clone)]
pub(super) struct ConnKill(pub(super) CancellationToken);
