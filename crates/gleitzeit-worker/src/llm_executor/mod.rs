//! The production executor: runs text, chat, vision and embedding tasks on the configured LLM
//! endpoints through `gleitzeit-llm`'s [`Router`], and classifies errors for the retry
//! decision.
//!
//! The router picks an endpoint by the deployment's strategy, takes an in-flight slot on it,
//! fails over by error class and waits (bounded by the task's timeout) when every endpoint
//! of the model is at its limit. In a fleet the slots are leases in Redis ([`RedisSlots`]),
//! so each endpoint's `max_concurrent` holds across all workers; while calls of a model wait
//! for a slot, [`LlmExecutor::saturated`] tells the reader to stop taking that model's tasks.
//!
//! Model state is shared the same way ([`RedisModelState`]): which models each endpoint has
//! loaded and pulled, refreshed by one worker per endpoint per health interval, and each
//! worker's view of each endpoint's health (`docs/routing.md`, "Shared endpoint state").
//! A task may name its own routing strategy and narrow the endpoints to those carrying a tag
//! or of one provider (`routing: {strategy: …, tag: …, provider: …}` in the workflow); the
//! tags are the endpoints' `routing.endpoints.<name>.tags`.

use std::sync::{Arc, Mutex, RwLock};

use futures::future::BoxFuture;
use futures::FutureExt;
use gleitzeit_core::{Action, Task, TaskResult};
use gleitzeit_llm::router::Selection;
use gleitzeit_llm::{
    CallOptions, EndpointConfig, LlmError, LocalSlots, ModelStateStore, ProviderKind, RouteError,
    RouteTarget, Router, RouterConfig, Slots, Strategy,
};
use gleitzeit_queue::{Queue, QueueConfig};
use serde_json::json;

use crate::config::{ResolvedEndpoint, RoutingConfig, Settings};
use crate::error::WorkerError;
use crate::executor::{ExecContext, ExecFailure, Executor};

/// Capability prefix of LLM task streams.
use crate::bridge::LLM_PREFIX;

/// Executes LLM tasks on the configured endpoints.
pub struct LlmExecutor {
    /// The router new calls use. Replaced as a whole when the published endpoints change
    /// ([`LlmExecutor::start_published`]); a call in flight keeps the router it started on.
    router: RwLock<Arc<Router>>,
    /// What a replacement router is built from besides its endpoints.
    parts: RouterParts,
    /// The deployment's Redis, for the published endpoints (`None`: per-process executor).
    queue: Option<Queue>,
    /// Preloading and the published-endpoints watcher, stopped when the executor is dropped.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The health rounds of the current router, and the worker id they report as.
    health: Mutex<Option<(String, tokio::task::JoinHandle<()>)>>,
}

/// What every router of one executor shares: the file's endpoints and routing settings and
/// the fleet-wide stores.
struct RouterParts {
    file_endpoints: Vec<ResolvedEndpoint>,
    routing: RoutingConfig,
    slots: Arc<dyn Slots>,
    models: Option<Arc<dyn ModelStateStore>>,
}

impl Drop for LlmExecutor {
    fn drop(&mut self) {
        for h in self
            .background
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            h.abort();
        }
        if let Some((_, h)) = self
            .health
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

impl std::fmt::Debug for LlmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmExecutor")
            .field("router", &self.router())
            .finish()
    }
}

/// The router's view of a configured endpoint.
fn route_target(ep: &ResolvedEndpoint) -> RouteTarget {
    let mut cfg = EndpointConfig::new(ep.name.clone(), ep.url.clone(), ep.kind);
    cfg.api_key = ep.api_key.clone();
    cfg.request_timeout = ep.timeout;
    RouteTarget {
        endpoint: cfg,
        models: ep.models.clone(),
        priority: ep.routing.priority,
        max_concurrent: ep.routing.max_concurrent.unwrap_or(0),
        gpu: ep.routing.gpu,
        memory_gb: ep.routing.memory_gb,
        tags: ep.routing.tags.clone(),
        max_loaded: ep.routing.max_loaded,
        preload: ep.routing.preload.clone(),
    }
}

fn router_config(routing: &RoutingConfig) -> RouterConfig {
    RouterConfig {
        // Replaced by the strategy resolved for the endpoints (`RouterParts::build`).
        strategy: routing.strategy.unwrap_or_default(),
        lease_ttl: routing.lease_ttl,
        cooldown: routing.cooldown,
        max_cooldown: routing.max_cooldown,
        cpu_max_model_bytes: (routing.cpu_max_model_gb * 1e9) as u64,
        keep_alive: routing.keep_alive.clone(),
        allow_pull: routing.allow_pull,
        health_interval: routing.health_interval,
        ..RouterConfig::default()
    }
}

impl RouterParts {
    /// A router over `endpoints` with the file's routing settings and `strategy`.
    fn build(
        &self,
        endpoints: &[ResolvedEndpoint],
        strategy: Strategy,
    ) -> Result<Router, WorkerError> {
        for ep in endpoints {
            // Reports which endpoint is unusable (the router's error would name it too, but
            // not as a field).
            gleitzeit_llm::Provider::new(route_target(ep).endpoint).map_err(|e| {
                WorkerError::Endpoint {
                    endpoint: ep.name.clone(),
                    message: e.to_string(),
                }
            })?;
        }
        let mut cfg = router_config(&self.routing);
        cfg.strategy = strategy;
        let router = Router::new(
            endpoints.iter().map(route_target).collect(),
            self.slots.clone(),
            cfg,
        )
        .map_err(|e| WorkerError::Endpoint {
            endpoint: String::new(),
            message: e.to_string(),
        })?;
        let router = match &self.models {
            Some(m) => router.with_model_state(m.clone()),
            None => router,
        };
        // Endpoint metrics (a no-op until a recorder is installed).
        Ok(router.with_observer(Arc::new(crate::metrics::RouterMetrics)))
    }
}

impl LlmExecutor {
    /// An executor whose slots are counted in this process only (one worker, tests), with
    /// the default routing settings.
    pub fn new(endpoints: &[ResolvedEndpoint]) -> Result<LlmExecutor, WorkerError> {
        LlmExecutor::with_slots(
            endpoints,
            &RoutingConfig::default(),
            Arc::new(LocalSlots::new()),
        )
    }

    /// An executor whose slots are leases in the deployment's Redis and whose model state
    /// is kept there, both shared by the fleet. Opens no connection here (the pool connects
    /// on first use). Inside a tokio runtime it also starts preloading and the health rounds
    /// ([`LlmExecutor::start_background`]).
    pub fn fleet(settings: &Settings) -> Result<LlmExecutor, WorkerError> {
        LlmExecutor::fleet_as(settings, &crate::identity::consumer_name())
    }

    /// [`LlmExecutor::fleet`] whose health reports and probe locks carry the worker id
    /// `worker` (the worker's consumer id, so operators see one id per worker).
    pub fn fleet_as(settings: &Settings, worker: &str) -> Result<LlmExecutor, WorkerError> {
        let queue = Queue::new(
            settings.redis_target(),
            QueueConfig {
                namespace: settings.namespace.clone(),
                // Where each endpoint's state lives depends on the shard count; unset, the
                // handle reads what the namespace records before its first endpoint call.
                shards: settings.shards,
                ..QueueConfig::default()
            },
        )
        .map_err(WorkerError::Queue)?;
        let mut ex = LlmExecutor::with_stores(
            &settings.endpoints,
            &settings.routing,
            Arc::new(
                RedisSlots::owned_by(queue.clone(), worker).reusing(settings.routing.lease_linger),
            ),
            Some(Arc::new(RedisModelState::new(queue.clone()))),
        )?;
        ex.queue = Some(queue);
        if tokio::runtime::Handle::try_current().is_ok() {
            ex.start_background(worker.to_owned());
        }
        Ok(ex)
    }

    /// Starts, in the background, the loading of every endpoint's `preload` models and the
    /// health rounds (every `routing.health_interval`) under the worker id `worker`. Both
    /// stop when the executor is dropped. Needs a tokio runtime.
    pub fn start_background(&self, worker: String) {
        let router = self.router();
        let preload = tokio::spawn(async move {
            let n = router.preload().await;
            if n > 0 {
                tracing::info!(models = n, "preloaded models");
            }
        });
        self.background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(preload);
        let health = self.router().spawn_health(worker.clone());
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Some((worker, health));
    }

    /// An executor over `endpoints` taking slots from `slots` (model state per process).
    pub fn with_slots(
        endpoints: &[ResolvedEndpoint],
        routing: &RoutingConfig,
        slots: Arc<dyn Slots>,
    ) -> Result<LlmExecutor, WorkerError> {
        LlmExecutor::with_stores(endpoints, routing, slots, None)
    }

    /// An executor over `endpoints` taking slots from `slots` and keeping model state in
    /// `models` (per process when `None`).
    pub fn with_stores(
        endpoints: &[ResolvedEndpoint],
        routing: &RoutingConfig,
        slots: Arc<dyn Slots>,
        models: Option<Arc<dyn ModelStateStore>>,
    ) -> Result<LlmExecutor, WorkerError> {
        let parts = RouterParts {
            file_endpoints: endpoints.to_vec(),
            routing: routing.clone(),
            slots,
            models,
        };
        let router = parts.build(
            endpoints,
            routing.strategy_for(endpoints.iter().map(|e| e.kind)),
        )?;
        Ok(LlmExecutor {
            router: RwLock::new(Arc::new(router)),
            parts,
            queue: None,
            background: Mutex::new(Vec::new()),
            health: Mutex::new(None),
        })
    }

    /// The router new calls use (for status displays; a later change of the published
    /// endpoints replaces it).
    pub fn router(&self) -> Arc<Router> {
        self.router
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Routes new calls over `endpoints` with `strategy`; calls in flight finish on the
    /// router they started on. The health rounds move to the new router.
    fn replace_router(
        &self,
        endpoints: &[ResolvedEndpoint],
        strategy: Strategy,
    ) -> Result<(), WorkerError> {
        let router = Arc::new(self.parts.build(endpoints, strategy)?);
        *self.router.write().unwrap_or_else(|e| e.into_inner()) = router.clone();
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((worker, old)) = health.take() {
            old.abort();
            let new = router.spawn_health(worker.clone());
            *health = Some((worker, new));
        }
        Ok(())
    }

    /// `chain_below`: the longest chain of tasks waiting on this one (the router favours
    /// the fastest endpoints for a long one).
    async fn run(&self, task: &Task, chain_below: u32) -> Result<TaskResult, ExecFailure> {
        if task.action.model().is_none() {
            return Err(ExecFailure::permanent(format!(
                "{:?} tasks are not executed by LLM endpoints",
                task.action.kind()
            )));
        }
        let request = to_request(task)?;
        let selection = task_selection(task)?;
        let embed = matches!(task.action, Action::Embed { .. });
        // The task's timeout bounds the whole routed call, waiting for a slot included.
        let opts = CallOptions {
            timeout: Some(task.timeout),
            chain_below,
            ..CallOptions::default()
        };
        let started = std::time::Instant::now();
        let router = self.router();
        let routed = router.call_selected(&request, &opts, &selection).await;
        if let Some(endpoint) = routed.as_ref().err().and_then(RouteError::endpoint) {
            tracing::Span::current().record("endpoint", endpoint);
        }
        match routed {
            Ok(resp) => {
                let endpoint = resp.endpoint.clone();
                // The task's log lines from here on name the endpoint (span field).
                tracing::Span::current().record("endpoint", endpoint.as_str());
                to_result(resp, &endpoint, embed)
            }
            // The task's own timeout cut the call (the router gives the task's remaining
            // time to the endpoint): report the task's timeout, not the endpoint's.
            Err(RouteError::Call {
                endpoint,
                error: LlmError::Timeout { .. },
                ..
            }) if started.elapsed() >= task.timeout => Err(ExecFailure::timeout(task.timeout)
                .with_detail(json!({"endpoint": endpoint, "error": "timeout"}))),
            Err(e) => Err(classify_route(&e)),
        }
    }
}

impl Executor for LlmExecutor {
    fn serves(&self, capability: &str) -> bool {
        capability
            .strip_prefix(LLM_PREFIX)
            .is_some_and(|model| self.router().serves(model))
    }

    fn saturated(&self, capability: &str) -> bool {
        capability
            .strip_prefix(LLM_PREFIX)
            .is_some_and(|model| self.router().saturated(model))
    }

    fn execute<'a>(
        &'a self,
        task: &'a Task,
        ctx: &'a ExecContext,
    ) -> BoxFuture<'a, Result<TaskResult, ExecFailure>> {
        self.run(task, ctx.chain_below).boxed()
    }

    fn drained(&self) -> BoxFuture<'_, ()> {
        async {
            if let Err(e) = self.router().flush_slots().await {
                tracing::warn!(error = %e, "cannot return the parked slot leases; they expire");
            }
        }
        .boxed()
    }
}

/// The task's `routing` settings as the router's selection: its tag, its provider, and its
/// strategy if it names one this worker knows (validation admits only known names; a newer
/// submitter's unknown strategy falls back to the deployment's). An unknown provider cannot
/// be ignored like a strategy — the task would run where it asked not to — and no endpoint
/// of this worker can be of it, so the task fails like any selection nothing matches.
fn task_selection(task: &Task) -> Result<Selection, ExecFailure> {
    let Some(routing) = task.routing.as_ref() else {
        return Ok(Selection::default());
    };
    let strategy = routing
        .strategy
        .as_deref()
        .and_then(|name| match name.parse::<Strategy>() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(task = %task.name, error = %e, "ignoring the task's routing strategy");
                None
            }
        });
    let provider = match routing.provider.as_deref() {
        None => None,
        Some(name) => Some(provider_named(name).ok_or_else(|| {
            ExecFailure::permanent(format!(
                "the task selects provider {name:?}, which this worker does not know (ollama, openai, anthropic)"
            ))
            .with_detail(json!({"error": "no_endpoint", "provider": name}))
        })?),
    };
    Ok(Selection {
        strategy,
        tag: routing.tag.clone(),
        provider,
    })
}

/// The endpoint kind a task's `routing.provider` names (the configuration's `kind` names).
fn provider_named(name: &str) -> Option<ProviderKind> {
    [
        ProviderKind::Ollama,
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
    ]
    .into_iter()
    .find(|k| k.to_string() == name)
}

mod failure;
#[cfg(test)]
mod fleet_tests;
mod mapping;
#[cfg(test)]
mod model_state_tests;
mod published;
#[cfg(test)]
mod tests;

pub use crate::bridge::{RedisModelState, RedisSlots};
pub(crate) use failure::classify_route;
pub(crate) use mapping::{to_request, to_result};
