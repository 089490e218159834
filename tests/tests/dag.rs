//! Case 1: a diamond (root → 4 parallel → join) and a 6-step chain run to completion on real
//! worker processes, with each task's result passed to its dependents, with 1 and with 3
//! workers.

use gleitzeit_e2e::sim::{echo_openai, prompts, prompts_starting_with};
use gleitzeit_e2e::worker::WorkerProcess;
use gleitzeit_e2e::workflows::{capability, chain, diamond, BRANCHES, MODEL};
use gleitzeit_e2e::Deployment;
use gleitzeit_testkit::llm::MockOpenAi;

fn start_workers(dep: &Deployment, sim: &MockOpenAi, n: usize) -> Vec<WorkerProcess> {
    let spec = dep.worker(&sim.url());
    (0..n)
        .map(|i| WorkerProcess::spawn(&format!("w{i}"), &spec))
        .collect()
}

/// Every task completed exactly once, the counters agree, the streams are empty.
async fn assert_completed_once(dep: &Deployment, id: &str, names: &[String]) {
    let store = &dep.store;
    let completions = store.completions(id).await;
    for name in names {
        assert_eq!(
            completions.get(name),
            Some(&1),
            "task {name:?} must complete exactly once: {completions:?}"
        );
    }
    assert_eq!(completions.len(), names.len(), "{completions:?}");
    let wf = store.workflow(id).await;
    assert_eq!(wf["status"], "completed");
    assert_eq!(wf["total"], names.len().to_string());
    assert_eq!(wf["completed"], names.len().to_string());
    assert_eq!(wf["open"], "0");
    for field in ["failed", "skipped", "cancelled"] {
        assert_eq!(wf[field], "0", "{field}");
    }
    for task in store.tasks(id).await {
        assert_eq!(task["status"], "completed", "{task:?}");
    }
    assert_eq!(
        store.stream_len(&capability()).await,
        0,
        "entries left behind"
    );
    assert!(store.pending(&capability()).await.is_empty());
    assert!(store.dead_letters().await.is_empty());
}

async fn run_diamond(workers: usize) {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    let _workers = start_workers(&dep, &sim, workers);

    let id = dep.cli.submit_yaml(&diamond("Diamond")).await;
    assert_eq!(dep.store.wait_finished(&id).await, "completed");

    // Results are passed along: each branch saw the root's result, the join saw all four.
    let root = dep.store.result_text(&id, "Root").await;
    assert_eq!(root, format!("{MODEL}: Start Diamond"));
    let mut branch_results = Vec::new();
    for b in BRANCHES {
        let text = dep.store.result_text(&id, b).await;
        assert_eq!(text, format!("{MODEL}: Branch {b} of {root}"));
        branch_results.push(text);
    }
    let joins = prompts_starting_with(&sim, "Join");
    assert_eq!(joins.len(), 1, "the join ran once: {joins:?}");
    for r in &branch_results {
        assert!(
            joins[0].contains(&format!("[{r}]")),
            "the join's prompt lacks {r:?}: {}",
            joins[0]
        );
    }
    assert_eq!(
        joins[0],
        format!(
            "Join {}",
            branch_results
                .iter()
                .map(|r| format!("[{r}]"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    );

    let names: Vec<String> = ["Root"]
        .into_iter()
        .chain(BRANCHES)
        .chain(["Join"])
        .map(str::to_owned)
        .collect();
    assert_completed_once(&dep, &id, &names).await;
    assert_eq!(
        sim.counters().received,
        6,
        "one call per task: {:?}",
        prompts(&sim)
    );

    // The CLI reports the same.
    let results = dep.cli.results_json(&id).await;
    results.assert_code(0);
    let json = results.json();
    assert_eq!(json["Join"]["status"], "completed");
    assert_eq!(json["Join"]["result"], format!("{MODEL}: {}", joins[0]));
}

async fn run_chain(workers: usize) {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    let _workers = start_workers(&dep, &sim, workers);

    let id = dep.cli.submit_yaml(&chain("Chain", 6)).await;
    assert_eq!(dep.store.wait_finished(&id).await, "completed");

    let mut previous = dep.store.result_text(&id, "Step 1").await;
    assert_eq!(previous, format!("{MODEL}: Begin Chain"));
    for i in 2..=6 {
        let name = format!("Step {i}");
        let expected_prompt = format!("Step {i} after <{previous}>");
        let seen = prompts_starting_with(&sim, &format!("Step {i} after"));
        assert_eq!(seen, vec![expected_prompt.clone()], "prompt of {name}");
        let text = dep.store.result_text(&id, &name).await;
        assert_eq!(text, format!("{MODEL}: {expected_prompt}"));
        previous = text;
    }

    let names: Vec<String> = (1..=6).map(|i| format!("Step {i}")).collect();
    assert_completed_once(&dep, &id, &names).await;
    assert_eq!(sim.counters().received, 6);

    let status = dep.cli.status_json(&id).await;
    status.assert_code(0);
    let json = status.json();
    assert_eq!(json["status"], "completed");
    assert_eq!(json["completed"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_with_one_worker() {
    run_diamond(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_with_three_workers() {
    run_diamond(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_with_one_worker() {
    run_chain(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_with_three_workers() {
    run_chain(3).await;
}
