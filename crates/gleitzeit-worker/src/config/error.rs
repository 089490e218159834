//! Why a configuration is refused: [`ConfigError`] and the per-field [`FieldError`].

use std::fmt;
use std::path::PathBuf;

/// One problem with one configuration field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as written in the YAML file (`endpoints[1].url`).
    pub field: String,
    /// What is wrong with it (never contains a secret).
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a configuration cannot be used. None of these is helped by retrying: the operator has to
/// change the file, the environment or the flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (shown in the message, so not chained as a source).
        error: std::io::Error,
    },
    /// The configuration file (or an inline YAML value) is not valid for the schema.
    #[error("{origin} is not a valid worker configuration: {message}")]
    Parse {
        /// Where the text came from (file path, flag or environment variable).
        origin: String,
        /// The parser's message (with line and column where known).
        message: String,
    },
    /// One or more fields have invalid values; every problem found is listed.
    #[error("invalid worker configuration: {}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// The fields named by an [`ConfigError::Invalid`] error (empty for other variants).
    pub fn fields(&self) -> Vec<&str> {
        match self {
            ConfigError::Invalid(errors) => errors.iter().map(|e| e.field.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}
