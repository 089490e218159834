//! Shared helpers of the integration tests: real Python task services (processes of
//! `python -m gleitzeit.service` serving `tests/pyfns/extfns.py`) and pools configured for them.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gleitzeit_external::{ExternalConfig, ServicePool, StaticService, Token};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The token the test services are started with.
pub const TOKEN: &str = "test-token-0123456789";

/// Upper bound for a service to print its ready line; only a broken start ever reaches it.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The Python interpreter with the `gleitzeit` package, or `None` (after printing why) when it
/// is not available, in which case the test returns early.
pub fn python() -> Option<PathBuf> {
    let candidate = match std::env::var_os("GLEITZEIT_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    };
    if !candidate.exists() {
        println!(
            "skipped: no Python at {} (set GLEITZEIT_PYTHON)",
            candidate.display()
        );
        return None;
    }
    let ok = std::process::Command::new(&candidate)
        .args(["-c", "import gleitzeit.service, redis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!(
            "skipped: {} cannot import gleitzeit.service (pip install -e python)",
            candidate.display()
        );
        return None;
    }
    Some(candidate)
}

/// How to start one service process.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub token: String,
    /// 0 for a free port.
    pub port: u16,
    pub redis_url: Option<String>,
    pub namespace: Option<String>,
    pub max_concurrency: u32,
    /// Certificate and key to serve https/wss with.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ServiceSpec {
    pub fn new(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.to_owned(),
            token: TOKEN.to_owned(),
            port: 0,
            redis_url: None,
            namespace: None,
            max_concurrency: 32,
            tls: None,
        }
    }

    pub fn tls(mut self, certs: &Certs) -> ServiceSpec {
        self.tls = Some((certs.server_cert.clone(), certs.server_key.clone()));
        self
    }

    pub fn redis(mut self, url: &str) -> ServiceSpec {
        self.redis_url = Some(url.to_owned());
        self
    }

    pub fn port(mut self, port: u16) -> ServiceSpec {
        self.port = port;
        self
    }

    pub fn token(mut self, token: &str) -> ServiceSpec {
        self.token = token.to_owned();
        self
    }

    pub fn max_concurrency(mut self, n: u32) -> ServiceSpec {
        self.max_concurrency = n;
        self
    }
}

/// A running service process, killed (SIGKILL) on drop.
pub struct PyService {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    pub spec: ServiceSpec,
    pub port: u16,
    pub url: String,
    pub instance: String,
    pub pid: u32,
}

impl PyService {
    /// Starts the service and returns once it printed its ready line (it listens then, and is
    /// registered when it has a Redis URL).
    pub async fn start(python: &Path, spec: &ServiceSpec) -> PyService {
        let pyfns = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pyfns");
        let mut cmd = Command::new(python);
        cmd.current_dir(&pyfns)
            .args(["-m", "gleitzeit.service", "--name", &spec.name])
            .args(["--port", &spec.port.to_string()])
            .args(["--max-concurrency", &spec.max_concurrency.to_string()])
            .args(["--log-level", "WARNING", "--drain-timeout", "5"])
            .env("GLEITZEIT_SERVICE_TOKEN", &spec.token)
            .env_remove("GLEITZEIT_SERVICE_TOKEN_FILE")
            .env_remove("GLEITZEIT_REDIS_URL")
            .env_remove("GLEITZEIT_SERVICE_TLS_CERT")
            .env_remove("GLEITZEIT_SERVICE_TLS_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(url) = &spec.redis_url {
            cmd.args(["--redis-url", url]);
        }
        if let Some(ns) = &spec.namespace {
            cmd.args(["--namespace", ns]);
        }
        if let Some((cert, key)) = &spec.tls {
            cmd.env("GLEITZEIT_SERVICE_TLS_CERT", cert)
                .env("GLEITZEIT_SERVICE_TLS_KEY", key);
        }
        cmd.arg("extfns");
        let mut child = cmd.spawn().expect("spawn python service");
        let pid = child.id().expect("pid of a running child");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let read = tokio::time::timeout(START_LIMIT, stdout.read_line(&mut line))
            .await
            .expect("service printed no ready line in time")
            .expect("read service stdout");
        assert!(read > 0, "service exited before it was ready");
        let ready: serde_json::Value =
            serde_json::from_str(line.trim()).expect("ready line is JSON");
        assert_eq!(ready["event"], "ready", "{line}");
        let port = u16::try_from(ready["port"].as_u64().expect("port")).expect("port fits");
        PyService {
            child,
            _stdout: stdout,
            spec: spec.clone(),
            port,
            url: ready["url"].as_str().expect("url").to_owned(),
            instance: ready["instance"].as_str().expect("instance").to_owned(),
            pid,
        }
    }

    /// `http://127.0.0.1:<port>` (`https://` when the service speaks TLS).
    pub fn local_url(&self) -> String {
        let scheme = if self.spec.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the process dies at once, no deregistration, connections reset.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill service");
    }

    /// SIGTERM and wait for the clean shutdown (deregisters, disconnects clients).
    pub async fn terminate(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let exit = tokio::time::timeout(START_LIMIT, self.child.wait())
            .await
            .expect("service did not stop in time")
            .expect("wait for service");
        assert!(exit.success(), "clean shutdown exits 0, got {exit}");
    }

    /// SIGSTOP / SIGCONT: freeze the process with its connections open.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

/// A free loopback port (for a service that must come back on the same address).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A configuration for tests: quick reconnects, generous waits (waits end on events; the
/// limits only bound a broken run).
pub fn test_config() -> ExternalConfig {
    ExternalConfig {
        connect_timeout: Duration::from_secs(10),
        ready_wait: Duration::from_secs(20),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        discovery_interval: Duration::from_millis(500),
        ..ExternalConfig::default()
    }
}

/// A pool over static addresses of one service.
pub fn static_pool(service: &str, urls: &[String], config: ExternalConfig) -> ServicePool {
    let config = ExternalConfig {
        services: vec![StaticService {
            name: service.to_owned(),
            urls: urls.to_vec(),
        }],
        ..config
    };
    ServicePool::new(&config, Token::new(TOKEN), None).expect("valid pool config")
}

/// A shared connection to the test Redis.
pub fn redis_pool(url: &str) -> gleitzeit_queue::SharedConnection {
    gleitzeit_queue::RedisTarget::new(url)
        .shared(std::time::Duration::from_secs(5))
        .expect("redis connection")
}

/// A connection of its own to the test Redis, without a response timeout (for BLPOP).
pub async fn redis_conn(url: &str) -> deadpool_redis::redis::aio::MultiplexedConnection {
    deadpool_redis::redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection")
}

/// Logs of the crate under test to the test output, filtered by `RUST_LOG` (default: warn).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A private CA and a server certificate it signed for `127.0.0.1` and `localhost`, made with
/// `openssl req` / `openssl x509` in a temporary directory (removed on drop).
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=Gleitzeit Test CA",
        ];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(d, &ca);
        let mut csr = vec!["req", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(d, &csr);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write extensions");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        Certs {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            dir,
        }
    }
}
