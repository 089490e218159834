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
    /// The last endpoint tried failed; its error says whether to retry. `earlier` holds the
    /// errors of the endpoints this call tried before it, oldest first.
    #[error("endpoint {endpoint}: {error}{}", earlier_phrase(.earlier))]
    Call {
        /// The endpoint.
        endpoint: String,
        /// Its error.
        error: LlmError,
        /// The endpoints tried before, with their errors.
        earlier: Vec<(String, LlmError)>,
        /// How long, from when the call failed, until any endpoint for the model can be called
        /// again (the first hold, rate limit or budget reset to end); `None` when one can be
        /// called now or nothing is known (a connection refused says nothing of when).
        retry_in: Option<Duration>,
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

    /// Whether every endpoint the call reached failed only with endpoint trouble (see
    /// [`LlmError::is_endpoint_trouble`]), or the call reached none (no slot, cooling down,
    /// slot store failing): the task itself was never tried, so no attempt should count.
    /// False for a call an endpoint refused as such (a bad request, a missing model) and
    /// for a call that failed at an endpoint that could serve it.
    pub fn is_endpoint_trouble(&self) -> bool {
        match self {
            RouteError::Unavailable { .. }
            | RouteError::Saturated { .. }
            | RouteError::Slots(_) => true,
            RouteError::NoEndpoint { .. } | RouteError::Unusable { .. } => false,
            RouteError::Call { error, earlier, .. } => {
                error.is_endpoint_trouble() && earlier.iter().all(|(_, e)| e.is_endpoint_trouble())
            }
        }
    }

    /// How long until any endpoint for the model can be called again, when the router knows
    /// (`retry_in` of [`RouteError::Call`], `retry_after` of [`RouteError::Unavailable`]): a
    /// caller waiting out endpoint trouble need not come back sooner.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            RouteError::Unavailable { retry_after, .. } => Some(*retry_after),
            RouteError::Call { retry_in, .. } => *retry_in,
            _ => None,
        }
    }

    /// Every endpoint error of the call, oldest first (empty when no endpoint answered).
    pub fn endpoint_errors(&self) -> Vec<(&str, &LlmError)> {
        match self {
            RouteError::Call {
                endpoint,
                error,
                earlier,
                ..
            } => earlier
                .iter()
                .map(|(e, err)| (e.as_str(), err))
                .chain(std::iter::once((endpoint.as_str(), error)))
                .collect(),
            _ => Vec::new(),
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

/// How a [`RouteError::Call`] names the endpoints tried before the last one.
fn earlier_phrase(earlier: &[(String, LlmError)]) -> String {
    if earlier.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = earlier
        .iter()
        .map(|(endpoint, error)| format!("{endpoint}: {error}"))
        .collect();
    format!(" (tried before: {})", parts.join("; "))
}
