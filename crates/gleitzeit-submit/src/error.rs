//! The CLI's error type: every way a command can fail, each mapped to one [`ExitCode`] and to
//! the `{"error": …}` document printed under `--json`.

use gleitzeit_core::{PlanError, ValidationError};
use gleitzeit_queue::{QueueError, Role, ScriptCode};

use crate::exit::ExitCode;
use crate::input::InputError;
use crate::report::{ErrorDoc, ErrorView, ProblemView};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The workflow failed validation; every problem is listed. Nothing was written. Not
    /// retryable: the workflow must change.
    #[error("{}", invalid_summary(source_name, errors))]
    Invalid {
        /// The file name, or `<stdin>`.
        source_name: String,
        errors: Vec<ValidationError>,
    },
    /// An endpoint to publish breaks the rules of a worker's endpoint configuration; every
    /// problem is listed. Nothing was written. Not retryable: the arguments must change.
    #[error("endpoint {name:?} is not valid ({} problem{})", problems.len(), if problems.len() == 1 { "" } else { "s" })]
    InvalidEndpoint {
        /// The endpoint's name as given.
        name: String,
        /// Each problem, named by its field in the published JSON.
        problems: Vec<gleitzeit_llm::SpecProblem>,
    },
    /// `--input`/`--input-file` could not be used. Not retryable.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Reading the workflow from standard input failed.
    #[error("cannot read the workflow from standard input: {0}")]
    Stdin(#[source] std::io::Error),
    /// A setting was refused before anything was sent (for example a namespace with braces).
    /// Not retryable.
    #[error("{0}")]
    Usage(String),
    /// Redis could not be reached (refused, dropped, timed out). Retrying once Redis is up
    /// can help.
    #[error("cannot reach Redis at {url}: {source}\nIs Redis running? Start one with `redis-server` (or `docker run -p 6379:6379 redis:7`), or point --redis-url / GLEITZEIT_REDIS_URL at yours.")]
    Unreachable {
        /// The URL without its password.
        url: String,
        #[source]
        source: QueueError,
    },
    /// Redis refused the credentials of the URL (wrong password, unknown or disabled user, or
    /// no password where one is required). Not retryable with the same URL.
    #[error("Redis at {url} refused the credentials: {source}\nCheck the user and password in --redis-url / GLEITZEIT_REDIS_URL (redis://USER:PASSWORD@HOST:PORT).")]
    Auth {
        /// The URL without its password.
        url: String,
        #[source]
        source: QueueError,
    },
    /// The Redis user lacks a command or key this command uses. Not retryable until the user
    /// is granted its role.
    #[error("{source}\n{}", permission_hint(*role))]
    Permission {
        /// The role the command runs as, when known.
        role: Option<Role>,
        #[source]
        source: QueueError,
    },
    /// Redis is at maxmemory with `noeviction` and refused new work; nothing was written.
    #[error("Redis at {url} refused new work: {source}")]
    RedisFull {
        /// The URL without its password.
        url: String,
        #[source]
        source: QueueError,
    },
    /// Written to the primary, not confirmed by the replicas asked for (`--replica-acks`).
    #[error("{0}")]
    NotReplicated(#[source] QueueError),
    /// Redis answered something unexpected (a version mismatch or foreign data). Not retryable.
    #[error("unexpected Redis failure: {0}")]
    Redis(#[source] QueueError),
    /// No workflow with this id (never existed, or expired after its retention time).
    #[error("workflow {id} not found (it never existed or has expired)")]
    NotFound { id: String },
    /// No dead letter with this id (never existed, requeued or purged).
    #[error("dead letter {id} not found (see `gleitzeit-submit dead list`)")]
    DeadLetterNotFound { id: String },
    /// The idempotency key already belongs to a workflow with a different body. Nothing was
    /// written. Not retryable with this key.
    #[error("idempotency key {key:?} is already used by workflow {existing_id} with a different body; use another key or submit the same workflow and input")]
    Conflict { key: String, existing_id: String },
    /// A validated workflow could not be planned (a bug: validation should have refused it).
    #[error("cannot plan the workflow: {0}")]
    Plan(#[from] PlanError),
    /// Writing the output failed (for example a closed pipe).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    /// The async runtime could not be started (the process is out of resources).
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The summary line of an invalid workflow; a file that could not be read is said to be
/// unreadable, not invalid.
fn invalid_summary(source_name: &str, errors: &[ValidationError]) -> String {
    if let [only] = errors {
        if only.kind == gleitzeit_core::ErrorKind::UnreadableFile {
            return format!("{source_name}: {}", only.message);
        }
    }
    let n = errors.len();
    format!(
        "{source_name} is not a valid workflow ({n} problem{})",
        if n == 1 { "" } else { "s" }
    )
}

/// What to do about a refused permission, naming the role.
fn permission_hint(role: Option<Role>) -> String {
    match role {
        Some(role) => format!(
            "This command runs as role {role}: give the Redis user the rules printed by `gleitzeit-submit acl --role {role}` (docs/acl.md)."
        ),
        None => "Give the Redis user the rules of its role, printed by `gleitzeit-submit acl` (docs/acl.md).".to_owned(),
    }
}

impl CliError {
    /// A script code the queue's operation says it never returns (the queue already refuses
    /// those; this keeps the caller's match total): an unexpected reply, like any other.
    pub(crate) fn unexpected_code(script: &'static str, code: ScriptCode) -> CliError {
        CliError::Redis(QueueError::UnexpectedReply {
            context: script,
            detail: format!("return code {} ({code:?})", code.code()),
        })
    }

    /// Classifies a queue error: connection trouble is "unreachable", refused arguments and
    /// TLS settings (a bad file, an untrusted certificate) are usage errors, refused
    /// credentials and permissions have their own kinds, anything else is unexpected.
    pub fn from_queue(err: QueueError, url: &str) -> CliError {
        CliError::from_queue_as(err, url, None)
    }

    /// [`CliError::from_queue`] for a command that runs as `role` (named in permission
    /// errors).
    pub fn from_queue_as(err: QueueError, url: &str, role: Option<Role>) -> CliError {
        match err {
            QueueError::Auth(_) => CliError::Auth {
                url: gleitzeit_core::redact_url(url),
                source: err,
            },
            QueueError::NoPermission(_) => CliError::Permission { role, source: err },
            QueueError::NotReplicated { .. } => CliError::NotReplicated(err),
            QueueError::OutOfMemory => CliError::RedisFull {
                url: gleitzeit_core::redact_url(url),
                source: err,
            },
            QueueError::InvalidNamespace { .. }
            | QueueError::InvalidArgument(_)
            | QueueError::Connection(_)
            | QueueError::Tls { .. }
            | QueueError::ShardCount { .. } => CliError::Usage(err.to_string()),
            err if err.is_retryable() => CliError::Unreachable {
                url: gleitzeit_core::redact_url(url),
                source: err,
            },
            err => CliError::Redis(err),
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Invalid { .. }
            | CliError::InvalidEndpoint { .. }
            | CliError::Input(_)
            | CliError::Stdin(_)
            | CliError::Usage(_) => ExitCode::Invalid,
            CliError::Unreachable { .. } => ExitCode::Unreachable,
            CliError::NotFound { .. } | CliError::DeadLetterNotFound { .. } => ExitCode::NotFound,
            CliError::Conflict { .. } => ExitCode::Conflict,
            CliError::Auth { .. } => ExitCode::AuthFailed,
            CliError::Permission { .. } => ExitCode::NoPermission,
            CliError::RedisFull { .. } => ExitCode::RedisFull,
            CliError::NotReplicated(_) => ExitCode::NotReplicated,
            CliError::Redis(_) | CliError::Plan(_) | CliError::Output(_) | CliError::Runtime(_) => {
                ExitCode::Internal
            }
        }
    }

    /// The `kind` of the JSON error document.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Invalid { .. } | CliError::InvalidEndpoint { .. } => "invalid",
            CliError::Input(_) | CliError::Stdin(_) | CliError::Usage(_) => "usage",
            CliError::Unreachable { .. } => "unreachable",
            CliError::NotFound { .. } | CliError::DeadLetterNotFound { .. } => "not_found",
            CliError::Conflict { .. } => "conflict",
            CliError::Auth { .. } => "auth",
            CliError::Permission { .. } => "permission",
            CliError::RedisFull { .. } => "redis_full",
            CliError::NotReplicated(_) => "not_replicated",
            CliError::Redis(_) | CliError::Plan(_) | CliError::Output(_) | CliError::Runtime(_) => {
                "internal"
            }
        }
    }

    /// Lines for people (stderr): the summary and, for invalid workflows, every problem.
    pub fn human_lines(&self) -> Vec<String> {
        match self {
            CliError::Invalid { errors, .. } if !matches!(errors.as_slice(), [e] if e.kind == gleitzeit_core::ErrorKind::UnreadableFile) =>
            {
                let mut lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                lines.push(format!("error: {self}"));
                lines
            }
            CliError::InvalidEndpoint { problems, .. } => {
                let mut lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                lines.push(format!("error: {self}"));
                lines
            }
            other => vec![format!("error: {other}")],
        }
    }

    /// The `--json` error document.
    pub fn to_doc(&self) -> ErrorDoc {
        let errors = match self {
            CliError::Invalid { errors, .. } => errors
                .iter()
                .map(|e| ProblemView {
                    path: e.path.clone(),
                    kind: serde_json::to_value(e.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_else(|| format!("{:?}", e.kind)),
                    message: e.message.clone(),
                })
                .collect(),
            CliError::InvalidEndpoint { problems, .. } => problems
                .iter()
                .map(|p| ProblemView {
                    path: p.field.clone(),
                    kind: "invalid_value".to_owned(),
                    message: p.message.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        let existing_id = match self {
            CliError::Conflict { existing_id, .. } => Some(existing_id.clone()),
            _ => None,
        };
        ErrorDoc {
            error: ErrorView {
                kind: self.kind().to_owned(),
                message: self.to_string(),
                exit_code: self.exit_code().code(),
                errors,
                existing_id,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gleitzeit_core::ErrorKind;

    #[test]
    fn invalid_lists_every_problem_and_exits_2() {
        let err = CliError::Invalid {
            source_name: "wf.yaml".into(),
            errors: vec![
                ValidationError::new(
                    "tasks[0] (A).model",
                    ErrorKind::MissingField,
                    "model is required",
                ),
                ValidationError::new("tasks", ErrorKind::Cycle, "A → B → A"),
            ],
        };
        assert_eq!(err.exit_code(), ExitCode::Invalid);
        assert_eq!(
            err.human_lines(),
            vec![
                "tasks[0] (A).model: model is required".to_owned(),
                "tasks: A → B → A".to_owned(),
                "error: wf.yaml is not a valid workflow (2 problems)".to_owned(),
            ]
        );
        let doc = serde_json::to_value(err.to_doc()).unwrap();
        assert_eq!(doc["error"]["kind"], "invalid");
        assert_eq!(doc["error"]["exit_code"], 2);
        assert_eq!(doc["error"]["errors"][0]["kind"], "missing_field");
        assert_eq!(doc["error"]["errors"][1]["path"], "tasks");
    }

    #[test]
    fn queue_errors_are_classified() {
        let refused: deadpool_redis::redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        let err = CliError::from_queue(QueueError::Redis(refused), "redis://:pw@h:1");
        assert_eq!(err.exit_code(), ExitCode::Unreachable);
        let text = err.to_string();
        assert!(text.contains("redis://:***@h:1"), "{text}");
        assert!(!text.contains("pw"), "{text}");
        assert!(text.contains("redis-server"), "{text}");

        let ns = CliError::from_queue(QueueError::InvalidArgument("bad".into()), "redis://h");
        assert_eq!(ns.exit_code(), ExitCode::Invalid);
        let odd = CliError::from_queue(
            QueueError::UnexpectedReply {
                context: "x",
                detail: "y".into(),
            },
            "redis://h",
        );
        assert_eq!(odd.exit_code(), ExitCode::Internal);
    }

    #[test]
    fn conflict_names_the_existing_workflow() {
        let err = CliError::Conflict {
            key: "k".into(),
            existing_id: "0190-x".into(),
        };
        assert_eq!(err.exit_code(), ExitCode::Conflict);
        let doc = serde_json::to_value(err.to_doc()).unwrap();
        assert_eq!(doc["error"]["existing_id"], "0190-x");
        assert_eq!(doc["error"]["kind"], "conflict");
        assert!(doc["error"].get("errors").is_none());
    }
}
