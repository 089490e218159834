//! The placement benchmark's workload and its bounds: the simulated endpoints, the DAG
//! workflows (A → (B, C) → D, each task's model drawn by weight from a fixed sequence), and
//! the lower bound of the makespan.

use std::time::Duration;

use gleitzeit_core::{plan, Limits, Workflow, WorkflowBuilder};
use gleitzeit_queue::SubmitRequest;

/// Seed of the model draws: every strategy and every run sees the same workflows.
const SEED: u64 = 0x2545_F491_4F6C_DD1D;
/// The router's default `cpu_max_model_bytes`: bigger models run only on GPU endpoints.
const CPU_MAX_MODEL_BYTES: f64 = 16e9;
/// Bytes per parameter the simulator reports for a model (4-bit quantisation).
const BYTES_PER_PARAMETER: f64 = 0.6;

/// One simulated endpoint.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) name: String,
    pub(super) tokens_per_s: u32,
    pub(super) max_loaded: usize,
    pub(super) max_concurrent: u32,
    pub(super) gpu: bool,
}

impl Endpoint {
    /// Delay before each generated token.
    pub(super) fn token_delay(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.tokens_per_s.max(1)))
    }
}

/// Names of the four tasks of every workflow, in order.
pub(super) const TASKS: [&str; 4] = ["A", "B", "C", "D"];
/// Tasks on the longest chain of a workflow (A, B or C, D).
const DEPTH: u32 = 3;

/// The models of every task of every workflow: `workflows` × 4 draws from `models` by
/// `weights` (xorshift with a constant seed).
pub(super) fn draws(models: &[String], weights: &[u32], workflows: usize) -> Vec<[String; 4]> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum::<u64>().max(1);
    let mut x = SEED;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut pick = x % total;
        for (m, &w) in models.iter().zip(weights) {
            if pick < u64::from(w) {
                return m.clone();
            }
            pick -= u64::from(w);
        }
        models[0].clone()
    };
    (0..workflows)
        .map(|_| [next(), next(), next(), next()])
        .collect()
}

/// The workflow A → (B, C) → D with these models; every task generates the simulator's fixed
/// reply, and the dependents read their parents' results through templates.
pub(super) fn workflow(i: usize, models: &[String; 4]) -> anyhow::Result<Workflow> {
    let mut b = WorkflowBuilder::new(format!("placement {i}"));
    b.add_text_task("A", &models[0], format!("start {i}"));
    b.add_text_task("B", &models[1], "left {{A.result}}");
    b.add_text_task("C", &models[2], "right {{A.result}}");
    b.add_text_task("D", &models[3], "join {{B.result}} {{C.result}}");
    b.build(&Limits::default()).map_err(|errs| {
        anyhow::anyhow!(
            "placement workflow is invalid: {}",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

/// The queue submission of `wf` under `id`.
pub(super) fn request(wf: &Workflow, id: String, now_ms: u64) -> anyhow::Result<SubmitRequest> {
    let plan = plan(wf)?;
    Ok(gleitzeit_submit::submit_request(
        wf, &plan, id, None, now_ms,
    ))
}

/// The parameter count a model's tag names (`llama3:70b` → 70e9), when it names one.
fn parameters(model: &str) -> Option<f64> {
    let tag = model.rsplit(':').next()?;
    let n: f64 = tag.strip_suffix(['b', 'B'])?.parse().ok()?;
    Some(n * 1e9)
}

/// Whether the router keeps `model` off CPU endpoints (its size over `cpu_max_model_bytes`).
pub(super) fn gpu_only(model: &str) -> bool {
    parameters(model).is_some_and(|p| p * BYTES_PER_PARAMETER > CPU_MAX_MODEL_BYTES)
}

/// Lower bounds of the makespan, seconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    /// Every endpoint starts empty, so pays one load before its first token; then all the
    /// tokens at the fleet's full rate (every slot busy): `load + tokens / Σ slots × rate`.
    pub(super) work_s: f64,
    /// One load, then the longest chain on the fastest endpoint.
    pub(super) critical_path_s: f64,
}

impl Bound {
    pub(super) fn new(endpoints: &[Endpoint], tasks: usize, tokens: u32, load: Duration) -> Bound {
        let capacity: f64 = endpoints
            .iter()
            .map(|e| f64::from(e.max_concurrent) * f64::from(e.tokens_per_s))
            .sum();
        let fastest = endpoints.iter().map(|e| e.tokens_per_s).max().unwrap_or(1);
        let load = load.as_secs_f64();
        Bound {
            work_s: load + tasks as f64 * f64::from(tokens) / capacity.max(1.0),
            critical_path_s: load + f64::from(DEPTH * tokens) / f64::from(fastest.max(1)),
        }
    }

    /// The larger of the two.
    pub(super) fn seconds(&self) -> f64 {
        self.work_s.max(self.critical_path_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_fixed_and_follow_the_weights() {
        let models: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let d = draws(&models, &[3, 2, 1], 3000);
        assert_eq!(d, draws(&models, &[3, 2, 1], 3000), "same draws every run");
        let count = |m: &str| d.iter().flatten().filter(|s| *s == m).count();
        // 12,000 draws at 3:2:1: 6000/4000/2000, within a few percent.
        for (m, expected) in [("a", 6000), ("b", 4000), ("c", 2000)] {
            assert!(count(m).abs_diff(expected) < 300, "{m}: {}", count(m));
        }
    }

    #[test]
    fn the_workflow_is_a_diamond_of_four() {
        let models = ["m1", "m2", "m3", "m4"].map(String::from);
        let wf = workflow(0, &models).unwrap();
        let r = request(&wf, "01900000-0000-7000-8000-000000000000".into(), 1).unwrap();
        r.validate().unwrap();
        assert_eq!(r.tasks[0].children, vec![1, 2]);
        assert_eq!(r.tasks[3].dependencies, vec![1, 2]);
        assert_eq!(r.tasks[3].capability, "llm:m4");
    }

    #[test]
    fn only_big_models_are_gpu_only() {
        assert!(gpu_only("llama3:70b"));
        assert!(!gpu_only("llama3.2:3b"));
        assert!(!gpu_only("mistral"));
    }

    #[test]
    fn bounds_count_one_load_and_the_full_rate() {
        let eps: Vec<Endpoint> = [200, 100, 100, 50]
            .into_iter()
            .enumerate()
            .map(|(i, r)| Endpoint {
                name: format!("e{i}"),
                tokens_per_s: r,
                max_loaded: 1,
                max_concurrent: 4,
                gpu: false,
            })
            .collect();
        let b = Bound::new(&eps, 160, 100, Duration::from_secs(2));
        // 16,000 tokens at 4 × 450 tokens/s, after one 2 s load.
        assert!((b.work_s - (2.0 + 16_000.0 / 1800.0)).abs() < 1e-9);
        assert!((b.critical_path_s - 3.5).abs() < 1e-9);
        assert_eq!(b.seconds(), b.work_s);
    }
}
