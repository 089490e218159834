//! Shared test support: a Redis harness plus an OpenAI simulator, workflow submission straight
//! through `gleitzeit-queue`, a worker running in-process, and waiting for a workflow's end on
//! its events stream.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use gleitzeit_core::{load_str, plan, Format, Limits, TaskFailure, TaskResult};
use gleitzeit_queue::{Queue, QueueConfig, SubmitOutcome, TaskInfo, WorkflowInfo};
use gleitzeit_testkit::llm::{MockOpenAi, SimConfig};
use gleitzeit_testkit::redis::RedisServer;
use gleitzeit_worker::{
    run, run_with_executor, EndpointKind, EndpointSpec, Executor, RunSummary, WorkerConfig,
    WorkerError,
};
use serde_json::Map;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const NS: &str = "gzt";

/// Upper bound on any single wait in these tests; reaching it means the behaviour under test
/// is broken (the waits themselves are on events, not on time).
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Env {
    pub redis: RedisServer,
    pub sim: MockOpenAi,
    pub queue: Queue,
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(SimConfig::default()).await
    }

    pub async fn start_with(sim: SimConfig) -> Env {
        let redis = RedisServer::start().expect("redis-server");
        let sim = MockOpenAi::start(sim).await.expect("simulator");
        let queue = Queue::connect(&redis.url(), queue_config())
            .await
            .expect("queue");
        Env { redis, sim, queue }
    }

    /// A worker configuration for this environment: fast capability refresh and promotion so
    /// the tests do not wait on long default intervals.
    pub fn config(&self) -> WorkerConfig {
        WorkerConfig {
            redis_url: self.redis.url().into(),
            namespace: NS.to_owned(),
            concurrency: 4,
            caps_refresh: Duration::from_millis(100),
            promote_interval_max: Duration::from_millis(50),
            drain_timeout: Duration::from_secs(30),
            endpoints: vec![EndpointSpec {
                name: "sim".to_owned(),
                kind: EndpointKind::OpenAi,
                url: self.sim.url(),
                api_key_env: None,
                api_key_file: None,
                models: vec!["*".to_owned()],
                timeout: Duration::from_secs(60),
            }],
            // Tests run many workers at once: none binds the default metrics port.
            metrics_addr: "off".to_owned(),
            ..WorkerConfig::default()
        }
    }

    /// Validates, plans and submits a YAML workflow; returns its id.
    pub async fn submit(&self, yaml: &str) -> String {
        submit(&self.queue, yaml).await
    }

    pub async fn wait_end(&self, id: &str) -> WorkflowInfo {
        wait_end(&self.queue, id).await
    }

    pub async fn tasks(&self, id: &str) -> Vec<TaskInfo> {
        self.queue.tasks(id).await.expect("tasks")
    }
}

pub fn queue_config() -> QueueConfig {
    QueueConfig {
        namespace: NS.to_owned(),
        ..QueueConfig::default()
    }
}

pub async fn submit(queue: &Queue, yaml: &str) -> String {
    let wf = load_str(yaml, Format::Yaml, None, &Map::new(), &Limits::default())
        .unwrap_or_else(|e| panic!("invalid test workflow: {e:?}"));
    let plan = plan(&wf).expect("plan");
    let id = uuid::Uuid::now_v7().to_string();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut req = gleitzeit_submit::submit_request(&wf, &plan, id.clone(), None, now_ms);
    // Tests follow every transition in the events stream.
    req.watch = true;
    // Like any client, retry what Redis says is retryable: after a Redis restart the first
    // call on a pooled connection that was in use just before fails once.
    let mut tries = 0;
    let outcome = loop {
        match queue.submit(&req).await {
            Ok(o) => break o,
            Err(e) if e.is_retryable() && tries < 3 => tries += 1,
            Err(e) => panic!("submit: {e}"),
        }
    };
    match outcome {
        SubmitOutcome::Created { id } => id,
        other => panic!("unexpected submit outcome {other:?}"),
    }
}

/// Follows the workflow's events stream (blocking reads) until it ends.
pub async fn wait_end(queue: &Queue, id: &str) -> WorkflowInfo {
    tokio::time::timeout(PATIENCE, async {
        let mut after = "0-0".to_owned();
        loop {
            let events = queue
                .events(id, &after, Duration::from_secs(5))
                .await
                .expect("events");
            for e in &events {
                if e.is_workflow_end() {
                    return queue.workflow(id).await.expect("workflow").expect("exists");
                }
            }
            if let Some(last) = events.last() {
                after = last.id.clone();
            }
        }
    })
    .await
    .expect("workflow did not end in time")
}

/// Waits until an event matching `pred` is written for the workflow.
pub async fn wait_event(
    queue: &Queue,
    id: &str,
    mut pred: impl FnMut(&gleitzeit_queue::Event) -> bool,
) {
    tokio::time::timeout(PATIENCE, async {
        let mut after = "0-0".to_owned();
        loop {
            let events = queue
                .events(id, &after, Duration::from_secs(5))
                .await
                .expect("events");
            if events.iter().any(&mut pred) {
                return;
            }
            if let Some(last) = events.last() {
                after = last.id.clone();
            }
        }
    })
    .await
    .expect("event did not arrive in time")
}

pub fn result_of(t: &TaskInfo) -> TaskResult {
    serde_json::from_str(t.result_json.as_deref().expect("result")).expect("result json")
}

pub fn error_of(t: &TaskInfo) -> TaskFailure {
    serde_json::from_str(t.error_json.as_deref().expect("error")).expect("error json")
}

/// A worker running in this process.
pub struct Worker {
    pub shutdown: CancellationToken,
    handle: JoinHandle<Result<RunSummary, WorkerError>>,
}

impl Worker {
    pub fn start(cfg: WorkerConfig) -> Worker {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(cfg, shutdown.clone()));
        Worker { shutdown, handle }
    }

    pub fn start_with(cfg: WorkerConfig, executor: Arc<dyn Executor>) -> Worker {
        let shutdown = CancellationToken::new();
        let settings = cfg.validate().expect("valid config");
        let handle = tokio::spawn(run_with_executor(settings, executor, shutdown.clone()));
        Worker { shutdown, handle }
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(self) -> RunSummary {
        self.shutdown.cancel();
        self.join().await
    }

    /// Waits for `run` to return (after the shutdown token was cancelled).
    pub async fn join(self) -> RunSummary {
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("worker did not stop in time")
            .expect("worker task panicked")
            .expect("worker failed")
    }
}
