//! Case 4: retries with backoff then success; retries exhausted then failure under
//! `fail_fast` (tasks not started are cancelled, the workflow fails) and under `continue`
//! (dependents skipped, the independent branch completes, the final status is failed — never
//! completed). The CLI's `status` and `results` tell the truth; `results` exits 4.

use gleitzeit_e2e::cli::yaml_file;
use gleitzeit_e2e::sim::{echo_openai, prompts_starting_with};
use gleitzeit_e2e::store::WORKFLOW_TERMINAL;
use gleitzeit_e2e::worker::WorkerProcess;
use gleitzeit_e2e::workflows::{capability, MODEL};
use gleitzeit_e2e::Deployment;
use gleitzeit_testkit::llm::Fault;
use serde_json::Value;

/// Retries wait little (a configuration value; nothing is asserted about time).
const FAST_RETRY: &str =
    "{ max_attempts: 3, backoff: exponential, base_delay: 50ms, max_delay: 200ms }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_then_success() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    // Two failures at the endpoint (HTTP 500), then the simulator answers normally.
    sim.push_faults(2, internal_error());
    let _worker = WorkerProcess::spawn("w", &dep.worker(&sim.url()));

    let yaml = format!(
        "name: Flaky\ndefaults:\n  model: {MODEL}\n  retry: {FAST_RETRY}\ntasks:\n  - name: Flaky\n    type: text\n    prompt: Flaky call\n  - name: After\n    type: text\n    prompt: \"After <{{{{Flaky.result}}}}>\"\n"
    );
    // Submitted with --wait: the CLI follows the workflow to its end and prints the results.
    let file = yaml_file(&yaml);
    let out = dep
        .cli
        .run(&["--json", "submit", file.path().to_str().unwrap(), "--wait"])
        .await;
    out.assert_code(0);
    let waited = out.json();
    assert_eq!(waited["status"], "completed", "{out:?}");
    assert_eq!(
        waited["results"]["After"]["result"],
        format!("{MODEL}: After <{MODEL}: Flaky call>")
    );
    let id = waited["id"].as_str().unwrap().to_owned();
    assert_eq!(dep.store.wait_finished(&id).await, "completed");

    // Three calls for Flaky: two failed, the third answered.
    assert_eq!(prompts_starting_with(&sim, "Flaky call").len(), 3);
    assert_eq!(sim.counters().received, 4);
    let events = dep.store.task_events(&id, "Flaky").await;
    let statuses: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.get("status"), e.get("attempt")))
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|(s, _)| *s == "retrying")
            .copied()
            .collect::<Vec<_>>(),
        vec![("retrying", "1"), ("retrying", "2")],
        "{statuses:?}"
    );
    let completed: Vec<_> = statuses.iter().filter(|(s, _)| *s == "completed").collect();
    assert_eq!(
        completed,
        vec![&("completed", "3")],
        "completed on attempt 3: {statuses:?}"
    );
    let task = dep.store.task_named(&id, "Flaky").await;
    assert_eq!(task["status"], "completed");
    assert_eq!(
        task["attempts"], "2",
        "two failed attempts recorded: {task:?}"
    );
    assert_eq!(dep.store.completions(&id).await.get("Flaky"), Some(&1));
    assert!(dep.store.dead_letters().await.is_empty());

    let status = dep.cli.status_json(&id).await;
    status.assert_code(0);
    let json = status.json();
    assert_eq!(json["status"], "completed");
    let flaky = &json["tasks"][0];
    assert_eq!(flaky["name"], "Flaky");
    assert_eq!(flaky["status"], "completed");
    assert_eq!(flaky["attempts"], 2);
    assert_eq!(flaky["max_attempts"], 3);
    dep.cli.results_json(&id).await.assert_code(0);
}

/// Doomed (always failing: HTTP 500) → Next → Last, and the independent Solo → After Solo.
fn failing_workflow(policy: &str) -> String {
    format!(
        "name: Doomed {policy}\nfailure_policy: {policy}\ndefaults:\n  model: {MODEL}\n  retry: {{ max_attempts: 2, backoff: fixed, base_delay: 50ms }}\ntasks:\n  - name: Doomed\n    type: text\n    prompt: DOOMED call\n  - name: Next\n    type: text\n    prompt: \"Next <{{{{Doomed.result}}}}>\"\n  - name: Last\n    type: text\n    prompt: \"Last <{{{{Next.result}}}}>\"\n"
    )
}

fn with_solo_branch(yaml: String) -> String {
    yaml + "  - name: Solo\n    type: text\n    prompt: Solo call\n  - name: After Solo\n    type: text\n    prompt: \"After <{{Solo.result}}>\"\n"
}

async fn cli_views(dep: &Deployment, id: &str) -> (Value, Value) {
    let status = dep.cli.status_json(id).await;
    status.assert_code(0);
    let results = dep.cli.results_json(id).await;
    results.assert_code(4);
    let human = dep.cli.run(&["results", id]).await;
    human.assert_code(4);
    assert!(
        human.all_output().contains("Doomed"),
        "the human results name the failed task:\n{human:?}"
    );
    (status.json(), results.json())
}

fn task_status<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("status has no task {name}: {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_fail_fast_cancels_what_has_not_started() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    sim.poison("DOOMED", internal_error());
    let _worker = WorkerProcess::spawn("w", &dep.worker(&sim.url()));

    // `submit --wait` follows the workflow and exits 4 when it fails.
    let file = yaml_file(&failing_workflow("fail_fast"));
    let out = dep
        .cli
        .run(&["submit", file.path().to_str().unwrap(), "--wait"])
        .await;
    out.assert_code(4);
    let id = out
        .all_output()
        .split_whitespace()
        .find(|w| uuid::Uuid::parse_str(w).is_ok())
        .unwrap_or_else(|| panic!("no workflow id printed:\n{out:?}"))
        .to_owned();
    assert!(
        out.stderr.contains("Doomed"),
        "the progress names the failing task:\n{out:?}"
    );
    assert_eq!(dep.store.wait_finished(&id).await, "failed");

    // At most one call per attempt (the router may skip an endpoint it knows is failing).
    let calls = prompts_starting_with(&sim, "DOOMED").len();
    assert!((1..=2).contains(&calls), "{calls} calls for 2 attempts");
    let doomed = dep.store.task_named(&id, "Doomed").await;
    assert_eq!(doomed["status"], "failed");
    assert_eq!(doomed["attempts"], "2");
    let error: Value = serde_json::from_str(&doomed["error"]).unwrap();
    assert_eq!(error["kind"], "retryable", "{error}");
    for name in ["Next", "Last"] {
        assert_eq!(
            dep.store.task_named(&id, name).await["status"],
            "cancelled",
            "{name}"
        );
    }
    let wf = dep.store.workflow(&id).await;
    assert_eq!(wf["status"], "failed");
    assert_eq!(
        (
            wf["failed"].as_str(),
            wf["cancelled"].as_str(),
            wf["completed"].as_str()
        ),
        ("1", "2", "0")
    );
    assert_eq!(wf["open"], "0");
    assert!(dep.store.completions(&id).await.is_empty());
    assert_eq!(dep.store.stream_len(&capability()).await, 0);

    // The exhausted task is dead-lettered.
    let dead = dep.store.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].get("wf"), id);
    assert_eq!(dead[0].get("name"), "Doomed");
    assert_eq!(dead[0].get("kind"), "exhausted");
    assert_eq!(dead[0].get("attempts"), "2");

    let (status, results) = cli_views(&dep, &id).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(status["failed"], 1);
    assert_eq!(status["cancelled"], 2);
    assert_eq!(task_status(&status, "Doomed")["status"], "failed");
    assert_eq!(task_status(&status, "Doomed")["attempts"], 2);
    assert_eq!(task_status(&status, "Next")["status"], "cancelled");
    assert_eq!(results["Doomed"]["status"], "failed");
    assert_eq!(results["Doomed"]["error"]["kind"], "retryable");
    assert_eq!(results["Doomed"]["result"], Value::Null);
    assert_eq!(results["Last"]["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_continue_skips_dependents_and_finishes_failed() {
    let dep = Deployment::start().await;
    let sim = echo_openai().await;
    sim.poison("DOOMED", internal_error());
    let _worker = WorkerProcess::spawn("w", &dep.worker(&sim.url()));

    let id = dep
        .cli
        .submit_yaml(&with_solo_branch(failing_workflow("continue")))
        .await;
    assert_eq!(
        dep.store.wait_finished(&id).await,
        "failed",
        "a workflow with a failed task never ends completed"
    );

    assert_eq!(
        dep.store.task_named(&id, "Doomed").await["status"],
        "failed"
    );
    for name in ["Next", "Last"] {
        assert_eq!(
            dep.store.task_named(&id, name).await["status"],
            "skipped",
            "{name}"
        );
    }
    for name in ["Solo", "After Solo"] {
        assert_eq!(
            dep.store.task_named(&id, name).await["status"],
            "completed",
            "{name}"
        );
    }
    assert_eq!(
        dep.store.result_text(&id, "After Solo").await,
        format!("{MODEL}: After <{MODEL}: Solo call>")
    );
    let wf = dep.store.workflow(&id).await;
    assert_eq!(
        (
            wf["completed"].as_str(),
            wf["failed"].as_str(),
            wf["skipped"].as_str(),
            wf["cancelled"].as_str(),
            wf["open"].as_str()
        ),
        ("2", "1", "2", "0", "0")
    );
    // No event ever claimed the workflow completed.
    let ends: Vec<String> = dep
        .store
        .events(&id)
        .await
        .into_iter()
        .filter(|e| e.get("kind") == "workflow" && WORKFLOW_TERMINAL.contains(&e.get("status")))
        .map(|e| e.get("status").to_owned())
        .collect();
    assert_eq!(ends, vec!["failed"]);
    assert!(
        prompts_starting_with(&sim, "Next").is_empty(),
        "skipped tasks never ran"
    );

    let (status, results) = cli_views(&dep, &id).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(status["skipped"], 2);
    assert_eq!(status["completed"], 2);
    assert_eq!(task_status(&status, "Last")["status"], "skipped");
    assert_eq!(results["Solo"]["status"], "completed");
    assert_eq!(results["Solo"]["result"], format!("{MODEL}: Solo call"));
    assert_eq!(results["Next"]["status"], "skipped");
    assert_eq!(results["Doomed"]["status"], "failed");
}

/// A failure of the call at an endpoint that could serve it: an attempt (an overload answer
/// would be endpoint trouble, waited out without using one).
fn internal_error() -> Fault {
    Fault::Status(500, r#"{"error":{"message":"internal error"}}"#.into())
}
