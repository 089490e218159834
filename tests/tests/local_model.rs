//! Case 9: the real local model. When `GLEITZEIT_LLAMA_SERVER` (llama.cpp's `llama-server`)
//! and `GLEITZEIT_LLAMA_MODEL` (a GGUF file) are set — `scripts/test.sh` sets them from
//! `scripts/local-llm.sh env` — the test starts that server as model `smollm2`, runs a worker
//! with an `openai` endpoint at it, and submits `examples/analysis.yaml` with `--wait`:
//! every task completes with non-empty text and token counts. Without them it says it is
//! skipped and returns.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gleitzeit_e2e::worker::{WorkerProcess, WorkerSpec};
use gleitzeit_e2e::{bins, test_name, Deployment, NAMESPACE};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How often and how long `/health` is probed while llama-server loads the model (an external
/// process offers no event to await; the bound only limits how long a broken start is waited
/// for, like the Redis harness's PING probe).
const HEALTH_ATTEMPTS: u32 = 1200;
const HEALTH_INTERVAL: Duration = Duration::from_millis(100);

struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LlamaServer {
    async fn start(server: &Path, model: &Path) -> LlamaServer {
        let port = free_port();
        let log = bins::log_dir().join(format!("{}-llama-server-{port}.log", test_name()));
        let file = std::fs::File::create(&log).expect("llama-server log file");
        let child = Command::new(server)
            .args(["-m"])
            .arg(model)
            .args(["--alias", "smollm2", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["-t", "1", "-tb", "1", "-np", "4", "-c", "4096"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("log file handle")))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .expect("spawning llama-server");
        let mut server = LlamaServer { child, port, log };
        server.wait_healthy().await;
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_healthy(&mut self) {
        for _ in 0..HEALTH_ATTEMPTS {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "llama-server exited during start-up ({status}); log: {}",
                    self.log.display()
                );
            }
            if health_status(self.port).await == Some(200) {
                return;
            }
            tokio::time::sleep(HEALTH_INTERVAL).await;
        }
        panic!(
            "llama-server never became healthy; log: {}",
            self.log.display()
        );
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("----- llama-server log: {} -----", self.log.display());
            if let Ok(text) = std::fs::read_to_string(&self.log) {
                let lines: Vec<&str> = text.lines().collect();
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The HTTP status of `GET /health`, or `None` when nothing answers yet.
async fn health_status(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut head = Vec::new();
    stream.read_to_end(&mut head).await.ok()?;
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_example_runs_on_the_local_model() {
    let (Some(server), Some(model)) = (
        std::env::var_os("GLEITZEIT_LLAMA_SERVER"),
        std::env::var_os("GLEITZEIT_LLAMA_MODEL"),
    ) else {
        println!(
            "skipped: GLEITZEIT_LLAMA_SERVER and GLEITZEIT_LLAMA_MODEL are not set \
             (scripts/test.sh sets them; install with scripts/local-llm.sh install)"
        );
        return;
    };
    let llama = LlamaServer::start(Path::new(&server), Path::new(&model)).await;
    let dep = Deployment::start().await;
    let spec = WorkerSpec::openai(&dep.url(), NAMESPACE, &llama.url()).set(
        "endpoints",
        json!([{
            "name": "local-llama",
            "kind": "openai",
            "url": llama.url(),
            "models": ["smollm2"],
            "timeout": "300s",
        }]),
    );
    let _worker = WorkerProcess::spawn("w", &spec);

    let analysis = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/analysis.yaml");
    let out = dep
        .cli
        .run(&["--json", "submit", analysis.to_str().unwrap(), "--wait"])
        .await;
    out.assert_code(0);
    let doc = out.json();
    assert_eq!(doc["status"], "completed", "{out:?}");
    let id = doc["id"].as_str().expect("workflow id").to_owned();
    let results = doc["results"].as_object().expect("results by task name");
    assert_eq!(results.len(), 3, "{doc}");
    for (name, r) in results {
        assert_eq!(r["status"], "completed", "{name}: {r}");
        let text = r["result"].as_str().unwrap_or("");
        assert!(!text.trim().is_empty(), "{name}: empty text: {r}");
        for field in ["prompt_tokens", "completion_tokens"] {
            let n = r["meta"][field].as_u64().unwrap_or(0);
            assert!(n > 0, "{name}: no {field}: {r}");
        }
        assert_eq!(
            r["meta"]["model"].as_str().map(|m| !m.is_empty()),
            Some(true),
            "{r}"
        );
    }
    // The stored record agrees with what the CLI printed.
    let wf = dep.store.workflow(&id).await;
    assert_eq!(wf["status"], "completed");
    assert_eq!(wf["completed"], "3");
    let completions = dep.store.completions(&id).await;
    assert!(completions.values().all(|&n| n == 1), "{completions:?}");
    let summary: Value = dep.store.result(&id, "Title").await;
    assert!(summary["value"].is_string());
}
