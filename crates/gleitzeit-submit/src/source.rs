//! Loading the workflow named on the command line (a file or `-` for standard input) and
//! validating it with its input overrides. Everything here is local: no socket is opened, so
//! `validate` works without Redis and `submit` writes nothing for an invalid workflow.

use std::io::Read;
use std::path::Path;

use gleitzeit_core::{load_file_with_input, load_str, Format, Limits, Workflow};

use crate::cli::{FormatArg, SourceArgs};
use crate::error::CliError;
use crate::input::collect_inputs;

/// The name `-` stands for standard input.
const STDIN: &str = "-";

/// Reads, parses and validates the workflow of `args` with its `--input`/`--input-file`.
///
/// Standard input is read with the core's size limit (one byte more, so the limit is reported
/// rather than the text silently cut). Image paths of vision tasks resolve relative to the
/// workflow file, or to the working directory for standard input.
pub fn load_workflow(args: &SourceArgs, limits: &Limits) -> Result<Workflow, CliError> {
    let input = collect_inputs(&args.inputs, args.input_file.as_deref())?;
    let is_stdin = args.file.as_os_str() == STDIN;
    let source_name = if is_stdin {
        "<stdin>".to_owned()
    } else {
        args.file.display().to_string()
    };
    let invalid = |errors| CliError::Invalid {
        source_name: source_name.clone(),
        errors,
    };
    if is_stdin {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .take(limits.max_workflow_bytes as u64 + 1)
            .read_to_string(&mut text)
            .map_err(CliError::Stdin)?;
        return load_str(
            &text,
            format(args.format),
            Some(Path::new(".")),
            &input,
            limits,
        )
        .map_err(invalid);
    }
    match args.format {
        // The core reads the file, taking the format from the extension.
        FormatArg::Auto => load_file_with_input(&args.file, &input, limits).map_err(invalid),
        explicit => {
            let text = std::fs::read_to_string(&args.file).map_err(|e| {
                invalid(vec![gleitzeit_core::ValidationError::new(
                    source_name.clone(),
                    gleitzeit_core::ErrorKind::UnreadableFile,
                    format!("cannot read the workflow file: {e}"),
                )])
            })?;
            let base = match args.file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            load_str(&text, format(explicit), Some(base), &input, limits).map_err(invalid)
        }
    }
}

fn format(arg: FormatArg) -> Format {
    match arg {
        FormatArg::Yaml => Format::Yaml,
        FormatArg::Json => Format::Json,
        FormatArg::Auto => Format::Auto,
    }
}
