//! The benchmark's workflow shapes and their queue submissions.
//!
//! Every shape is built and validated with `gleitzeit_core` and laid out by
//! `gleitzeit_core::plan` once; each submission is that layout under a fresh workflow id, so
//! what is measured is the queue and the workers, not the planner.

use clap::ValueEnum;
use gleitzeit_core::{plan, Limits, Workflow, WorkflowBuilder};
use gleitzeit_queue::SubmitRequest;

/// The model name the benchmark's tasks use (served by the simulator).
pub const MODEL: &str = "bench";

/// Which DAG every workflow has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// Root → 4 parallel tasks → join (6 tasks).
    Diamond,
    /// 6 steps, each reading the previous one's result.
    Chain,
}

impl Shape {
    /// The shape's name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Diamond => "diamond",
            Shape::Chain => "chain",
        }
    }

    /// The validated workflow of this shape: trivial text tasks whose prompts pass results on
    /// through templates, as real workflows do.
    pub fn workflow(self) -> anyhow::Result<Workflow> {
        let mut b = WorkflowBuilder::new(format!("bench {}", self.name()));
        match self {
            Shape::Diamond => {
                b.add_text_task("Root", MODEL, "root");
                for i in 1..=4 {
                    b.add_text_task(
                        &format!("Branch {i}"),
                        MODEL,
                        format!("b{i} {{{{Root.result}}}}"),
                    );
                }
                b.add_text_task(
                    "Join",
                    MODEL,
                    "{{Branch 1.result}} {{Branch 2.result}} {{Branch 3.result}} {{Branch 4.result}}",
                );
            }
            Shape::Chain => {
                b.add_text_task("Step 1", MODEL, "step");
                for i in 2..=6 {
                    b.add_text_task(
                        &format!("Step {i}"),
                        MODEL,
                        format!("s{i} {{{{Step {}.result}}}}", i - 1),
                    );
                }
            }
        }
        b.build(&Limits::default()).map_err(|errs| {
            anyhow::anyhow!(
                "benchmark workflow is invalid: {}",
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
    }
}

/// A workflow laid out once, submitted many times under fresh ids.
#[derive(Debug, Clone)]
pub struct Template {
    request: SubmitRequest,
}

impl Template {
    /// Lays out `wf` for submission.
    pub fn new(wf: &Workflow) -> anyhow::Result<Template> {
        let plan = plan(wf)?;
        // The submitter's own layout; id and time are filled in per submission.
        Ok(Template {
            request: gleitzeit_submit::submit_request(wf, &plan, String::new(), None, 0),
        })
    }

    /// The capability every task of the workflow is queued on.
    pub fn capability(&self) -> String {
        self.request
            .tasks
            .first()
            .map(|t| t.capability.clone())
            .unwrap_or_default()
    }

    /// Tasks per workflow.
    pub fn tasks(&self) -> usize {
        self.request.tasks.len()
    }

    /// Each task's number of dependencies and its dependants (task indexes), in index order.
    pub fn dag(&self) -> Vec<(usize, Vec<u32>)> {
        self.request
            .tasks
            .iter()
            .map(|t| (t.dependencies.len(), t.children.clone()))
            .collect()
    }

    /// The submission under `id`, created at `now_ms`.
    pub fn request(&self, id: String, now_ms: u64) -> SubmitRequest {
        SubmitRequest {
            watch: false,
            retention: None,
            workflow_id: id,
            now_ms,
            ..self.request.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diamond_is_root_four_join() {
        let t = Template::new(&Shape::Diamond.workflow().unwrap()).unwrap();
        assert_eq!(t.tasks(), 6);
        let r = t.request("01900000-0000-7000-8000-000000000000".into(), 5);
        r.validate().unwrap();
        assert_eq!(r.tasks[0].children, vec![1, 2, 3, 4]);
        assert_eq!(r.tasks[5].dependencies, vec![1, 2, 3, 4]);
        assert_eq!(r.tasks[5].refs, vec![1, 2, 3, 4]);
        assert!(r.tasks.iter().all(|t| t.capability == "llm:bench"));
        assert_eq!(t.capability(), "llm:bench");
        assert_eq!(r.now_ms, 5);
    }

    #[test]
    fn chain_is_six_steps() {
        let t = Template::new(&Shape::Chain.workflow().unwrap()).unwrap();
        assert_eq!(t.tasks(), 6);
        let r = t.request("01900000-0000-7000-8000-000000000001".into(), 1);
        r.validate().unwrap();
        for i in 1..6u32 {
            assert_eq!(r.tasks[i as usize].dependencies, vec![i - 1]);
            assert_eq!(r.tasks[i as usize].refs, vec![i - 1]);
        }
    }
}
