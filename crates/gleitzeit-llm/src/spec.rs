//! Endpoints as operators write them: the shapes of a worker configuration file's `endpoints`
//! entries ([`EndpointSpec`]) and `routing.endpoints.<name>` attributes ([`EndpointRouting`]),
//! an endpoint published to the fleet in Redis ([`PublishedEndpoint`]), and the rules every
//! one of them is checked against.
//!
//! The rules live here, beside the runtime [`crate::EndpointConfig`], so the worker (reading its
//! file and the published endpoints) and the operator CLI (publishing them) apply the same
//! checks with the same messages. They are pure: no environment, no file system, no socket.
//! Checks report `(field, message)` pairs with the field relative to the checked value
//! (`url`, `models[1]`, `max_concurrent`); each caller prefixes its own path.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::config::ProviderKind as EndpointKind;

/// Where a check reports a problem: the field (relative to the checked value) and the message.
pub type Report<'a> = dyn FnMut(&str, String) + 'a;

/// One LLM endpoint as configured. The API key is never written here: only the name of the
/// environment variable or the path of the file that holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Name used in logs and task result metadata; unique among endpoints.
    pub name: String,
    /// Provider API.
    pub kind: EndpointKind,
    /// Base URL (`http://host:port`; OpenAI-compatible URLs without the `/v1` suffix).
    pub url: String,
    /// Environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// File holding the API key (surrounding whitespace is trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// Models this endpoint serves; `"*"` means any model.
    #[serde(default = "any_model")]
    pub models: Vec<String>,
    /// Limit for one HTTP request to this endpoint.
    #[serde(default = "default_endpoint_timeout", with = "duration_serde")]
    pub timeout: Duration,
}

fn any_model() -> Vec<String> {
    vec!["*".to_owned()]
}

/// The default `timeout` of an endpoint.
pub fn default_endpoint_timeout() -> Duration {
    Duration::from_secs(300)
}

impl EndpointSpec {
    /// An endpoint serving any model with the default timeout and no key.
    pub fn new(name: impl Into<String>, kind: EndpointKind, url: impl Into<String>) -> Self {
        EndpointSpec {
            name: name.into(),
            kind,
            url: url.into(),
            api_key_env: None,
            api_key_file: None,
            models: any_model(),
            timeout: default_endpoint_timeout(),
        }
    }

    /// The endpoint used when none is configured: a local Ollama serving any model.
    pub fn default_ollama() -> EndpointSpec {
        EndpointSpec::new("ollama", EndpointKind::Ollama, "http://127.0.0.1:11434")
    }
}

/// What routing knows about one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointRouting {
    /// Lower is tried first by the `priority` strategy.
    pub priority: i32,
    /// Most calls in flight on the endpoint across the whole fleet; unset = unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Whether the endpoint runs models on a GPU.
    pub gpu: bool,
    /// Memory available for models, GB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_gb: Option<f64>,
    /// Free-form labels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Most models the endpoint keeps loaded at once (Ollama's `OLLAMA_MAX_LOADED_MODELS`),
    /// so `model_affinity` can foresee evictions; unset = unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_loaded: Option<u32>,
    /// Models loaded on the endpoint when the worker starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preload: Vec<String>,
}

/// An endpoint published to the fleet (`{ns}:published:endpoints`, one JSON value per name):
/// the file configuration's two shapes side by side. Its key may only be named by
/// environment variable, resolved on each worker that adopts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedEndpoint {
    /// As an entry of the file's `endpoints` list.
    pub endpoint: EndpointSpec,
    /// As the file's `routing.endpoints.<name>`.
    #[serde(default)]
    pub routing: EndpointRouting,
}

/// One problem with one field of a published endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The field in the published JSON (`endpoint.url`, `routing.max_concurrent`).
    pub field: String,
    /// What is wrong with it (never contains a key).
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl PublishedEndpoint {
    /// Every problem of this endpoint under the file configuration's rules, plus the one rule
    /// of publishing: no `api_key_file` (a path means nothing on another machine, and a key
    /// is only ever named by its environment variable). Empty: valid.
    pub fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        let mut report = |prefix: &str, field: &str, message: String| {
            out.push(SpecProblem {
                field: format!("{prefix}.{field}"),
                message,
            })
        };
        check_endpoint(&self.endpoint, &mut |f, m| report("endpoint", f, m));
        if self.endpoint.api_key_file.is_some() {
            report(
                "endpoint",
                "api_key_file",
                "a published endpoint names its key by environment variable only (api_key_env)"
                    .to_owned(),
            );
        }
        check_routing(&self.routing, &mut |f, m| report("routing", f, m));
        out
    }
}

/// The checks of one endpoint on its own (name, URL, models, timeout, the key's variable name);
/// uniqueness among endpoints and reading the key are the caller's.
pub fn check_endpoint(spec: &EndpointSpec, err: &mut Report<'_>) {
    if let Some(problem) = endpoint_name_problem(&spec.name) {
        err("name", problem);
    }
    match reqwest::Url::parse(&spec.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
        Ok(u) => err(
            "url",
            format!(
                "must be an http(s) URL with a host, got scheme {:?}",
                u.scheme()
            ),
        ),
        Err(e) => err("url", format!("not a valid URL ({e})")),
    }
    if spec.models.is_empty() {
        err(
            "models",
            "must list at least one model (\"*\" = any)".to_owned(),
        );
    }
    for (j, m) in spec.models.iter().enumerate() {
        if m.is_empty()
            || m.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        {
            err(
                &format!("models[{j}]"),
                format!("{m:?} is not a valid model name"),
            );
        }
    }
    if spec.timeout.is_zero() {
        err("timeout", "must be longer than zero".to_owned());
    }
    if let Some(problem) = spec.api_key_env.as_deref().and_then(api_key_env_problem) {
        err("api_key_env", problem);
    }
}

/// Why `name` cannot name an endpoint (it is part of Redis keys and of log lines).
pub fn endpoint_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Some("must be non-empty without control characters".to_owned());
    }
    None
}

/// The checks of one endpoint's routing attributes.
pub fn check_routing(r: &EndpointRouting, err: &mut Report<'_>) {
    if r.max_loaded == Some(0) {
        err(
            "max_loaded",
            "must be at least 1 (leave it out when unknown)".to_owned(),
        );
    }
    check_model_list(err, "preload", &r.preload);
    if r.max_concurrent == Some(0) {
        err(
            "max_concurrent",
            "must be at least 1 (leave it out for no limit)".to_owned(),
        );
    }
    if let Some(gb) = r.memory_gb {
        if !gb.is_finite() || gb <= 0.0 {
            err("memory_gb", format!("must be a positive number, got {gb}"));
        }
    }
    for (j, t) in r.tags.iter().enumerate() {
        if t.trim().is_empty() || t.chars().any(char::is_control) {
            err(
                &format!("tags[{j}]"),
                "must be non-empty without control characters".to_owned(),
            );
        }
    }
}

/// Model names of a preload list: each reported as `<at>[j]`.
pub fn check_model_list(err: &mut Report<'_>, at: &str, models: &[String]) {
    for (j, m) in models.iter().enumerate() {
        if m.trim().is_empty() || m.chars().any(|c| c.is_control() || c.is_whitespace()) {
            err(
                &format!("{at}[{j}]"),
                "must be a model name without whitespace or control characters".to_owned(),
            );
        }
    }
}

/// Prefixes of well-known API key formats that also happen to be valid variable names.
const KEY_PREFIXES: [&str; 9] = [
    "sk_",
    "pk_",
    "rk_",
    "gsk_",
    "hf_",
    "ghp_",
    "gho_",
    "github_pat_",
    "AIza",
];

/// Why `var` cannot be the name of the environment variable holding a key: not a variable
/// name, or shaped like a key itself. The message never repeats the value (it may be a key).
pub fn api_key_env_problem(var: &str) -> Option<String> {
    let mut chars = var.chars();
    let is_name = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !is_name {
        return Some(
            "must be the name of an environment variable (letters, digits and _, not starting \
             with a digit) that holds the key on the workers, never the key itself (the value \
             is not shown)"
                .to_owned(),
        );
    }
    if looks_like_key(var) {
        return Some(
            "looks like an API key, not the name of an environment variable: give the name of \
             the variable that holds the key on the workers (the value is not shown)"
                .to_owned(),
        );
    }
    None
}

/// Whether a valid variable name is more likely a key: a known key prefix, or a long run
/// mixing upper- and lower-case letters with digits, or a long run without any `_` word
/// break — shapes conventional variable names (`OPENAI_API_KEY`) do not have.
fn looks_like_key(var: &str) -> bool {
    if KEY_PREFIXES.iter().any(|p| var.starts_with(p)) {
        return true;
    }
    let has = |f: fn(&char) -> bool| var.chars().any(|c| f(&c));
    let mixed =
        has(char::is_ascii_lowercase) && has(char::is_ascii_uppercase) && has(char::is_ascii_digit);
    (var.len() >= 24 && mixed) || (var.len() >= 32 && !var.contains('_'))
}

/// Serde for durations: humantime strings or numbers of seconds in, humantime strings out
/// (the worker configuration's duration format).
pub mod duration_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
    }

    /// Parses a duration: a humantime string (`"500ms"`, `"2m"`) or a number of seconds.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        if let Ok(secs) = t.parse::<f64>() {
            return Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("{t:?} is not a valid number of seconds"));
        }
        humantime::parse_duration(t).map_err(|e| format!("{t:?} is not a duration ({e})"))
    }

    /// Writes a duration as humantime text (`"5m"`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads a humantime string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Duration::try_from_secs_f64(s).map_err(|_| {
                serde::de::Error::custom(format!("{s} is not a valid number of seconds"))
            }),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(json: serde_json::Value) -> PublishedEndpoint {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_published_endpoint_round_trips_in_the_file_shapes() {
        let p = published(serde_json::json!({
            "endpoint": {"name": "gpu", "kind": "openai", "url": "http://10.0.0.5:8000",
                         "api_key_env": "OPENAI_API_KEY", "models": ["m"], "timeout": "90s"},
            "routing": {"priority": 1, "gpu": true, "max_concurrent": 4, "tags": ["fast"]}
        }));
        assert!(p.problems().is_empty(), "{:?}", p.problems());
        assert_eq!(p.endpoint.timeout, Duration::from_secs(90));
        let text = serde_json::to_value(&p).unwrap();
        assert_eq!(text["endpoint"]["timeout"], "1m 30s");
        assert_eq!(published(text), p);
        // The routing part may be left out.
        let bare = published(serde_json::json!({
            "endpoint": {"name": "a", "kind": "ollama", "url": "http://h:11434"}
        }));
        assert_eq!(bare.routing, EndpointRouting::default());
        assert_eq!(bare.endpoint.models, ["*"]);
    }

    #[test]
    fn problems_name_the_published_field() {
        let mut p = published(serde_json::json!({
            "endpoint": {"name": " ", "kind": "ollama", "url": "ftp://h", "models": ["a b"],
                         "timeout": 0, "api_key_file": "/k"},
            "routing": {"max_concurrent": 0, "memory_gb": -1, "tags": [""], "max_loaded": 0}
        }));
        let fields: Vec<String> = p.problems().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "endpoint.name",
                "endpoint.url",
                "endpoint.models[0]",
                "endpoint.timeout",
                "endpoint.api_key_file",
                "routing.max_loaded",
                "routing.max_concurrent",
                "routing.memory_gb",
                "routing.tags[0]",
            ]
        );
        p.endpoint.api_key_file = None;
        p.endpoint.api_key_env = Some("sk-live-0123456789abcdef".into());
        let problems = p.problems();
        let key = problems
            .iter()
            .find(|e| e.field == "endpoint.api_key_env")
            .unwrap();
        assert!(!key.message.contains("sk-live"), "{key}");
    }

    #[test]
    fn variable_names_pass_and_keys_do_not() {
        for ok in [
            "OPENAI_API_KEY",
            "MY_KEY",
            "K",
            "_X",
            "GZT_LOG_TEST_API_KEY",
            "my_key",
        ] {
            assert_eq!(api_key_env_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "sk-proj-abc",
            "1KEY",
            "A B",
            "sk_live_51H8abc",
            "hf_abcdefghijklmnop",
            "AbCdEfGh12345678IjKlMnOp",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
        ] {
            assert!(api_key_env_problem(bad).is_some(), "{bad}");
        }
    }
}
