//! Worker processes: the real `gleitzeit-worker` binary with a generated configuration file,
//! its output captured line by line (to a log file and to memory, so tests can await a log
//! line), killed on drop, its log printed when the test fails.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::{bins, test_name, HANG_GUARD};

/// The configuration a worker process is started with (written as a YAML file; JSON is YAML).
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    config: Map<String, Value>,
    env: Vec<(String, String)>,
}

impl WorkerSpec {
    /// A worker for `redis_url`/`namespace` with one OpenAI-compatible endpoint at
    /// `endpoint_url` serving every model. Small refresh and claim times keep tests short;
    /// they are configuration, nothing is asserted about durations.
    pub fn openai(redis_url: &str, namespace: &str, endpoint_url: &str) -> WorkerSpec {
        let config = json!({
            "redis_url": redis_url,
            "namespace": namespace,
            "concurrency": 4,
            "caps_refresh": "200ms",
            "claim_idle": "1s",
            "drain_timeout": "30s",
            "promote_interval_max": "200ms",
            // Tests run several workers on one host: none takes the default metrics port
            // (GLEITZEIT_METRICS_ADDR in the environment still overrides this).
            "metrics_addr": "off",
            "endpoints": [{
                "name": "sim",
                "kind": "openai",
                "url": endpoint_url,
                "models": ["*"],
                "timeout": "60s",
            }],
        });
        WorkerSpec {
            config: config.as_object().cloned().unwrap_or_default(),
            env: Vec::new(),
        }
    }

    /// Sets any configuration field.
    pub fn set(mut self, field: &str, value: impl Into<Value>) -> WorkerSpec {
        self.config.insert(field.to_owned(), value.into());
        self
    }

    /// Sets an environment variable of the worker process (for example `SSL_CERT_FILE`).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> WorkerSpec {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Tasks run at the same time.
    pub fn concurrency(self, n: usize) -> WorkerSpec {
        self.set("concurrency", n)
    }

    /// Idle time after which entries are reclaimed (`"1s"`).
    pub fn claim_idle(self, d: &str) -> WorkerSpec {
        self.set("claim_idle", d)
    }

    /// Drain deadline after SIGTERM (`"30s"`).
    pub fn drain_timeout(self, d: &str) -> WorkerSpec {
        self.set("drain_timeout", d)
    }

    /// Deliveries after which an entry is dead-lettered as poison.
    pub fn max_deliveries(self, n: u64) -> WorkerSpec {
        self.set("max_deliveries", n)
    }

    /// The configuration document.
    pub fn to_json(&self) -> Value {
        Value::Object(self.config.clone())
    }
}

/// Output lines of a process, as they arrive.
#[derive(Clone)]
struct LogCapture {
    lines: Arc<Mutex<Vec<String>>>,
    count: watch::Sender<usize>,
    file: Arc<Mutex<File>>,
    path: PathBuf,
}

impl LogCapture {
    fn new(path: PathBuf) -> LogCapture {
        let file = File::create(&path).expect("creating a worker log file");
        LogCapture {
            lines: Arc::new(Mutex::new(Vec::new())),
            count: watch::Sender::new(0),
            file: Arc::new(Mutex::new(file)),
            path,
        }
    }

    fn push(&self, line: String) {
        let line = strip_ansi(&line);
        {
            let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(file, "{line}");
        }
        let n = {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            lines.push(line);
            lines.len()
        };
        self.count.send_replace(n);
    }

    /// Copies `reader`'s lines until its end (the process closed it, usually by exiting);
    /// the handle ends then.
    fn follow<R: AsyncRead + Unpin + Send + 'static>(
        &self,
        reader: R,
    ) -> tokio::task::JoinHandle<()> {
        let capture = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                capture.push(line);
            }
        })
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for the first line containing `needle` (bounded by [`HANG_GUARD`]).
    async fn wait_for(&self, needle: &str) -> String {
        let mut rx = self.count.subscribe();
        let found = tokio::time::timeout(HANG_GUARD, async {
            loop {
                if let Some(line) = self.snapshot().into_iter().find(|l| l.contains(needle)) {
                    return line;
                }
                if rx.changed().await.is_err() {
                    // The sender lives in `self`; this cannot happen while we hold it.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        match found {
            Ok(line) => line,
            Err(_) => panic!(
                "no log line containing {needle:?} within {HANG_GUARD:?}; log: {}",
                self.path.display()
            ),
        }
    }
}

/// Removes ANSI colour escapes (`ESC [ ... letter`) in case the logger colours its output.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Applies the environment a child process of a test gets: no inherited `GLEITZEIT_*` variable
/// (the binaries read them, and they would override what the test passes), plain logs.
pub(crate) fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GLEITZEIT_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("NO_COLOR", "1");
}

/// A running `gleitzeit-worker` process. Killed (SIGKILL) when dropped; when the test is
/// failing at that point, its log is printed.
pub struct WorkerProcess {
    label: String,
    child: Child,
    pid: u32,
    log: LogCapture,
    /// The tasks copying stdout and stderr into `log`.
    followers: Vec<tokio::task::JoinHandle<()>>,
    exit: Option<ExitStatus>,
    _config_dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Writes the configuration and starts the worker with `--config`. `label` names the log
    /// file (`target/<profile>/e2e-logs/<test>-<label>-<pid>.log`).
    pub fn spawn(label: &str, spec: &WorkerSpec) -> WorkerProcess {
        let dir = tempfile::Builder::new()
            .prefix("gleitzeit-worker-")
            .tempdir()
            .expect("temporary directory for the worker config");
        let config = dir.path().join("worker.yaml");
        std::fs::write(&config, spec.to_json().to_string()).expect("writing the worker config");
        let mut cmd = Command::new(bins::binary(bins::WORKER));
        clean_env(&mut cmd);
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("GLEITZEIT_E2E_WORKER_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawning gleitzeit-worker");
        let pid = child.id().expect("pid of a process just started");
        let path = bins::log_dir().join(format!("{}-{label}-{pid}.log", test_name()));
        let log = LogCapture::new(path);
        let mut followers = Vec::new();
        if let Some(out) = child.stdout.take() {
            followers.push(log.follow(out));
        }
        if let Some(err) = child.stderr.take() {
            followers.push(log.follow(err));
        }
        WorkerProcess {
            label: label.to_owned(),
            child,
            pid,
            log,
            followers,
            exit: None,
            _config_dir: dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where the log is written.
    pub fn log_path(&self) -> &Path {
        &self.log.path
    }

    /// The log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.snapshot()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_log(&self, needle: &str) -> String {
        self.log.wait_for(needle).await
    }

    /// The consumer name the worker logged at start (waits for the line).
    pub async fn consumer(&self) -> String {
        let line = self.wait_log("worker starting").await;
        let fields = log_fields(&line);
        fields
            .get("consumer")
            .cloned()
            .unwrap_or_else(|| panic!("no consumer= field in {line:?}"))
    }

    /// Sends SIGTERM (graceful shutdown: stop reading, drain, exit).
    pub fn sigterm(&self) {
        signal(self.pid, rustix::process::Signal::TERM);
    }

    /// Stops the process with SIGSTOP: it keeps its sockets and state but runs no code (a
    /// worker frozen by the scheduler, a debugger or a paused container). Returns once the
    /// kernel reports it stopped (`/proc/<pid>/stat`), so whatever it did before — a
    /// completion stamped and sent, say — happened before the caller's next step.
    pub async fn sigstop(&self) {
        signal(self.pid, rustix::process::Signal::STOP);
        let stat = format!("/proc/{}/stat", self.pid);
        for _ in 0..5000 {
            let state = std::fs::read_to_string(&stat).ok().and_then(|s| {
                // The state follows the command name, which is in parentheses.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
            });
            if matches!(state, Some('T') | Some('t') | None) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("process {} did not stop after SIGSTOP", self.pid);
    }

    /// Resumes a process stopped with [`WorkerProcess::sigstop`].
    pub fn sigcont(&self) {
        signal(self.pid, rustix::process::Signal::CONT);
    }

    /// Kills the process with SIGKILL (a crash: nothing is cleaned up) and reaps it.
    pub async fn sigkill(&mut self) -> ExitStatus {
        signal(self.pid, rustix::process::Signal::KILL);
        self.wait_exit().await
    }

    /// Waits for the process to exit and for its output to be read to the end (bounded by
    /// [`HANG_GUARD`]).
    pub async fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let status = match tokio::time::timeout(HANG_GUARD, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for worker {}: {e}", self.label),
            Err(_) => panic!(
                "worker {} did not exit within {HANG_GUARD:?}; log: {}",
                self.label,
                self.log.path.display()
            ),
        };
        // Everything the process wrote before it exited is in the log once its pipes have
        // been read to their end.
        for follower in self.followers.drain(..) {
            let _ = tokio::time::timeout(HANG_GUARD, follower).await;
        }
        self.exit = Some(status);
        status
    }
}

/// Sends `sig` to process `pid` (a worker, a Redis server, a Python service).
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a valid pid");
    // The process may have exited already; the caller observes that through wait_exit.
    let _ = rustix::process::kill_process(pid, sig);
}

/// The `key=value` fields of a log line (values end at whitespace; quotes removed).
pub fn log_fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|token| token.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- log of worker {} (pid {}, {}) -----",
                self.label,
                self.pid,
                self.log.path.display()
            );
            for line in self.log.snapshot() {
                eprintln!("{line}");
            }
            eprintln!("----- end of log of worker {} -----", self.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_escapes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2024\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x=\u{1b}[3m1\u{1b}[0m"),
            "2024  INFO x=1"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn fields_are_parsed() {
        let f = log_fields(
            "INFO gleitzeit_worker::runtime: worker starting consumer=h-1-ab redis=\"redis://x\"",
        );
        assert_eq!(f["consumer"], "h-1-ab");
        assert_eq!(f["redis"], "redis://x");
    }
}
