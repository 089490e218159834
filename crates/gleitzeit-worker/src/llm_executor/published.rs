//! Endpoints published to the fleet (`gleitzeit-submit endpoints add|remove|strategy`,
//! [`gleitzeit_queue::published`]), as this worker takes them.
//!
//! With `published_endpoints: adopt` a watcher reads the version counter every
//! [`CHECK_INTERVAL`] (one `GET`, never on a task's path) and, when it moved, reads what is
//! published, checks each endpoint with the rules of the configuration file, resolves its key
//! variable from this process's environment, merges the valid ones after the file's endpoints
//! (the file's win on a name clash) and replaces the executor's router for new calls. Calls in
//! flight finish on the router they started on. Each problem is logged once (WARN for an
//! endpoint skipped, INFO for a name clash), not on every check.
//!
//! With `ignore`, the watcher only looks until something is published, says once that this
//! worker does not adopt it, and stops.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use gleitzeit_llm::{PublishedEndpoint, Secret, Strategy};
use gleitzeit_queue::{Published, Queue};
use tracing::{debug, info, warn};

use super::LlmExecutor;
use crate::config::{PublishedEndpoints, ResolvedEndpoint};

/// How often the version counter is read.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The endpoints a router is built over from one reading of what is published, and the
/// strategy it uses.
#[derive(Debug, Clone)]
pub(crate) struct Adoption {
    /// The file's endpoints, then the valid published ones.
    pub(crate) endpoints: Vec<ResolvedEndpoint>,
    /// Names of the published endpoints taken.
    pub(crate) adopted: Vec<String>,
    /// The published strategy when valid, else the file's.
    pub(crate) strategy: Strategy,
}

/// Remembers what was already logged, so each problem is reported once.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    seen: HashSet<String>,
}

impl Notes {
    /// Whether `note` is new (and remembers it).
    fn first(&mut self, note: String) -> bool {
        self.seen.insert(note)
    }
}

/// Merges what is published with the file's endpoints: every published entry checked like a
/// file endpoint, its key read through `env`; entries that cannot be used are skipped with a
/// WARN (once per distinct problem).
pub(crate) fn adoption(
    file: &[ResolvedEndpoint],
    file_strategy: Strategy,
    published: &Published,
    env: &dyn Fn(&str) -> Option<String>,
    notes: &mut Notes,
) -> Adoption {
    let mut endpoints = file.to_vec();
    let mut adopted = Vec::new();
    for (name, raw) in &published.endpoints {
        match usable(name, raw, file, env) {
            Ok(ep) => {
                adopted.push(ep.name.clone());
                endpoints.push(ep);
            }
            Err(Skip::Clash) => {
                if notes.first(format!("clash {name}")) {
                    info!(
                        endpoint = %name,
                        "a published endpoint has the name of an endpoint of this worker's configuration; the configured one is used"
                    );
                }
            }
            Err(Skip::Invalid(reason)) => {
                if notes.first(format!("invalid {name} {raw} {reason}")) {
                    warn!(endpoint = %name, reason = %reason, "published endpoint skipped");
                }
            }
        }
    }
    let strategy = match published.strategy.as_deref().map(str::parse::<Strategy>) {
        None => file_strategy,
        Some(Ok(s)) => s,
        Some(Err(reason)) => {
            if notes.first(format!("strategy {reason}")) {
                warn!(reason = %reason, "published routing strategy ignored");
            }
            file_strategy
        }
    };
    Adoption {
        endpoints,
        adopted,
        strategy,
    }
}

/// Why a published entry is not used.
enum Skip {
    /// A file endpoint has its name.
    Clash,
    /// It breaks a rule, or its key cannot be read; the reason never holds a key.
    Invalid(String),
}

/// One published entry as an endpoint of this worker.
fn usable(
    name: &str,
    raw: &str,
    file: &[ResolvedEndpoint],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ResolvedEndpoint, Skip> {
    let p: PublishedEndpoint = serde_json::from_str(raw)
        .map_err(|e| Skip::Invalid(format!("not a published endpoint ({e})")))?;
    if p.endpoint.name != name {
        return Err(Skip::Invalid(format!(
            "published under {name:?} but named {:?}",
            p.endpoint.name
        )));
    }
    let problems = p.problems();
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(Skip::Invalid(text.join("; ")));
    }
    if file.iter().any(|f| f.name == name) {
        return Err(Skip::Clash);
    }
    let api_key = match &p.endpoint.api_key_env {
        None => None,
        Some(var) => match env(var) {
            Some(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_owned())),
            Some(_) => {
                return Err(Skip::Invalid(format!(
                    "environment variable {var} is empty on this worker"
                )))
            }
            None => {
                return Err(Skip::Invalid(format!(
                    "environment variable {var} is not set on this worker"
                )))
            }
        },
    };
    // The provider's own checks (an unusable URL for the HTTP client) skip it here rather
    // than refuse the whole router.
    let ep = ResolvedEndpoint {
        name: p.endpoint.name,
        kind: p.endpoint.kind,
        url: p.endpoint.url,
        api_key,
        models: p.endpoint.models,
        timeout: p.endpoint.timeout,
        routing: p.routing,
    };
    gleitzeit_llm::Provider::new(super::route_target(&ep).endpoint)
        .map_err(|e| Skip::Invalid(e.to_string()))?;
    Ok(ep)
}

impl LlmExecutor {
    /// Starts the watcher of the published endpoints in `mode` (needs a fleet executor and a
    /// tokio runtime; does nothing otherwise). It stops when the executor is dropped.
    pub fn start_published(self: &Arc<Self>, mode: PublishedEndpoints) {
        let Some(queue) = self.queue.clone() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let weak = Arc::downgrade(self);
        let task = match mode {
            PublishedEndpoints::Adopt => tokio::spawn(adopt_loop(weak, queue)),
            PublishedEndpoints::Ignore => tokio::spawn(notice_loop(queue)),
        };
        self.background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }
}

/// `adopt`: follows the version counter and replaces the router when what is used changes.
async fn adopt_loop(executor: Weak<LlmExecutor>, queue: Queue) {
    let mut notes = Notes::default();
    let mut version: Option<u64> = None;
    // What the current router was built from: (adopted names with their raw values, strategy).
    let mut in_use: (Vec<(String, String)>, Option<String>) = (Vec::new(), None);
    let mut failing = false;
    loop {
        let Some(ex) = executor.upgrade() else {
            return;
        };
        match check(&ex, &queue, version, &mut in_use, &mut notes).await {
            Ok(v) => {
                version = Some(v);
                if failing {
                    info!("published endpoints readable again");
                    failing = false;
                }
            }
            Err(e) => {
                // Redis trouble is the loops' to report; say it once here, then at DEBUG.
                if !failing {
                    warn!(error = %e, "cannot read the published endpoints; trying again");
                    failing = true;
                } else {
                    debug!(error = %e, "cannot read the published endpoints");
                }
            }
        }
        drop(ex);
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

/// One check: returns the version now in use.
async fn check(
    ex: &LlmExecutor,
    queue: &Queue,
    version: Option<u64>,
    in_use: &mut (Vec<(String, String)>, Option<String>),
    notes: &mut Notes,
) -> Result<u64, gleitzeit_queue::QueueError> {
    let now = queue.published_version().await?;
    if version == Some(now) {
        return Ok(now);
    }
    let published = queue.published().await?;
    let file_strategy = ex
        .parts
        .routing
        .strategy_for(ex.parts.file_endpoints.iter().map(|e| e.kind));
    let env = |name: &str| std::env::var(name).ok();
    let a = adoption(
        &ex.parts.file_endpoints,
        file_strategy,
        &published,
        &env,
        notes,
    );
    let basis = (
        a.adopted
            .iter()
            .map(|n| (n.clone(), published.endpoints[n].clone()))
            .collect::<Vec<_>>(),
        (a.strategy != file_strategy).then(|| a.strategy.to_string()),
    );
    if &basis == in_use {
        return Ok(published.version);
    }
    match ex.replace_router(&a.endpoints, a.strategy) {
        Ok(()) => {
            info!(
                version = published.version,
                endpoints = %a.adopted.join(","),
                strategy = %a.strategy,
                "published endpoints adopted"
            );
            *in_use = basis;
        }
        Err(e) => {
            if notes.first(format!("router {e}")) {
                warn!(error = %e, "published endpoints not adopted: the router could not be built");
            }
        }
    }
    Ok(published.version)
}

/// `ignore`: looks until something is published, then says once that it is not adopted.
async fn notice_loop(queue: Queue) {
    loop {
        if let Ok(n) = queue.published_count().await {
            if n > 0 {
                info!(
                    "{n} endpoints are published in Redis but this worker does not adopt them (set published_endpoints: adopt)"
                );
                return;
            }
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EndpointKind, EndpointRouting};
    use std::collections::BTreeMap;

    fn file(name: &str) -> ResolvedEndpoint {
        ResolvedEndpoint {
            name: name.into(),
            kind: EndpointKind::Ollama,
            url: "http://127.0.0.1:1".into(),
            api_key: None,
            models: vec!["*".into()],
            timeout: Duration::from_secs(5),
            routing: EndpointRouting::default(),
        }
    }

    fn entry(name: &str, extra: serde_json::Value) -> String {
        let mut endpoint = serde_json::json!({"name": name, "kind": "openai", "url": "http://h:1"});
        if let (Some(e), Some(x)) = (endpoint.as_object_mut(), extra.as_object()) {
            e.extend(x.clone());
        }
        serde_json::json!({"endpoint": endpoint, "routing": {"priority": 3}}).to_string()
    }

    #[test]
    fn valid_entries_join_the_file_and_the_rest_are_skipped() {
        let published = Published {
            endpoints: BTreeMap::from([
                ("ok".to_owned(), entry("ok", serde_json::json!({}))),
                ("dead".to_owned(), entry("dead", serde_json::json!({}))),
                (
                    "bad".to_owned(),
                    entry("bad", serde_json::json!({"url": "ftp://h"})),
                ),
                (
                    "keyed".to_owned(),
                    entry("keyed", serde_json::json!({"api_key_env": "THE_KEY"})),
                ),
                (
                    "nokey".to_owned(),
                    entry("nokey", serde_json::json!({"api_key_env": "NOT_SET"})),
                ),
                ("junk".to_owned(), "{".to_owned()),
            ]),
            strategy: Some("priority".into()),
            version: 7,
        };
        let env = |n: &str| (n == "THE_KEY").then(|| "k-123".to_owned());
        let mut notes = Notes::default();
        let a = adoption(
            &[file("dead")],
            Strategy::LeastLoaded,
            &published,
            &env,
            &mut notes,
        );
        let names: Vec<&str> = a.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["dead", "keyed", "ok"]);
        assert_eq!(a.adopted, ["keyed", "ok"]);
        assert_eq!(a.strategy, Strategy::Priority);
        assert_eq!(a.endpoints[2].routing.priority, 3);
        assert!(a.endpoints[1].api_key.is_some());
        // The file's endpoint kept its own settings.
        assert_eq!(a.endpoints[0].kind, EndpointKind::Ollama);
        // Each problem is noted once: a second reading logs nothing new.
        let before = notes.seen.len();
        adoption(
            &[file("dead")],
            Strategy::LeastLoaded,
            &published,
            &env,
            &mut notes,
        );
        assert_eq!(notes.seen.len(), before);
        assert_eq!(before, 4, "{:?}", notes.seen);
    }

    #[test]
    fn an_unknown_published_strategy_keeps_the_file_one() {
        let published = Published {
            strategy: Some("fastest_ever".into()),
            ..Published::default()
        };
        let a = adoption(
            &[],
            Strategy::RoundRobin,
            &published,
            &|_| None,
            &mut Notes::default(),
        );
        assert_eq!(a.strategy, Strategy::RoundRobin);
        assert!(a.endpoints.is_empty());
    }
}
