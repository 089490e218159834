//! External tasks end to end: a real Python task service process (the `gleitzeit` package,
//! serving `examples/python/tasks.py`), a real Redis, an OpenAI simulator and the worker
//! in-process; and the service handshake against an impostor registered in Redis and a
//! service holding another token. Skips with a message when the Python environment is not
//! installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Env, PATIENCE};
use deadpool_redis::redis::AsyncCommands;
use gleitzeit_external::keys::{instance_key, service_key};
use gleitzeit_worker::external_executor::ExternalSpec;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const TOKEN: &str = "worker-test-token-42";
const SERVICE: &str = "Python Tasks";

fn python() -> Option<PathBuf> {
    let candidate = match std::env::var_os("GLEITZEIT_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    };
    let ok = candidate.exists()
        && std::process::Command::new(&candidate)
            .args(["-c", "import gleitzeit.service, redis"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !ok {
        println!(
            "skipped: no Python with the gleitzeit package at {} (scripts/bootstrap.sh)",
            candidate.display()
        );
        return None;
    }
    Some(candidate)
}

/// A service process serving the example tasks and the test functions; killed on drop.
struct Service {
    child: Child,
    pid: u32,
}

async fn start_service(python: &Path, redis_url: &str) -> Service {
    start_service_with_token(python, redis_url, TOKEN).await
}

async fn start_service_with_token(python: &Path, redis_url: &str, token: &str) -> Service {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pythonpath = format!(
        "{}:{}",
        root.join("../../examples/python").display(),
        root.join("tests/pyfns").display()
    );
    let mut child = Command::new(python)
        .args(["-m", "gleitzeit.service", "--name", SERVICE, "--port", "0"])
        .args(["--redis-url", redis_url, "--namespace", common::NS])
        .args(["--log-level", "WARNING", "tasks", "worker_fns"])
        .env("PYTHONPATH", pythonpath)
        .env("GLEITZEIT_SERVICE_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python service");
    let pid = child.id().expect("pid");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, out.read_line(&mut line))
        .await
        .expect("service ready in time")
        .expect("read ready line");
    assert!(line.contains("\"ready\""), "unexpected first line: {line}");
    // Keep the pipe open (and drained by nobody: the service prints nothing more).
    std::mem::forget(out);
    Service { child, pid }
}

fn token_file() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(f.path(), TOKEN).expect("write token");
    f
}

fn external_config(env: &Env, token: &Path) -> gleitzeit_worker::WorkerConfig {
    let mut config = env.config();
    config.external = ExternalSpec {
        enabled: Some(true),
        token_file: Some(token.to_path_buf()),
        ..ExternalSpec::default()
    };
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_example_runs_a_python_task_into_an_llm_task() {
    let Some(python) = python() else { return };
    let env = Env::start().await;
    let _service = start_service(&python, &env.redis.url()).await;
    let token = token_file();
    let worker = common::Worker::start(external_config(&env, token.path()));

    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipeline.yaml"),
    )
    .expect("read examples/pipeline.yaml");
    let id = env.submit(&yaml).await;
    let info = env.wait_end(&id).await;
    assert_eq!(info.status, "completed", "{info:?}");

    let tasks = env.queue.tasks(&id).await.expect("tasks");
    let process: serde_json::Value =
        serde_json::from_str(tasks[0].result_json.as_deref().expect("Process result"))
            .expect("result JSON");
    assert_eq!(process["value"]["count"], 8);
    assert_eq!(process["value"]["max"], 9.0);
    assert_eq!(process["value"]["mode"], "fast");

    // The LLM task received the Python result, substituted into its prompt.
    let prompts: Vec<String> = env
        .sim
        .requests()
        .iter()
        .filter_map(|r| r.body.as_ref().map(|b| b.to_string()))
        .collect();
    assert!(
        prompts
            .iter()
            .any(|p| p.contains("Explain this result") && p.contains("\\\"mean\\\":3.875")),
        "no LLM request carried the Python result: {prompts:?}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_exception_fails_the_task_with_type_and_traceback() {
    let Some(python) = python() else { return };
    let env = Env::start().await;
    let _service = start_service(&python, &env.redis.url()).await;
    let token = token_file();
    let worker = common::Worker::start(external_config(&env, token.path()));

    let id = env
        .submit(
            r#"
name: Raises
tasks:
  - name: Boom
    type: external
    service: Python Tasks
    function: explode
    args: ["no luck"]
    retry: { max_attempts: 3, base_delay: 10ms, max_delay: 10ms }
"#,
        )
        .await;
    let info = env.wait_end(&id).await;
    assert_eq!(info.status, "failed");
    let task = &env.queue.tasks(&id).await.expect("tasks")[0];
    assert_eq!(task.status, "failed");
    // A Python exception is not retried unless the function says so.
    assert_eq!(task.attempts, 1, "{task:?}");
    let error: serde_json::Value =
        serde_json::from_str(task.error_json.as_deref().expect("error")).expect("error JSON");
    assert!(
        error["message"].as_str().unwrap_or("").contains("no luck"),
        "{error}"
    );
    assert_eq!(error["detail"]["type"], "ValueError", "{error}");
    assert!(
        error["detail"]["traceback"]
            .as_str()
            .unwrap_or("")
            .contains("Traceback"),
        "{error}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_mid_call_is_retried_on_the_other_instance() {
    let Some(python) = python() else { return };
    let env = Env::start().await;
    let url = env.redis.url();
    let mut first = start_service(&python, &url).await;
    let second = start_service(&python, &url).await;
    let token = token_file();
    let worker = common::Worker::start(external_config(&env, token.path()));

    let id = env
        .submit(&format!(
            r#"
name: Held
tasks:
  - name: Hold
    type: external
    service: Python Tasks
    function: hold
    args: ["{url}", "t1"]
    retry: {{ max_attempts: 3, backoff: fixed, base_delay: 10ms }}
"#
        ))
        .await;

    let client = deadpool_redis::redis::Client::open(url.as_str()).expect("client");
    // Blocking pops need a connection without the client's default response timeout.
    let mut conn = client
        .get_multiplexed_async_connection_with_config(
            &deadpool_redis::redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .expect("connection");
    // The call is in flight on one instance: kill that one.
    let (_, pid): (String, u32) = conn
        .blpop("started:t1", PATIENCE.as_secs_f64())
        .await
        .expect("first call started");
    let other = if pid == first.pid {
        first.child.kill().await.expect("kill");
        second.pid
    } else {
        assert_eq!(pid, second.pid);
        drop(second);
        first.pid
    };
    // The retry reaches the surviving instance; let it finish.
    let (_, pid2): (String, u32) = conn
        .blpop("started:t1", PATIENCE.as_secs_f64())
        .await
        .expect("retried call started");
    assert_eq!(pid2, other, "the retry went to the surviving instance");
    let _: () = conn.rpush("release:t1", "go").await.expect("release");

    let info = env.wait_end(&id).await;
    assert_eq!(info.status, "completed", "{info:?}");
    let task = &env.queue.tasks(&id).await.expect("tasks")[0];
    let result: serde_json::Value =
        serde_json::from_str(task.result_json.as_deref().expect("result")).expect("JSON");
    assert_eq!(result["value"]["pid"], other);
    assert_eq!(
        task.attempts, 1,
        "one failed attempt before the success: {task:?}"
    );
    worker.stop().await;
    drop(first);
}

/// The impostor of `tests/pyfns/forged_service.py`: a real Socket.IO server without the token
/// that records what it receives; killed on drop.
struct Forged {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    url: String,
    instance: String,
}

impl Forged {
    async fn start(python: &Path) -> Forged {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pyfns/forged_service.py");
        let instance = "forged-1-0badc0de".to_owned();
        let mut child = Command::new(python)
            .arg(&script)
            .args([SERVICE, &instance])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the forged service");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = next_record(&mut lines).await.expect("ready line");
        assert_eq!(ready["event"], "ready", "{ready}");
        let url = ready["url"].as_str().expect("url").to_owned();
        Forged {
            child,
            lines,
            url,
            instance,
        }
    }

    /// Writes a registration for the impostor straight into Redis, as anyone who can write
    /// Redis could.
    async fn register(&self, env: &Env) {
        let mut conn = redis_conn(env).await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        let zset = service_key(common::NS, SERVICE).expect("service key");
        let hash = instance_key(common::NS, SERVICE, &self.instance).expect("instance key");
        let _: () = deadpool_redis::redis::pipe()
            .zadd(&zset, &self.instance, now_ms + 600_000)
            .ignore()
            .hset_multiple(
                &hash,
                &[
                    ("instance", self.instance.as_str()),
                    ("service", SERVICE),
                    ("url", self.url.as_str()),
                    (
                        "functions",
                        r#"[{"name":"stamp","description":"","timeout_ms":null}]"#,
                    ),
                    ("max_concurrency", "8"),
                    ("started_ms", "1"),
                    ("protocol", "2"),
                ],
            )
            .ignore()
            .query_async(&mut conn)
            .await
            .expect("write the forged registration");
    }

    /// The next thing the impostor received.
    async fn next(&mut self) -> serde_json::Value {
        tokio::time::timeout(PATIENCE, next_record(&mut self.lines))
            .await
            .expect("the forged service recorded nothing in time")
            .expect("the forged service exited")
    }

    /// Kills the impostor and returns everything it recorded that was not read yet.
    async fn finish(mut self) -> Vec<serde_json::Value> {
        self.child.kill().await.expect("kill the forged service");
        let mut rest = Vec::new();
        while let Some(record) = next_record(&mut self.lines).await {
            rest.push(record);
        }
        rest
    }
}

async fn redis_conn(env: &Env) -> deadpool_redis::redis::aio::MultiplexedConnection {
    deadpool_redis::redis::Client::open(env.redis.url().as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection")
}

async fn next_record(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<serde_json::Value> {
    let line = lines
        .next_line()
        .await
        .expect("read forged service output")?;
    Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
}

/// What an impostor may have received: a connect whose auth is one nonce and nothing else.
fn assert_only_a_nonce_was_offered(record: &serde_json::Value) {
    assert_eq!(
        record["event"], "connect",
        "the worker sent an event to an instance that never proved the token: {record}"
    );
    let auth = record["auth"].as_object().expect("auth is an object");
    assert_eq!(auth.len(), 1, "{record}");
    let nonce = auth["nonce"].as_str().expect("nonce");
    assert!(
        nonce.len() == 64 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
        "{record}"
    );
    assert!(!record.to_string().contains(TOKEN), "{record}");
}

fn stamp_workflow(redis_url: &str, tag: &str) -> String {
    format!(
        r#"
name: Stamp
tasks:
  - name: Stamp
    type: external
    service: Python Tasks
    function: stamp
    args: ["{redis_url}", "{tag}"]
    retry: {{ max_attempts: 2, backoff: fixed, base_delay: 50ms }}
"#
    )
}

/// Waits until the task of workflow `id` was deferred at least once (or ended, which fails).
async fn wait_deferred(env: &Env, id: &str) {
    common::wait_event(&env.queue, id, |e| {
        e.kind == "task" && matches!(e.status.as_str(), "retrying" | "completed" | "failed")
    })
    .await;
    let task = &env.tasks(id).await[0];
    assert!(task.deferrals >= 1, "{task:?}");
    assert_eq!(
        task.attempts, 0,
        "a failed handshake uses no attempt: {task:?}"
    );
    assert_ne!(task.status, "completed", "{task:?}");
    assert_eq!(task.result_json, None, "{task:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_registration_gets_no_token_and_no_call_and_its_answers_are_never_results() {
    let Some(python) = python() else { return };
    let env = Env::start().await;
    let mut forged = Forged::start(&python).await;
    forged.register(&env).await;
    let token = token_file();
    let worker = common::Worker::start(external_config(&env, token.path()));
    let url = env.redis.url();
    let id = env.submit(&stamp_workflow(&url, "forged")).await;

    // The worker finds the impostor, the only registered instance, and connects to it.
    let first = forged.next().await;
    assert_only_a_nonce_was_offered(&first);
    // The impostor's proof fails: the task waits, attempts untouched, no result recorded
    // (the impostor announced acceptance and sent forged results at once).
    wait_deferred(&env, &id).await;

    // A real instance comes up: the task completes with its answer, never the forged one.
    let real = start_service(&python, &url).await;
    let info = env.wait_end(&id).await;
    assert_eq!(info.status, "completed", "{info:?}");
    let task = &env.tasks(&id).await[0];
    let result: serde_json::Value =
        serde_json::from_str(task.result_json.as_deref().expect("result")).expect("JSON");
    assert_eq!(result["value"]["real"], true, "{result}");
    assert_eq!(result["value"]["pid"], real.pid, "{result}");
    assert_eq!(task.attempts, 0, "{task:?}");
    worker.stop().await;

    // Everything the impostor ever received: connects carrying a nonce, no token, no event
    // (no worker:auth with a proof, no task:call).
    for record in forged.finish().await {
        assert_only_a_nonce_was_offered(&record);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_another_token_is_not_served_and_the_function_never_runs() {
    let Some(python) = python() else { return };
    let env = Env::start().await;
    let url = env.redis.url();
    let _service = start_service_with_token(&python, &url, "the-services-own-token").await;
    let token = token_file();
    let worker = common::Worker::start(external_config(&env, token.path()));
    let id = env.submit(&stamp_workflow(&url, "refused")).await;

    // The handshake fails (the worker cannot verify the service, the service would refuse the
    // worker): the task is deferred, not failed, and the function never ran.
    wait_deferred(&env, &id).await;
    worker.stop().await;
    let mut conn = redis_conn(&env).await;
    let ran: usize = conn.llen("ran:refused").await.expect("LLEN");
    assert_eq!(
        ran, 0,
        "the service ran the function for an unauthenticated worker"
    );
    let task = &env.tasks(&id).await[0];
    assert!(
        matches!(task.status.as_str(), "retrying" | "ready"),
        "the task waits for a proven instance: {task:?}"
    );
}
