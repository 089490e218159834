//! Warnings about a valid workflow: things that pass validation but are most likely not what
//! the author meant. Today one: a single-brace look-alike of a placeholder (`{input}`,
//! `{Summarize.result}`) reaches the model literally, since only `{{…}}` is a template.
//! Prompts may contain braces for good reasons (JSON examples, code), so these are warnings,
//! not errors, and only names that a double-brace template would resolve are reported.

use serde::Serialize;

use crate::model::Workflow;
use crate::names::INPUT;
use crate::template::visit_action_strings;

/// Something the workflow says that is probably a mistake; the workflow is still valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Where, written like a validation error's path (`tasks[1] (Title).prompt`).
    pub path: String,
    /// What is wrong and how to write it instead.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The warnings of a validated workflow, in task and field order.
pub fn lint(wf: &Workflow) -> Vec<Warning> {
    let names: Vec<&str> = wf.tasks.iter().map(|t| t.name.as_str()).collect();
    let mut out = Vec::new();
    for (i, task) in wf.tasks.iter().enumerate() {
        visit_action_strings(&task.action, &mut |field, text| {
            for inner in single_brace_spans(text) {
                if refers_to_something(inner, &names) {
                    out.push(Warning {
                        path: format!("tasks[{i}] ({}).{field}", task.name),
                        message: format!(
                            "`{{{inner}}}` is sent to the model literally; write `{{{{{inner}}}}}` \
                             to insert the value (only double braces are templates)"
                        ),
                    });
                }
            }
        });
    }
    out
}

/// Whether `inner` (already trimmed) names the input or a task's result the way a template
/// would: `input`, `input.key`, `Task`, `Task.result`, `Task.result.field`.
fn refers_to_something(inner: &str, tasks: &[&str]) -> bool {
    if inner == INPUT || inner.starts_with("input.") {
        return true;
    }
    tasks.iter().any(|name| {
        inner == *name
            || inner
                .strip_prefix(name)
                .is_some_and(|rest| rest == ".result" || rest.starts_with(".result."))
    })
}

/// The trimmed contents of every `{…}` in `text` that is not part of a `{{…}}` template (and
/// holds no brace itself).
fn single_brace_spans(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // A template: skip to its closing `}}`.
        if bytes[i] == b'{' && bytes.get(i + 1) == Some(&b'{') {
            match text[i + 2..].find("}}") {
                Some(end) => i += 2 + end + 2,
                None => break,
            }
            continue;
        }
        if bytes[i] == b'{' {
            let rest = &text[i + 1..];
            match rest.find(['{', '}']) {
                Some(end) if rest.as_bytes()[end] == b'}' => {
                    out.push(rest[..end].trim());
                    i += 1 + end + 1;
                }
                _ => i += 1,
            }
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_skip_templates_and_nested_braces() {
        assert_eq!(single_brace_spans("a {input} b"), vec!["input"]);
        assert_eq!(
            single_brace_spans("{{input}} and { X.result }"),
            vec!["X.result"]
        );
        assert_eq!(single_brace_spans("{{ \"{\" }} {a}"), vec!["a"]);
        assert_eq!(single_brace_spans(r#"{"k": {"n": 1}}"#), vec![r#""n": 1"#]);
        assert!(single_brace_spans("no braces").is_empty());
        assert!(single_brace_spans("{unclosed").is_empty());
    }

    #[test]
    fn only_names_a_template_would_resolve() {
        let tasks = ["Extract", "Title"];
        for hit in [
            "input",
            "input.text",
            "Extract",
            "Extract.result",
            "Title.result.x",
        ] {
            assert!(refers_to_something(hit, &tasks), "{hit}");
        }
        for miss in [
            "inputs",
            "Extractor",
            "Extract.results",
            "name",
            "\"k\": 1",
            "",
        ] {
            assert!(!refers_to_something(miss, &tasks), "{miss}");
        }
    }
}
