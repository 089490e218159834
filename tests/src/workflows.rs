//! Workflow files the tests submit, and queue submissions for tests that drive
//! `gleitzeit-queue` directly (built from `gleitzeit_core::plan` exactly as a submitter does).

pub use gleitzeit_core::now_ms;
use gleitzeit_core::{load_str, plan, Format, Limits, Workflow};
use gleitzeit_queue::SubmitRequest;
use serde_json::Map;

/// The model every simulated workflow uses.
pub const MODEL: &str = "sim-model";

/// The capability (stream) of [`MODEL`].
pub fn capability() -> String {
    format!("llm:{MODEL}")
}

/// Names of the four parallel tasks of [`diamond`].
pub const BRANCHES: [&str; 4] = ["North", "East", "South", "West"];

/// Root → North, East, South, West (in parallel) → Join. Each branch reads the root's result,
/// the join reads all four.
pub fn diamond(name: &str) -> String {
    let mut y = format!(
        "name: {name}\ndefaults:\n  model: {MODEL}\n  timeout: 60s\ntasks:\n  - name: Root\n    type: text\n    prompt: \"Start {name}\"\n"
    );
    for b in BRANCHES {
        y.push_str(&format!(
            "  - name: {b}\n    type: text\n    prompt: \"Branch {b} of {{{{Root.result}}}}\"\n"
        ));
    }
    y.push_str("  - name: Join\n    type: text\n    prompt: \"Join");
    for b in BRANCHES {
        y.push_str(&format!(" [{{{{{b}.result}}}}]"));
    }
    y.push_str("\"\n");
    y
}

/// Step 1 → Step 2 → … → Step n; each step reads the previous step's result.
pub fn chain(name: &str, n: usize) -> String {
    let mut y = format!(
        "name: {name}\ndefaults:\n  model: {MODEL}\n  timeout: 60s\ntasks:\n  - name: Step 1\n    type: text\n    prompt: \"Begin {name}\"\n"
    );
    for i in 2..=n {
        y.push_str(&format!(
            "  - name: Step {i}\n    type: text\n    prompt: \"Step {i} after <{{{{Step {}.result}}}}>\"\n",
            i - 1
        ));
    }
    y
}

/// Parses and validates workflow YAML.
///
/// # Panics
/// When the workflow is invalid.
pub fn parse(yaml: &str) -> Workflow {
    load_str(yaml, Format::Yaml, None, &Map::new(), &Limits::default())
        .unwrap_or_else(|errs| panic!("invalid test workflow: {errs:?}"))
}

/// A new workflow id (UUIDv7, as the submitter generates them).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The submission of a validated workflow under id `id`, laid out by `gleitzeit_core::plan`,
/// watched from the start: every transition of its tasks is an event, which the tests count
/// (each task completed exactly once: `Store::completions`).
pub fn submit_request(wf: &Workflow, id: &str) -> SubmitRequest {
    let plan = plan(wf).expect("plannable workflow");
    let mut req = gleitzeit_submit::submit_request(wf, &plan, id.to_owned(), None, now_ms());
    req.watch = true;
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diamond_is_root_four_join() {
        let wf = parse(&diamond("D"));
        let plan = plan(&wf).unwrap();
        assert_eq!(plan.tasks.len(), 6);
        assert_eq!(plan.tasks[0].children, vec![1, 2, 3, 4]);
        assert_eq!(plan.tasks[5].dependencies, vec![1, 2, 3, 4]);
        assert_eq!(plan.tasks[5].refs, vec![1, 2, 3, 4]);
    }

    #[test]
    fn chain_links_each_step_to_the_previous() {
        let wf = parse(&chain("C", 6));
        let plan = plan(&wf).unwrap();
        assert_eq!(plan.tasks.len(), 6);
        for i in 1..6u32 {
            assert_eq!(plan.tasks[i as usize].dependencies, vec![i - 1]);
        }
    }
}
