//! Read-only queries for operators and the CLI, one file per concern: [`workflow`] (workflow
//! and task state, recent workflows, progress events, task definitions) and [`fleet`] (dead
//! letters, capabilities and stream statistics, backlog, endpoint state).

mod fleet;
mod workflow;

pub(crate) use fleet::GroupPosition;
pub use fleet::{CapabilityBacklog, DeadLetter, EndpointState, StreamStats};
pub use workflow::{Event, TaskInfo, WorkflowInfo};
