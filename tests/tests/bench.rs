//! The benchmark command works end to end in both of its modes (a small run; the figures
//! themselves are recorded in docs/benchmarks.md, not asserted).

use gleitzeit_e2e::bins;
use gleitzeit_e2e::within;
use tokio::process::Command;

async fn bench(args: &[&str]) -> String {
    let mut cmd = Command::new(bins::binary(bins::BENCH));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GLEITZEIT_") {
            cmd.env_remove(&key);
        }
    }
    cmd.args(args).kill_on_drop(true);
    let out = within("the benchmark run", cmd.output())
        .await
        .expect("running gleitzeit-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gleitzeit-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
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
