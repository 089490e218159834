//! [`RedisUrl`]: the configured Redis URL, which may carry a password. Its `Debug` and
//! `Display` show it redacted ([`gleitzeit_core::redact_url`]), so the configuration types can
//! derive `Debug` and no log line or error message can print the password by accident.

use std::fmt;
use std::ops::Deref;

use gleitzeit_core::redact_url;
use serde::{Deserialize, Serialize};

/// A Redis URL (`redis://`, `rediss://`, `unix://`, `redis+sentinel://`, `redis+cluster://`).
/// Derefs to the full URL (for connecting); formatting shows it with the password replaced
/// by `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps a URL (not checked here; validation checks it).
    pub fn new(url: impl Into<String>) -> RedisUrl {
        RedisUrl(url.into())
    }

    /// The full URL, password included: for opening connections only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced, for logs and messages.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl Deref for RedisUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl From<String> for RedisUrl {
    fn from(url: String) -> RedisUrl {
        RedisUrl(url)
    }
}

impl From<&str> for RedisUrl {
    fn from(url: &str) -> RedisUrl {
        RedisUrl(url.to_owned())
    }
}

impl PartialEq<str> for RedisUrl {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RedisUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_hides_the_password_and_deref_keeps_it() {
        let url = RedisUrl::from("redis://:hunter2@example.com:6379/0");
        assert_eq!(format!("{url:?}"), "\"redis://:***@example.com:6379/0\"");
        assert_eq!(url.to_string(), "redis://:***@example.com:6379/0");
        assert_eq!(url.redacted(), "redis://:***@example.com:6379/0");
        assert_eq!(&*url, "redis://:hunter2@example.com:6379/0");
        assert_eq!(url, "redis://:hunter2@example.com:6379/0");
        let lone = RedisUrl::new("redis://secret@host");
        assert!(!format!("{lone:?} {lone}").contains("secret"));
    }

    #[test]
    fn serialises_as_the_plain_string() {
        let url: RedisUrl = serde_yaml_ng::from_str("redis://u:p@h:1/2").unwrap();
        assert_eq!(url.as_str(), "redis://u:p@h:1/2");
        assert_eq!(
            serde_json::to_string(&url).unwrap(),
            "\"redis://u:p@h:1/2\""
        );
    }
}
