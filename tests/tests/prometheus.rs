//! A real Prometheus scraping a real worker: Redis, an Ollama simulator, a `gleitzeit-worker`
//! process with `GLEITZEIT_METRICS_ADDR` on a free port, and `prometheus` (the Debian package's
//! binary, installed by scripts/bootstrap.sh) scraping it every second from a temporary
//! configuration and storage. After a workflow completes, the queries the dashboards mark with
//! `"smokeTest": true` (template variables substituted as Grafana would with "All") must return
//! data through Prometheus' HTTP API, and the scraped task and workflow counters must equal what
//! the run did. Without a `prometheus` binary the test prints why and passes without running.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gleitzeit_e2e::workflows::{chain, MODEL};
use gleitzeit_e2e::{bins, repo, within, Deployment, HANG_GUARD, NAMESPACE};
use gleitzeit_testkit::llm::{MockOllama, SimConfig};
use serde_json::{json, Value};

/// The dashboards whose marked queries are run.
const DASHBOARDS: [&str; 3] = ["fleet-overview", "llm-endpoints", "workflows"];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (and reaped) on drop; its log file is printed if the test is failing.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { name, child, log }
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- log of {} ({}) -----", self.name, self.log.display());
            eprintln!("{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            eprintln!("----- end of log of {} -----", self.name);
        }
    }
}

/// The marked queries of every dashboard: `(dashboard/panel, expr)` with the template variables
/// replaced the way Grafana expands them for "All" and a one-minute rate window.
fn smoke_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in DASHBOARDS {
        let file = repo::root().join(format!("grafana/dashboards/{name}.json"));
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("dashboard"))
            .expect("dashboard JSON");
        let mut stack: Vec<&Value> = d["panels"].as_array().into_iter().flatten().collect();
        while let Some(p) = stack.pop() {
            stack.extend(p["panels"].as_array().into_iter().flatten());
            for t in p["targets"].as_array().into_iter().flatten() {
                if t["smokeTest"] == true {
                    let expr = substitute(t["expr"].as_str().expect("expr"));
                    out.push((
                        format!("{name}/{}", p["title"].as_str().unwrap_or("?")),
                        expr,
                    ));
                }
            }
        }
    }
    out
}

fn substitute(expr: &str) -> String {
    [
        ("${capability}", ".*"),
        ("$capability", ".*"),
        ("${endpoint}", ".*"),
        ("$endpoint", ".*"),
        ("$__rate_interval", "1m"),
        ("$__interval", "1s"),
        ("$__range", "1h"),
    ]
    .iter()
    .fold(expr.to_owned(), |e, (var, value)| e.replace(var, value))
}

/// Prometheus' HTTP API.
struct PromApi {
    http: reqwest::Client,
    base: String,
}

impl PromApi {
    /// The result vector of an instant query (`None` while Prometheus does not answer).
    async fn query(&self, expr: &str) -> Option<Vec<Value>> {
        let resp = self
            .http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", expr)])
            .send()
            .await
            .ok()?;
        let status = resp.status();
        let body: Value = resp.json().await.ok()?;
        assert!(
            status.is_success() && body["status"] == "success",
            "Prometheus rejected {expr}: {body}"
        );
        Some(
            body["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// The single value of a query that returns one series, if it does.
    async fn scalar(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr).await?;
        let v = result.first()?["value"][1].as_str()?.parse().ok()?;
        Some(v)
    }
}

/// Polls `check` until it returns `Some`, with [`HANG_GUARD`] as the deadline; `what` and
/// `last` describe the failure.
async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {HANG_GUARD:?}; last state: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_worker_and_the_dashboard_queries_return_data() {
    let Some(prometheus) = repo::tool("prometheus") else {
        eprintln!(
            "SKIPPED prometheus_scrapes_the_worker_and_the_dashboard_queries_return_data: no \
             `prometheus` binary on PATH or at /usr/bin/prometheus (scripts/bootstrap.sh \
             installs the Debian package `prometheus`)"
        );
        return;
    };
    let queries = smoke_queries();
    assert!(queries.len() >= 6, "too few marked queries: {queries:?}");

    let dep = Deployment::start().await;
    let sim = MockOllama::start(SimConfig::default())
        .await
        .expect("starting the Ollama simulator");
    let work = tempfile::Builder::new()
        .prefix("gleitzeit-prometheus-")
        .tempdir()
        .expect("temporary directory");

    // The worker, its metrics server on a free port given through the environment.
    let metrics_port = free_port();
    let config = json!({
        "redis_url": dep.url(),
        "namespace": NAMESPACE,
        "concurrency": 4,
        "caps_refresh": "200ms",
        "promote_interval_max": "200ms",
        // Fleet gauges refreshed often so the scrape sees the streams soon (configuration,
        // not an assertion about time).
        "metrics": {"fleet_interval": "1s"},
        "endpoints": [{
            "name": "ollama-sim",
            "kind": "ollama",
            "url": sim.url(),
            "models": ["*"],
            "timeout": "60s",
        }],
    });
    let config_path = work.path().join("worker.yaml");
    std::fs::write(&config_path, config.to_string()).expect("writing the worker config");
    let mut cmd = Command::new(bins::binary(bins::WORKER));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GLEITZEIT_") {
            cmd.env_remove(&key);
        }
    }
    cmd.arg("--config")
        .arg(&config_path)
        .env(
            "GLEITZEIT_METRICS_ADDR",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut worker = Proc::spawn("gleitzeit-worker", cmd, work.path().join("worker.log"));

    // Prometheus with a private configuration and storage, scraping every second.
    let prom_port = free_port();
    let prom_config = work.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: gleitzeit-worker\n    static_configs:\n      - targets: \
             [\"127.0.0.1:{metrics_port}\"]\n"
        ),
    )
    .expect("writing the Prometheus config");
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!("--config.file={}", prom_config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let mut prom = Proc::spawn("prometheus", cmd, work.path().join("prometheus.log"));
    let api = PromApi {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client"),
        base: format!("http://127.0.0.1:{prom_port}"),
    };

    // Prometheus scrapes the worker successfully.
    poll("Prometheus to scrape the worker", || {
        worker.assert_running();
        prom.assert_running();
        let api = &api;
        async move {
            match api.scalar(r#"up{job="gleitzeit-worker"}"#).await {
                Some(1.0) => Ok(()),
                other => Err(format!("up = {other:?}")),
            }
        }
    })
    .await;

    // A three-task LLM chain, to completion.
    let id = dep.cli.submit_yaml(&chain("Scraped", 3)).await;
    let status = within("the workflow to finish", dep.store.wait_finished(&id)).await;
    assert_eq!(status, "completed");

    // The scrape reflects exactly this run.
    let capability = format!("llm:{MODEL}");
    let completed = format!(r#"sum(gleitzeit_tasks_completed_total{{capability="{capability}"}})"#);
    poll("the completed-task counter to reach 3", || {
        let (api, completed) = (&api, &completed);
        async move {
            match api.scalar(completed).await {
                Some(3.0) => Ok(()),
                other => Err(format!("{completed} = {other:?}")),
            }
        }
    })
    .await;
    poll(
        "the fleet-wide completed-workflow counter to reach 1",
        || {
            let api = &api;
            async move {
                match api.scalar("max(gleitzeit_workflows_completed_total)").await {
                    Some(1.0) => Ok(()),
                    other => Err(format!("workflows completed = {other:?}")),
                }
            }
        },
    )
    .await;

    // Every marked dashboard query returns data.
    poll("every marked dashboard query to return data", || {
        let (api, queries) = (&api, &queries);
        async move {
            let mut empty = Vec::new();
            for (panel, expr) in queries {
                match api.query(expr).await {
                    Some(result) if !result.is_empty() => {}
                    _ => empty.push(format!("{panel}: {expr}")),
                }
            }
            if empty.is_empty() {
                Ok(())
            } else {
                Err(format!("still empty:\n  {}", empty.join("\n  ")))
            }
        }
    })
    .await;

    drop(prom);
    drop(worker);
    drop(sim);
}
