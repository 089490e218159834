//! Metrics and health endpoints: a worker with `metrics_addr` on a free port runs a small
//! workflow (one retried attempt included) against a real Redis and the Ollama simulator; the
//! scrape must show exactly that run, use only catalogued names, and `/readyz` must follow
//! Redis.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{Env, Worker, PATIENCE};
use gleitzeit_testkit::llm::{Fault, MockOllama, SimConfig};
use gleitzeit_worker::metrics::{MetricKind, CATALOGUE};
use gleitzeit_worker::{
    run, ConfigError, EndpointKind, EndpointSpec, MetricsSpec, WorkerArgs, WorkerConfig,
    WorkerError,
};
use tokio_util::sync::CancellationToken;

const MODEL: &str = "metrics-model";

/// Tests that run a worker with metrics take turns: the recorder is one per process, and two
/// workers' fleet gauges (read from different Redis servers) would overwrite each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const CAP: &str = "llm:metrics-model";

/// A port nobody listens on right now (the worker binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One sample of a scrape: name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
}

/// Parses the Prometheus text format (samples only; `# HELP`/`# TYPE` are read separately).
fn parse(text: &str) -> Vec<(Series, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = value.parse().expect("sample value");
        let (name, labels) = match head.split_once('{') {
            None => (head.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (k, after) = rest.split_once("=\"").expect("label =\"");
                    // Values here contain no escaped quotes.
                    let end = after.find('"').expect("closing quote");
                    labels.insert(k.to_owned(), after[..end].to_owned());
                    rest = after[end + 1..].trim_start_matches(',');
                }
                (name.to_owned(), labels)
            }
        };
        out.push((Series { name, labels }, value));
    }
    out
}

/// The value of the series with exactly these labels.
fn value(samples: &[(Series, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|(s, _)| s.name == name && s.labels == want)
        .map(|(_, v)| *v)
}

async fn get(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(url).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// Polls `url` until it answers `status` (or panics after [`PATIENCE`]).
async fn wait_status(url: &str, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some((s, body)) = get(url).await {
            if s == status {
                return body;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scrapes until `ready` holds for the samples (background observations and the fleet
/// refresh land shortly after the workflow ends).
async fn scrape_until(
    url: &str,
    what: &str,
    ready: impl Fn(&[(Series, f64)]) -> bool,
) -> (String, Vec<(Series, f64)>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = wait_status(url, 200).await;
        let samples = parse(&text);
        if ready(&samples) {
            return (text, samples);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "scrape never showed {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The catalogue entry a scraped name belongs to (histogram samples carry suffixes).
fn catalogued(name: &str) -> Option<(&'static str, MetricKind)> {
    if let Some(d) = CATALOGUE.iter().find(|d| d.name == name) {
        return Some((d.name, d.kind));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(d) = CATALOGUE
                .iter()
                .find(|d| d.name == base && d.kind == MetricKind::Histogram)
            {
                return Some((d.name, d.kind));
            }
        }
    }
    None
}

#[test]
fn the_catalogue_has_unique_names_help_and_labels() {
    let mut names = HashSet::new();
    for d in CATALOGUE {
        assert!(names.insert(d.name), "duplicate metric {}", d.name);
        assert!(d.name.starts_with("gleitzeit_"), "{}", d.name);
        assert!(!d.help.trim().is_empty(), "{} has no help", d.name);
        if d.kind == MetricKind::Counter {
            assert!(
                d.name.ends_with("_total"),
                "counter {} must end in _total",
                d.name
            );
        }
        let mut labels = HashSet::new();
        for l in d.labels {
            assert!(labels.insert(*l), "{} repeats label {l}", d.name);
            assert_ne!(*l, "le", "{} uses the reserved label le", d.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_run_is_counted_and_readiness_follows_redis() {
    let _turn = SERIAL.lock().await;
    let mut env = Env::start().await;
    // A load delay makes the first call report a model load (Ollama's `load_duration`).
    let ollama = MockOllama::start(SimConfig {
        load_delay: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await
    .expect("ollama simulator");
    // The first call fails at the endpoint (HTTP 500): one retried attempt. (An overload
    // answer would be endpoint trouble, deferred without counting as an attempt.)
    ollama.push_fault(Fault::Status(500, r#"{"error":"internal error"}"#.into()));

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cfg = env.config();
    cfg.endpoints = vec![EndpointSpec {
        name: "sim".to_owned(),
        kind: EndpointKind::Ollama,
        url: ollama.url(),
        api_key_env: None,
        api_key_file: None,
        models: vec!["*".to_owned()],
        timeout: Duration::from_secs(60),
    }];
    cfg.metrics_addr = format!("127.0.0.1:{port}");
    cfg.metrics = MetricsSpec {
        fleet_interval: Duration::from_millis(100),
    };
    let worker = Worker::start(cfg);

    assert_eq!(wait_status(&format!("{base}/healthz"), 200).await, "ok\n");
    wait_status(&format!("{base}/readyz"), 200).await;
    // The recorder lives as long as the test process: series other tests also write (the
    // workflow duration has no label of this test's own) are compared with this baseline.
    let metrics_url = format!("{base}/metrics");
    let before = parse(&wait_status(&metrics_url, 200).await);
    let durations_before = value(
        &before,
        "gleitzeit_workflow_duration_seconds_count",
        &[("status", "completed")],
    )
    .unwrap_or(0.0);
    let call_sizes_before = (
        value(&before, "gleitzeit_completion_call_size_count", &[]).unwrap_or(0.0),
        value(&before, "gleitzeit_completion_call_size_sum", &[]).unwrap_or(0.0),
    );

    let id = env
        .submit(&format!(
            r#"
name: metrics
defaults:
  model: {MODEL}
  retry: {{ max_attempts: 3, backoff: fixed, base_delay: 10ms, max_delay: 10ms, jitter: false }}
tasks:
  - {{ name: a, type: text, prompt: "one" }}
  - {{ name: b, type: text, prompt: "two {{{{a.result}}}}" }}
  - {{ name: c, type: text, prompt: "three {{{{b.result}}}}" }}
"#
        ))
        .await;
    let info = env.wait_end(&id).await;
    assert_eq!(info.status, "completed");

    let cap_text = [("capability", CAP), ("type", "text")];
    let (text, samples) = scrape_until(&metrics_url, "the finished workflow", |s| {
        value(s, "gleitzeit_workflows_completed_total", &[]) == Some(1.0)
            && value(
                s,
                "gleitzeit_workflow_duration_seconds_count",
                &[("status", "completed")],
            ) == Some(durations_before + 1.0)
            && value(
                s,
                "gleitzeit_task_queue_wait_seconds_count",
                &[("capability", CAP)],
            ) == Some(4.0)
    })
    .await;

    // Tasks: four attempts began (a failed once), one was retried, three completed.
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(v("gleitzeit_tasks_started_total", &cap_text), Some(4.0));
    assert_eq!(v("gleitzeit_tasks_completed_total", &cap_text), Some(3.0));
    assert_eq!(v("gleitzeit_tasks_retried_total", &cap_text), Some(1.0));
    assert_eq!(v("gleitzeit_tasks_failed_total", &cap_text), None);
    assert_eq!(v("gleitzeit_tasks_dead_lettered_total", &cap_text), None);
    assert_eq!(v("gleitzeit_task_run_seconds_count", &cap_text), Some(4.0));
    // b and c were released by their dependency, each on its first attempt.
    assert_eq!(
        v(
            "gleitzeit_dependency_release_seconds_count",
            &[("capability", CAP)]
        ),
        Some(2.0)
    );

    // A chain's completions each go alone (the next task starts after the call that
    // released it returned): three calls of one.
    assert_eq!(
        (
            v("gleitzeit_completion_call_size_count", &[]).unwrap_or(0.0) - call_sizes_before.0,
            v("gleitzeit_completion_call_size_sum", &[]).unwrap_or(0.0) - call_sizes_before.1,
        ),
        (3.0, 3.0)
    );
    // Buckets of completions, not of seconds.
    let buckets: Vec<&str> = samples
        .iter()
        .filter(|(s, _)| s.name == "gleitzeit_completion_call_size_bucket")
        .filter_map(|(s, _)| s.labels.get("le").map(String::as_str))
        .collect();
    assert_eq!(
        buckets,
        ["1", "2", "4", "8", "16", "32", "64", "+Inf"],
        "{text}"
    );

    // Workflows (fleet-wide, from the stats hash).
    assert_eq!(v("gleitzeit_workflows_submitted_total", &[]), Some(1.0));
    assert_eq!(v("gleitzeit_workflows_failed_total", &[]), Some(0.0));

    // Endpoint: one overloaded attempt, three good ones; the model was loaded once.
    let ep_model = [("endpoint", "sim"), ("model", MODEL)];
    assert_eq!(
        v(
            "gleitzeit_endpoint_requests_total",
            &[("endpoint", "sim"), ("model", MODEL), ("outcome", "ok")]
        ),
        Some(3.0)
    );
    assert_eq!(
        v(
            "gleitzeit_endpoint_requests_total",
            &[
                ("endpoint", "sim"),
                ("model", MODEL),
                ("outcome", "overloaded")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        v("gleitzeit_endpoint_request_seconds_count", &ep_model),
        Some(4.0)
    );
    assert_eq!(
        v("gleitzeit_endpoint_model_loads_total", &ep_model),
        Some(1.0)
    );
    let tokens_out = v(
        "gleitzeit_endpoint_tokens_total",
        &[("endpoint", "sim"), ("model", MODEL), ("direction", "out")],
    )
    .expect("output tokens counted");
    assert!(tokens_out > 0.0);
    assert!(
        v(
            "gleitzeit_endpoint_tokens_total",
            &[("endpoint", "sim"), ("model", MODEL), ("direction", "in")]
        )
        .expect("prompt tokens counted")
            > 0.0
    );
    assert_eq!(
        v("gleitzeit_endpoint_up", &[("endpoint", "sim")]),
        Some(1.0)
    );
    assert_eq!(
        v("gleitzeit_endpoint_circuit_state", &[("endpoint", "sim")]),
        Some(0.0)
    );

    // Loaded models (fleet-wide, from the shared model state the router keeps in Redis).
    scrape_until(&metrics_url, "the loaded model", |s| {
        value(s, "gleitzeit_endpoint_loaded_models", &ep_model) == Some(1.0)
    })
    .await;

    // Streams (fleet-wide): nothing left ready or pending; this worker is a consumer.
    let stream = [("capability", CAP), ("priority", "normal")];
    let (_, samples) = scrape_until(&metrics_url, "the drained stream", |s| {
        value(s, "gleitzeit_stream_pending", &stream) == Some(0.0)
    })
    .await;
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(v("gleitzeit_stream_ready", &stream), Some(0.0));
    assert_eq!(
        v("gleitzeit_stream_oldest_ready_age_seconds", &stream),
        Some(0.0)
    );
    assert!(v("gleitzeit_stream_consumers", &stream).expect("consumers") >= 1.0);
    assert_eq!(v("gleitzeit_delayed_tasks", &[]), Some(0.0));
    assert_eq!(v("gleitzeit_dead_letters", &[]), Some(0.0));

    // The process.
    assert_eq!(v("gleitzeit_worker_concurrency", &[]), Some(4.0));
    assert_eq!(v("gleitzeit_worker_in_flight", &[]), Some(0.0));
    assert_eq!(
        v(
            "gleitzeit_worker_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    // Every exported name is catalogued, with the catalogued type.
    for (series, _) in &samples {
        if series.name.starts_with("gleitzeit_") {
            assert!(
                catalogued(&series.name).is_some(),
                "{} is not in the catalogue",
                series.name
            );
        }
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            if let Some(d) = CATALOGUE.iter().find(|d| d.name == name) {
                let want = match d.kind {
                    MetricKind::Counter => "counter",
                    MetricKind::Gauge => "gauge",
                    MetricKind::Histogram => "histogram",
                };
                assert_eq!(kind, want, "type of {name}");
            } else {
                assert!(!name.starts_with("gleitzeit_"), "{name} is not catalogued");
            }
        }
    }

    // Readiness follows Redis; liveness does not.
    env.redis.kill();
    let body = wait_status(&format!("{base}/readyz"), 503).await;
    assert!(body.contains("redis"), "{body}");
    assert_eq!(wait_status(&format!("{base}/healthz"), 200).await, "ok\n");

    // After the drain the server is gone.
    worker.stop().await;
    assert!(get(&format!("{base}/healthz")).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_redis_and_ends_with_the_drain() {
    let _turn = SERIAL.lock().await;
    let mut env = Env::start().await;
    env.redis.kill();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cfg = env.config();
    cfg.metrics_addr = format!("127.0.0.1:{port}");
    let worker = Worker::start(cfg);

    // Served before Redis is reachable: alive, not ready.
    assert_eq!(wait_status(&format!("{base}/healthz"), 200).await, "ok\n");
    let body = wait_status(&format!("{base}/readyz"), 503).await;
    assert!(body.contains("redis unreachable"), "{body}");

    env.redis.restart().expect("redis restart");
    wait_status(&format!("{base}/readyz"), 200).await;

    // A task in flight keeps the drain going; readiness fails as soon as it starts.
    env.sim.hold();
    let queue = gleitzeit_queue::Queue::connect(&env.redis.url(), common::queue_config())
        .await
        .expect("queue after restart");
    let id = common::submit(
        &queue,
        "name: drain\ntasks:\n  - { name: a, type: text, model: m, prompt: hi }\n",
    )
    .await;
    env.sim.wait_held(1).await;
    worker.shutdown.cancel();
    let body = wait_status(&format!("{base}/readyz"), 503).await;
    assert!(body.contains("draining"), "{body}");
    assert_eq!(wait_status(&format!("{base}/healthz"), 200).await, "ok\n");

    env.sim.open_gate();
    let summary = worker.join().await;
    assert_eq!(summary.completed, 1);
    assert_eq!(common::wait_end(&queue, &id).await.status, "completed");
    assert!(get(&format!("{base}/healthz")).await.is_none());
}

#[tokio::test]
async fn a_port_in_use_is_a_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = taken.local_addr().expect("addr");
    let cfg = WorkerConfig {
        // Never reached: the bind fails first.
        redis_url: "redis://127.0.0.1:1".into(),
        metrics_addr: addr.to_string(),
        ..WorkerConfig::default()
    };
    let err = tokio::time::timeout(PATIENCE, run(cfg, CancellationToken::new()))
        .await
        .expect("run returned")
        .expect_err("the port is taken");
    match &err {
        WorkerError::Metrics { addr: a, .. } => assert_eq!(*a, addr),
        other => panic!("expected a metrics bind error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&addr.to_string()) && message.contains("metrics_addr"),
        "{message}"
    );
}

#[test]
fn metrics_settings_are_validated_and_overridable() {
    let no_env = |_: &str| None;
    let s = WorkerConfig::default().validate_with_env(&no_env).unwrap();
    assert_eq!(s.metrics_addr, Some("0.0.0.0:9464".parse().unwrap()));
    assert_eq!(s.metrics_fleet_interval, Duration::from_secs(15));

    let cfg = WorkerConfig::from_yaml(
        "metrics_addr: \"off\"\nmetrics: { fleet_interval: 2s }\n",
        "test",
    )
    .unwrap();
    let s = cfg.validate_with_env(&no_env).unwrap();
    assert_eq!(s.metrics_addr, None);
    assert_eq!(s.metrics_fleet_interval, Duration::from_secs(2));

    let bad = WorkerConfig {
        metrics_addr: "localhost:9464".to_owned(),
        metrics: MetricsSpec {
            fleet_interval: Duration::ZERO,
        },
        ..WorkerConfig::default()
    };
    match bad.validate_with_env(&no_env) {
        Err(ConfigError::Invalid(errors)) => {
            let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
            assert!(fields.contains(&"metrics_addr"), "{fields:?}");
            assert!(fields.contains(&"metrics.fleet_interval"), "{fields:?}");
        }
        other => panic!("expected field errors, got {other:?}"),
    }

    let args = <WorkerArgs as clap::Parser>::try_parse_from([
        "gleitzeit-worker",
        "--metrics-addr",
        "127.0.0.1:9999",
    ])
    .unwrap();
    assert_eq!(args.load().unwrap().metrics_addr, "127.0.0.1:9999");
}
