//! Durations in workflow files: humantime strings (`"500ms"`, `"2m"`, `"1h 30m"`) or plain
//! numbers meaning seconds (`30`, `0.5`). Serialisation always writes the humantime string, so
//! stored specs stay readable and round-trip exactly.

use std::time::Duration;

use serde_json::Value;

/// Why a value is not a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// Neither a string nor a number.
    WrongType,
    /// A negative number of seconds.
    Negative,
    /// A string humantime cannot read, or a number too large to represent.
    Malformed(String),
}

/// Reads a duration from a file value.
pub(crate) fn duration_from_value(v: &Value) -> Result<Duration, DurationError> {
    match v {
        Value::String(s) => parse_duration_str(s),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(Duration::from_secs(u))
            } else if let Some(f) = n.as_f64() {
                if f < 0.0 {
                    Err(DurationError::Negative)
                } else {
                    Duration::try_from_secs_f64(f)
                        .map_err(|e| DurationError::Malformed(format!("{n} seconds: {e}")))
                }
            } else {
                Err(DurationError::Malformed(n.to_string()))
            }
        }
        _ => Err(DurationError::WrongType),
    }
}

/// Reads a humantime string; a leading `-` is reported as negative rather than malformed.
pub(crate) fn parse_duration_str(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(DurationError::Negative);
    }
    humantime::parse_duration(t).map_err(|e| DurationError::Malformed(format!("{s:?}: {e}")))
}

/// Formats a duration the way files and specs write it.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `#[serde(with = ...)]` helpers: write humantime strings, read strings or seconds.
pub(crate) mod serde_duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{format_duration, parse_duration_str, DurationError};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"30s\" or a number of seconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration_str(v).map_err(|e| match e {
                DurationError::Negative => E::custom("negative duration"),
                DurationError::Malformed(m) => E::custom(m),
                DurationError::WrongType => E::custom("not a duration"),
            })
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("negative duration"))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v).map_err(E::custom)
        }
    }
}

/// `#[serde(with = ...)]` helpers for an optional duration (absent or null = `None`).
pub(crate) mod serde_opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    struct Wrapped(#[serde(with = "super::serde_duration")] Duration);

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serde_duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_and_numbers() {
        assert_eq!(
            duration_from_value(&json!("500ms")),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            duration_from_value(&json!("2m")),
            Ok(Duration::from_secs(120))
        );
        assert_eq!(
            duration_from_value(&json!("1h 30m")),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(duration_from_value(&json!(30)), Ok(Duration::from_secs(30)));
        assert_eq!(
            duration_from_value(&json!(0.25)),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            duration_from_value(&json!(-1)),
            Err(DurationError::Negative)
        );
        assert_eq!(
            duration_from_value(&json!(-0.5)),
            Err(DurationError::Negative)
        );
        assert_eq!(
            duration_from_value(&json!("-5s")),
            Err(DurationError::Negative)
        );
        assert!(matches!(
            duration_from_value(&json!("5 parsecs")),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            duration_from_value(&json!("30")),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            duration_from_value(&json!(1e300)),
            Err(DurationError::Malformed(_))
        ));
        assert_eq!(
            duration_from_value(&json!(true)),
            Err(DurationError::WrongType)
        );
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(300),
            Duration::from_secs(86_400),
            Duration::from_nanos(1_000_000_001),
        ] {
            assert_eq!(parse_duration_str(&format_duration(d)), Ok(d));
        }
    }
}
