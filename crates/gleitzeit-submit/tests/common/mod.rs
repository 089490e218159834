//! Shared test support: running the built `gleitzeit-submit` binary, a real `redis-server`
//! per test, and a task driver that plays the worker through the queue API (begin, complete,
//! fail, promote) so workflows can be finished without a worker process.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use deadpool_redis::redis;
pub use gleitzeit_core::now_ms;
use gleitzeit_queue::{
    BeginOutcome, FailRequest, Queue, QueueConfig, ScriptCode, StreamRef, TaskContext, WorkflowInfo,
};
use gleitzeit_testkit::redis::RedisServer;
use serde_json::Value;

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout parsed as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// The binary with a clean environment: the Redis URL given, default namespace, no logging.
pub fn command(redis_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gleitzeit-submit"));
    cmd.env("GLEITZEIT_REDIS_URL", redis_url)
        .env_remove("GLEITZEIT_NAMESPACE")
        .env_remove("GLEITZEIT_REDIS_TLS_CA")
        .env_remove("GLEITZEIT_REDIS_TLS_CERT")
        .env_remove("GLEITZEIT_REDIS_TLS_KEY")
        .env_remove("GLEITZEIT_LOG")
        .env_remove("GLEITZEIT_RETENTION")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs the binary to completion with `args` and no standard input.
pub fn cli(redis_url: &str, args: &[&str]) -> Out {
    cli_stdin(redis_url, args, None)
}

/// Runs the binary to completion, writing `stdin` (if any) to its standard input.
pub fn cli_stdin(redis_url: &str, args: &[&str], stdin: Option<&str>) -> Out {
    run(command(redis_url), args, stdin)
}

/// Runs a prepared command (see [`command`]) to completion with `args` and `stdin`.
pub fn run(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = cmd
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gleitzeit-submit");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // A command refused before it reads its input (a bad flag) may exit first.
        if let Err(e) = pipe.write_all(text.as_bytes()) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "writing stdin: {e}"
            );
        }
        drop(pipe);
    }
    let output = child.wait_with_output().unwrap();
    Out {
        code: output.status.code().expect("exited normally"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `examples/<name>` of the repository.
pub fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    path.to_str().unwrap().to_owned()
}

/// Every file of `examples/invalid/`, sorted.
pub fn invalid_examples() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/invalid");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_owned())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

/// A URL where nothing listens (a port the OS just handed out and that was released again).
pub fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("redis://127.0.0.1:{port}/")
}

pub fn start_redis() -> RedisServer {
    RedisServer::start().expect("redis-server (apt-get install redis-server)")
}

/// Number of keys in the server's database.
pub fn dbsize(url: &str) -> i64 {
    redis_cmd(url, &["DBSIZE"])
}

/// One raw command on a connection of its own.
pub fn redis_cmd<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> T {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn).unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub async fn queue(url: &str) -> Queue {
    Queue::connect(url, QueueConfig::default()).await.unwrap()
}

/// What the driver does with a task it began.
pub enum Act {
    /// Complete it with this stored result (`TaskResult` JSON).
    Complete(Value),
    /// Fail this attempt with this error (`TaskFailure` JSON); `retry` asks for another
    /// attempt due at once.
    Fail { error: Value, retry: bool },
    /// Defer it (nothing could take it; no attempt used), due at once.
    Defer { error: Value },
}

/// Plays a worker for workflow `id` until it ends: reads ready tasks, begins them, and
/// completes or fails each as `decide` says; retries are promoted as soon as they are due.
pub async fn drive(
    queue: &Queue,
    id: &str,
    mut decide: impl FnMut(&TaskContext) -> Act,
) -> WorkflowInfo {
    let mut consumer = queue.consumer("test-driver").unwrap();
    loop {
        let info = queue.workflow(id).await.unwrap().expect("workflow exists");
        if info.is_finished() {
            return info;
        }
        queue.promote(now_ms(), 100).await.unwrap();
        let streams: Vec<StreamRef> = queue
            .capabilities()
            .await
            .unwrap()
            .iter()
            .flat_map(|cap| queue.keys().stream_refs(cap))
            .collect();
        let deliveries = consumer
            .read(&streams, 16, Duration::from_secs(5))
            .await
            .unwrap();
        for d in deliveries {
            assert_eq!(d.workflow_id, id, "only one workflow is driven at a time");
            let BeginOutcome::Run(ctx) = queue.begin(&d, consumer.name(), now_ms()).await.unwrap()
            else {
                continue;
            };
            match decide(&ctx) {
                Act::Complete(result) => {
                    let code = queue
                        .complete(&d, consumer.name(), &result.to_string(), now_ms())
                        .await
                        .unwrap();
                    assert_eq!(code, ScriptCode::Ok);
                }
                Act::Fail { error, retry } => {
                    let req = FailRequest {
                        error_json: error.to_string(),
                        retry_at_ms: retry.then(now_ms),
                        dead_letter: None,
                        now_ms: now_ms(),
                    };
                    let code = queue.fail(&d, consumer.name(), &req).await.unwrap();
                    let expected = if retry {
                        ScriptCode::RetryScheduled
                    } else {
                        ScriptCode::Failed
                    };
                    assert_eq!(code, expected);
                }
                Act::Defer { error } => {
                    let req = FailRequest {
                        error_json: error.to_string(),
                        retry_at_ms: Some(now_ms()),
                        dead_letter: None,
                        now_ms: now_ms(),
                    };
                    let code = queue.defer(&d, consumer.name(), &req).await.unwrap();
                    assert_eq!(code, ScriptCode::RetryScheduled);
                }
            }
        }
    }
}

/// The result a worker would store for an LLM answer.
pub fn llm_result(text: &str) -> Value {
    serde_json::json!({
        "value": text,
        "meta": {"model": "smollm2", "prompt_tokens": 10, "completion_tokens": 5, "duration_ms": 1500}
    })
}
