//! External tasks end to end: a real Python task service process (the `gleitzeit` package,
//! serving `examples/python/tasks.py`), a real Redis, an OpenAI simulator and the worker
//! in-process. Skips with a message when the Python environment is not installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Env, PATIENCE};
use deadpool_redis::redis::AsyncCommands;
use gleitzeit_worker::external_executor::ExternalSpec;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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
        .env("GLEITZEIT_SERVICE_TOKEN", TOKEN)
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
