//! Templates: `{{ input }}`, `{{ input.key.sub }}`, `{{ Task name.result }}` and
//! `{{ Task name.result.field.sub }}` inside prompts, system prompts, chat contents, images and
//! the string leaves of external `args`/`kwargs`.
//!
//! Rendering is a single pass over the original text: a substituted value is never scanned
//! again, so a result that itself contains `{{X.result}}` reaches the next task literally.
//! `{{ "text" }}` renders `text` verbatim; it is how a literal `{{` is written (`{{ "{{" }}`).
//! Field access (`.field`) works on JSON objects, on arrays by numeric index, and on strings
//! that parse as a JSON object or array (LLM answers often are JSON text).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::model::{Action, Task};
use crate::names::INPUT;

/// What a template refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// `input` (empty path) or `input.key.sub…`.
    Input {
        /// Keys below the input object.
        path: Vec<String>,
    },
    /// `<task>.result` (empty path) or `<task>.result.field.sub…`.
    Result {
        /// Name of the referenced task.
        task: String,
        /// Fields below the result value.
        path: Vec<String>,
    },
}

impl Reference {
    /// The referenced task, if this is a result reference.
    pub fn task(&self) -> Option<&str> {
        match self {
            Reference::Result { task, .. } => Some(task),
            Reference::Input { .. } => None,
        }
    }
}

impl fmt::Display for Reference {
    /// The reference as written inside the braces, e.g. `Summarize.result.title`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, path) = match self {
            Reference::Input { path } => (INPUT.to_owned(), path),
            Reference::Result { task, path } => (format!("{task}.result"), path),
        };
        f.write_str(&head)?;
        for seg in path {
            write!(f, ".{seg}")?;
        }
        Ok(())
    }
}

/// Why a template could not be parsed or rendered. None of these can be fixed by retrying:
/// the workflow (or the referenced result) has to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The text is not a well-formed template.
    #[error("malformed template at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset of the offending `{{`.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// The input has no value at the referenced key path.
    #[error("template `{{{{{reference}}}}}`: the workflow input has no such key")]
    UnknownInput {
        /// The reference as written.
        reference: String,
    },
    /// No result was supplied for the referenced task.
    #[error("template `{{{{{reference}}}}}`: no result of task {task:?} is available")]
    MissingResult {
        /// The referenced task.
        task: String,
        /// The reference as written.
        reference: String,
    },
    /// The referenced result has no value at the field path.
    #[error("template `{{{{{reference}}}}}`: the result of task {task:?} has no field {field:?}")]
    MissingField {
        /// The referenced task.
        task: String,
        /// The field path (dotted).
        field: String,
        /// The reference as written.
        reference: String,
    },
}

/// Values templates are rendered with.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    /// The workflow input (after overrides).
    pub input: &'a Map<String, Value>,
    /// Result values of the referenced tasks, by task name.
    pub results: &'a HashMap<String, Value>,
}

/// One part of a parsed template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Text outside braces, copied as is.
    Text(&'a str),
    /// `{{ "text" }}`: the quoted text, copied as is.
    Literal(&'a str),
    /// `{{ reference }}`.
    Ref(Reference),
}

/// Splits a string into text, literals and references.
pub(crate) fn parse(s: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    while let Some(found) = s[pos..].find("{{") {
        let open = pos + found;
        if open > pos {
            pieces.push(Piece::Text(&s[pos..open]));
        }
        let body = open + 2;
        if let Some((literal, end)) = quoted_literal(s, body) {
            pieces.push(Piece::Literal(literal));
            pos = end;
            continue;
        }
        let Some(close) = s[body..].find("}}") else {
            return Err(TemplateError::Malformed {
                offset: open,
                reason: "`{{` is not closed by `}}` (write `{{ \"{{\" }}` for a literal `{{`)"
                    .to_owned(),
            });
        };
        let inner = &s[body..body + close];
        let reference = parse_reference(inner).map_err(|reason| TemplateError::Malformed {
            offset: open,
            reason,
        })?;
        pieces.push(Piece::Ref(reference));
        pos = body + close + 2;
    }
    if pos < s.len() {
        pieces.push(Piece::Text(&s[pos..]));
    }
    Ok(pieces)
}

/// `{{ "text" }}` starting after the opening braces at `body`: the text and the end offset.
fn quoted_literal(s: &str, body: usize) -> Option<(&str, usize)> {
    let start = body + (s[body..].len() - s[body..].trim_start().len());
    let rest = s[start..].strip_prefix('"')?;
    let quote = rest.find('"')?;
    let literal = &rest[..quote];
    let after = &rest[quote + 1..];
    let after_trimmed = after.trim_start();
    let tail = after_trimmed.strip_prefix("}}")?;
    Some((literal, s.len() - tail.len()))
}

/// Parses the text between the braces.
fn parse_reference(inner: &str) -> Result<Reference, String> {
    let t = inner.trim();
    if t.is_empty() {
        return Err("empty template `{{}}`".to_owned());
    }
    if t.contains(['{', '}']) {
        return Err(format!("unexpected brace in `{{{{{t}}}}}`"));
    }
    let segs: Vec<&str> = t.split('.').map(str::trim).collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(format!("empty name between dots in `{{{{{t}}}}}`"));
    }
    let owned = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    if segs[0] == INPUT {
        return Ok(Reference::Input {
            path: owned(&segs[1..]),
        });
    }
    if segs.len() >= 2 && segs[1] == "result" {
        return Ok(Reference::Result {
            task: segs[0].to_owned(),
            path: owned(&segs[2..]),
        });
    }
    Err(format!(
        "`{{{{{t}}}}}` is not a reference: write `{{{{input.<key>}}}}` for an input value or \
         `{{{{<Task name>.result}}}}` for a task result"
    ))
}

/// The references in one string (malformed templates are an error).
pub(crate) fn string_references(s: &str) -> Result<Vec<Reference>, TemplateError> {
    Ok(parse(s)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Ref(r) => Some(r),
            _ => None,
        })
        .collect())
}

/// Calls `f(field path, text)` for every templated string of an action, in field order.
pub(crate) fn visit_action_strings(action: &Action, f: &mut dyn FnMut(&str, &str)) {
    match action {
        Action::Text { prompt, system, .. } => {
            f("prompt", prompt);
            if let Some(s) = system {
                f("system", s);
            }
        }
        Action::Chat {
            messages, system, ..
        } => {
            if let Some(s) = system {
                f("system", s);
            }
            for (i, m) in messages.iter().enumerate() {
                f(&format!("messages[{i}].content"), &m.content);
            }
        }
        Action::Vision {
            prompt,
            images,
            system,
            ..
        } => {
            f("prompt", prompt);
            if let Some(s) = system {
                f("system", s);
            }
            for (i, img) in images.iter().enumerate() {
                f(&format!("images[{i}]"), img);
            }
        }
        Action::Embed { prompt, .. } => f("prompt", prompt),
        Action::External { args, kwargs, .. } => {
            for (i, v) in args.iter().enumerate() {
                visit_value_strings(&format!("args[{i}]"), v, f);
            }
            for (k, v) in kwargs {
                visit_value_strings(&format!("kwargs.{k}"), v, f);
            }
        }
    }
}

/// Calls `f(path, text)` for every string leaf of a JSON value.
pub(crate) fn visit_value_strings(path: &str, v: &Value, f: &mut dyn FnMut(&str, &str)) {
    match v {
        Value::String(s) => f(path, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                visit_value_strings(&format!("{path}[{i}]"), item, f);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                visit_value_strings(&format!("{path}.{k}"), item, f);
            }
        }
        _ => {}
    }
}

/// Every reference in a task's templates, in order of appearance, without duplicates.
/// Malformed templates are skipped (validation reports them; a validated task has none).
pub fn references(task: &Task) -> Vec<Reference> {
    let mut out: Vec<Reference> = Vec::new();
    visit_action_strings(&task.action, &mut |_, s| {
        if let Ok(refs) = string_references(s) {
            for r in refs {
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
    });
    out
}

/// One step of field access; see the module documentation for what can be stepped into.
fn step<'v>(v: &'v Value, seg: &str) -> Option<Cow<'v, Value>> {
    match v {
        Value::Object(map) => map.get(seg).map(Cow::Borrowed),
        Value::Array(items) => seg
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get(i))
            .map(Cow::Borrowed),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(parsed @ (Value::Object(_) | Value::Array(_))) => {
                step(&parsed, seg).map(|c| Cow::Owned(c.into_owned()))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Follows a field path; `None` when some step does not exist.
pub(crate) fn walk<'v>(root: &'v Value, path: &[String]) -> Option<Cow<'v, Value>> {
    let mut cur = Cow::Borrowed(root);
    for seg in path {
        cur = match cur {
            Cow::Borrowed(b) => step(b, seg)?,
            Cow::Owned(o) => Cow::Owned(step(&o, seg)?.into_owned()),
        };
    }
    Some(cur)
}

/// Follows an input key path; `None` when the input has no such value.
pub(crate) fn walk_input<'v>(
    input: &'v Map<String, Value>,
    path: &[String],
) -> Option<Cow<'v, Value>> {
    match path.split_first() {
        None => Some(Cow::Owned(Value::Object(input.clone()))),
        Some((first, rest)) => walk(input.get(first)?, rest),
    }
}

fn resolve<'c>(r: &Reference, ctx: &RenderContext<'c>) -> Result<Cow<'c, Value>, TemplateError> {
    match r {
        Reference::Input { path } => {
            walk_input(ctx.input, path).ok_or_else(|| TemplateError::UnknownInput {
                reference: r.to_string(),
            })
        }
        Reference::Result { task, path } => {
            let value = ctx
                .results
                .get(task)
                .ok_or_else(|| TemplateError::MissingResult {
                    task: task.clone(),
                    reference: r.to_string(),
                })?;
            walk(value, path).ok_or_else(|| TemplateError::MissingField {
                task: task.clone(),
                field: path.join("."),
                reference: r.to_string(),
            })
        }
    }
}

/// Appends a value as template text: strings as they are, anything else as compact JSON.
fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        other => out.push_str(&other.to_string()),
    }
}

/// Renders a string in one pass; substituted values are never rescanned.
pub fn render_str(s: &str, ctx: &RenderContext<'_>) -> Result<String, TemplateError> {
    let pieces = parse(s)?;
    let mut out = String::with_capacity(s.len());
    for piece in pieces {
        match piece {
            Piece::Text(t) | Piece::Literal(t) => out.push_str(t),
            Piece::Ref(r) => push_value(&mut out, resolve(&r, ctx)?.as_ref()),
        }
    }
    Ok(out)
}

/// Renders every string leaf of a JSON value. A string that is exactly one template becomes
/// the referenced JSON value itself (numbers stay numbers, objects stay objects); any other
/// string is interpolated like [`render_str`].
pub fn render_value(v: &Value, ctx: &RenderContext<'_>) -> Result<Value, TemplateError> {
    Ok(match v {
        Value::String(s) => {
            let mut pieces = parse(s)?;
            if pieces.len() == 1 {
                match pieces.remove(0) {
                    Piece::Ref(r) => return Ok(resolve(&r, ctx)?.into_owned()),
                    Piece::Literal(t) | Piece::Text(t) => return Ok(Value::String(t.to_owned())),
                }
            }
            Value::String(render_str(s, ctx)?)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_value(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, i)| Ok((k.clone(), render_value(i, ctx)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

fn render_opt(
    s: &Option<String>,
    ctx: &RenderContext<'_>,
) -> Result<Option<String>, TemplateError> {
    s.as_deref().map(|s| render_str(s, ctx)).transpose()
}

impl Task {
    /// The task with every template rendered (prompt, system, message contents, images, the
    /// string leaves of args and kwargs). Everything else is copied unchanged.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<Task, TemplateError> {
        let action = match &self.action {
            Action::Text {
                model,
                prompt,
                system,
                options,
            } => Action::Text {
                model: model.clone(),
                prompt: render_str(prompt, ctx)?,
                system: render_opt(system, ctx)?,
                options: options.clone(),
            },
            Action::Chat {
                model,
                messages,
                system,
                options,
            } => Action::Chat {
                model: model.clone(),
                messages: messages
                    .iter()
                    .map(|m| {
                        Ok(crate::model::ChatMessage {
                            role: m.role,
                            content: render_str(&m.content, ctx)?,
                        })
                    })
                    .collect::<Result<_, TemplateError>>()?,
                system: render_opt(system, ctx)?,
                options: options.clone(),
            },
            Action::Vision {
                model,
                prompt,
                images,
                system,
                options,
            } => Action::Vision {
                model: model.clone(),
                prompt: render_str(prompt, ctx)?,
                images: images
                    .iter()
                    .map(|i| render_str(i, ctx))
                    .collect::<Result<_, _>>()?,
                system: render_opt(system, ctx)?,
                options: options.clone(),
            },
            Action::Embed {
                model,
                prompt,
                options,
            } => Action::Embed {
                model: model.clone(),
                prompt: render_str(prompt, ctx)?,
                options: options.clone(),
            },
            Action::External {
                service,
                function,
                args,
                kwargs,
            } => Action::External {
                service: service.clone(),
                function: function.clone(),
                args: args
                    .iter()
                    .map(|a| render_value(a, ctx))
                    .collect::<Result<_, _>>()?,
                kwargs: kwargs
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), render_value(v, ctx)?)))
                    .collect::<Result<_, TemplateError>>()?,
            },
        };
        Ok(Task {
            name: self.name.clone(),
            action,
            dependencies: self.dependencies.clone(),
            retry: self.retry.clone(),
            timeout: self.timeout,
            priority: self.priority,
            on_failure: self.on_failure,
            routing: self.routing.clone(),
        })
    }
}
