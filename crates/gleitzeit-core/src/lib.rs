//! Gleitzeit's workflow core: the workflow model and its file format (YAML and JSON), the
//! validation that reports every problem at once, `{{…}}` templates, planning for the queue
//! (indices, dependents, capabilities, digest), retry arithmetic, task outcome types and a
//! builder for workflows in code, and the messages of the task-service protocol ([`protocol`],
//! `docs/protocol.md`) with its authentication handshake ([`handshake`]).
//!
//! The crate is pure — no I/O besides reading workflow and image files in [`load_file`] and the
//! clock ([`now_ms`]), no async, no Redis — so everything here is unit-tested directly. It also
//! holds the small pieces every other crate shares: [`now_ms`] and [`redact_url`].
//!
//! Typical use by a submitter:
//!
//! ```
//! use gleitzeit_core::{load_str, plan, Format, Limits};
//! use serde_json::Map;
//!
//! let text = "name: demo\ntasks:\n  - name: Hello\n    type: text\n    model: smollm2\n    prompt: Say hello\n";
//! let wf = load_str(text, Format::Yaml, None, &Map::new(), &Limits::default()).expect("valid");
//! let plan = plan(&wf).expect("plannable");
//! assert_eq!(plan.tasks[0].capability, "llm:smollm2");
//! ```

mod builder;
mod clock;
mod duration;
mod error;
mod graph;
pub mod handshake;
mod images;
mod limits;
mod lint;
mod load;
mod model;
pub mod names;
mod outcome;
mod parse;
pub mod pattern;
mod plan;
pub mod protocol;
mod redact;
mod retry;
mod template;
mod validate;

pub use builder::WorkflowBuilder;
pub use clock::now_ms;
pub use duration::format_duration;
pub use error::{ErrorKind, ValidationError};
pub use limits::Limits;
pub use lint::{lint, Warning};
pub use load::{load_file, load_file_with_input, load_str};
pub use model::{
    capability, Action, ChatMessage, FailurePolicy, LlmOptions, Priority, Role, Task, TaskRouting,
    TaskType, UnknownPriority, Workflow, DEFAULT_TIMEOUT, ROUTING_PROVIDERS, ROUTING_STRATEGIES,
};
pub use outcome::{FailureKind, ResultMeta, TaskFailure, TaskResult};
pub use parse::{parse_workflow, Format};
pub use plan::{canonical_json, digest, plan, Plan, PlanError, PlannedTask};
pub use redact::redact_url;
pub use retry::{Backoff, RetryPolicy};
pub use template::{references, render_str, render_value, Reference, RenderContext, TemplateError};
pub use validate::validate;
