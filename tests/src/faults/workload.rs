//! A seeded mixed workload: diamonds (Root → North, East, South, West → Join) and chains of
//! three to five steps, in an order and with chain lengths drawn from a seeded RNG, so the
//! same seed gives the same workload.
//!
//! Every task's prompt (or, for external tasks, its argument) starts with a marker unique to
//! its workflow and task, `#<workflow label>/<task name>#`. The checker finds each call's
//! task by it in the prompts the simulators received, and knows exactly what each stored
//! result must be: the echo simulators answer `"{model}: {prompt}"`, and the prompt is the
//! task's template with its parents' stored results substituted.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::workflows::{parse, MODEL};

/// Names of the four parallel tasks of a diamond.
pub const BRANCHES: [&str; 4] = ["North", "East", "South", "West"];

/// A piece of an LLM task's prompt template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// `{{<task>.result}}`: the named task's result.
    Result(String),
}

/// What a task does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A text task on [`MODEL`] whose prompt is this template (it starts with the marker).
    Llm(Vec<Part>),
    /// An external task: `function(marker)` on `service`.
    External {
        /// The task service's name.
        service: String,
        /// The function called with the marker as its only argument.
        function: String,
    },
}

/// One task of a planned workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTask {
    /// The task name.
    pub name: String,
    /// `#<workflow label>/<task name>#`.
    pub marker: String,
    /// Prompt template or external call.
    pub body: Body,
    /// Dependencies that the prompt does not already imply by a reference.
    pub dependencies: Vec<String>,
}

impl PlannedTask {
    /// The tasks this one waits for (referenced or listed).
    pub fn parents(&self) -> Vec<&str> {
        let mut out: Vec<&str> = match &self.body {
            Body::Llm(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Result(name) => Some(name.as_str()),
                    Part::Text(_) => None,
                })
                .collect(),
            Body::External { .. } => Vec::new(),
        };
        out.extend(self.dependencies.iter().map(String::as_str));
        out
    }
}

/// The shape of a planned workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Root → four branches → Join, all LLM tasks.
    Diamond,
    /// Step 1 → … → Step n, each step reading the previous result.
    Chain(usize),
    /// Root (LLM) → four external branches → Join (LLM, after the branches).
    ServiceDiamond,
}

/// One workflow of the workload, in file order (task index = position in `tasks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWorkflow {
    /// Unique label, also the workflow's name: `<prefix>-<n>`.
    pub label: String,
    /// Its shape.
    pub shape: Shape,
    /// Its tasks in file order.
    pub tasks: Vec<PlannedTask>,
}

/// Settings every workflow of a workload carries in its `defaults`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Task timeout (`"30s"`).
    pub timeout: String,
    /// Retry policy, a YAML flow mapping.
    pub retry: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            timeout: "30s".to_owned(),
            retry: "{ max_attempts: 3, backoff: exponential, base_delay: 200ms, max_delay: 2s }"
                .to_owned(),
        }
    }
}

/// A seeded set of workflows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The seed it was generated from.
    pub seed: u64,
    /// The workflows, in submission order.
    pub workflows: Vec<PlannedWorkflow>,
    /// Defaults written into every workflow.
    pub defaults: Defaults,
}

fn marker(label: &str, task: &str) -> String {
    format!("#{label}/{task}#")
}

fn text(s: impl Into<String>) -> Part {
    Part::Text(s.into())
}

fn result(name: &str) -> Part {
    Part::Result(name.to_owned())
}

fn llm(label: &str, name: &str, rest: Vec<Part>) -> PlannedTask {
    let marker = marker(label, name);
    let mut parts = vec![text(marker.clone())];
    parts.extend(rest);
    PlannedTask {
        name: name.to_owned(),
        marker,
        body: Body::Llm(parts),
        dependencies: Vec::new(),
    }
}

fn diamond(label: &str) -> Vec<PlannedTask> {
    let mut tasks = vec![llm(label, "Root", vec![text(" Start")])];
    for b in BRANCHES {
        tasks.push(llm(
            label,
            b,
            vec![text(format!(" {b} of <")), result("Root"), text(">")],
        ));
    }
    let mut join = vec![text(" Join")];
    for b in BRANCHES {
        join.extend([text(" ["), result(b), text("]")]);
    }
    tasks.push(llm(label, "Join", join));
    tasks
}

fn chain(label: &str, n: usize) -> Vec<PlannedTask> {
    let mut tasks = vec![llm(label, "Step 1", vec![text(" Begin")])];
    for i in 2..=n {
        tasks.push(llm(
            label,
            &format!("Step {i}"),
            vec![
                text(format!(" Step {i} after <")),
                result(&format!("Step {}", i - 1)),
                text(">"),
            ],
        ));
    }
    tasks
}

fn service_diamond(label: &str, service: &str, function: &str) -> Vec<PlannedTask> {
    let mut tasks = vec![llm(label, "Root", vec![text(" Start")])];
    for b in BRANCHES {
        tasks.push(PlannedTask {
            name: b.to_owned(),
            marker: marker(label, b),
            body: Body::External {
                service: service.to_owned(),
                function: function.to_owned(),
            },
            dependencies: vec!["Root".to_owned()],
        });
    }
    let mut join = llm(label, "Join", vec![text(" Join")]);
    join.dependencies = BRANCHES.iter().map(|b| (*b).to_owned()).collect();
    tasks.push(join);
    tasks
}

impl Workload {
    /// `n` workflows named `<prefix>-0000…`: each a diamond or a chain of 3–5 steps (even
    /// odds), drawn from `seed`.
    pub fn mixed(prefix: &str, seed: u64, n: usize) -> Workload {
        let mut rng = StdRng::seed_from_u64(seed);
        Workload::build(prefix, seed, n, |label| {
            if rng.random_bool(0.5) {
                (Shape::Diamond, diamond(label))
            } else {
                let len = rng.random_range(3..=5);
                (Shape::Chain(len), chain(label, len))
            }
        })
    }

    /// `n` diamonds.
    pub fn diamonds(prefix: &str, seed: u64, n: usize) -> Workload {
        Workload::build(prefix, seed, n, |label| (Shape::Diamond, diamond(label)))
    }

    /// `n` diamonds whose branches are external calls `function(marker)` on `service`.
    pub fn service_diamonds(
        prefix: &str,
        seed: u64,
        n: usize,
        service: &str,
        function: &str,
    ) -> Workload {
        Workload::build(prefix, seed, n, |label| {
            (
                Shape::ServiceDiamond,
                service_diamond(label, service, function),
            )
        })
    }

    fn build(
        prefix: &str,
        seed: u64,
        n: usize,
        mut make: impl FnMut(&str) -> (Shape, Vec<PlannedTask>),
    ) -> Workload {
        let workflows = (0..n)
            .map(|i| {
                let label = format!("{prefix}-{i:04}");
                let (shape, tasks) = make(&label);
                PlannedWorkflow {
                    label,
                    shape,
                    tasks,
                }
            })
            .collect();
        Workload {
            seed,
            workflows,
            defaults: Defaults::default(),
        }
    }

    /// Sets the task timeout of every workflow (`"3s"`).
    pub fn with_timeout(mut self, timeout: &str) -> Workload {
        self.defaults.timeout = timeout.to_owned();
        self
    }

    /// Number of tasks over all workflows.
    pub fn task_count(&self) -> usize {
        self.workflows.iter().map(|w| w.tasks.len()).sum()
    }

    /// `diamonds=… chains=… service_diamonds=… tasks=…`, for the scenario's log.
    pub fn summary(&self) -> String {
        let count = |f: fn(&Shape) -> bool| self.workflows.iter().filter(|w| f(&w.shape)).count();
        format!(
            "diamonds={} chains={} service_diamonds={} tasks={}",
            count(|s| *s == Shape::Diamond),
            count(|s| matches!(s, Shape::Chain(_))),
            count(|s| *s == Shape::ServiceDiamond),
            self.task_count()
        )
    }

    /// The YAML of one workflow.
    pub fn yaml(&self, wf: &PlannedWorkflow) -> String {
        let mut y = format!(
            "name: {}\ndefaults:\n  model: {MODEL}\n  timeout: {}\n  retry: {}\ntasks:\n",
            wf.label, self.defaults.timeout, self.defaults.retry
        );
        for t in &wf.tasks {
            y.push_str(&format!("  - name: {}\n", t.name));
            match &t.body {
                Body::Llm(parts) => {
                    y.push_str("    type: text\n    prompt: \"");
                    for p in parts {
                        match p {
                            Part::Text(s) => y.push_str(s),
                            Part::Result(name) => y.push_str(&format!("{{{{{name}.result}}}}")),
                        }
                    }
                    y.push_str("\"\n");
                }
                Body::External { service, function } => {
                    y.push_str(&format!(
                        "    type: external\n    service: {service}\n    function: {function}\n    args: [\"{}\"]\n",
                        t.marker
                    ));
                }
            }
            if !t.dependencies.is_empty() {
                y.push_str(&format!(
                    "    dependencies: [{}]\n",
                    t.dependencies.join(", ")
                ));
            }
        }
        y
    }

    /// Every workflow parsed and validated, in order.
    ///
    /// # Panics
    /// When a generated workflow is invalid (a bug in the generator).
    pub fn parsed(&self) -> Vec<gleitzeit_core::Workflow> {
        self.workflows
            .iter()
            .map(|w| parse(&self.yaml(w)))
            .collect()
    }
}

/// The task a prompt was sent for: the marker it starts with (`#<label>/<task>#`).
pub fn marker_of(prompt: &str) -> Option<&str> {
    let rest = prompt.strip_prefix('#')?;
    let end = rest.find('#')?;
    Some(&prompt[..end + 2])
}

/// The text an echo simulator answers for an LLM task whose parents' results are given by
/// `result_of` (`None` when a parent has no result).
pub fn expected_echo<'a>(
    parts: &[Part],
    mut result_of: impl FnMut(&str) -> Option<&'a str>,
) -> Option<String> {
    let mut prompt = String::new();
    for p in parts {
        match p {
            Part::Text(s) => prompt.push_str(s),
            Part::Result(name) => prompt.push_str(result_of(name)?),
        }
    }
    Some(format!("{MODEL}: {prompt}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleitzeit_core::plan;

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        let a = Workload::mixed("m", 7, 50);
        assert_eq!(a, Workload::mixed("m", 7, 50));
        assert_ne!(a, Workload::mixed("m", 8, 50), "another seed, another mix");
        let shapes: Vec<Shape> = a.workflows.iter().map(|w| w.shape).collect();
        assert!(shapes.contains(&Shape::Diamond), "{shapes:?}");
        assert!(
            shapes
                .iter()
                .all(|s| matches!(s, Shape::Diamond | Shape::Chain(3..=5))),
            "{shapes:?}"
        );
    }

    #[test]
    fn every_generated_workflow_is_valid_and_markers_are_unique() {
        let mut w = Workload::mixed("m", 3, 30);
        w.workflows
            .extend(Workload::service_diamonds("s", 3, 2, "Python Tasks", "fault_echo").workflows);
        let mut markers = std::collections::HashSet::new();
        for (wf, parsed) in w.workflows.iter().zip(w.parsed()) {
            let plan = plan(&parsed).expect("plannable");
            assert_eq!(plan.tasks.len(), wf.tasks.len());
            for (i, t) in wf.tasks.iter().enumerate() {
                assert!(markers.insert(t.marker.clone()), "{} repeated", t.marker);
                // Planned parents are exactly the planner's dependencies.
                let mut want: Vec<u32> = t
                    .parents()
                    .iter()
                    .map(|p| wf.tasks.iter().position(|x| x.name == *p).unwrap() as u32)
                    .collect();
                want.sort_unstable();
                want.dedup();
                let mut got = plan.tasks[i].dependencies.clone();
                got.sort_unstable();
                assert_eq!(got, want, "{} of {}", t.name, wf.label);
            }
        }
    }

    #[test]
    fn markers_are_found_and_echoes_computed() {
        assert_eq!(
            marker_of("#m-0001/Step 2# Step 2 after <x>"),
            Some("#m-0001/Step 2#")
        );
        assert_eq!(marker_of("no marker"), None);
        let w = Workload::diamonds("d", 1, 1);
        let north = &w.workflows[0].tasks[1];
        let Body::Llm(parts) = &north.body else {
            panic!("an LLM task")
        };
        assert_eq!(
            expected_echo(parts, |_| Some("R")).as_deref(),
            Some(format!("{MODEL}: #d-0000/North# North of <R>").as_str())
        );
        assert_eq!(expected_echo(parts, |_| None), None);
    }
}
