//! Loading workflows from files or text: size check, parsing, image file resolution, then
//! validation. Image entries of vision tasks that name a file (relative to the workflow file)
//! are read and embedded as base64, so the stored spec is self-contained.

use std::fs;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{ErrorKind, ValidationError};
use crate::images::{encode, encoded_len, excerpt, is_templated, normalize_base64};
use crate::limits::Limits;
use crate::model::Workflow;
use crate::parse::{parse_workflow, Format};
use crate::validate::{task_label, validate};

/// Loads and validates a workflow file (format from the extension; image paths relative to the
/// file's directory).
pub fn load_file(path: &Path, limits: &Limits) -> Result<Workflow, Vec<ValidationError>> {
    load_file_with_input(path, &Map::new(), limits)
}

/// Like [`load_file`], with input overrides (each key must be declared in the file's `input`).
pub fn load_file_with_input(
    path: &Path,
    input_overrides: &Map<String, Value>,
    limits: &Limits,
) -> Result<Workflow, Vec<ValidationError>> {
    let shown = path.display().to_string();
    let unreadable = |e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
            _ => e.to_string(),
        };
        vec![ValidationError::new(
            shown.clone(),
            ErrorKind::UnreadableFile,
            format!("cannot read the workflow file: {why}"),
        )]
    };
    let meta = fs::metadata(path).map_err(unreadable)?;
    if meta.len() > limits.max_workflow_bytes as u64 {
        return Err(vec![too_large(meta.len(), limits)]);
    }
    let text = fs::read_to_string(path).map_err(unreadable)?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    load_str(
        &text,
        Format::from_path(path),
        Some(base),
        input_overrides,
        limits,
    )
}

/// Loads and validates workflow text. With `base_dir`, image entries naming a file are read
/// relative to it; without, every image must be base64.
pub fn load_str(
    text: &str,
    format: Format,
    base_dir: Option<&Path>,
    input_overrides: &Map<String, Value>,
    limits: &Limits,
) -> Result<Workflow, Vec<ValidationError>> {
    if text.len() > limits.max_workflow_bytes {
        return Err(vec![too_large(text.len() as u64, limits)]);
    }
    let mut value = parse_workflow(text, format)?;
    let mut errs = Vec::new();
    if let Some(dir) = base_dir {
        resolve_image_files(&mut value, dir, limits, &mut errs);
    }
    match validate(&value, input_overrides, limits) {
        Ok(wf) if errs.is_empty() => Ok(wf),
        Ok(_) => Err(errs),
        Err(more) => {
            // An image already reported as an unreadable file is not also "invalid base64".
            let reported: Vec<String> = errs.iter().map(|e| e.path.clone()).collect();
            errs.extend(
                more.into_iter().filter(|e| {
                    !(e.kind == ErrorKind::InvalidBase64 && reported.contains(&e.path))
                }),
            );
            Err(errs)
        }
    }
}

fn too_large(len: u64, limits: &Limits) -> ValidationError {
    ValidationError::new(
        "workflow",
        ErrorKind::WorkflowTooLarge,
        format!(
            "the workflow text is {len} bytes; at most {} are allowed",
            limits.max_workflow_bytes
        ),
    )
}

/// Replaces image entries of vision tasks that name an existing file with the file's base64.
fn resolve_image_files(
    value: &mut Value,
    dir: &Path,
    limits: &Limits,
    errs: &mut Vec<ValidationError>,
) {
    let Some(tasks) = value.get_mut("tasks").and_then(Value::as_array_mut) else {
        return;
    };
    for (i, task) in tasks.iter_mut().enumerate() {
        let label = task_label(i, task);
        if task.get("type").and_then(Value::as_str) != Some("vision") {
            continue;
        }
        let Some(images) = task.get_mut("images").and_then(Value::as_array_mut) else {
            continue;
        };
        for (j, image) in images.iter_mut().enumerate() {
            let Some(s) = image.as_str() else { continue };
            if is_templated(s) || s.starts_with("data:") {
                continue;
            }
            let path = format!("{label}.images[{j}]");
            let file = dir.join(s);
            match fs::metadata(&file) {
                Ok(meta) if meta.is_file() => {
                    if encoded_len(meta.len()) > limits.max_task_bytes as u64 {
                        errs.push(ValidationError::new(
                            path,
                            ErrorKind::TaskTooLarge,
                            format!(
                                "image file {} is {} bytes; as base64 it exceeds the task limit \
                                 of {} bytes",
                                file.display(),
                                meta.len(),
                                limits.max_task_bytes
                            ),
                        ));
                        continue;
                    }
                    match fs::read(&file) {
                        Ok(bytes) => *image = Value::String(encode(&bytes)),
                        Err(e) => errs.push(ValidationError::new(
                            path,
                            ErrorKind::UnreadableImage,
                            format!("cannot read image file {}: {e}", file.display()),
                        )),
                    }
                }
                Ok(_) => errs.push(ValidationError::new(
                    path,
                    ErrorKind::UnreadableImage,
                    format!("image path {} is not a regular file", file.display()),
                )),
                // Not a file: base64 data is checked by validation. Something that cannot be
                // base64 ('.' and '\\' are not in its alphabet) was meant as a path.
                Err(e) if normalize_base64(s).is_err() && s.contains(['.', '/', '\\']) => errs
                    .push(ValidationError::new(
                        path,
                        ErrorKind::UnreadableImage,
                        format!(
                            "cannot read image file {} ({}): {e}",
                            excerpt(s),
                            file.display()
                        ),
                    )),
                Err(_) => {}
            }
        }
    }
}
