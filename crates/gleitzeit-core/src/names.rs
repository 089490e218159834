//! Naming rules for workflows, tasks, models, services and functions.
//!
//! Task names appear inside `{{Task.result}}` and model/service names become Redis stream
//! names (`llm:<model>`, `ext:<service>`); the rules keep both unambiguous.

/// The word templates use for the workflow input; no task may be called this.
pub const INPUT: &str = "input";

/// Checks a task name: 1..=`max_len` characters, none of `.`, `{`, `}` or control characters,
/// no leading or trailing whitespace, and not the reserved word `input`.
pub fn check_task_name(name: &str, max_len: usize) -> Result<(), String> {
    check_display_name(name, max_len)?;
    if let Some(c) = name.chars().find(|c| matches!(c, '.' | '{' | '}')) {
        return Err(format!(
            "task name {name:?} contains {c:?}; task names may not contain '.', '{{' or '}}' \
             (they would break `{{{{Task.result}}}}` references)"
        ));
    }
    if name == INPUT {
        return Err(format!(
            "task name {INPUT:?} is reserved for the workflow input (`{{{{input.key}}}}`)"
        ));
    }
    Ok(())
}

/// Checks a workflow name: 1..=`max_len` characters, no control characters, no leading or
/// trailing whitespace.
pub fn check_workflow_name(name: &str, max_len: usize) -> Result<(), String> {
    check_display_name(name, max_len)
}

fn check_display_name(name: &str, max_len: usize) -> Result<(), String> {
    let len = name.chars().count();
    if len == 0 {
        return Err("name must not be empty".to_owned());
    }
    if len > max_len {
        return Err(format!(
            "name is {len} characters long; at most {max_len} are allowed"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("name {name:?} contains control characters"));
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(format!("name {name:?} has leading or trailing whitespace"));
    }
    Ok(())
}

/// Checks a model name: not empty, no `{`, `}` (the hash tag), `#` (it marks priority
/// streams), control characters or whitespace.
pub fn check_model_name(model: &str) -> Result<(), String> {
    if model.is_empty() {
        return Err("model name must not be empty".to_owned());
    }
    if let Some(c) = model
        .chars()
        .find(|c| matches!(c, '{' | '}' | '#') || c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "model name {model:?} contains {c:?}; model names may not contain braces, '#', \
             whitespace or control characters"
        ));
    }
    Ok(())
}

/// Checks a service name: not empty, no `{`, `}`, `#` or control characters, no leading or
/// trailing whitespace (inner spaces are fine: `Python Tasks`).
pub fn check_service_name(service: &str) -> Result<(), String> {
    if service.is_empty() {
        return Err("service name must not be empty".to_owned());
    }
    if let Some(c) = service
        .chars()
        .find(|c| matches!(c, '{' | '}' | '#') || c.is_control())
    {
        return Err(format!(
            "service name {service:?} contains {c:?}; service names may not contain braces, \
             '#' or control characters"
        ));
    }
    if service.starts_with(char::is_whitespace) || service.ends_with(char::is_whitespace) {
        return Err(format!(
            "service name {service:?} has leading or trailing whitespace"
        ));
    }
    Ok(())
}

/// Checks a function name: not empty, no control characters.
pub fn check_function_name(function: &str) -> Result<(), String> {
    if function.is_empty() {
        return Err("function name must not be empty".to_owned());
    }
    if function.chars().any(char::is_control) {
        return Err(format!(
            "function name {function:?} contains control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names() {
        for ok in [
            "Summarize",
            "Extract key points",
            "a",
            "Ünïcödé ✓",
            "x-y_z:1",
            &"n".repeat(128),
        ] {
            assert!(check_task_name(ok, 128).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a.b",
            "a{b",
            "a}b",
            " lead",
            "trail ",
            "tab\there",
            "nl\n",
            "input",
            &"n".repeat(129),
        ] {
            assert!(check_task_name(bad, 128).is_err(), "{bad:?}");
        }
        // Length counts characters, not bytes.
        assert!(check_task_name(&"ü".repeat(128), 128).is_ok());
    }

    #[test]
    fn workflow_names_allow_dots() {
        assert!(check_workflow_name("v1.2 analysis", 128).is_ok());
        assert!(check_workflow_name("", 128).is_err());
        assert!(check_workflow_name("bell\u{7}", 128).is_err());
    }

    #[test]
    fn model_names() {
        for ok in [
            "llama3.2",
            "llama3.2:3b",
            "hf.co/org/model:Q4_K_M",
            "smollm2",
        ] {
            assert!(check_model_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "llama 3", "{{m}}", "a}", "x\u{0}", "tab\t", "m#high"] {
            assert!(check_model_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn service_and_function_names() {
        assert!(check_service_name("Python Tasks").is_ok());
        for bad in ["", "{svc}", "a\nb", " x", "x ", "svc#low"] {
            assert!(check_service_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_function_name("process_data").is_ok());
        assert!(check_function_name("").is_err());
        assert!(check_function_name("a\u{1b}b").is_err());
    }
}
