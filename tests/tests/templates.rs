//! Case 7: templates are substituted once. A result that itself contains `{{Other.result}}`
//! (and `{{input.topic}}`) reaches its dependent's prompt literally, even though `Other` is an
//! ancestor of that dependent whose result would be available for substitution.

use gleitzeit_e2e::sim::{openai, prompts_starting_with};
use gleitzeit_e2e::worker::WorkerProcess;
use gleitzeit_e2e::workflows::MODEL;
use gleitzeit_e2e::Deployment;
use gleitzeit_testkit::llm::{echo_reply, Reply, SimConfig};

const TRICKY: &str = "literal {{Other.result}} and {{input.topic}}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_with_template_syntax_reaches_its_dependent_literally() {
    let dep = Deployment::start().await;
    let sim = openai(SimConfig::default().with_reply(Reply::func(
        |req| match req.prompt.as_str() {
            "Other" => "OTHER".to_owned(),
            "Emit" => TRICKY.to_owned(),
            _ => echo_reply(req, 10_000),
        },
    )))
    .await;
    let _worker = WorkerProcess::spawn("w", &dep.worker(&sim.url()));

    let yaml = format!(
        "name: Literal results\ninput:\n  topic: TOPIC\ndefaults:\n  model: {MODEL}\ntasks:\n  - name: Other\n    type: text\n    prompt: Other\n  - name: Emit\n    type: text\n    prompt: Emit\n  - name: Use\n    type: text\n    prompt: \"Use <{{{{Emit.result}}}}> with <{{{{Other.result}}}}> on {{{{input.topic}}}}\"\n"
    );
    let id = dep.cli.submit_yaml(&yaml).await;
    assert_eq!(dep.store.wait_finished(&id).await, "completed");

    assert_eq!(dep.store.result_text(&id, "Emit").await, TRICKY);
    let used = prompts_starting_with(&sim, "Use");
    assert_eq!(
        used,
        vec![format!("Use <{TRICKY}> with <OTHER> on TOPIC")],
        "the dependent's prompt must carry the result verbatim"
    );
    assert_eq!(
        dep.store.result_text(&id, "Use").await,
        format!("{MODEL}: Use <{TRICKY}> with <OTHER> on TOPIC")
    );
}
