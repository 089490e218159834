//! Validation: from a parsed workflow value to a [`crate::Workflow`], reporting every problem at
//! once.
//!
//! The checks run on a `serde_json::Value` rather than through `Deserialize`, because serde
//! stops at the first error; here each task is checked on its own and every wrong type, unknown
//! field, missing field, bad reference, cycle and exceeded limit is collected with the path of
//! the field (for example `tasks[2] (Summarize).dependencies[0]`).
//!
//! One file per concern: `fields` (the vocabulary and path helpers), `checker` (error
//! collection and typed readers), `defaults` (defaults and partial retry/options), `task` (one
//! task and its template strings), `references` (the dependencies template references imply), `cycles`,
//! `limits` (fan-in/out, task size), `link` (the cross-task pass) and `workflow` (the entry
//! point).

mod checker;
mod cycles;
mod defaults;
mod fields;
mod limits;
mod link;
mod references;
mod task;
mod workflow;

pub(crate) use fields::task_label;
pub use workflow::validate;
