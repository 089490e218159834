//! Helpers shared by the integration tests of gleitzeit-core.
#![allow(dead_code)]

use gleitzeit_core::{load_str, ErrorKind, Format, Limits, ValidationError, Workflow};
use serde_json::Map;

/// Loads YAML text with default limits and no overrides.
pub fn load(yaml: &str) -> Result<Workflow, Vec<ValidationError>> {
    load_str(yaml, Format::Yaml, None, &Map::new(), &Limits::default())
}

/// Loads YAML text that must be valid.
pub fn valid(yaml: &str) -> Workflow {
    match load(yaml) {
        Ok(wf) => wf,
        Err(errs) => panic!("expected a valid workflow, got:\n{}", show(&errs)),
    }
}

/// Loads YAML text that must be invalid and returns the errors.
pub fn invalid(yaml: &str) -> Vec<ValidationError> {
    match load(yaml) {
        Ok(wf) => panic!("expected errors, got a valid workflow: {wf:?}"),
        Err(errs) => errs,
    }
}

pub fn show(errs: &[ValidationError]) -> String {
    errs.iter()
        .map(|e| format!("  [{:?}] {e}\n", e.kind))
        .collect()
}

/// The error of this kind at this path; panics with every error when there is none.
pub fn find<'a>(errs: &'a [ValidationError], kind: ErrorKind, path: &str) -> &'a ValidationError {
    errs.iter()
        .find(|e| e.kind == kind && e.path == path)
        .unwrap_or_else(|| panic!("no {kind:?} at {path:?} in:\n{}", show(errs)))
}

/// Asserts the text has exactly one error, of this kind at this path, and returns it.
pub fn only(yaml: &str, kind: ErrorKind, path: &str) -> ValidationError {
    let errs = invalid(yaml);
    assert_eq!(
        errs.len(),
        1,
        "expected exactly one error:\n{}",
        show(&errs)
    );
    find(&errs, kind, path).clone()
}

/// A one-task workflow around the given task body (YAML mapping lines, indented 4).
pub fn one_task(body: &str) -> String {
    format!("name: t\ntasks:\n  - name: A\n{body}")
}
