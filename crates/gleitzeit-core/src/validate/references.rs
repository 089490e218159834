//! Template references between tasks: the dependencies the `{{Task.result}}` references in a
//! task's strings imply, checked against the task names and the workflow's input.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::checker::Checker;
use super::fields::{at, declared_keys};
use super::task::Draft;
use crate::error::ErrorKind;
use crate::template::{string_references, walk_input, Reference};

/// An implied dependency: task `from` references the result of task `to` in `field`.
pub(super) struct Implied {
    pub(super) to: usize,
    pub(super) field: String,
    pub(super) reference: String,
}

/// The dependencies each task's template references imply (one per referenced task, first
/// reference wins), after reporting malformed templates, unknown input keys, unknown tasks and
/// references to a task's own result.
pub(super) fn implied_edges(
    c: &mut Checker<'_>,
    drafts: &[Draft],
    index: &HashMap<&str, usize>,
    input: &Map<String, Value>,
) -> Vec<Vec<Implied>> {
    let n = drafts.len();
    let mut implied: Vec<Vec<Implied>> = (0..n).map(|_| Vec::new()).collect();
    for (i, d) in drafts.iter().enumerate() {
        for (f, text) in &d.templates {
            let refs = string_references(text);
            let path = at(&d.label, f);
            let refs = match refs {
                Ok(r) => r,
                Err(e) => {
                    c.err(path, ErrorKind::MalformedTemplate, e.to_string());
                    continue;
                }
            };
            for r in refs {
                match &r {
                    Reference::Input { path: keys } => {
                        if walk_input(input, keys).is_none() {
                            c.err(
                                path.clone(),
                                ErrorKind::UnknownInputKey,
                                format!(
                                    "`{{{{{r}}}}}`: the input has no key `{}` ({})",
                                    keys.join("."),
                                    declared_keys(input)
                                ),
                            );
                        }
                    }
                    Reference::Result { task, .. } => match index.get(task.as_str()) {
                        None => c.err(
                            path.clone(),
                            ErrorKind::UnknownTaskReference,
                            format!("`{{{{{r}}}}}`: no task is named {task:?}"),
                        ),
                        Some(&j) if j == i => c.err(
                            path.clone(),
                            ErrorKind::ReferenceCycle,
                            format!("`{{{{{r}}}}}`: a task cannot reference its own result"),
                        ),
                        Some(&j) => {
                            if !implied[i].iter().any(|x| x.to == j) {
                                implied[i].push(Implied {
                                    to: j,
                                    field: f.to_owned(),
                                    reference: r.to_string(),
                                });
                            }
                        }
                    },
                }
            }
        }
    }
    implied
}
