//! The library entry point for submitting: [`submit_request`] turns a validated workflow and
//! its plan into the submit script's request. Used by the `submit` command, the benchmark and
//! the test harnesses, so every submission is built the same way.

use gleitzeit_core::{Plan, Workflow};
use gleitzeit_queue::{SubmitRequest, TaskRecord};
use serde_json::Value;

/// Builds the submit script's request from a validated workflow and its plan.
pub fn submit_request(
    wf: &Workflow,
    plan: &Plan,
    workflow_id: String,
    idempotency_key: Option<String>,
    now_ms: u64,
) -> SubmitRequest {
    SubmitRequest {
        watch: false,
        workflow_id,
        name: wf.name.clone(),
        idempotency_key,
        digest: plan.digest.clone(),
        policy: wf.failure_policy.as_str().to_owned(),
        input_json: Value::Object(wf.input.clone()).to_string(),
        now_ms,
        retention: wf.retention,
        tasks: plan
            .tasks
            .iter()
            .map(|t| TaskRecord {
                name: t.name.clone(),
                capability: t.capability.clone(),
                priority: t.priority,
                spec_json: t.spec_json.clone(),
                dependencies: t.dependencies.clone(),
                children: t.children.clone(),
                refs: t.refs.clone(),
                max_attempts: t.max_attempts,
                on_failure: t.on_failure.map(|p| p.as_str().to_owned()),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleitzeit_core::{plan, Limits, Priority};
    use serde_json::json;

    #[test]
    fn submit_request_mirrors_the_plan() {
        let text = "name: demo\nfailure_policy: continue\ninput: {x: 1}\ntasks:\n  - name: A\n    type: text\n    model: smollm2\n    prompt: hi\n    priority: high\n  - name: B\n    type: text\n    model: smollm2\n    prompt: \"{{A.result}}\"\n    on_failure: fail_fast\n";
        let wf = gleitzeit_core::load_str(
            text,
            gleitzeit_core::Format::Yaml,
            None,
            &serde_json::Map::new(),
            &Limits::default(),
        )
        .unwrap();
        let plan = plan(&wf).unwrap();
        let req = submit_request(&wf, &plan, "id-1".into(), Some("k".into()), 42);
        assert_eq!(req.workflow_id, "id-1");
        assert_eq!(req.policy, "continue");
        assert_eq!(req.digest, plan.digest);
        assert_eq!(
            serde_json::from_str::<Value>(&req.input_json).unwrap(),
            json!({"x": 1})
        );
        assert_eq!(req.now_ms, 42);
        assert_eq!(req.tasks.len(), 2);
        assert_eq!(req.tasks[0].priority, Priority::High);
        assert_eq!(req.tasks[0].children, vec![1]);
        assert_eq!(req.tasks[1].dependencies, vec![0]);
        assert_eq!(req.tasks[1].refs, vec![0]);
        assert_eq!(req.tasks[1].on_failure.as_deref(), Some("fail_fast"));
        assert_eq!(req.tasks[1].capability, "llm:smollm2");
        req.validate().unwrap();
    }
}
