//! The worker fleet under test: `gleitzeit_worker::run` instances inside this process (each with
//! its own consumer name, as separate processes would have) or spawned `gleitzeit-worker`
//! processes, all configured alike and pointed at the benchmark's simulator.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use gleitzeit_queue::TlsFiles;
use gleitzeit_worker::{EndpointKind, EndpointSpec, RoutingConfig, RunSummary, WorkerConfig};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long spawned workers get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// What every worker of the fleet is configured with.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Redis URL.
    pub redis_url: String,
    /// TLS files of a `rediss://` URL.
    pub redis_tls: TlsFiles,
    /// Key namespace.
    pub namespace: String,
    /// Tasks each worker runs at the same time.
    pub concurrency: usize,
    /// The OpenAI-compatible simulator's URL.
    pub endpoint_url: String,
    /// How many endpoints (`sim`, `sim-2`, …) the workers route over, all at that URL.
    pub endpoints: usize,
    /// Shards of the namespace (`None`: what it records).
    pub shards: Option<u16>,
    /// The workers' `routing.lease_linger` (`None`: the worker's default).
    pub lease_linger: Option<Duration>,
    /// The workers' `read_linger` (`None`: the worker's default).
    pub read_linger: Option<Duration>,
    /// Whether the workers export metrics (each on a port of its own), as deployed workers
    /// do: some metrics cost Redis work per task, which the benchmark must count.
    pub metrics: bool,
}

impl FleetConfig {
    fn endpoints(&self) -> Vec<EndpointSpec> {
        (1..=self.endpoints.max(1))
            .map(|i| EndpointSpec {
                name: if i == 1 {
                    "sim".to_owned()
                } else {
                    format!("sim-{i}")
                },
                kind: EndpointKind::OpenAi,
                url: self.endpoint_url.clone(),
                api_key_env: None,
                api_key_file: None,
                models: vec!["*".to_owned()],
                timeout: Duration::from_secs(60),
            })
            .collect()
    }

    /// The configuration of an in-process worker: the defaults, plus Redis, namespace,
    /// concurrency and the simulator endpoint.
    pub fn worker_config(&self) -> WorkerConfig {
        let defaults = WorkerConfig::default();
        WorkerConfig {
            redis_url: self.redis_url.as_str().into(),
            redis_tls_ca: self.redis_tls.ca.clone(),
            redis_tls_cert: self.redis_tls.cert.clone(),
            redis_tls_key: self.redis_tls.key.clone(),
            namespace: self.namespace.clone(),
            shards: self.shards,
            concurrency: self.concurrency,
            endpoints: self.endpoints(),
            metrics_addr: self.metrics_addr().to_owned(),
            routing: self.routing(),
            read_linger: self.read_linger.unwrap_or(defaults.read_linger),
            ..defaults
        }
    }

    /// The workers' `metrics_addr`: several workers share this host, so none may claim the
    /// default port; each gets a free one.
    fn metrics_addr(&self) -> &'static str {
        if self.metrics {
            "127.0.0.1:0"
        } else {
            "off"
        }
    }

    /// The workers' `routing` section: the defaults, with the benchmark's linger.
    fn routing(&self) -> RoutingConfig {
        let mut routing = RoutingConfig::default();
        if let Some(linger) = self.lease_linger {
            routing.lease_linger = linger;
        }
        routing
    }
}

/// Running workers.
pub enum Fleet {
    /// Workers inside this process.
    InProcess {
        /// Cancels every worker (graceful shutdown).
        shutdown: CancellationToken,
        /// One per worker.
        handles: Vec<JoinHandle<Result<RunSummary, gleitzeit_worker::WorkerError>>>,
    },
    /// Worker processes.
    Spawned {
        /// One per worker.
        children: Vec<Child>,
    },
}

impl Fleet {
    /// Starts `n` workers in this process.
    pub fn in_process(n: usize, cfg: &FleetConfig) -> Fleet {
        Fleet::in_process_configs((0..n).map(|_| cfg.worker_config()).collect())
    }

    /// Starts one worker in this process per configuration.
    pub fn in_process_configs(configs: Vec<WorkerConfig>) -> Fleet {
        let shutdown = CancellationToken::new();
        let handles = configs
            .into_iter()
            .map(|c| tokio::spawn(gleitzeit_worker::run(c, shutdown.child_token())))
            .collect();
        Fleet::InProcess { shutdown, handles }
    }

    /// Spawns `n` worker processes of `bin`, configured through flags (the inherited
    /// `GLEITZEIT_*` environment is removed so it cannot override them).
    pub fn spawn(n: usize, cfg: &FleetConfig, bin: &Path) -> anyhow::Result<Fleet> {
        let endpoints = serde_json::to_string(&cfg.endpoints())?;
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            let mut cmd = Command::new(bin);
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("GLEITZEIT_") {
                    cmd.env_remove(&key);
                }
            }
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn");
            }
            for (flag, file) in [
                ("--redis-tls-ca", &cfg.redis_tls.ca),
                ("--redis-tls-cert", &cfg.redis_tls.cert),
                ("--redis-tls-key", &cfg.redis_tls.key),
            ] {
                if let Some(file) = file {
                    cmd.arg(flag).arg(file);
                }
            }
            if let Some(n) = cfg.shards {
                cmd.arg("--shards").arg(n.to_string());
            }
            if let Some(linger) = cfg.read_linger {
                cmd.arg("--read-linger")
                    .arg(humantime::format_duration(linger).to_string());
            }
            if cfg.lease_linger.is_some() {
                cmd.arg("--routing")
                    .arg(serde_json::to_string(&cfg.routing())?);
            }
            cmd.arg("--redis-url")
                .arg(&cfg.redis_url)
                .arg("--namespace")
                .arg(&cfg.namespace)
                .arg("--concurrency")
                .arg(cfg.concurrency.to_string())
                .arg("--endpoints")
                .arg(&endpoints)
                .args(["--metrics-addr", cfg.metrics_addr()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            children.push(
                cmd.spawn()
                    .with_context(|| format!("spawning {}", bin.display()))?,
            );
        }
        Ok(Fleet::Spawned { children })
    }

    /// Stops every worker gracefully and describes how each ended.
    pub async fn stop(self) -> anyhow::Result<Vec<String>> {
        match self {
            Fleet::InProcess { shutdown, handles } => {
                shutdown.cancel();
                let mut out = Vec::new();
                for h in handles {
                    let s = h.await.context("worker task")??;
                    out.push(format!(
                        "completed {} failed {} retried {} stale {} aborted {}",
                        s.completed, s.failed, s.retried, s.stale, s.aborted
                    ));
                }
                Ok(out)
            }
            Fleet::Spawned { mut children } => {
                for child in &children {
                    if let Some(pid) = child
                        .id()
                        .and_then(|p| i32::try_from(p).ok())
                        .and_then(rustix::process::Pid::from_raw)
                    {
                        // An already exited worker shows up in its exit status below.
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                    }
                }
                let mut out = Vec::new();
                for child in &mut children {
                    let status = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                        Ok(status) => status?,
                        Err(_) => {
                            child.kill().await?;
                            child.wait().await?
                        }
                    };
                    out.push(format!("process exited with {status}"));
                }
                Ok(out)
            }
        }
    }

    /// Whether a worker has ended before being asked to (a failed start).
    pub fn any_finished(&mut self) -> bool {
        match self {
            Fleet::InProcess { handles, .. } => handles.iter().any(JoinHandle::is_finished),
            Fleet::Spawned { children } => children
                .iter_mut()
                .any(|c| matches!(c.try_wait(), Ok(Some(_)))),
        }
    }
}

/// `gleitzeit-worker` next to this executable (where cargo puts the workspace's binaries).
pub fn default_worker_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable directory")?;
    let bin = dir.join("gleitzeit-worker");
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: build it (`cargo build --release --bins`) or pass --worker-bin",
        bin.display()
    );
    Ok(bin)
}
