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

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::FutureExt;
use gleitzeit_core::{
    Action, ChatMessage, FailureKind, LlmOptions, ResultMeta, Role, Task, TaskResult,
};
use gleitzeit_llm::router::Selection;
use gleitzeit_llm::{
    CallOptions, EndpointConfig, EndpointModels, ErrorClass, GenOptions, HealthReport, LlmError,
    LlmRequest, LlmResponse, LocalSlots, Message, ModelStateStore, Op, ProviderKind, RouteError,
    RouteTarget, Router, RouterConfig, SlotCandidate, SlotError, SlotPick, Slots, StoreError,
    Strategy,
};
use gleitzeit_queue::{LeaseCandidate, LeasePick, ModelsRecord, Queue, QueueConfig};
use serde_json::{json, Value};

use crate::config::{EndpointKind, ResolvedEndpoint, RoutingConfig, Settings};
use crate::executor::{ExecContext, ExecFailure, Executor};
use crate::runtime::WorkerError;

/// Capability prefix of LLM task streams.
const LLM_PREFIX: &str = "llm:";

/// Executes LLM tasks on the configured endpoints.
pub struct LlmExecutor {
    router: Arc<Router>,
    /// Health rounds and preloading, stopped when the executor is dropped.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
    }
}

impl std::fmt::Debug for LlmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmExecutor")
            .field("router", &self.router)
            .finish()
    }
}

fn provider_kind(kind: EndpointKind) -> ProviderKind {
    match kind {
        EndpointKind::Ollama => ProviderKind::Ollama,
        EndpointKind::OpenAi => ProviderKind::OpenAi,
        EndpointKind::Anthropic => ProviderKind::Anthropic,
    }
}

/// The router's view of a configured endpoint.
fn route_target(ep: &ResolvedEndpoint) -> RouteTarget {
    let mut cfg = EndpointConfig::new(ep.name.clone(), ep.url.clone(), provider_kind(ep.kind));
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
        strategy: routing.strategy,
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
        LlmExecutor::fleet_as(settings, &crate::runtime::consumer_name())
    }

    /// [`LlmExecutor::fleet`] whose health reports and probe locks carry the worker id
    /// `worker` (the worker's consumer id, so operators see one id per worker).
    pub fn fleet_as(settings: &Settings, worker: &str) -> Result<LlmExecutor, WorkerError> {
        let queue = Queue::new(
            &settings.redis_url,
            QueueConfig {
                namespace: settings.namespace.clone(),
                ..QueueConfig::default()
            },
        )
        .map_err(WorkerError::Queue)?;
        let ex = LlmExecutor::with_stores(
            &settings.endpoints,
            &settings.routing,
            Arc::new(RedisSlots::new(queue.clone())),
            Some(Arc::new(RedisModelState::new(queue))),
        )?;
        if tokio::runtime::Handle::try_current().is_ok() {
            ex.start_background(worker.to_owned());
        }
        Ok(ex)
    }

    /// Starts, in the background, the loading of every endpoint's `preload` models and the
    /// health rounds (every `routing.health_interval`) under the worker id `worker`. Both
    /// stop when the executor is dropped. Needs a tokio runtime.
    pub fn start_background(&self, worker: String) {
        let router = self.router.clone();
        let preload = tokio::spawn(async move {
            let n = router.preload().await;
            if n > 0 {
                tracing::info!(models = n, "preloaded models");
            }
        });
        let health = self.router.spawn_health(worker);
        self.background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([preload, health]);
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
        let router = Router::new(
            endpoints.iter().map(route_target).collect(),
            slots,
            router_config(routing),
        )
        .map_err(|e| WorkerError::Endpoint {
            endpoint: String::new(),
            message: e.to_string(),
        })?;
        let router = match models {
            Some(m) => router.with_model_state(m),
            None => router,
        };
        // Endpoint metrics (a no-op until a recorder is installed).
        let router = router.with_observer(Arc::new(crate::metrics::RouterMetrics));
        Ok(LlmExecutor {
            router: Arc::new(router),
            background: Mutex::new(Vec::new()),
        })
    }

    /// The router (for status displays).
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    async fn run(&self, task: &Task) -> Result<TaskResult, ExecFailure> {
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
            ..CallOptions::default()
        };
        let started = std::time::Instant::now();
        let routed = self.router.call_selected(&request, &opts, &selection).await;
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
            .is_some_and(|model| self.router.serves(model))
    }

    fn saturated(&self, capability: &str) -> bool {
        capability
            .strip_prefix(LLM_PREFIX)
            .is_some_and(|model| self.router.saturated(model))
    }

    fn execute<'a>(
        &'a self,
        task: &'a Task,
        _ctx: &'a ExecContext,
    ) -> BoxFuture<'a, Result<TaskResult, ExecFailure>> {
        self.run(task).boxed()
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

/// Model state in Redis (`{ns}:ep:<endpoint>:models`, `:probe`, `:health`,
/// `{ns}:endpoints`), shared by every worker of the deployment; queued work is read from
/// the model's capability streams (`{ns}:q:llm:<model>`).
#[derive(Debug, Clone)]
pub struct RedisModelState {
    queue: Queue,
}

impl RedisModelState {
    /// Model state kept through `queue` (its namespace and connection pool).
    pub fn new(queue: Queue) -> RedisModelState {
        RedisModelState { queue }
    }
}

fn store_error(e: impl std::fmt::Display) -> StoreError {
    StoreError {
        message: e.to_string(),
    }
}

/// The record as the router sees it; unreadable JSON fields count as empty (the next
/// refresh rewrites them).
fn endpoint_models(r: ModelsRecord) -> EndpointModels {
    EndpointModels {
        loaded: r
            .loaded_json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        pulled: r
            .pulled_json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        updated_ms: r.updated_ms,
        loaded_ms: r.loaded_ms,
        probed_by: r.probed_by,
    }
}

impl ModelStateStore for RedisModelState {
    fn claim_probe<'a>(
        &'a self,
        endpoint: &'a str,
        worker: &'a str,
        interval: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            self.queue
                .endpoint_probe_claim(endpoint, worker, ttl_ms(interval))
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn models<'a>(
        &'a self,
        endpoints: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<EndpointModels>, StoreError>> {
        async move {
            let records = self
                .queue
                .endpoint_models(endpoints)
                .await
                .map_err(store_error)?;
            Ok(records.into_iter().map(endpoint_models).collect())
        }
        .boxed()
    }

    fn put_models<'a>(
        &'a self,
        endpoint: &'a str,
        models: &'a EndpointModels,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let record = ModelsRecord {
                loaded_json: Some(serde_json::to_string(&models.loaded).map_err(store_error)?),
                pulled_json: Some(serde_json::to_string(&models.pulled).map_err(store_error)?),
                updated_ms: models.updated_ms,
                loaded_ms: models.loaded_ms,
                probed_by: models.probed_by.clone(),
            };
            self.queue
                .endpoint_models_put(endpoint, &record)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn put_loaded<'a>(
        &'a self,
        endpoint: &'a str,
        loaded: &'a [String],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let record = ModelsRecord {
                loaded_json: Some(serde_json::to_string(loaded).map_err(store_error)?),
                loaded_ms: Some(at_ms),
                ..ModelsRecord::default()
            };
            self.queue
                .endpoint_models_put(endpoint, &record)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn publish_health<'a>(
        &'a self,
        endpoint: &'a str,
        report: &'a HealthReport,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let json = serde_json::to_string(report).map_err(store_error)?;
            self.queue
                .endpoint_health_publish(endpoint, &report.worker, &json, ttl_ms(ttl))
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn queued<'a>(&'a self, models: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<u64>, StoreError>> {
        async move {
            let caps: Vec<String> = models.iter().map(|m| format!("{LLM_PREFIX}{m}")).collect();
            let refs: Vec<&str> = caps.iter().map(String::as_str).collect();
            self.queue.queued_counts(&refs).await.map_err(store_error)
        }
        .boxed()
    }
}

/// In-flight slots as leases in Redis (`{ns}:ep:<endpoint>:leases`), shared by every worker
/// of the deployment.
#[derive(Debug, Clone)]
pub struct RedisSlots {
    queue: Queue,
}

impl RedisSlots {
    /// Slots kept through `queue` (its namespace and connection pool).
    pub fn new(queue: Queue) -> RedisSlots {
        RedisSlots { queue }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn slot_error(e: gleitzeit_queue::QueueError) -> SlotError {
    SlotError {
        message: e.to_string(),
    }
}

impl Slots for RedisSlots {
    fn acquire<'a>(
        &'a self,
        candidates: &'a [SlotCandidate<'a>],
        pick: SlotPick,
        lease_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<usize>, SlotError>> {
        async move {
            let cands: Vec<LeaseCandidate<'_>> = candidates
                .iter()
                .map(|c| LeaseCandidate {
                    endpoint: c.endpoint,
                    max: c.max,
                })
                .collect();
            let pick = match pick {
                SlotPick::InOrder => LeasePick::InOrder,
                SlotPick::LeastLoaded => LeasePick::LeastLoaded,
            };
            let now = now_ms();
            let grant = self
                .queue
                .lease_acquire(&cands, pick, lease_id, now, now.saturating_add(ttl_ms(ttl)))
                .await
                .map_err(slot_error)?;
            Ok(grant.chosen)
        }
        .boxed()
    }

    fn renew<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, SlotError>> {
        async move {
            self.queue
                .lease_renew(endpoint, lease_id, now_ms().saturating_add(ttl_ms(ttl)))
                .await
                .map_err(slot_error)
        }
        .boxed()
    }

    fn release<'a>(
        &'a self,
        endpoint: &'a str,
        lease_id: &'a str,
    ) -> BoxFuture<'a, Result<(), SlotError>> {
        async move {
            self.queue
                .lease_release(endpoint, lease_id)
                .await
                .map(|_| ())
                .map_err(slot_error)
        }
        .boxed()
    }

    fn counts<'a>(
        &'a self,
        endpoints: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<u64>, SlotError>> {
        async move {
            self.queue
                .lease_counts(endpoints, now_ms())
                .await
                .map_err(slot_error)
        }
        .boxed()
    }
}

/// Maps a routed call's failure to the retry decision.
pub(crate) fn classify_route(err: &RouteError) -> ExecFailure {
    match err {
        RouteError::Call { endpoint, error } => classify(error, endpoint),
        // A selection matched nothing: the detail says what the task asked for.
        RouteError::NoEndpoint { tag, provider, .. } if tag.is_some() || provider.is_some() => {
            ExecFailure::permanent(err.to_string()).with_detail(json!({
                "error": "no_endpoint",
                "tag": tag,
                "provider": provider.map(|p| p.to_string()),
            }))
        }
        RouteError::NoEndpoint { .. } | RouteError::Unusable { .. } => {
            ExecFailure::permanent(err.to_string()).with_detail(json!({"error": "no_endpoint"}))
        }
        // The three below sent no request (the router returns the endpoint's own error
        // once any call was made), so they are deferrals: no attempt is used.
        RouteError::Unavailable { retry_after, .. } => {
            let mut f = ExecFailure::deferred(err.to_string()).with_detail(json!({
                "error": "unavailable",
                "retry_after_ms": u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            }));
            f.min_retry_delay = Some(*retry_after);
            f
        }
        RouteError::Saturated { .. } => {
            ExecFailure::deferred(err.to_string()).with_detail(json!({"error": "saturated"}))
        }
        RouteError::Slots(_) => {
            ExecFailure::deferred(err.to_string()).with_detail(json!({"error": "slots"}))
        }
    }
}

fn gen_options(o: &LlmOptions) -> GenOptions {
    GenOptions {
        temperature: o.temperature,
        top_p: o.top_p,
        top_k: o.top_k,
        max_tokens: o.max_tokens,
        seed: o.seed,
        stop: o.stop.clone(),
        json: o.json,
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn message(m: &ChatMessage) -> Message {
    Message {
        role: role(m.role).to_owned(),
        content: m.content.clone(),
        images: Vec::new(),
    }
}

/// Maps a rendered task to the provider-neutral request.
pub(crate) fn to_request(task: &Task) -> Result<LlmRequest, ExecFailure> {
    let (model, op, options) = match &task.action {
        Action::Text {
            model,
            prompt,
            system,
            options,
        } => (
            model,
            Op::Generate {
                prompt: prompt.clone(),
                system: system.clone(),
                images: Vec::new(),
            },
            options,
        ),
        Action::Vision {
            model,
            prompt,
            images,
            system,
            options,
        } => (
            model,
            Op::Generate {
                prompt: prompt.clone(),
                system: system.clone(),
                images: images.clone(),
            },
            options,
        ),
        Action::Chat {
            model,
            messages,
            system,
            options,
        } => (
            model,
            Op::Chat {
                messages: messages.iter().map(message).collect(),
                system: system.clone(),
            },
            options,
        ),
        Action::Embed {
            model,
            prompt,
            options,
        } => (
            model,
            Op::Embed {
                inputs: vec![prompt.clone()],
            },
            options,
        ),
        Action::External {
            service, function, ..
        } => {
            return Err(ExecFailure::permanent(format!(
                "external task {service}/{function} cannot run on an LLM endpoint"
            )))
        }
    };
    Ok(LlmRequest {
        model: model.clone(),
        op,
        options: gen_options(options),
        keep_alive: None,
    })
}

/// The stored result: the text (or the embedding vector) plus call metadata.
pub(crate) fn to_result(
    resp: LlmResponse,
    endpoint: &str,
    embed: bool,
) -> Result<TaskResult, ExecFailure> {
    let value = if embed {
        let vector = resp
            .embeddings
            .and_then(|mut e| {
                if e.is_empty() {
                    None
                } else {
                    Some(e.swap_remove(0))
                }
            })
            .ok_or_else(|| {
                ExecFailure::retryable(format!("endpoint {endpoint} returned no embedding"))
            })?;
        json!(vector)
    } else {
        Value::String(resp.text.unwrap_or_default())
    };
    Ok(TaskResult {
        value,
        meta: Some(ResultMeta {
            model: Some(resp.model),
            endpoint: Some(endpoint.to_owned()),
            prompt_tokens: resp.prompt_tokens,
            completion_tokens: resp.completion_tokens,
            duration_ms: Some(resp.total_ms),
            load_ms: resp.load_ms,
            ttft_ms: resp.ttft_ms,
        }),
    })
}

/// Retry / RetryAfter → retryable (RetryAfter sets the minimum delay); Fatal → permanent.
pub(crate) fn classify(err: &LlmError, endpoint: &str) -> ExecFailure {
    let message = format!("endpoint {endpoint}: {err}");
    let (name, status) = error_name(err);
    let mut detail = json!({ "endpoint": endpoint, "error": name });
    if let Some(status) = status {
        detail["status"] = json!(status);
    }
    match err.class() {
        // The endpoint's own request limit expired: recorded as a timeout (still retried).
        ErrorClass::Retry if matches!(err, LlmError::Timeout { .. }) => ExecFailure {
            kind: FailureKind::Timeout,
            message,
            detail: Some(detail),
            min_retry_delay: None,
            deferred: false,
        },
        ErrorClass::Retry => ExecFailure::retryable(message).with_detail(detail),
        ErrorClass::RetryAfter(d) => {
            detail["retry_after_ms"] = json!(d.as_millis() as u64);
            let mut f = ExecFailure::retryable(message).with_detail(detail);
            f.min_retry_delay = Some(d);
            f
        }
        ErrorClass::Fatal => ExecFailure::permanent(message).with_detail(detail),
    }
}

/// A stable name (and the HTTP status, when there is one) for the stored error detail.
fn error_name(err: &LlmError) -> (&'static str, Option<u16>) {
    match err {
        LlmError::Config { .. } => ("config", None),
        LlmError::InvalidRequest { .. } => ("invalid_request", None),
        LlmError::Connect { .. } => ("connect", None),
        LlmError::Timeout { .. } => ("timeout", None),
        LlmError::Overloaded { status, .. } => ("overloaded", Some(*status)),
        LlmError::RateLimited { .. } => ("rate_limited", Some(429)),
        LlmError::Auth { status, .. } => ("auth", Some(*status)),
        LlmError::ModelNotFound { .. } => ("model_not_found", None),
        LlmError::ContextTooLong { .. } => ("context_too_long", None),
        LlmError::BadRequest { status, .. } => ("bad_request", Some(*status)),
        LlmError::Stream { .. } => ("stream", None),
        LlmError::Decode { .. } => ("decode", None),
        LlmError::ResponseTooLarge { .. } => ("response_too_large", None),
    }
}

/// A task of `action` as the tests below run it: 10 s timeout, no retry or routing settings.
#[cfg(test)]
fn test_task(action: Action) -> Task {
    Task {
        name: "T".to_owned(),
        action,
        dependencies: Vec::new(),
        retry: gleitzeit_core::RetryPolicy::default(),
        timeout: Duration::from_secs(10),
        priority: gleitzeit_core::Priority::Normal,
        on_failure: None,
        routing: None,
    }
}

/// The text task "hi" for model `m`, with the given routing settings.
#[cfg(test)]
fn hi_task(routing: Option<gleitzeit_core::TaskRouting>) -> Task {
    Task {
        routing,
        ..test_task(Action::Text {
            model: "m".into(),
            prompt: "hi".into(),
            system: None,
            options: LlmOptions::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn endpoint(name: &str, models: &[&str]) -> ResolvedEndpoint {
        ResolvedEndpoint {
            name: name.to_owned(),
            kind: EndpointKind::OpenAi,
            url: "http://127.0.0.1:9".to_owned(),
            api_key: None,
            models: models.iter().map(|m| m.to_string()).collect(),
            timeout: Duration::from_secs(5),
            routing: Default::default(),
        }
    }

    #[test]
    fn serves_the_models_of_its_endpoints() {
        let ex =
            LlmExecutor::new(&[endpoint("small", &["smollm2"]), endpoint("any", &["*"])]).unwrap();
        assert!(ex.serves("llm:smollm2"));
        assert!(ex.serves("llm:whatever"));
        assert!(!ex.serves("ext:Python Tasks"));
        assert!(!ex.saturated("llm:smollm2"));

        let only = LlmExecutor::new(&[endpoint("small", &["smollm2"])]).unwrap();
        assert!(only.serves("llm:smollm2"));
        assert!(!only.serves("llm:llama3.2"));
        assert!(!only.serves("smollm2"));
    }

    #[test]
    fn route_failures_map_to_retry_decisions() {
        let f = classify_route(&RouteError::NoEndpoint {
            model: "m".into(),
            tag: None,
            provider: None,
        });
        assert_eq!(f.kind, FailureKind::Permanent);
        assert_eq!(f.detail.unwrap(), json!({"error": "no_endpoint"}));
        // A selection that matched nothing: permanent, and the detail says what was asked.
        let f = classify_route(&RouteError::NoEndpoint {
            model: "m".into(),
            tag: Some("gpu".into()),
            provider: Some(ProviderKind::OpenAi),
        });
        assert_eq!(f.kind, FailureKind::Permanent);
        assert!(f.message.contains(r#"tag "gpu""#), "{}", f.message);
        assert_eq!(
            f.detail.unwrap(),
            json!({"error": "no_endpoint", "tag": "gpu", "provider": "openai"})
        );
        let f = classify_route(&RouteError::Unavailable {
            model: "m".into(),
            retry_after: Duration::from_secs(9),
        });
        assert!(f.is_retryable());
        assert_eq!(f.min_retry_delay, Some(Duration::from_secs(9)));
        let f = classify_route(&RouteError::Saturated {
            model: "m".into(),
            waited: Duration::from_secs(1),
        });
        assert!(f.is_retryable());
        let f = classify_route(&RouteError::Call {
            endpoint: "e".into(),
            error: LlmError::Auth {
                status: 401,
                message: "no".into(),
            },
        });
        assert_eq!(f.kind, FailureKind::Permanent);
        assert_eq!(f.detail.unwrap()["endpoint"], json!("e"));
    }

    #[test]
    fn a_tasks_routing_settings_become_the_call_selection() {
        assert_eq!(
            task_selection(&hi_task(None)).unwrap(),
            Selection::default()
        );
        let routing = |strategy: Option<&str>, tag: Option<&str>, provider: Option<&str>| {
            Some(gleitzeit_core::TaskRouting {
                strategy: strategy.map(Into::into),
                tag: tag.map(Into::into),
                provider: provider.map(Into::into),
            })
        };
        for (name, kind) in [
            ("ollama", ProviderKind::Ollama),
            ("openai", ProviderKind::OpenAi),
            ("anthropic", ProviderKind::Anthropic),
        ] {
            let t = hi_task(routing(Some("fastest"), Some("gpu"), Some(name)));
            assert_eq!(
                task_selection(&t).unwrap(),
                Selection {
                    strategy: Some(Strategy::Fastest),
                    tag: Some("gpu".into()),
                    provider: Some(kind),
                }
            );
        }
        // Every name validation admits is one this worker knows.
        for name in gleitzeit_core::ROUTING_PROVIDERS {
            assert!(provider_named(name).is_some(), "{name}");
        }
        // An unknown strategy falls back to the deployment's; the tag is kept.
        let t = hi_task(routing(Some("closest"), Some("gpu"), None));
        assert_eq!(
            task_selection(&t).unwrap(),
            Selection {
                tag: Some("gpu".into()),
                ..Selection::default()
            }
        );
        // An unknown provider fails the task instead of running it anywhere.
        let t = hi_task(routing(None, None, Some("vllm")));
        let f = task_selection(&t).unwrap_err();
        assert_eq!(f.kind, FailureKind::Permanent);
        assert!(f.message.contains("\"vllm\""), "{}", f.message);
    }

    #[test]
    fn maps_every_llm_action() {
        let options = LlmOptions {
            temperature: Some(0.5),
            top_p: Some(0.9),
            top_k: Some(40),
            max_tokens: Some(64),
            seed: Some(7),
            stop: vec!["\n\n".to_owned()],
            json: true,
        };
        let req = to_request(&test_task(Action::Text {
            model: "m".into(),
            prompt: "p".into(),
            system: Some("s".into()),
            options: options.clone(),
        }))
        .unwrap();
        assert_eq!(req.model, "m");
        assert_eq!(
            req.op,
            Op::Generate {
                prompt: "p".into(),
                system: Some("s".into()),
                images: vec![]
            }
        );
        assert_eq!(
            req.options,
            GenOptions {
                temperature: Some(0.5),
                top_p: Some(0.9),
                top_k: Some(40),
                max_tokens: Some(64),
                seed: Some(7),
                stop: vec!["\n\n".to_owned()],
                json: true,
            }
        );

        let req = to_request(&test_task(Action::Chat {
            model: "m".into(),
            messages: vec![
                ChatMessage {
                    role: Role::System,
                    content: "a".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "b".into(),
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: "c".into(),
                },
            ],
            system: None,
            options: LlmOptions::default(),
        }))
        .unwrap();
        assert_eq!(
            req.op,
            Op::Chat {
                messages: vec![
                    Message::system("a"),
                    Message::user("b"),
                    Message::assistant("c")
                ],
                system: None,
            }
        );

        let req = to_request(&test_task(Action::Vision {
            model: "llava".into(),
            prompt: "what?".into(),
            images: vec!["aGVsbG8=".into()],
            system: None,
            options: LlmOptions::default(),
        }))
        .unwrap();
        assert_eq!(
            req.op,
            Op::Generate {
                prompt: "what?".into(),
                system: None,
                images: vec!["aGVsbG8=".into()]
            }
        );

        let req = to_request(&test_task(Action::Embed {
            model: "e".into(),
            prompt: "text".into(),
            options: LlmOptions::default(),
        }))
        .unwrap();
        assert_eq!(
            req.op,
            Op::Embed {
                inputs: vec!["text".into()]
            }
        );

        let err = to_request(&test_task(Action::External {
            service: "Python Tasks".into(),
            function: "f".into(),
            args: vec![],
            kwargs: Default::default(),
        }))
        .unwrap_err();
        assert_eq!(err.kind, FailureKind::Permanent);
    }

    fn response(text: Option<&str>, embeddings: Option<Vec<Vec<f32>>>) -> LlmResponse {
        LlmResponse {
            text: text.map(str::to_owned),
            embeddings,
            model: "m".into(),
            endpoint: "e".into(),
            prompt_tokens: Some(3),
            completion_tokens: Some(5),
            total_ms: 12,
            load_ms: Some(1),
            ttft_ms: Some(4),
        }
    }

    #[test]
    fn results_carry_value_and_meta() {
        let r = to_result(response(Some("hi"), None), "local", false).unwrap();
        assert_eq!(r.value, json!("hi"));
        assert_eq!(
            r.meta,
            Some(ResultMeta {
                model: Some("m".into()),
                endpoint: Some("local".into()),
                prompt_tokens: Some(3),
                completion_tokens: Some(5),
                duration_ms: Some(12),
                load_ms: Some(1),
                ttft_ms: Some(4),
            })
        );
        let r = to_result(response(None, Some(vec![vec![0.5, -1.0]])), "local", true).unwrap();
        assert_eq!(r.value, json!([0.5, -1.0]));
        let err = to_result(response(None, Some(vec![])), "local", true).unwrap_err();
        assert_eq!(err.kind, FailureKind::Retryable);
    }

    #[test]
    fn errors_are_classified_for_retry() {
        let f = classify(
            &LlmError::Overloaded {
                status: 503,
                message: "busy".into(),
            },
            "e",
        );
        assert_eq!(f.kind, FailureKind::Retryable);
        assert_eq!(f.min_retry_delay, None);
        assert_eq!(f.detail.as_ref().unwrap()["status"], json!(503));
        assert!(f.message.contains("busy") && f.message.contains("endpoint e"));

        let f = classify(
            &LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
                message: "slow down".into(),
            },
            "e",
        );
        assert_eq!(f.kind, FailureKind::Retryable);
        assert_eq!(f.min_retry_delay, Some(Duration::from_secs(3)));

        for fatal in [
            LlmError::Auth {
                status: 401,
                message: "no".into(),
            },
            LlmError::BadRequest {
                status: 400,
                message: "bad".into(),
            },
            LlmError::ModelNotFound { model: "m".into() },
            LlmError::ContextTooLong {
                message: "long".into(),
            },
        ] {
            let f = classify(&fatal, "e");
            assert_eq!(f.kind, FailureKind::Permanent, "{fatal:?}");
            assert!(!f.is_retryable());
        }
        let f = classify(
            &LlmError::Timeout {
                before_first_byte: true,
            },
            "e",
        );
        assert!(f.is_retryable());
        assert_eq!(f.kind, FailureKind::Timeout);
        assert_eq!(f.detail.unwrap()["error"], json!("timeout"));
    }
}

/// Routers of several workers sharing one Redis: fleet-wide limits and failover.
#[cfg(test)]
mod fleet_tests {
    use super::*;
    use crate::config::EndpointRouting;
    use gleitzeit_testkit::llm::{MockOpenAi, SimConfig};
    use gleitzeit_testkit::redis::RedisServer;

    fn limited(name: &str, url: String, max: u32) -> ResolvedEndpoint {
        ResolvedEndpoint {
            name: name.to_owned(),
            kind: EndpointKind::OpenAi,
            url,
            api_key: None,
            models: vec!["*".to_owned()],
            timeout: Duration::from_secs(30),
            routing: EndpointRouting {
                max_concurrent: Some(max),
                ..EndpointRouting::default()
            },
        }
    }

    async fn queue(redis: &RedisServer) -> Queue {
        Queue::connect(
            &redis.url(),
            QueueConfig {
                namespace: "fleet".into(),
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn least_loaded_across_three_workers_never_exceeds_any_limit() {
        let redis = RedisServer::start().unwrap();
        let cfg = SimConfig::default().with_token_delay(Duration::from_millis(2));
        let sims = [
            MockOpenAi::start(cfg.clone()).await.unwrap(),
            MockOpenAi::start(cfg.clone()).await.unwrap(),
            MockOpenAi::start(cfg).await.unwrap(),
        ];
        let limits = [2u32, 1, 3];
        let endpoints: Vec<ResolvedEndpoint> = (0..3)
            .map(|i| limited(&format!("e{i}"), sims[i].url(), limits[i]))
            .collect();
        let q = queue(&redis).await;
        // Three workers: three routers, each with its own slots handle on the same Redis.
        let mut workers = Vec::new();
        for _ in 0..3 {
            let slots = Arc::new(RedisSlots::new(queue(&redis).await));
            workers.push(Arc::new(
                LlmExecutor::with_slots(&endpoints, &RoutingConfig::default(), slots).unwrap(),
            ));
        }
        let mut calls = Vec::new();
        for i in 0..45 {
            let w = workers[i % 3].clone();
            calls.push(tokio::spawn(async move {
                let req = LlmRequest::generate("m", format!("t{i} x y"));
                let opts = CallOptions {
                    timeout: Some(Duration::from_secs(60)),
                    ..CallOptions::default()
                };
                w.router().call(&req, &opts).await
            }));
        }
        for c in calls {
            c.await.unwrap().unwrap();
        }
        let mut total = 0;
        for (sim, max) in sims.iter().zip(limits) {
            let c = sim.counters();
            // Each worker alone could have put up to `max` calls on the endpoint; together
            // they must not exceed it either.
            assert!(c.max_in_flight <= u64::from(max), "{c:?} over {max}");
            total += c.received;
        }
        assert_eq!(total, 45);
        assert_eq!(
            q.lease_counts(&["e0", "e1", "e2"], now_ms()).await.unwrap(),
            vec![0, 0, 0],
            "every lease was returned"
        );

        // One endpoint dies mid-run: every call still completes on the others.
        sims[2].set_token_delay(Duration::from_millis(5));
        let mut calls = Vec::new();
        for i in 0..30 {
            let w = workers[i % 3].clone();
            calls.push(tokio::spawn(async move {
                let req = LlmRequest::generate("m", format!("again {i}"));
                let opts = CallOptions {
                    timeout: Some(Duration::from_secs(60)),
                    ..CallOptions::default()
                };
                w.router().call(&req, &opts).await
            }));
        }
        let before = sims[2].counters().received;
        sims[2].wait_received(before + 1).await;
        sims[2].stop().await;
        for c in calls {
            let r = c.await.unwrap().unwrap();
            assert!(r.text.unwrap().contains("again"));
        }
        for (sim, max) in sims.iter().zip(limits) {
            assert!(sim.counters().max_in_flight <= u64::from(max));
        }
    }

    #[tokio::test]
    async fn executor_runs_tasks_and_reports_the_endpoint() {
        let redis = RedisServer::start().unwrap();
        let sim = MockOpenAi::start(SimConfig::default()).await.unwrap();
        let ex = LlmExecutor::with_slots(
            &[limited("only", sim.url(), 1)],
            &RoutingConfig::default(),
            Arc::new(RedisSlots::new(queue(&redis).await)),
        )
        .unwrap();
        let r = ex.run(&hi_task(None)).await.unwrap();
        assert_eq!(r.value, json!("m: hi"));
        assert_eq!(r.meta.unwrap().endpoint.as_deref(), Some("only"));
        let status = ex.router().status().await;
        assert_eq!(status[0].in_flight, Some(0));
        assert_eq!(status[0].state, "ok");
    }
}

/// Model state shared through Redis: one probe per endpoint per interval across workers,
/// health published per worker, queued work read from the capability streams, preloading,
/// and the per-task routing strategy.
#[cfg(test)]
mod model_state_tests {
    use super::*;
    use crate::config::EndpointRouting;
    use gleitzeit_testkit::llm::{MockOllama, SimConfig};
    use gleitzeit_testkit::redis::RedisServer;

    fn ollama(name: &str, url: String, routing: EndpointRouting) -> ResolvedEndpoint {
        ResolvedEndpoint {
            name: name.to_owned(),
            kind: EndpointKind::Ollama,
            url,
            api_key: None,
            models: vec!["*".to_owned()],
            timeout: Duration::from_secs(30),
            routing,
        }
    }

    async fn queue(redis: &RedisServer) -> Queue {
        Queue::connect(
            &redis.url(),
            QueueConfig {
                namespace: "ms".into(),
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap()
    }

    async fn worker(
        redis: &RedisServer,
        endpoints: &[ResolvedEndpoint],
        routing: &RoutingConfig,
    ) -> LlmExecutor {
        LlmExecutor::with_stores(
            endpoints,
            routing,
            Arc::new(RedisSlots::new(queue(redis).await)),
            Some(Arc::new(RedisModelState::new(queue(redis).await))),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn two_workers_probe_each_endpoint_once_per_interval_and_share_what_they_learn() {
        let redis = RedisServer::start().unwrap();
        let sim = MockOllama::start(SimConfig::default().with_models(["a", "b"]))
            .await
            .unwrap();
        let eps = [ollama("e", sim.url(), EndpointRouting::default())];
        let routing = RoutingConfig {
            health_interval: Duration::from_secs(60),
            ..RoutingConfig::default()
        };
        let w1 = worker(&redis, &eps, &routing).await;
        let w2 = worker(&redis, &eps, &routing).await;
        // A call loads "a" on the simulator; the next full refresh sees it in /api/ps.
        w1.router()
            .call(&LlmRequest::generate("a", "x"), &CallOptions::default())
            .await
            .unwrap();
        // (The call itself read /api/tags once to learn the model's size.)
        let tags_before = sim.hits("/api/tags");
        let polled1 = w1.router().health_round("w1").await;
        let polled2 = w2.router().health_round("w2").await;
        let polled3 = w1.router().health_round("w1").await;
        assert_eq!(polled1, ["e"]);
        assert!(polled2.is_empty() && polled3.is_empty());
        assert_eq!(
            sim.hits("/api/ps"),
            1,
            "one probe per interval for the fleet"
        );
        assert_eq!(sim.hits("/api/tags"), tags_before + 1);
        // The second worker sees what the first one polled.
        let rec = &w2.router().endpoint_models().await[0].1;
        assert_eq!(rec.loaded, ["a"]);
        assert_eq!(rec.pulled.len(), 2);
        assert_eq!(rec.probed_by.as_deref(), Some("w1"));
        // Both published health; the endpoint is listed.
        let q = queue(&redis).await;
        let health = q.endpoint_health("e").await.unwrap();
        assert_eq!(health.len(), 2);
        let report: HealthReport = serde_json::from_str(&health["w2"]).unwrap();
        assert_eq!(report.state, "ok");
        assert_eq!(report.worker, "w2");
        assert_eq!(report.in_flight, Some(0));
        assert_eq!(q.endpoint_names().await.unwrap(), ["e"]);
        // A call by the second worker updates "loaded" for everyone at once.
        w2.router()
            .call(&LlmRequest::generate("b", "x"), &CallOptions::default())
            .await
            .unwrap();
        let shared = q.endpoint_models(&["e"]).await.unwrap();
        assert_eq!(shared[0].loaded_json.as_deref(), Some(r#"["b","a"]"#));
    }

    #[tokio::test]
    async fn queued_work_in_redis_keeps_its_model_loaded() {
        let redis = RedisServer::start().unwrap();
        let sim = MockOllama::start(SimConfig::default().with_max_loaded(2))
            .await
            .unwrap();
        let eps = [ollama(
            "e",
            sim.url(),
            EndpointRouting {
                max_loaded: Some(2),
                ..EndpointRouting::default()
            },
        )];
        let routing = RoutingConfig {
            strategy: Strategy::ModelAffinity,
            ..RoutingConfig::default()
        };
        let w = worker(&redis, &eps, &routing).await;
        for m in ["a", "c"] {
            w.router()
                .call(&LlmRequest::generate(m, "x"), &CallOptions::default())
                .await
                .unwrap();
        }
        // A task waits for "a" in its stream.
        let q = queue(&redis).await;
        let key = q.keys().stream("llm:a", gleitzeit_queue::Priority::Normal);
        let pool = deadpool_redis::Config::from_url(redis.url())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .unwrap();
        let mut conn = pool.get().await.unwrap();
        let _: String = deadpool_redis::redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("wf")
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
        let store = RedisModelState::new(q.clone());
        assert_eq!(store.queued(&["a", "c"]).await.unwrap(), vec![1, 0]);
        w.router()
            .call(&LlmRequest::generate("b", "x"), &CallOptions::default())
            .await
            .unwrap();
        let mut loaded = sim.loaded_models();
        loaded.sort();
        assert_eq!(loaded, ["a", "b"], "c was unloaded, not the needed a");
        assert_eq!(sim.loads_of("a"), 1);
    }

    #[tokio::test]
    async fn preload_runs_in_the_background_at_start() {
        let redis = RedisServer::start().unwrap();
        let sim = MockOllama::start(SimConfig::default()).await.unwrap();
        let eps = [ollama(
            "e",
            sim.url(),
            EndpointRouting {
                preload: vec!["p1".into()],
                ..EndpointRouting::default()
            },
        )];
        let routing = RoutingConfig {
            preload: [("e".to_owned(), vec!["p2".to_owned()])].into(),
            ..RoutingConfig::default()
        };
        let mut eps = eps.to_vec();
        // What config validation does: the top-level list joins the endpoint's.
        eps[0].routing.preload.push("p2".into());
        let w = worker(&redis, &eps, &routing).await;
        w.start_background("w".into());
        sim.wait_until(|c| c.loads >= 2).await;
        assert_eq!(sim.loads_of("p1"), 1);
        assert_eq!(sim.loads_of("p2"), 1);
        assert_eq!(sim.counters().received, 0, "no inference request");
    }

    #[tokio::test]
    async fn a_task_can_name_its_routing_strategy() {
        let redis = RedisServer::start().unwrap();
        let s0 = MockOllama::start(SimConfig::default()).await.unwrap();
        let s1 = MockOllama::start(SimConfig::default()).await.unwrap();
        let eps = [
            ollama("first", s0.url(), EndpointRouting::default()),
            ollama(
                "second",
                s1.url(),
                EndpointRouting {
                    priority: 1,
                    ..EndpointRouting::default()
                },
            ),
        ];
        let routing = RoutingConfig {
            strategy: Strategy::RoundRobin,
            ..RoutingConfig::default()
        };
        let w = worker(&redis, &eps, &routing).await;
        let mut t = hi_task(Some(gleitzeit_core::TaskRouting {
            strategy: Some("priority".into()),
            ..Default::default()
        }));
        for _ in 0..6 {
            w.run(&t).await.unwrap();
        }
        assert_eq!(s0.counters().received, 6, "priority: always the first");
        assert_eq!(s1.counters().received, 0);
        // Without the override the deployment's round robin spreads the calls.
        t.routing = None;
        for _ in 0..6 {
            w.run(&t).await.unwrap();
        }
        assert_eq!(s1.counters().received, 3);
        assert_eq!(task_selection(&t).unwrap(), Selection::default());
    }
}
