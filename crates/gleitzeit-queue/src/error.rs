//! The one error type of the queue layer, classified so callers know whether to retry.

use deadpool_redis::redis::{ErrorKind, RedisError, RetryMethod, ServerErrorKind};

use crate::connection::ConnectionError;

/// Why a queue operation failed.
///
/// [`QueueError::is_retryable`] says whether the same call can succeed later (Redis
/// unreachable, restarting, timed out) or will fail the same way again (bad arguments, a
/// reply the code does not understand).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Talking to Redis failed: connection refused or dropped, I/O error, or a server error
    /// reply (a script error, `BUSY`, `LOADING`, ...). Retryable unless Redis says the
    /// command itself is wrong.
    #[error("redis error: {0}")]
    Redis(RedisError),
    /// Redis refused the credentials: wrong password, unknown or disabled user (`WRONGPASS`),
    /// or a password is required and none was given (`NOAUTH`). Not retryable: the same
    /// credentials fail the same way until the URL or the user changes.
    #[error("Redis refused the credentials ({0}); check the user and password in the Redis URL")]
    Auth(String),
    /// The Redis user's ACL does not allow a command or a key this operation uses (`NOPERM`,
    /// or the same refusal of a command inside a script). Not retryable: nothing changes until
    /// the user is granted its role (`gleitzeit-submit acl`, docs/acl.md).
    #[error("{0}")]
    NoPermission(Box<Denied>),
    /// Redis is at `maxmemory` and evicts nothing (`noeviction`): it refuses new work (`OOM`).
    /// Accepted work still finishes (its scripts may run out of memory), and memory comes
    /// back as finished workflows' retention ends. Retryable later, not at once.
    #[error(
        "Redis is full (used memory above maxmemory, policy noeviction) and refuses new work; \
         accepted workflows still finish. Retry once finished workflows expire, or raise \
         maxmemory / shorten retention"
    )]
    OutOfMemory,
    /// Redis did not answer within the configured response timeout. Retryable.
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A reply did not have the shape this code expects (a script and its caller disagree,
    /// or the data was written by something else). Not retryable.
    #[error("unexpected reply from {context}: {detail}")]
    UnexpectedReply {
        /// Which operation got the reply.
        context: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The configured namespace cannot be used in key names. Not retryable.
    #[error("invalid namespace {namespace:?}: {reason}")]
    InvalidNamespace {
        /// The namespace as given.
        namespace: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An argument or configuration value was refused before anything was sent. Not
    /// retryable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The TLS handshake with Redis failed when connecting: the server's certificate is not
    /// trusted, or the server refused this client's (missing) certificate. Not retryable:
    /// the TLS settings have to change.
    #[error("TLS handshake with redis failed: {reason} ({hint})")]
    Tls {
        /// What rustls reported.
        reason: String,
        /// Which setting is likely to fix it.
        hint: &'static str,
    },
    /// A TLS setting is unusable (named in the error). Not retryable.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The workflow was written to the primary, but fewer replicas than
    /// `QueueConfig::replica_acks` confirmed it in time: it runs unless the primary fails
    /// before a replica copies it. Not retryable as such (the id exists now); submitting
    /// again with the same idempotency key is safe.
    #[error("workflow {workflow_id} was written to the primary, but only {acked} of {wanted} replica(s) confirmed it within {timeout_ms} ms: it is lost if the primary fails before a replica copies it. Check the replicas (INFO replication); submitting again with the same idempotency key is safe")]
    NotReplicated {
        /// The workflow written.
        workflow_id: String,
        /// Replicas that confirmed.
        acked: u64,
        /// Replicas asked for.
        wanted: u32,
        /// How long the submission waited.
        timeout_ms: u64,
    },
    /// `submit` was given a workflow id that already exists (nothing was written). Not
    /// retryable with the same id.
    #[error("workflow id {0} already exists")]
    WorkflowExists(String),
    /// The namespace records another shard count than this process was configured with
    /// (`{ns}:shards`): it would read and write keys the rest of the fleet never looks at.
    /// A configuration error, not retryable.
    #[error("namespace {namespace:?} is spread over {recorded} shard(s), but this process is configured for {configured}: set shards to {recorded} (or leave it unset to adopt the namespace's count); moving a namespace that holds work to another count is described in docs/scaling.md")]
    ShardCount {
        /// The namespace.
        namespace: String,
        /// The count this process was given.
        configured: u16,
        /// The count the namespace records.
        recorded: u16,
    },
}

impl QueueError {
    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            QueueError::Redis(err) => redis_retryable(err),
            QueueError::Timeout(_) | QueueError::OutOfMemory => true,
            QueueError::Auth(_)
            | QueueError::NoPermission(_)
            | QueueError::UnexpectedReply { .. }
            | QueueError::InvalidNamespace { .. }
            | QueueError::InvalidArgument(_)
            | QueueError::Connection(_)
            | QueueError::Tls { .. }
            | QueueError::NotReplicated { .. }
            | QueueError::WorkflowExists(_)
            | QueueError::ShardCount { .. } => false,
        }
    }

    /// Whether Redis refused a command because the stream or its consumer group does not
    /// exist (`ERR no such key`, `NOGROUP`): for the readers of stream statistics and
    /// consumers, an empty answer rather than an error. A refused permission is
    /// [`QueueError::NoPermission`], never this.
    pub(crate) fn is_missing_stream(&self) -> bool {
        matches!(self, QueueError::Redis(e)
            if e.kind() == ErrorKind::Server(deadpool_redis::redis::ServerErrorKind::ResponseError)
                || e.code() == Some("NOGROUP"))
    }

    /// Whether the connection the error came from should be thrown away (it may hold a
    /// half-read reply or be closed) and a new one opened.
    pub(crate) fn breaks_connection(&self) -> bool {
        match self {
            QueueError::Redis(err) => {
                err.kind() == ErrorKind::Io
                    // The server was demoted to a replica (a Sentinel failover): a new
                    // connection finds the new primary.
                    || err.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
                    || matches!(
                        err.retry_method(),
                        RetryMethod::Reconnect | RetryMethod::ReconnectFromInitialConnections
                    )
            }
            QueueError::Timeout(_) => true,
            _ => false,
        }
    }

    /// This error as [`QueueError::Tls`] when a failed TLS handshake caused it; otherwise
    /// unchanged. Used where a connection is first opened, so a TLS misconfiguration is
    /// reported as such instead of being retried like an outage.
    pub(crate) fn classify_tls(self) -> QueueError {
        let Some(tls) = self.tls_cause() else {
            return self;
        };
        let hint = match tls {
            rustls::Error::InvalidCertificate(_) => {
                "the server's certificate is not trusted: name its CA with redis_tls_ca \
                 (GLEITZEIT_REDIS_TLS_CA) or SSL_CERT_FILE"
            }
            rustls::Error::AlertReceived(_) => {
                "the server refused this client: it may require a client certificate signed by \
                 a CA it trusts (redis_tls_cert and redis_tls_key)"
            }
            _ => "check the rediss:// URL and the redis_tls_* settings",
        };
        QueueError::Tls {
            reason: tls.to_string(),
            hint,
        }
    }

    /// The rustls error under a connection error (redis-rs wraps it in an I/O error).
    fn tls_cause(&self) -> Option<&rustls::Error> {
        let redis = match self {
            QueueError::Redis(err) => err,
            _ => return None,
        };
        // redis-rs keeps the I/O error behind an `Arc`, which is the source it reports.
        let source = std::error::Error::source(redis)?;
        let io = match source.downcast_ref::<std::io::Error>() {
            Some(io) => io,
            None => source
                .downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()?
                .downcast_ref::<std::io::Error>()?,
        };
        io.get_ref()?.downcast_ref::<rustls::Error>()
    }

    pub(crate) fn unexpected(context: &'static str, detail: impl Into<String>) -> QueueError {
        QueueError::UnexpectedReply {
            context,
            detail: detail.into(),
        }
    }
}

impl From<RedisError> for QueueError {
    /// Credential and permission refusals get their own variants (callers act differently on
    /// them); every other Redis error stays [`QueueError::Redis`].
    fn from(err: RedisError) -> QueueError {
        if let Some(reason) = auth_refusal(&err) {
            return QueueError::Auth(reason);
        }
        if err.code() == Some("OOM") {
            return QueueError::OutOfMemory;
        }
        if err.kind() == ErrorKind::MasterNameNotFoundBySentinel {
            // Not an outage: the URL names a service the sentinels do not monitor.
            return QueueError::Connection(ConnectionError::UnknownSentinelService);
        }
        match Denied::from_error(&err) {
            Some(denied) => QueueError::NoPermission(Box::new(denied)),
            None => QueueError::Redis(err),
        }
    }
}

/// `Some(reason)` when Redis refused the credentials (`WRONGPASS`, `NOAUTH`, or the client
/// library's own "authentication failed" for a refused `AUTH`).
fn auth_refusal(err: &RedisError) -> Option<String> {
    if err.kind() == ErrorKind::AuthenticationFailed {
        return Some(err.detail().map_or_else(
            || "wrong password or unknown user".to_owned(),
            str::to_owned,
        ));
    }
    match err.code() {
        Some("WRONGPASS") => Some("WRONGPASS: wrong password, or unknown or disabled user".into()),
        Some("NOAUTH") => Some("NOAUTH: Redis requires a password and none was given".into()),
        _ => None,
    }
}

/// What a `NOPERM` refusal says: the command Redis named, whether a key was refused, and the
/// script it happened in. Redis names the command on a direct call but not inside a script,
/// and it never names the key; [`Queue::check_role`](crate::Queue::check_role) finds both
/// before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The refused command in ACL notation (`time`, `script|load`), when known.
    pub command: Option<String>,
    /// The refused key, when known (from [`Queue::check_role`](crate::Queue::check_role)).
    pub key: Option<String>,
    /// Whether a key (not the command) was refused.
    pub key_refused: bool,
    /// The script the refusal happened in (its file name, or the function or SHA1 Redis
    /// reported).
    pub script: Option<String>,
    /// Redis's own words.
    pub message: String,
}

impl Denied {
    /// Reads a refusal out of a Redis error: a `NOPERM` reply (also inside an aborted
    /// transaction or a pipeline) or the error a script gets when its user may not run a
    /// command or touch a key. `None` for every other error.
    pub fn from_error(err: &RedisError) -> Option<Denied> {
        let text = err.to_string();
        let lower = text.to_ascii_lowercase();
        let direct_cmd = "no permissions to run the '";
        let in_script_cmd = "can't run this command or subcommand";
        let in_script_key = "can't access at least one of the keys";
        let direct_key = "no permissions to access";
        let script = lower.find("script: ").map(|i| {
            text[i + "script: ".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        });
        if let Some(i) = lower.find(direct_cmd) {
            let rest = &text[i + direct_cmd.len()..];
            let command = rest.split('\'').next().unwrap_or_default().to_owned();
            return Some(Denied {
                command: (!command.is_empty()).then_some(command),
                key: None,
                key_refused: false,
                script: None,
                message: text,
            });
        }
        if lower.contains(in_script_cmd) || lower.contains(in_script_key) {
            return Some(Denied {
                command: None,
                key: None,
                key_refused: lower.contains(in_script_key),
                script,
                message: text,
            });
        }
        if lower.contains(direct_key) && (lower.contains("noperm") || lower.contains("key")) {
            return Some(Denied {
                command: None,
                key: None,
                key_refused: true,
                script: None,
                message: text,
            });
        }
        if err.kind() == ErrorKind::Server(deadpool_redis::redis::ServerErrorKind::NoPerm) {
            return Some(Denied {
                command: None,
                key: None,
                key_refused: false,
                script: None,
                message: text,
            });
        }
        None
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the Redis user lacks a permission: ")?;
        match (&self.command, &self.key) {
            (Some(c), Some(k)) => write!(f, "`{c}` on key `{k}` is not allowed")?,
            (Some(c), None) if self.key_refused => {
                write!(f, "`{c}` may not access one of its keys")?
            }
            (Some(c), None) => write!(f, "command `{c}` is not allowed")?,
            (None, _) if self.key_refused => f.write_str("a key is not allowed")?,
            (None, _) => f.write_str("a command is not allowed")?,
        }
        if let Some(s) = &self.script {
            write!(f, " inside script {s}")?;
        }
        write!(f, " (Redis: {})", self.message.trim())
    }
}

fn redis_retryable(err: &RedisError) -> bool {
    !matches!(err.retry_method(), RetryMethod::NoRetry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadpool_redis::redis::ErrorKind;

    #[test]
    fn classification() {
        let io: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert!(QueueError::Redis(io).is_retryable());
        let type_err: RedisError = (ErrorKind::UnexpectedReturnType, "bad").into();
        assert!(!QueueError::Redis(type_err).is_retryable());
        assert!(QueueError::Timeout(std::time::Duration::from_secs(1)).is_retryable());
        assert!(!QueueError::unexpected("x", "y").is_retryable());
        assert!(!QueueError::InvalidArgument("x".into()).is_retryable());
        assert!(!QueueError::WorkflowExists("x".into()).is_retryable());
        assert!(!QueueError::Tls {
            reason: "x".into(),
            hint: "y"
        }
        .is_retryable());
    }

    #[test]
    fn a_demoted_primary_breaks_the_connection_and_is_retryable() {
        // After a Sentinel failover the old primary answers writes with READONLY: the
        // connection must go (a new one asks the sentinels again) and the call be retried.
        let readonly: RedisError = (
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        )
            .into();
        let err = QueueError::Redis(readonly);
        assert!(err.breaks_connection());
        assert!(err.is_retryable());
        let script_error: RedisError =
            (ErrorKind::Server(ServerErrorKind::ResponseError), "x").into();
        assert!(!QueueError::Redis(script_error).breaks_connection());
    }

    #[test]
    fn tls_handshake_errors_are_recognised_under_the_io_error() {
        let rustls_err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_err);
        let err = QueueError::from(RedisError::from(io)).classify_tls();
        assert!(
            matches!(err, QueueError::Tls { hint, .. } if hint.contains("redis_tls_ca")),
            "{err}"
        );
        assert!(!err.is_retryable());
        // An outage stays an outage.
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        let err = QueueError::Redis(refused).classify_tls();
        assert!(matches!(err, QueueError::Redis(_)) && err.is_retryable());
    }
}
