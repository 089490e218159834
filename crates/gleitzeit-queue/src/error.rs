//! The one error type of the queue layer, classified so callers know whether to retry.

use deadpool_redis::redis::{ErrorKind, RedisError, RetryMethod};
use deadpool_redis::PoolError;

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
    Redis(#[from] RedisError),
    /// No pooled connection could be obtained (Redis unreachable, pool timeout or closed).
    #[error("redis connection pool: {0}")]
    Pool(#[from] PoolError),
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
    /// `submit` was given a workflow id that already exists (nothing was written). Not
    /// retryable with the same id.
    #[error("workflow id {0} already exists")]
    WorkflowExists(String),
}

impl QueueError {
    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            QueueError::Redis(err) => redis_retryable(err),
            QueueError::Pool(err) => match err {
                PoolError::Timeout(_) => true,
                PoolError::Backend(err) => redis_retryable(err),
                PoolError::Closed
                | PoolError::NoRuntimeSpecified
                | PoolError::PostCreateHook(_) => false,
            },
            QueueError::Timeout(_) => true,
            QueueError::UnexpectedReply { .. }
            | QueueError::InvalidNamespace { .. }
            | QueueError::InvalidArgument(_)
            | QueueError::WorkflowExists(_) => false,
        }
    }

    /// Whether the connection the error came from should be thrown away (it may hold a
    /// half-read reply or be closed) and a new one opened.
    pub(crate) fn breaks_connection(&self) -> bool {
        match self {
            QueueError::Redis(err) => {
                err.kind() == ErrorKind::Io
                    || matches!(
                        err.retry_method(),
                        RetryMethod::Reconnect | RetryMethod::ReconnectFromInitialConnections
                    )
            }
            QueueError::Timeout(_) => true,
            _ => false,
        }
    }

    pub(crate) fn unexpected(context: &'static str, detail: impl Into<String>) -> QueueError {
        QueueError::UnexpectedReply {
            context,
            detail: detail.into(),
        }
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
        assert!(!QueueError::Pool(PoolError::Closed).is_retryable());
        assert!(
            QueueError::Pool(PoolError::Timeout(deadpool_redis::TimeoutType::Wait)).is_retryable()
        );
    }
}
