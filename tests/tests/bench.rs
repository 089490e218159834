//! The benchmark command works end to end in both of its modes (a small run; the figures
//! themselves are recorded in docs/benchmarks.md, not asserted).

use gleitzeit_e2e::{bins, repo};

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
    assert!(field(&report, "redis per task").contains("script calls"));
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

/// `compare` runs both systems when BullMQ is installed (`npm ci --prefix bench/bullmq`), and
/// otherwise stops before any run with the command that installs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_runs_both_systems_or_names_the_install_command() {
    let root = repo::root();
    let installed =
        root.join("bench/bullmq/node_modules/bullmq").is_dir() && repo::tool("node").is_some();
    let worker = bins::binary(bins::WORKER);
    let out = gleitzeit_e2e::bench::output(
        "the comparison",
        &[
            "compare",
            "--workflows",
            "10",
            "--workers",
            "1",
            "--runs",
            "1",
            "--worker-bin",
            worker.to_str().unwrap(),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if installed {
        assert!(out.status.success(), "compare failed:\n{stdout}\n{stderr}");
        let row = |system: &str| {
            stdout
                .lines()
                .find(|l| l.starts_with(system))
                .unwrap_or_else(|| panic!("no {system} row in:\n{stdout}"))
                .to_owned()
        };
        assert!(!row("gleitzeit").contains("FAILED"));
        assert!(!row("bullmq ").contains("FAILED"));
        assert!(stdout.contains("ratio"), "{stdout}");
    } else {
        assert!(!out.status.success());
        assert!(
            stderr.contains("npm ci --prefix bench/bullmq"),
            "the error should name the install command:\n{stderr}"
        );
    }
}
