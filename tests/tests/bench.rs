//! The benchmark command works end to end in both of its modes (a small run; the figures
//! themselves are recorded in docs/benchmarks.md, not asserted).

use gleitzeit_e2e::bins;

async fn bench(args: &[&str]) -> String {
    gleitzeit_e2e::bench::run("the benchmark run", args).await
}

fn field<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name:?} line in:\n{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_in_process_workers() {
    let report = bench(&["--shape", "chain", "--workflows", "20", "--workers", "2"]).await;
    assert_eq!(field(&report, "workflows"), "20 (120 tasks)");
    assert_eq!(field(&report, "not completed"), "0");
    assert_eq!(field(&report, "provider calls"), "120");
    assert!(
        field(&report, "tasks/s")
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    assert!(field(&report, "workflow latency").starts_with("p50 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_spawned_worker_processes() {
    let worker = bins::binary(bins::WORKER);
    let report = bench(&[
        "--shape",
        "diamond",
        "--workflows",
        "20",
        "--workers",
        "2",
        "--submitters",
        "2",
        "--spawn",
        "--worker-bin",
        worker.to_str().unwrap(),
    ])
    .await;
    assert_eq!(field(&report, "workflows"), "20 (120 tasks)");
    assert!(field(&report, "workers").contains("processes"));
    assert_eq!(field(&report, "not completed"), "0");
    assert_eq!(field(&report, "provider calls"), "120");
}
