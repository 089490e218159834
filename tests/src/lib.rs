//! Harness for Gleitzeit's end-to-end tests: real `redis-server` processes (through the
//! testkit's [`RedisServer`](gleitzeit_testkit::redis::RedisServer)), the real
//! `gleitzeit-worker` and `gleitzeit-submit` binaries spawned as processes, and the testkit's
//! provider simulators running inside the test process.
//!
//! - [`bins`] finds (and if need be builds) the binaries.
//! - [`worker`] spawns a worker with a generated configuration, captures its log to a file
//!   that is printed when the test fails, and delivers SIGTERM / SIGKILL.
//! - [`cli`] runs `gleitzeit-submit` commands.
//! - [`store`] inspects Redis directly: workflow and task hashes, events, dead letters,
//!   pending entries, whole-database snapshots, and waiting for a workflow to end by
//!   following its events stream with blocking reads.
//! - [`workflows`] writes the workflow files the tests submit and builds queue submissions
//!   for the tests that drive `gleitzeit-queue` directly.
//! - [`sim`] starts simulators and reads the prompts they received.
//! - [`bench`] runs the `gleitzeit-bench` command.
//! - [`faults`] runs seeded mixed workloads under injected faults (a fault-injecting HTTP
//!   front for the simulators) and checks afterwards that nothing was lost, duplicated,
//!   answered wrongly or left unfinished.
//! - [`repo`] reads the repository's files (dashboards, deployment manifests) and finds the
//!   external checkers run on them.
//!
//! Tests wait for events (a log line, a simulator counter, a workflow's end), never for time;
//! [`HANG_GUARD`] only bounds each wait so that a broken build fails instead of hanging.

pub mod bench;
pub mod bins;
pub mod cli;
pub mod faults;
pub mod repo;
pub mod sim;
pub mod store;
pub mod worker;
pub mod workflows;

use std::future::Future;
use std::time::Duration;

/// The namespace the tests use: not the default one, so every component must be told.
pub const NAMESPACE: &str = "e2e";

/// One test's deployment: a private `redis-server`, a [`store::Store`] on it and the CLI bound
/// to it, all in namespace [`NAMESPACE`].
pub struct Deployment {
    /// The Redis server (killed on drop).
    pub redis: gleitzeit_testkit::redis::RedisServer,
    /// Direct access to the keys.
    pub store: store::Store,
    /// `gleitzeit-submit` for this Redis and namespace.
    pub cli: cli::Cli,
}

impl Deployment {
    /// Starts a private Redis and connects to it.
    pub async fn start() -> Deployment {
        let redis = gleitzeit_testkit::redis::RedisServer::start().expect("starting redis-server");
        Deployment::on(redis).await
    }

    /// A deployment on a Redis server the caller started (for example one with an
    /// append-only file, [`gleitzeit_testkit::redis::RedisServer::start_aof`]).
    pub async fn on(redis: gleitzeit_testkit::redis::RedisServer) -> Deployment {
        let store = store::Store::connect(&redis.url(), NAMESPACE).await;
        let cli = cli::Cli::new(&redis.url(), NAMESPACE);
        Deployment { redis, store, cli }
    }

    /// Starts a private TLS-only Redis with its own CA ([`Deployment::tls_files`]); the store
    /// and the CLI trust that CA and present the client certificate.
    pub async fn start_tls(auth: gleitzeit_testkit::redis::ClientAuth) -> Deployment {
        let redis = gleitzeit_testkit::redis::RedisServer::start_tls(auth)
            .expect("starting a TLS redis-server");
        let files = redis.tls_files().expect("a TLS server has TLS files");
        let tls = gleitzeit_queue::TlsFiles {
            ca: Some(files.ca_cert()),
            cert: Some(files.client_cert()),
            key: Some(files.client_key()),
        };
        let target = gleitzeit_queue::RedisTarget::new(redis.url()).with_tls(tls.clone());
        let store = store::Store::connect_to(&target, NAMESPACE).await;
        let cli = cli::Cli::new(&redis.url(), NAMESPACE).with_tls(tls);
        Deployment { redis, store, cli }
    }

    /// The Redis URL with, for a TLS deployment, its CA and client certificate.
    pub fn target(&self) -> gleitzeit_queue::RedisTarget {
        let target = gleitzeit_queue::RedisTarget::new(self.url());
        match self.redis.tls_files() {
            Some(files) => target.with_tls(gleitzeit_queue::TlsFiles {
                ca: Some(files.ca_cert()),
                cert: Some(files.client_cert()),
                key: Some(files.client_key()),
            }),
            None => target,
        }
    }

    /// The Redis URL.
    pub fn url(&self) -> String {
        self.redis.url()
    }

    /// The CA and client certificate of a TLS deployment.
    ///
    /// # Panics
    /// For a deployment started without TLS.
    pub fn tls_files(&self) -> &gleitzeit_testkit::redis::TlsFiles {
        self.redis
            .tls_files()
            .expect("the deployment was started with start_tls")
    }

    /// A worker configuration for this deployment with one OpenAI-compatible endpoint.
    pub fn worker(&self, endpoint_url: &str) -> worker::WorkerSpec {
        worker::WorkerSpec::openai(&self.url(), NAMESPACE, endpoint_url)
    }

    /// A `gleitzeit-queue` handle on this deployment.
    pub async fn queue(&self) -> gleitzeit_queue::Queue {
        let cfg = gleitzeit_queue::QueueConfig {
            namespace: NAMESPACE.to_owned(),
            ..gleitzeit_queue::QueueConfig::default()
        };
        gleitzeit_queue::Queue::connect(self.target(), cfg)
            .await
            .expect("connecting the queue")
    }
}

/// Upper bound of any single wait in a test. Generous on purpose: it exists only so that a
/// regression fails the test instead of hanging the suite, never to assert speed.
pub const HANG_GUARD: Duration = Duration::from_secs(180);

/// The name of the running test (libtest names each test's thread after the test), used to
/// name log files.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("test")
        .rsplit("::")
        .next()
        .unwrap_or("test")
        .to_owned()
}

/// Awaits `fut`, failing the test with `what` if it has not finished within [`HANG_GUARD`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: not done within {HANG_GUARD:?}"),
    }
}
