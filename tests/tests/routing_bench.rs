//! `gleitzeit-bench routing` and `gleitzeit-bench placement` work end to end with a tiny
//! workload: the report parses, names every strategy, and accounts for every call. Their
//! figures are recorded in docs/benchmarks.md, never asserted here.

use serde_json::Value;

/// Every strategy the router offers, by configuration name.
const STRATEGIES: [&str; 5] = [
    "round_robin",
    "least_loaded",
    "priority",
    "fastest",
    "model_affinity",
];

async fn bench(args: &[&str]) -> String {
    gleitzeit_e2e::bench::run("the routing benchmark run", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_bench_reports_every_strategy_as_json() {
    let out = bench(&[
        "routing",
        "--calls",
        "40",
        "--concurrency",
        "6",
        "--overhead-calls",
        "5",
        "--json",
    ])
    .await;
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));

    let setup = &report["setup"];
    assert_eq!(setup["calls"], 40);
    assert_eq!(setup["concurrency"], 6);
    let endpoints = setup["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 4, "{setup}");
    // The ideal follows from the stated setup: Σ max_concurrent / latency.
    let ideal: f64 = endpoints
        .iter()
        .map(|e| {
            e["max_concurrent"].as_f64().unwrap() / (e["latency_ms"].as_f64().unwrap() / 1000.0)
        })
        .sum();
    let stated = setup["ideal_calls_per_s"].as_f64().unwrap();
    assert!((ideal - stated).abs() < 1e-6, "{ideal} vs {stated}");
    assert!(setup["overhead_method"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));

    let results = report["strategies"].as_array().expect("strategies");
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, STRATEGIES);
    for r in results {
        let name = &r["strategy"];
        assert_eq!(r["calls"], 40, "{name}: every call answered");
        assert_eq!(r["failed"], 0, "{name}");
        let per_endpoint: u64 = r["calls_per_endpoint"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(per_endpoint, 40, "{name}: {r}");
        // No endpoint ever had more calls in flight than its limit.
        for (ep, limit) in endpoints
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), &e["max_concurrent"]))
        {
            let seen = r["max_in_flight"][ep].as_u64().unwrap();
            assert!(
                seen <= limit.as_u64().unwrap(),
                "{name} {ep}: {seen} > {limit}"
            );
        }
        assert!(r["calls_per_s"].as_f64().unwrap() > 0.0, "{name}");
        assert!(
            r["model_loads"].as_u64().unwrap() >= 1,
            "{name}: loads counted"
        );
        let overhead = &r["overhead_ms"];
        assert!(
            overhead["p50"].as_f64().unwrap() <= overhead["p99"].as_f64().unwrap(),
            "{name}"
        );
        let zero = &r["zero_latency_routed_ms"];
        assert!(
            zero["p50"].as_f64().is_some() && zero["p99"].as_f64().is_some(),
            "{name}: {zero}"
        );
    }
    assert!(report["direct_zero_latency_ms"]["p50"].as_f64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_bench_prints_a_table_for_the_chosen_strategies() {
    let out = bench(&[
        "routing",
        "--calls",
        "20",
        "--strategies",
        "priority,least_loaded",
        "--overhead-calls",
        "0",
    ])
    .await;
    assert!(out.starts_with("gleitzeit-bench routing"), "{out}");
    for needle in ["ideal", "562.5 calls/s", "method", "overhead p50/p99"] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("results"))
        .skip(2)
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(rows, ["priority", "least_loaded"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_bench_runs_dag_workflows_and_reports_every_strategy() {
    let out = bench(&[
        "placement",
        "--workflows",
        "3",
        "--runs",
        "1",
        "--tokens",
        "3",
        "--load-delay",
        "20ms",
        "--json",
    ])
    .await;
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let setup = &report["setup"];
    assert_eq!(setup["workflows"], 3);
    let limits: Vec<u64> = setup["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["max_concurrent"].as_u64().unwrap())
        .collect();
    assert_eq!(limits.len(), 4, "{setup}");
    assert!(setup["lower_bound_s"]["work"].as_f64().unwrap() > 0.0);
    let runs = report["runs"].as_array().expect("runs");
    let names: Vec<&str> = runs
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, STRATEGIES);
    for r in runs {
        let name = &r["strategy"];
        assert_eq!(r["not_completed"], 0, "{name}");
        // Three workflows of four tasks: twelve calls, each on some endpoint.
        let calls: u64 = r["calls_per_endpoint"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(calls, 12, "{name}: {r}");
        for (seen, limit) in r["max_in_flight"].as_array().unwrap().iter().zip(&limits) {
            assert!(seen.as_u64().unwrap() <= *limit, "{name}: {r}");
        }
        assert_eq!(r["gpu_only_model_calls_on_cpu"], 0, "{name}");
        assert!(r["model_loads"].as_u64().unwrap() >= 1, "{name}");
    }
}
