//! [`Secret`]: an API key that cannot leak through formatting.
//!
//! Endpoint configurations are logged and errors are stored in Redis; keeping the key in a type
//! whose `Debug` and `Display` are redacted means no `{:?}` of a config or error can print it.

use std::fmt;

/// Placeholder printed instead of a secret value.
pub const REDACTED: &str = "[REDACTED]";

/// A credential (for example an API key). Its value is only reachable through
/// [`Secret::expose`]; `Debug` and `Display` print [`REDACTED`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The credential itself, for building the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret in `text` with [`REDACTED`].
    ///
    /// Servers sometimes echo the key they were sent (for example in a 401 body); error messages
    /// pass through here so they never carry it onward.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_owned();
        }
        text.replace(&self.0, REDACTED)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("sk-very-secret-123");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), format!("Secret({REDACTED})"));
        assert!(!format!("{s:#?}").contains("sk-very"));
        // Nested in a derived Debug, too.
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            key: Option<Secret>,
        }
        let h = Holder {
            key: Some(s.clone()),
        };
        assert!(!format!("{h:?}").contains("sk-very"));
        assert_eq!(s.expose(), "sk-very-secret-123");
    }

    #[test]
    fn scrub_removes_every_occurrence() {
        let s = Secret::new("abc123");
        assert_eq!(
            s.scrub("bad key abc123, really abc123!"),
            format!("bad key {REDACTED}, really {REDACTED}!")
        );
        assert_eq!(Secret::new("").scrub("unchanged"), "unchanged");
    }
}
