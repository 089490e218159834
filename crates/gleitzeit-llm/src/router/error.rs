//! [`RouteError`]: why a routed call failed, and what the caller should do next.

use std::time::Duration;

use crate::config::ProviderKind;
use crate::error::{ErrorClass, LlmError};

use super::strategy::selection_phrase;
use super::SlotError;

/// Why a routed call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    /// No endpoint is configured for the model, or none of those that are matches the
    /// call's [`Selection`] (then `tag`/`provider` name what was asked). Fatal.
    #[error(
        "no endpoint{} is configured to serve model {model:?}",
        selection_phrase(.tag, .provider)
    )]
    NoEndpoint {
        /// The model.
        model: String,
        /// The tag the call asked for, when no endpoint serving the model carries it.
        tag: Option<String>,
        /// The provider the call asked for, when it is part of what matched nothing.
        provider: Option<ProviderKind>,
    },
    /// Every endpoint for the model is unusable in this process (credentials refused, each
    /// said it lacks the model, or the model is too large for each). Fatal.
    #[error(
        "no usable endpoint for model {model:?} (credentials refused, model missing or too large)"
    )]
    Unusable {
        /// The model.
        model: String,
    },
    /// Every endpoint for the model is cooling down (breaker open or rate limited) past
    /// the call's deadline. Retry after `retry_after`.
    #[error("no endpoint for model {model:?} is available now")]
    Unavailable {
        /// The model.
        model: String,
        /// When the first endpoint becomes available again.
        retry_after: Duration,
    },
    /// Every endpoint for the model stayed at its concurrency limit until the deadline.
    /// Retryable.
    #[error("every endpoint for model {model:?} stayed at its concurrency limit for {waited:?}")]
    Saturated {
        /// The model.
        model: String,
        /// How long the call waited.
        waited: Duration,
    },
    /// The last endpoint tried failed; its error says whether to retry.
    #[error("endpoint {endpoint}: {error}")]
    Call {
        /// The endpoint.
        endpoint: String,
        /// Its error.
        error: LlmError,
    },
    /// The slot store failed. Retryable.
    #[error(transparent)]
    Slots(#[from] SlotError),
}

impl RouteError {
    /// What the caller should do next.
    pub fn class(&self) -> ErrorClass {
        match self {
            RouteError::NoEndpoint { .. } | RouteError::Unusable { .. } => ErrorClass::Fatal,
            RouteError::Unavailable { retry_after, .. } => ErrorClass::RetryAfter(*retry_after),
            RouteError::Saturated { .. } | RouteError::Slots(_) => ErrorClass::Retry,
            RouteError::Call { error, .. } => error.class(),
        }
    }

    /// The endpoint whose error this is, if one.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            RouteError::Call { endpoint, .. } => Some(endpoint),
            _ => None,
        }
    }
}
