//! Configuration of the external-task client: where services are (discovery namespace, static
//! addresses), the shared token, TLS trust for `https://` instances, and the limits of
//! connections and calls.
//!
//! It deserializes from the worker's configuration file (YAML/JSON, durations as `"3s"`,
//! `"250ms"`) and is checked by [`ExternalConfig::validate`] before any socket opens.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::keys::{validate_namespace, validate_service_name};

/// Environment variable the token is read from unless the configuration names another source
/// (the same variable the Python service reads).
pub const DEFAULT_TOKEN_ENV: &str = "GLEITZEIT_SERVICE_TOKEN";

/// The configuration is unusable; the message names the field. Not retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid external service configuration: {0}")]
pub struct ConfigError(pub String);

/// Settings of the external-task client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalConfig {
    /// Key namespace of the deployment (`gleitzeit`).
    pub namespace: String,
    /// Instances at fixed addresses, used in addition to the ones registered in Redis.
    pub services: Vec<StaticService>,
    /// Where the shared token comes from.
    pub token: TokenSource,
    /// TLS trust for `https://` instances.
    pub tls: ServiceTls,
    /// Limit for one connect: TCP, handshake and the service's `service:hello`.
    #[serde(deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// How often the instances of each service are read from Redis again.
    #[serde(deserialize_with = "de_duration")]
    pub discovery_interval: Duration,
    /// Deadline of a call that brings none of its own.
    #[serde(deserialize_with = "de_duration")]
    pub default_call_timeout: Duration,
    /// Extra time to wait beyond a call's deadline, so the service's own `timeout` answer (which
    /// says more) arrives before the worker gives up.
    #[serde(deserialize_with = "de_duration")]
    pub timeout_grace: Duration,
    /// How long a call waits for an instance that is still connecting.
    #[serde(deserialize_with = "de_duration")]
    pub ready_wait: Duration,
    /// First delay before rebuilding a broken connection (doubled per failed attempt).
    #[serde(deserialize_with = "de_duration")]
    pub reconnect_min: Duration,
    /// Cap of the reconnect delay.
    #[serde(deserialize_with = "de_duration")]
    pub reconnect_max: Duration,
    /// Largest accepted result, in bytes of JSON.
    pub max_result_bytes: usize,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        ExternalConfig {
            namespace: "gleitzeit".to_owned(),
            services: Vec::new(),
            token: TokenSource::default(),
            tls: ServiceTls::default(),
            connect_timeout: Duration::from_secs(10),
            discovery_interval: Duration::from_secs(3),
            default_call_timeout: Duration::from_secs(300),
            timeout_grace: Duration::from_secs(2),
            ready_wait: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            max_result_bytes: 16 * 1024 * 1024,
        }
    }
}

impl ExternalConfig {
    /// Checks every field; the error names the first problem found.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_namespace(&self.namespace).map_err(ConfigError)?;
        let mut seen = std::collections::HashSet::new();
        for (i, svc) in self.services.iter().enumerate() {
            validate_service_name(&svc.name)
                .map_err(|e| ConfigError(format!("services[{i}].name: {e}")))?;
            if !seen.insert(svc.name.as_str()) {
                return Err(ConfigError(format!(
                    "services[{i}]: service {:?} is listed twice (put all its urls in one entry)",
                    svc.name
                )));
            }
            if svc.urls.is_empty() {
                return Err(ConfigError(format!("services[{i}].urls must not be empty")));
            }
            for (j, url) in svc.urls.iter().enumerate() {
                validate_url(url)
                    .map_err(|e| ConfigError(format!("services[{i}].urls[{j}]: {e}")))?;
            }
        }
        self.token.validate()?;
        if let Some(path) = &self.tls.ca_file {
            if path.as_os_str().is_empty() {
                return Err(ConfigError("tls.ca_file must not be empty".to_owned()));
            }
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("discovery_interval", self.discovery_interval),
            ("default_call_timeout", self.default_call_timeout),
            ("reconnect_min", self.reconnect_min),
            ("reconnect_max", self.reconnect_max),
        ] {
            if value.is_zero() {
                return Err(ConfigError(format!("{name} must be greater than zero")));
            }
        }
        if self.reconnect_min > self.reconnect_max {
            return Err(ConfigError(
                "reconnect_min must not be greater than reconnect_max".to_owned(),
            ));
        }
        if self.max_result_bytes == 0 {
            return Err(ConfigError(
                "max_result_bytes must be greater than zero".to_owned(),
            ));
        }
        Ok(())
    }
}

/// TLS trust for `https://` instances (`tls: {ca_file: /etc/gleitzeit/services-ca.pem}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceTls {
    /// PEM file with the certificate(s) of a private CA. When set, service certificates are
    /// verified against these certificates only (the system's trust store is not consulted, so
    /// a certificate a public CA issued for some other host is never accepted); when unset,
    /// against the system's trust store.
    pub ca_file: Option<PathBuf>,
}

impl ExternalConfig {
    /// The TLS connector for `https://` instances: `None` for the system's trust store, or one
    /// that trusts exactly the certificates in `tls.ca_file`. Host names are always verified.
    ///
    /// # Errors
    /// [`ConfigError`] naming `tls.ca_file` when the file cannot be read, holds no PEM
    /// certificate, or a certificate in it does not parse.
    pub fn tls_connector(&self) -> Result<Option<native_tls::TlsConnector>, ConfigError> {
        let Some(path) = &self.tls.ca_file else {
            return Ok(None);
        };
        let field =
            |message: String| ConfigError(format!("tls.ca_file {}: {message}", path.display()));
        let pem =
            std::fs::read_to_string(path).map_err(|e| field(format!("cannot read it: {e}")))?;
        let mut builder = native_tls::TlsConnector::builder();
        builder.disable_built_in_roots(true);
        let blocks = pem_certificates(&pem);
        if blocks.is_empty() {
            return Err(field("holds no PEM certificate".to_owned()));
        }
        for (i, block) in blocks.iter().enumerate() {
            let cert = native_tls::Certificate::from_pem(block.as_bytes())
                .map_err(|e| field(format!("certificate {} does not parse: {e}", i + 1)))?;
            builder.add_root_certificate(cert);
        }
        builder
            .build()
            .map(Some)
            .map_err(|e| field(format!("cannot build a TLS connector: {e}")))
    }
}

/// Every `CERTIFICATE` block of a PEM text (a CA bundle may hold several; the TLS library
/// parses one at a time).
fn pem_certificates(pem: &str) -> Vec<&str> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
    out
}

/// A service at fixed addresses (`services: [{name, urls: [...]}]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticService {
    /// Service name as workflows use it (`Python Tasks`).
    pub name: String,
    /// `http://host:port` of each instance.
    pub urls: Vec<String>,
}

/// Where the shared token comes from: `token: {env: NAME}` or `token: {file: PATH}`. The token
/// itself never appears in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "TokenSourceFields")]
pub enum TokenSource {
    /// Read from this environment variable.
    Env(String),
    /// Read from this file (surrounding whitespace is trimmed).
    File(PathBuf),
}

/// The written form of [`TokenSource`]: a map with exactly one of `env` and `file` (a map
/// rather than a tagged enum reads the same in YAML and JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSourceFields {
    env: Option<String>,
    file: Option<PathBuf>,
}

impl TryFrom<TokenSourceFields> for TokenSource {
    type Error = String;
    fn try_from(fields: TokenSourceFields) -> Result<Self, Self::Error> {
        match (fields.env, fields.file) {
            (Some(env), None) => Ok(TokenSource::Env(env)),
            (None, Some(file)) => Ok(TokenSource::File(file)),
            _ => Err("token needs exactly one of `env` and `file`".to_owned()),
        }
    }
}

impl Default for TokenSource {
    fn default() -> Self {
        TokenSource::Env(DEFAULT_TOKEN_ENV.to_owned())
    }
}

impl TokenSource {
    fn validate(&self) -> Result<(), ConfigError> {
        match self {
            TokenSource::Env(name) if name.is_empty() || name.contains('=') => Err(ConfigError(
                format!("token.env {name:?} is not an environment variable name"),
            )),
            TokenSource::File(path) if path.as_os_str().is_empty() => {
                Err(ConfigError("token.file must not be empty".to_owned()))
            }
            _ => Ok(()),
        }
    }

    /// Reads the token.
    ///
    /// # Errors
    /// [`ConfigError`] when the variable is unset or empty, or the file cannot be read or is
    /// empty. The message never contains the token.
    pub fn load(&self) -> Result<Token, ConfigError> {
        let raw = match self {
            TokenSource::Env(name) => std::env::var(name).map_err(|_| {
                ConfigError(format!(
                    "token: environment variable {name} is not set (or not UTF-8)"
                ))
            })?,
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("token: cannot read {}: {e}", path.display())))?,
        };
        let token = raw.trim();
        if token.is_empty() {
            return Err(ConfigError(format!("token: {} is empty", self.describe())));
        }
        Ok(Token(token.to_owned()))
    }

    fn describe(&self) -> String {
        match self {
            TokenSource::Env(name) => format!("environment variable {name}"),
            TokenSource::File(path) => format!("file {}", path.display()),
        }
    }
}

/// The shared secret workers present to services. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token value.
    pub fn new(value: impl Into<String>) -> Token {
        Token(value.into())
    }

    /// The secret itself, as the key of the handshake proofs (it is never sent).
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Checks an instance address: `http://` or `https://`, a host, nothing after the port but an
/// optional `/`. (The Socket.IO path is added by the client.)
pub(crate) fn validate_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty()
        || authority.contains('/')
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(format!("{url:?} must be http(s)://host[:port]"));
    }
    Ok(())
}

/// The canonical form of an instance address (no trailing `/`), so a static address and the
/// same address registered in Redis are one instance.
pub(crate) fn normalize_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

fn de_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(text.trim())
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ExternalConfig::default().validate().unwrap();
    }

    #[test]
    fn yaml_with_services_durations_and_token_file() {
        let yaml = r#"
namespace: team-a
services:
  - name: Python Tasks
    urls: ["http://tasks-1:8765", "http://tasks-2:8765/"]
token: {file: /run/secrets/gleitzeit-token}
connect_timeout: 4s
ready_wait: 750ms
max_result_bytes: 1024
"#;
        let cfg: ExternalConfig = serde_yaml_ng::from_str(yaml).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.namespace, "team-a");
        assert_eq!(cfg.services[0].urls.len(), 2);
        assert_eq!(
            cfg.token,
            TokenSource::File("/run/secrets/gleitzeit-token".into())
        );
        assert_eq!(cfg.connect_timeout, Duration::from_secs(4));
        assert_eq!(cfg.ready_wait, Duration::from_millis(750));
        assert_eq!(cfg.max_result_bytes, 1024);
        // Untouched fields keep their defaults.
        assert_eq!(cfg.discovery_interval, Duration::from_secs(3));
    }

    #[test]
    fn token_env_form_and_unknown_fields() {
        let cfg: ExternalConfig = serde_yaml_ng::from_str("token: {env: MY_TOKEN}").unwrap();
        assert_eq!(cfg.token, TokenSource::Env("MY_TOKEN".into()));
        assert!(serde_yaml_ng::from_str::<ExternalConfig>("tokn: x").is_err());
        assert!(serde_yaml_ng::from_str::<ExternalConfig>("token: {env: A, file: /b}").is_err());
        assert!(serde_yaml_ng::from_str::<ExternalConfig>("token: {}").is_err());
        let json: ExternalConfig =
            serde_json::from_str(r#"{"token": {"file": "/run/t"}, "ready_wait": "1s"}"#).unwrap();
        assert_eq!(json.token, TokenSource::File("/run/t".into()));
        assert!(serde_yaml_ng::from_str::<ExternalConfig>("connect_timeout: soon").is_err());
    }

    #[test]
    fn invalid_configurations_name_the_field() {
        let check = |mutate: &dyn Fn(&mut ExternalConfig), needle: &str| {
            let mut cfg = ExternalConfig::default();
            mutate(&mut cfg);
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        };
        check(&|c| c.namespace = "a{b".into(), "namespace");
        let svc = |name: &str, urls: &[&str]| StaticService {
            name: name.into(),
            urls: urls.iter().map(|u| u.to_string()).collect(),
        };
        check(
            &|c| c.services = vec![svc(" x", &["http://a:1"])],
            "services[0].name",
        );
        check(&|c| c.services = vec![svc("x", &[])], "services[0].urls");
        check(
            &|c| c.services = vec![svc("x", &["tcp://a:1"])],
            "services[0].urls[0]",
        );
        check(
            &|c| c.services = vec![svc("x", &["http://a:1/socket.io"])],
            "urls[0]",
        );
        check(
            &|c| c.services = vec![svc("x", &["http://a:1"]), svc("x", &["http://b:1"])],
            "listed twice",
        );
        check(&|c| c.connect_timeout = Duration::ZERO, "connect_timeout");
        check(
            &|c| {
                c.reconnect_min = Duration::from_secs(5);
                c.reconnect_max = Duration::from_secs(1);
            },
            "reconnect_min",
        );
        check(&|c| c.max_result_bytes = 0, "max_result_bytes");
        check(&|c| c.token = TokenSource::Env(String::new()), "token.env");
    }

    #[test]
    fn token_is_loaded_from_a_file_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-value\n").unwrap();
        let token = TokenSource::File(path.clone()).load().unwrap();
        assert_eq!(token.expose_secret(), "s3cret-value");
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(!token.to_string().contains("s3cret"));

        std::fs::write(&path, "  \n").unwrap();
        let err = TokenSource::File(path).load().unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = TokenSource::Env("GLEITZEIT_EXTERNAL_TEST_UNSET_VAR".into())
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("not set"), "{err}");
    }

    #[test]
    fn tls_ca_file_is_read_and_checked() {
        let cfg: ExternalConfig =
            serde_yaml_ng::from_str("tls: {ca_file: /etc/gleitzeit/ca.pem}").unwrap();
        assert_eq!(cfg.tls.ca_file, Some("/etc/gleitzeit/ca.pem".into()));
        assert!(serde_yaml_ng::from_str::<ExternalConfig>("tls: {ca: x}").is_err());
        assert!(ExternalConfig::default().tls_connector().unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let missing = ExternalConfig {
            tls: ServiceTls {
                ca_file: Some(dir.path().join("nope.pem")),
            },
            ..ExternalConfig::default()
        };
        let err = missing.tls_connector().unwrap_err().to_string();
        assert!(
            err.contains("tls.ca_file") && err.contains("nope.pem"),
            "{err}"
        );
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let cfg = ExternalConfig {
            tls: ServiceTls {
                ca_file: Some(not_pem.clone()),
            },
            ..ExternalConfig::default()
        };
        let err = cfg.tls_connector().unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        std::fs::write(
            &not_pem,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = cfg.tls_connector().unwrap_err().to_string();
        assert!(err.contains("certificate 1 does not parse"), "{err}");
        let empty = ExternalConfig {
            tls: ServiceTls {
                ca_file: Some(PathBuf::new()),
            },
            ..ExternalConfig::default()
        };
        assert!(empty
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls.ca_file"));
    }

    #[test]
    fn pem_bundles_split_into_certificates() {
        let one = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----";
        let bundle = format!("# ca 1\n{one}\n# ca 2\n{one}\n");
        assert_eq!(pem_certificates(&bundle), vec![one, one]);
        assert!(pem_certificates("-----BEGIN CERTIFICATE-----\nA").is_empty());
    }

    #[test]
    fn urls_are_normalized() {
        assert_eq!(normalize_url("http://a:1/"), "http://a:1");
        assert_eq!(normalize_url("http://a:1"), "http://a:1");
        assert!(validate_url("https://a.example").is_ok());
    }
}
