//! The router's state: [`Router`] and its [`Member`]s (one per endpoint), with the model view
//! and inventory it keeps. Only the data lives here; what the router does with it is in the
//! sibling rooms (`mod.rs` routes a call, `guards.rs` returns what a call took, `observe.rs`
//! reports, `affinity.rs` places models), which all read these fields.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::provider::Provider;

use super::health::Health;
use super::models::{EndpointModels, ModelDemand, ModelStateStore};
use super::observer::{CallObserver, Reported};
use super::slots::Slots;
use super::target::{RouteTarget, RouterConfig};

/// One endpoint of the router: where it is, its client and its health.
pub(super) struct Member {
    pub(super) target: RouteTarget,
    pub(super) provider: Arc<Provider>,
    pub(super) health: Mutex<Health>,
    /// What the observer was last told about this endpoint's health.
    pub(super) reported: Reported,
}

impl Member {
    pub(super) fn name(&self) -> &str {
        &self.target.endpoint.name
    }

    pub(super) fn health(&self) -> MutexGuard<'_, Health> {
        // Health updates are single assignments; a panic elsewhere cannot leave it torn.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Routes calls over a set of endpoints. `Send + Sync`; share it behind an `Arc`.
pub struct Router {
    pub(super) members: Vec<Member>,
    pub(super) slots: Arc<dyn Slots>,
    pub(super) cfg: RouterConfig,
    pub(super) turn: AtomicUsize,
    pub(super) waiting: Mutex<HashMap<String, usize>>,
    pub(super) released: Notify,
    pub(super) inventory: Mutex<Inventory>,
    /// Held while the endpoints are asked for model sizes: calls that need a size wait for
    /// the lookup under way instead of routing by guess meanwhile.
    pub(super) size_lookup: tokio::sync::Mutex<()>,
    /// Whether any endpoint is marked `gpu` (only then do CPU endpoints refuse big models).
    pub(super) has_gpu: bool,
    /// Shared model state (loaded, pulled) and queued work.
    pub(super) state: Arc<dyn ModelStateStore>,
    /// This process's copy of the shared model state, one record per member.
    pub(super) view: Mutex<ModelView>,
    /// Queued work per model, with when it was read.
    pub(super) demand: Mutex<HashMap<String, (ModelDemand, Instant)>>,
    /// This router's name in loading marks (process id and a random part).
    pub(super) id: String,
    /// (endpoint, model) pulls started by this process.
    pub(super) pulling: Mutex<HashSet<(String, String)>>,
    /// Told about every attempt and health change (metrics).
    pub(super) observer: Arc<dyn CallObserver>,
}

/// The shared model state as last read, per member index.
#[derive(Debug, Default)]
pub(super) struct ModelView {
    pub(super) models: Vec<EndpointModels>,
    pub(super) read: Option<Instant>,
}

/// Model sizes learned from the endpoints' listings.
#[derive(Debug, Default)]
pub(super) struct Inventory {
    pub(super) sizes: HashMap<String, u64>,
    pub(super) refreshed: Option<Instant>,
}

/// Bound of one listing request made to learn model sizes.
pub(super) const INVENTORY_TIMEOUT: Duration = Duration::from_secs(5);

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field(
                "endpoints",
                &self.members.iter().map(Member::name).collect::<Vec<_>>(),
            )
            .field("strategy", &self.cfg.strategy)
            .field("slots", &self.slots)
            .finish()
    }
}
