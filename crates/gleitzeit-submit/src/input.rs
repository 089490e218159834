//! Workflow input given on the command line: `--input key=value` pairs and `--input-file`.
//!
//! Values are JSON when they parse as JSON and strings otherwise, so `n=3` is a number and
//! `text=hello world` a string without shell-quoting JSON. Whether a key is allowed is decided by
//! the workflow's validation (only keys the workflow declares), not here.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Why the input flags could not be read. None of these is helped by retrying.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// `--input` without `=`.
    #[error("--input `{0}` is not of the form key=value")]
    NotAPair(String),
    /// `--input =value`.
    #[error("--input `{0}` has an empty key")]
    EmptyKey(String),
    /// The input file could not be read.
    #[error("cannot read input file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The input file is not JSON.
    #[error("input file {} is not valid JSON: {source}", path.display())]
    NotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The input file is JSON but not an object.
    #[error("input file {} must hold a JSON object of input values", path.display())]
    NotAnObject { path: PathBuf },
}

/// Reads `--input-file` (if any), then applies every `--input` pair over it, later pairs winning.
pub fn collect_inputs(
    pairs: &[String],
    file: Option<&Path>,
) -> Result<Map<String, Value>, InputError> {
    let mut input = match file {
        Some(path) => read_input_file(path)?,
        None => Map::new(),
    };
    for pair in pairs {
        let (key, value) = parse_pair(pair)?;
        input.insert(key, value);
    }
    Ok(input)
}

/// Parses one `key=value`; the value is JSON when it parses as JSON, else the raw string.
pub fn parse_pair(pair: &str) -> Result<(String, Value), InputError> {
    let Some((key, raw)) = pair.split_once('=') else {
        return Err(InputError::NotAPair(pair.to_owned()));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(InputError::EmptyKey(pair.to_owned()));
    }
    let value =
        serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    Ok((key.to_owned(), value))
}

fn read_input_file(path: &Path) -> Result<Map<String, Value>, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(InputError::NotAnObject {
            path: path.to_owned(),
        }),
        Err(source) => Err(InputError::NotJson {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    #[test]
    fn values_are_json_when_they_parse_as_json() {
        assert_eq!(parse_pair("n=3").unwrap(), ("n".into(), json!(3)));
        assert_eq!(parse_pair("ok=true").unwrap(), ("ok".into(), json!(true)));
        assert_eq!(
            parse_pair("tags=[\"a\",1]").unwrap(),
            ("tags".into(), json!(["a", 1]))
        );
        assert_eq!(
            parse_pair("o={\"k\":null}").unwrap(),
            ("o".into(), json!({"k": null}))
        );
        assert_eq!(
            parse_pair("s=\"quoted\"").unwrap(),
            ("s".into(), json!("quoted"))
        );
    }

    #[test]
    fn other_values_are_strings_kept_verbatim() {
        assert_eq!(
            parse_pair("text=hello world").unwrap(),
            ("text".into(), json!("hello world"))
        );
        assert_eq!(parse_pair("e=").unwrap(), ("e".into(), json!("")));
        // Only the first '=' separates; the rest belongs to the value.
        assert_eq!(parse_pair("q=a=b").unwrap(), ("q".into(), json!("a=b")));
        assert_eq!(
            parse_pair("x={broken").unwrap(),
            ("x".into(), json!("{broken"))
        );
    }

    #[test]
    fn malformed_pairs_are_refused() {
        assert!(matches!(
            parse_pair("novalue"),
            Err(InputError::NotAPair(_))
        ));
        assert!(matches!(parse_pair("=v"), Err(InputError::EmptyKey(_))));
    }

    #[test]
    fn pairs_override_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "{{\"a\": 1, \"b\": \"from file\"}}").unwrap();
        let input = collect_inputs(&["b=cli".into(), "c=[1]".into()], Some(file.path())).unwrap();
        assert_eq!(Value::Object(input), json!({"a": 1, "b": "cli", "c": [1]}));
    }

    #[test]
    fn bad_input_files_are_reported() {
        let mut not_json = tempfile::NamedTempFile::new().unwrap();
        write!(not_json, "a: 1").unwrap();
        assert!(matches!(
            collect_inputs(&[], Some(not_json.path())),
            Err(InputError::NotJson { .. })
        ));
        let mut array = tempfile::NamedTempFile::new().unwrap();
        write!(array, "[1, 2]").unwrap();
        assert!(matches!(
            collect_inputs(&[], Some(array.path())),
            Err(InputError::NotAnObject { .. })
        ));
        let missing = Path::new("/nonexistent/input.json");
        assert!(matches!(
            collect_inputs(&[], Some(missing)),
            Err(InputError::Read { .. })
        ));
    }
}
