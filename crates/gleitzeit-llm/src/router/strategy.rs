//! How a call chooses among endpoints: the [`Strategy`] and a call's [`Selection`] of tag
//! and provider.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::ProviderKind;

/// How a call chooses among the endpoints that can take it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each call starts at the next endpoint in turn (per process).
    RoundRobin,
    /// The endpoint with the lowest fleet-wide load (slots held / max).
    #[default]
    LeastLoaded,
    /// The lowest `priority` number first; spills over to the next when full.
    Priority,
    /// The lowest moving response time first (endpoints not measured yet are tried first).
    Fastest,
    /// Queue-aware placement: where the model is loaded first, then where it is being loaded
    /// (by any worker), then where it is pulled, then the rest; least loaded among equals. A
    /// second load of a model loaded or loading elsewhere only when the queue's demand for it
    /// needs more slots; only copies nobody uses or needs are evicted; and the fleet's planner
    /// preloads models for ready tasks and tasks about to be ready (`docs/routing.md`).
    ModelAffinity,
}

impl Strategy {
    /// Every strategy, by its configuration name.
    pub const ALL: [Strategy; 5] = [
        Strategy::RoundRobin,
        Strategy::LeastLoaded,
        Strategy::Priority,
        Strategy::Fastest,
        Strategy::ModelAffinity,
    ];
}

impl std::str::FromStr for Strategy {
    type Err = String;

    /// Parses a configuration name (`round_robin`, `least_loaded`, `priority`, `fastest`,
    /// `model_affinity`).
    fn from_str(s: &str) -> Result<Strategy, String> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.to_string() == s)
            .ok_or_else(|| {
                format!("unknown routing strategy {s:?} (round_robin, least_loaded, priority, fastest, model_affinity)")
            })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastLoaded => "least_loaded",
            Strategy::Priority => "priority",
            Strategy::Fastest => "fastest",
            Strategy::ModelAffinity => "model_affinity",
        })
    }
}

/// What one call asks of the endpoints beyond serving its model: a strategy of its own,
/// and which endpoints may take it at all. Endpoints that do not match are not candidates;
/// when none matches, the call fails with [`RouteError::NoEndpoint`] before any request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Overrides [`RouterConfig::strategy`].
    pub strategy: Option<Strategy>,
    /// Only endpoints carrying this tag ([`RouteTarget::tags`]).
    pub tag: Option<String>,
    /// Only endpoints of this kind.
    pub provider: Option<ProviderKind>,
}

impl Selection {
    /// A selection that only overrides the strategy.
    pub fn strategy(strategy: Option<Strategy>) -> Selection {
        Selection {
            strategy,
            ..Selection::default()
        }
    }
}

/// How a [`RouteError::NoEndpoint`] names the selection that matched nothing: empty without
/// one, otherwise ` with tag "gpu"`, ` of provider openai` or both.
pub(super) fn selection_phrase(tag: &Option<String>, provider: &Option<ProviderKind>) -> String {
    let mut s = String::new();
    if let Some(tag) = tag {
        s.push_str(&format!(" with tag {tag:?}"));
    }
    if let Some(kind) = provider {
        if tag.is_some() {
            s.push_str(" and");
        }
        s.push_str(&format!(" of provider {kind}"));
    }
    s
}
