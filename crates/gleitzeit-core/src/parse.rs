//! Turning workflow text (YAML or JSON) into a JSON value, keeping syntax errors with their
//! line and column. Schema checks happen afterwards in `validate`, on the value, so that every
//! problem can be reported at once with its path.

use std::path::Path;

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{ErrorKind, ValidationError};

/// The syntax of workflow text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// YAML (JSON documents are YAML too, but errors read better from the JSON parser).
    Yaml,
    /// JSON.
    Json,
    /// JSON when the first non-blank character is `{`, YAML otherwise.
    #[default]
    Auto,
}

impl Format {
    /// The format for a file name: `.json` → JSON, `.yaml`/`.yml` → YAML, anything else → Auto.
    pub fn from_path(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Auto,
        }
    }

    /// Resolves `Auto` by looking at the text.
    fn resolve(self, text: &str) -> Format {
        match self {
            Format::Auto if text.trim_start().starts_with('{') => Format::Json,
            Format::Auto => Format::Yaml,
            other => other,
        }
    }
}

/// Parses workflow text into a JSON value. The only error is a syntax error (with line and
/// column in its path); the value is checked by [`crate::validate`]. Duplicate keys in a
/// mapping are syntax errors too (YAML forbids them; in JSON the later one would silently win).
pub fn parse_workflow(text: &str, format: Format) -> Result<Value, Vec<ValidationError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format.resolve(text) {
        Format::Json => serde_json::from_str::<Strict>(text)
            .map(|s| s.0)
            .map_err(|e| {
                let (line, column) = (e.line(), e.column());
                vec![syntax_error(
                    Some((line, column)),
                    format!(
                        "invalid JSON: {}",
                        strip_location(&e.to_string(), line, column)
                    ),
                )]
            }),
        _ => serde_yaml_ng::from_str::<Strict>(text)
            .map(|s| s.0)
            .map_err(|e| {
                let loc = e.location().map(|l| (l.line(), l.column()));
                let msg = match loc {
                    Some((line, column)) => strip_location(&e.to_string(), line, column),
                    None => e.to_string(),
                };
                vec![syntax_error(loc, format!("invalid YAML: {msg}"))]
            }),
    }
}

fn syntax_error(loc: Option<(usize, usize)>, message: String) -> ValidationError {
    let path = match loc {
        Some((line, column)) => format!("line {line}, column {column}"),
        None => "workflow".to_owned(),
    };
    ValidationError::new(path, ErrorKind::Syntax, message)
}

/// Parsers put " at line L column C" into their messages; the path already says where, so the
/// occurrence naming the error's own position is removed (others, such as where an unclosed
/// sequence started, stay).
fn strip_location(msg: &str, line: usize, column: usize) -> String {
    msg.replacen(&format!(" at line {line} column {column}"), "", 1)
}

/// A JSON value deserialised from any self-describing format, refusing duplicate keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON-compatible value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_and_json_give_the_same_value() {
        let yaml = "name: x\ntasks:\n  - name: a\n    type: text\n";
        let jsn = r#"{"name":"x","tasks":[{"name":"a","type":"text"}]}"#;
        let expected = json!({"name":"x","tasks":[{"name":"a","type":"text"}]});
        assert_eq!(parse_workflow(yaml, Format::Yaml).unwrap(), expected);
        assert_eq!(parse_workflow(yaml, Format::Auto).unwrap(), expected);
        assert_eq!(parse_workflow(jsn, Format::Json).unwrap(), expected);
        assert_eq!(parse_workflow(jsn, Format::Auto).unwrap(), expected);
        assert_eq!(
            parse_workflow(&format!("\u{feff}{jsn}"), Format::Auto).unwrap(),
            expected
        );
    }

    #[test]
    fn yaml_syntax_error_has_line_and_column() {
        let errs = parse_workflow("name: x\ntasks: [a, b\nfoo: 1\n", Format::Yaml).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].kind, ErrorKind::Syntax);
        assert_eq!(errs[0].path, "line 3, column 4", "{}", errs[0]);
        assert!(
            !errs[0].message.contains("line 3 column 4"),
            "{}",
            errs[0].message
        );
        // Where the unclosed sequence started is kept.
        assert!(
            errs[0].message.contains("line 2 column 8"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn json_syntax_error_has_line_and_column() {
        let errs =
            parse_workflow("{\n  \"name\": \"x\",\n  \"tasks\": [}\n", Format::Json).unwrap_err();
        assert_eq!(errs[0].kind, ErrorKind::Syntax);
        assert_eq!(errs[0].path, "line 3, column 13");
        assert!(errs[0].message.starts_with("invalid JSON: "));
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let errs = parse_workflow("name: a\ntasks:\n  - name: x\n    name: y\n", Format::Yaml)
            .unwrap_err();
        assert_eq!(errs[0].kind, ErrorKind::Syntax);
        assert!(
            errs[0].message.contains("duplicate key `name`"),
            "{}",
            errs[0].message
        );
        assert!(errs[0].path.starts_with("line "), "{}", errs[0]);
        let errs = parse_workflow(r#"{"name": "a", "name": "b"}"#, Format::Json).unwrap_err();
        assert_eq!(errs[0].kind, ErrorKind::Syntax);
        assert!(
            errs[0].message.contains("duplicate key `name`"),
            "{}",
            errs[0].message
        );
        assert_eq!(errs[0].path, "line 1, column 26");
    }

    #[test]
    fn yaml_scalars_map_to_json() {
        let v = parse_workflow(
            "a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf: 'x'\ng: [1, {h: 2}]\n3: three\n",
            Format::Yaml,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"a": 1, "b": -2, "c": 1.5, "d": true, "e": null, "f": "x",
                   "g": [1, {"h": 2}], "3": "three"})
        );
        let errs = parse_workflow("t: .nan\n", Format::Yaml).unwrap_err();
        assert!(
            errs[0].message.contains("not a finite number"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn locations_are_stripped_from_messages() {
        assert_eq!(
            strip_location("bad thing at line 3 column 7", 3, 7),
            "bad thing"
        );
        assert_eq!(
            strip_location(
                "no ']' at line 7 column 11, while parsing at line 6 column 2",
                7,
                11
            ),
            "no ']', while parsing at line 6 column 2"
        );
        assert_eq!(strip_location("no location here", 1, 1), "no location here");
    }

    #[test]
    fn format_from_path() {
        assert_eq!(Format::from_path(Path::new("a/b.json")), Format::Json);
        assert_eq!(Format::from_path(Path::new("a/b.YML")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("a/b.yaml")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("a/b")), Format::Auto);
    }
}
