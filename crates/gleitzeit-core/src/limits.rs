//! Size and count limits a workflow must respect. They protect Redis (key and hash sizes),
//! the submit script (which writes a whole workflow at once) and workers (fan-out releases).

use std::time::Duration;

/// Limits checked by validation. `Default` gives the documented production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Tasks per workflow.
    pub max_tasks: usize,
    /// Dependencies of one task (fan-in), counting those implied by templates.
    pub max_dependencies: usize,
    /// Tasks depending on one task (fan-out).
    pub max_dependents: usize,
    /// Bytes of one task's spec JSON (images included).
    pub max_task_bytes: usize,
    /// Bytes of the workflow source text.
    pub max_workflow_bytes: usize,
    /// Upper bound of `retry.max_attempts`.
    pub max_attempts: u32,
    /// Upper bound of a task timeout.
    pub max_timeout: Duration,
    /// Characters of a workflow or task name.
    pub max_name_len: usize,
    /// Upper bound of a workflow's `retention` (how long its keys stay after it ends).
    pub max_retention: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tasks: 1000,
            max_dependencies: 256,
            max_dependents: 1000,
            max_task_bytes: 1024 * 1024,
            max_workflow_bytes: 16 * 1024 * 1024,
            max_attempts: 20,
            max_timeout: Duration::from_secs(24 * 3600),
            max_name_len: 128,
            max_retention: Duration::from_secs(365 * 24 * 3600),
        }
    }
}
