//! The Grafana dashboards (`grafana/dashboards/*.json`), their provisioning files and the alert
//! rules (`deploy/prometheus/alerts.yml`) checked against the worker's metric catalogue
//! (`gleitzeit_worker::metrics::CATALOGUE`).
//!
//! Every query is read with a small PromQL scanner: each `gleitzeit_*` series must be in the
//! catalogue (histograms only through `_bucket`/`_sum`/`_count`), `rate`-like functions only
//! see counters or histogram series, `histogram_quantile` only buckets, every label in a
//! `by (...)` clause or a selector exists on the metric, and fleet-wide metrics (the same value
//! exported by every worker) are reduced with `max`/`min`, never summed, while per-worker
//! counters and histograms are summed. A dashboard that queries a renamed metric, or adds up
//! the copies of a fleet gauge, fails here instead of showing nothing (or N times the truth).

use std::collections::{BTreeMap, BTreeSet};

use gleitzeit_e2e::repo::{read, root, tool};
use gleitzeit_worker::metrics::{find, MetricDef, MetricKind, Scope, CATALOGUE};
use serde::Deserialize;
use serde_json::Value;

/// The dashboards, by file name (without `.json`).
const DASHBOARDS: [&str; 3] = ["fleet-overview", "llm-endpoints", "workflows"];

/// The uid of the provisioned Prometheus datasource, the default of every dashboard's
/// `datasource` variable.
const DATASOURCE_UID: &str = "gleitzeit-prometheus";

/// Where the provisioning provider reads dashboards inside the Grafana container.
const DASHBOARD_DIR_IN_GRAFANA: &str = "/var/lib/grafana/dashboards/gleitzeit";

/// Labels Prometheus attaches to every scraped series (target labels).
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Template variables Grafana defines itself.
const BUILTIN_VARIABLES: [&str; 4] = ["__rate_interval", "__interval", "__range", "__auto"];

fn yaml(relative: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"))
}

fn dashboard(name: &str) -> Value {
    let file = format!("grafana/dashboards/{name}.json");
    serde_json::from_str(&read(&file)).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"))
}

/// Every panel of a dashboard, rows' nested panels included (rows themselves excluded).
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            if p["type"] == "row" {
                walk(&p["panels"], out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// `(panel title, expr)` of every query of a dashboard.
fn exprs(d: &Value) -> Vec<(String, String)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect()
}

// ----- a PromQL scanner, just enough for the checks above -----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Str,
    Range,
    Op(String),
}

fn lex(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => (out.push(Tok::LParen), i += 1).1,
            ')' => (out.push(Tok::RParen), i += 1).1,
            '{' => (out.push(Tok::LBrace), i += 1).1,
            '}' => (out.push(Tok::RBrace), i += 1).1,
            ',' => (out.push(Tok::Comma), i += 1).1,
            '[' => {
                // A range (`[5m]`, `[$__rate_interval]`, a subquery `[1h:1m]`): opaque here.
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                out.push(Tok::Range);
                i += 1;
            }
            '"' | '\'' | '`' => {
                let quote = c;
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                out.push(Tok::Str);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if ["=~", "!=", "!~", "==", ">=", "<="].contains(&two.as_str()) {
                    out.push(Tok::Op(two));
                    i += 2;
                } else {
                    out.push(Tok::Op(c.to_string()));
                    i += 1;
                }
            }
        }
    }
    out
}

const AGGREGATORS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];
/// Functions whose input must be a counter (or a histogram's counter series).
const COUNTER_FUNCTIONS: [&str; 4] = ["rate", "irate", "increase", "resets"];
/// Functions that only make sense on gauges.
const GAUGE_FUNCTIONS: [&str; 4] = ["delta", "idelta", "deriv", "predict_linear"];

/// One open parenthesis: the function or aggregator it belongs to (empty for grouping) and the
/// labels of the aggregator's `by`/`without` clause.
#[derive(Debug)]
struct Frame {
    func: String,
    grouping: Option<Vec<String>>,
}

/// The result of scanning one expression.
#[derive(Debug, Default)]
struct Scan {
    /// Catalogue names of the metrics used.
    metrics: BTreeSet<&'static str>,
    /// Everything wrong, one message each.
    problems: Vec<String>,
}

/// Resolves a series name to its catalogue entry and histogram suffix.
fn resolve(series: &str) -> Option<(&'static MetricDef, Option<&'static str>)> {
    if let Some(def) = find(series) {
        return Some((def, None));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix) {
            if let Some(def) = find(base) {
                return Some((def, Some(suffix)));
            }
        }
    }
    None
}

fn labels_of(def: &MetricDef, suffix: Option<&str>) -> BTreeSet<&'static str> {
    let mut labels: BTreeSet<&'static str> = def.labels.iter().copied().collect();
    labels.extend(TARGET_LABELS);
    if suffix == Some("_bucket") {
        labels.insert("le");
    }
    labels
}

fn scan(expr: &str) -> Scan {
    let toks = lex(expr);
    let mut scan = Scan::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    let label_list = |start: usize| -> (Vec<String>, usize) {
        // toks[start] is `(`; returns the labels and the index after `)`.
        let mut labels = Vec::new();
        let mut j = start + 1;
        while j < toks.len() && toks[j] != Tok::RParen {
            if let Tok::Ident(l) = &toks[j] {
                labels.push(l.clone());
            }
            j += 1;
        }
        (labels, j + 1)
    };
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(word)
                if AGGREGATORS.contains(&word.as_str())
                    && matches!(toks.get(i + 1), Some(Tok::Ident(k)) if k == "by" || k == "without") =>
            {
                let (labels, next) = label_list(i + 2);
                if toks.get(next) != Some(&Tok::LParen) {
                    scan.problems
                        .push(format!("{expr}: `{word} by (...)` must be followed by `(`"));
                    return scan;
                }
                stack.push(Frame {
                    func: word.clone(),
                    grouping: Some(labels),
                });
                i = next + 1;
            }
            Tok::Ident(word) if word == "by" || word == "without" => {
                scan.problems.push(format!(
                    "{expr}: write the grouping before the argument (`sum by (x) (...)`)"
                ));
                return scan;
            }
            Tok::Ident(word) if toks.get(i + 1) == Some(&Tok::LParen) => {
                stack.push(Frame {
                    func: word.clone(),
                    grouping: None,
                });
                i += 2;
            }
            Tok::Ident(series) if series.starts_with("gleitzeit_") => {
                let selector_end = if toks.get(i + 1) == Some(&Tok::LBrace) {
                    toks[i + 1..]
                        .iter()
                        .position(|t| *t == Tok::RBrace)
                        .map(|p| i + 1 + p)
                } else {
                    None
                };
                let matchers: Vec<String> = match selector_end {
                    Some(end) => toks[i + 2..end]
                        .windows(2)
                        .filter_map(|w| match (&w[0], &w[1]) {
                            (Tok::Ident(l), Tok::Op(_)) => Some(l.clone()),
                            _ => None,
                        })
                        .collect(),
                    None => Vec::new(),
                };
                check_series(expr, series, &matchers, &stack, &mut scan);
                i = selector_end.map_or(i + 1, |end| end + 1);
            }
            Tok::LParen => {
                stack.push(Frame {
                    func: String::new(),
                    grouping: None,
                });
                i += 1;
            }
            Tok::RParen => {
                if stack.pop().is_none() {
                    scan.problems.push(format!("{expr}: unbalanced `)`"));
                }
                i += 1;
            }
            Tok::LBrace => {
                scan.problems
                    .push(format!("{expr}: a selector without a metric name"));
                return scan;
            }
            _ => i += 1,
        }
    }
    if !stack.is_empty() {
        scan.problems.push(format!("{expr}: unbalanced `(`"));
    }
    scan
}

fn check_series(expr: &str, series: &str, matchers: &[String], stack: &[Frame], scan: &mut Scan) {
    let Some((def, suffix)) = resolve(series) else {
        scan.problems
            .push(format!("{expr}: {series} is not in the metric catalogue"));
        return;
    };
    scan.metrics.insert(def.name);
    let histogram = def.kind == MetricKind::Histogram;
    match (histogram, suffix) {
        (true, None) => scan.problems.push(format!(
            "{expr}: histogram {series} has no series of that name (use _bucket, _sum or _count)"
        )),
        (false, Some(s)) => scan.problems.push(format!(
            "{expr}: {series}: {s} exists only for histograms, {} is a {:?}",
            def.name, def.kind
        )),
        _ => {}
    }
    let counter_like = def.kind == MetricKind::Counter || suffix.is_some();
    let innermost_function = stack
        .iter()
        .rev()
        .find(|f| !f.func.is_empty() && !AGGREGATORS.contains(&f.func.as_str()));
    if let Some(f) = innermost_function {
        if COUNTER_FUNCTIONS.contains(&f.func.as_str()) && !counter_like {
            scan.problems.push(format!(
                "{expr}: {}() on {series}, a {:?} (only counters and histogram series)",
                f.func, def.kind
            ));
        }
        if GAUGE_FUNCTIONS.contains(&f.func.as_str()) && def.kind != MetricKind::Gauge {
            scan.problems.push(format!(
                "{expr}: {}() on {series}, a {:?} (only gauges)",
                f.func, def.kind
            ));
        }
    }
    if stack.iter().any(|f| f.func == "histogram_quantile") && suffix != Some("_bucket") {
        scan.problems.push(format!(
            "{expr}: histogram_quantile over {series} (only _bucket series)"
        ));
    }
    let available = labels_of(def, suffix);
    for f in stack {
        for label in f.grouping.iter().flatten() {
            if !available.contains(label.as_str()) {
                scan.problems.push(format!(
                    "{expr}: `{} by ({label})` but {series} has labels {available:?}",
                    f.func
                ));
            }
        }
    }
    for label in matchers {
        if !available.contains(label.as_str()) {
            scan.problems.push(format!(
                "{expr}: selector label {label} does not exist on {series} ({available:?})"
            ));
        }
    }
    let innermost_aggregator = stack
        .iter()
        .rev()
        .find(|f| AGGREGATORS.contains(&f.func.as_str()))
        .map(|f| f.func.as_str());
    match (def.scope, innermost_aggregator) {
        (Scope::Fleet, Some("max" | "min")) => {}
        (Scope::Fleet, Some(agg)) => scan.problems.push(format!(
            "{expr}: {series} is fleet-wide (every worker exports the same value): reduce it \
             with max/min first, not {agg}"
        )),
        (Scope::Fleet, None) => scan.problems.push(format!(
            "{expr}: {series} is fleet-wide: without max/min each worker's copy is a series"
        )),
        (Scope::Worker, Some(agg))
            if (def.kind == MetricKind::Counter || histogram) && agg != "sum" =>
        {
            scan.problems.push(format!(
                "{expr}: {series} is counted per worker: sum it over the workers, not {agg}"
            ))
        }
        _ => {}
    }
}

// ----- the tests -----

#[test]
fn the_scanner_catches_what_it_is_meant_to() {
    let problems = |e: &str| scan(e).problems;
    // Correct queries pass.
    for ok in [
        r#"sum by (capability) (max by (capability, priority) (gleitzeit_stream_ready{capability=~"$capability"}))"#,
        "histogram_quantile(0.95, sum by (le, endpoint) (rate(gleitzeit_endpoint_request_seconds_bucket[$__rate_interval])))",
        "max(rate(gleitzeit_workflows_completed_total[5m]))",
        "sum(gleitzeit_worker_in_flight) / sum(gleitzeit_worker_concurrency)",
        "count by (version) (gleitzeit_worker_info)",
        "absent(gleitzeit_worker_info)",
    ] {
        assert_eq!(problems(ok), Vec::<String>::new(), "{ok}");
    }
    // Each wrong one is reported.
    for (bad, because) in [
        ("sum(gleitzeit_stream_ready)", "fleet-wide"),
        ("gleitzeit_dead_letters", "fleet-wide"),
        ("sum(rate(gleitzeit_stream_ready[5m]))", "rate() on"),
        (
            "sum(rate(gleitzeit_no_such_metric_total[5m]))",
            "not in the metric catalogue",
        ),
        (
            "sum(gleitzeit_task_run_seconds)",
            "has no series of that name",
        ),
        (
            "sum(rate(gleitzeit_worker_in_flight_bucket[5m]))",
            "only for histograms",
        ),
        (
            "sum by (endpoint) (rate(gleitzeit_tasks_completed_total[5m]))",
            "by (endpoint)",
        ),
        (
            r#"sum(rate(gleitzeit_tasks_completed_total{model="x"}[5m]))"#,
            "selector label model",
        ),
        (
            "max(rate(gleitzeit_tasks_completed_total[5m]))",
            "sum it over the workers",
        ),
        (
            "histogram_quantile(0.5, sum(rate(gleitzeit_task_run_seconds_sum[5m])))",
            "only _bucket",
        ),
        (
            "sum(rate(gleitzeit_tasks_failed_total[5m])) by (capability)",
            "grouping before",
        ),
        (
            "max(delta(gleitzeit_tasks_failed_total[5m]))",
            "only gauges",
        ),
    ] {
        let found = problems(bad);
        assert!(
            found.iter().any(|p| p.contains(because)),
            "{bad}: expected a problem containing {because:?}, got {found:?}"
        );
    }
}

#[test]
fn every_dashboard_parses_and_selects_the_provisioned_datasource() {
    let mut uids = BTreeSet::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no uid"));
        assert!(uids.insert(uid.to_owned()), "{name}: uid {uid} used twice");
        assert!(
            d["schemaVersion"].as_u64().unwrap_or(0) >= 36,
            "{name}: schemaVersion {}",
            d["schemaVersion"]
        );
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{name}");
        assert_eq!(ds["query"], "prometheus", "{name}");
        assert_eq!(ds["current"]["value"], DATASOURCE_UID, "{name}");
        let defined: BTreeSet<&str> = vars
            .iter()
            .filter_map(|v| v["name"].as_str())
            .chain(BUILTIN_VARIABLES)
            .collect();

        let mut ids = BTreeSet::new();
        let all = panels(&d);
        assert!(all.len() >= 6, "{name}: only {} panels", all.len());
        for p in all {
            let title = p["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{name}/{title}: id"
            );
            assert!(
                p["gridPos"]["w"].as_u64().is_some(),
                "{name}/{title}: gridPos"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}/{title}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}/{title}: no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}/{title}");
                let expr = t["expr"].as_str().expect("expr");
                // Every `$variable` the query uses is defined.
                for part in expr.split('$').skip(1) {
                    let var: String = part
                        .trim_start_matches('{')
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        defined.contains(var.as_str()),
                        "{name}/{title}: ${var} is not a template variable"
                    );
                }
            }
        }
        // The marked queries are what tests/tests/prometheus.rs runs against a real scrape.
        let smoke = panels(&d)
            .into_iter()
            .flat_map(|p| p["targets"].as_array().into_iter().flatten())
            .filter(|t| t["smokeTest"] == true)
            .count();
        assert!(smoke >= 2, "{name}: only {smoke} queries marked smokeTest");
    }
}

#[test]
fn every_dashboard_query_uses_the_catalogue_correctly() {
    let mut problems = Vec::new();
    let mut used: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for name in DASHBOARDS {
        for (title, expr) in exprs(&dashboard(name)) {
            let s = scan(&expr);
            assert!(
                !s.metrics.is_empty() || !s.problems.is_empty(),
                "{name}/{title}: {expr} queries no gleitzeit metric"
            );
            for m in s.metrics {
                used.entry(m).or_default().push(format!("{name}/{title}"));
            }
            problems.extend(
                s.problems
                    .into_iter()
                    .map(|p| format!("{name}/{title}: {p}")),
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every metric the worker exports is on some dashboard.
    let missing: Vec<&str> = CATALOGUE
        .iter()
        .map(|d| d.name)
        .filter(|n| !used.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics on no dashboard (add a panel): {missing:?}"
    );
}

#[test]
fn the_alert_rules_and_the_autoscaler_query_use_the_catalogue_correctly() {
    let rules = yaml("deploy/prometheus/alerts.yml");
    let mut exprs: Vec<(String, String)> = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().expect("alert name").to_owned();
            let expr = rule["expr"].as_str().expect("expr").to_owned();
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{alert}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{alert}: summary"
            );
            exprs.push((alert, expr));
        }
    }
    assert!(exprs.len() >= 4, "{exprs:?}");
    for doc in serde_yaml_ng::Deserializer::from_str(&read("deploy/k8s/keda.yaml")) {
        let doc = serde_yaml_ng::Value::deserialize(doc).expect("keda.yaml parses");
        for trigger in doc["spec"]["triggers"].as_sequence().into_iter().flatten() {
            if trigger["type"] == "prometheus" {
                let q = trigger["metadata"]["query"].as_str().expect("query");
                exprs.push(("KEDA trigger".to_owned(), q.to_owned()));
            }
        }
    }
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for (what, expr) in &exprs {
        let s = scan(expr);
        assert!(
            !s.metrics.is_empty(),
            "{what}: {expr} queries no gleitzeit metric"
        );
        names.extend(s.metrics);
        problems.extend(s.problems.into_iter().map(|p| format!("{what}: {p}")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The alerts the operations guide promises: backlog age, dead letters, endpoint down, no
    // workers.
    for metric in [
        "gleitzeit_stream_oldest_ready_age_seconds",
        "gleitzeit_tasks_dead_lettered_total",
        "gleitzeit_endpoint_up",
        "gleitzeit_worker_info",
        "gleitzeit_stream_ready",
    ] {
        assert!(names.contains(metric), "no alert or trigger on {metric}");
    }
}

#[test]
fn provisioning_points_grafana_at_the_datasource_and_the_dashboard_folder() {
    let ds = yaml("grafana/provisioning/datasources/prometheus.yaml");
    assert_eq!(ds["apiVersion"].as_u64(), Some(1));
    let sources = ds["datasources"].as_sequence().expect("datasources");
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0]["type"], "prometheus");
    assert_eq!(sources[0]["uid"], DATASOURCE_UID);
    assert!(sources[0]["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("http")));

    let prov = yaml("grafana/provisioning/dashboards/gleitzeit.yaml");
    assert_eq!(prov["apiVersion"].as_u64(), Some(1));
    let providers = prov["providers"].as_sequence().expect("providers");
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0]["type"], "file");
    assert_eq!(providers[0]["options"]["path"], DASHBOARD_DIR_IN_GRAFANA);

    // The compose file mounts grafana/dashboards exactly where the provider reads.
    let compose = yaml("deploy/compose.yaml");
    let volumes: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .expect("grafana volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let mount = format!("../grafana/dashboards:{DASHBOARD_DIR_IN_GRAFANA}");
    assert!(
        volumes.iter().any(|v| v.starts_with(&mount)),
        "{volumes:?} lacks {mount}"
    );
    // And every file in that folder is one of the dashboards checked above.
    let mut files: Vec<String> = std::fs::read_dir(root().join("grafana/dashboards"))
        .expect("grafana/dashboards")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = DASHBOARDS.iter().map(|d| format!("{d}.json")).collect();
    expected.sort();
    assert_eq!(files, expected);
}

#[test]
fn promtool_parses_every_dashboard_query() {
    // `promtool` ships with the Debian package `prometheus`.
    let Some(promtool) = tool("promtool") else {
        eprintln!(
            "SKIPPED promtool_parses_every_dashboard_query: no `promtool` on PATH or in \
             /usr/bin (scripts/bootstrap.sh installs the Debian package `prometheus`)"
        );
        return;
    };
    // Each query becomes a recording rule (template variables expanded as Grafana does for
    // "All"), so Prometheus' own parser checks the syntax.
    let mut rules = Vec::new();
    for name in DASHBOARDS {
        for (i, (_, expr)) in exprs(&dashboard(name)).into_iter().enumerate() {
            let expr = [
                ("$capability", ".*"),
                ("$endpoint", ".*"),
                ("$__rate_interval", "1m"),
                ("$__interval", "15s"),
                ("$__range", "1h"),
            ]
            .iter()
            .fold(expr, |e, (var, value)| e.replace(var, value));
            rules.push(serde_json::json!({
                "record": format!("dashboard:{}:{i}", name.replace('-', "_")),
                "expr": expr,
            }));
        }
    }
    let file = serde_json::json!({"groups": [{"name": "dashboards", "rules": rules}]});
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("dashboards.rules.yml");
    // JSON is YAML.
    std::fs::write(&path, file.to_string()).expect("writing the rule file");
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool rejects a dashboard query:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
