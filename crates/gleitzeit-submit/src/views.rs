//! Queue task records turned into the report views the commands print (`status`, `results`,
//! `dead inspect`); workflow records are printed as they are.

use gleitzeit_queue::TaskInfo;
use serde_json::Value;

use crate::report::{ResultView, ResultsView, TaskView};

/// A stored error is shown while it explains the task's state; a task that completed after a
/// failed attempt no longer has an error worth showing.
fn visible_error(t: &TaskInfo) -> Option<Value> {
    if t.status == "completed" {
        return None;
    }
    t.error_json.as_deref().map(parse_json)
}

pub(crate) fn task_view(t: &TaskInfo) -> TaskView {
    TaskView {
        index: t.index,
        name: t.name.clone(),
        capability: t.capability.clone(),
        status: t.status.clone(),
        attempts: t.attempts,
        max_attempts: t.max_attempts,
        error: visible_error(t),
        started_ms: t.started_ms,
        finished_ms: t.finished_ms,
        reason: t.reason.clone(),
    }
}

/// Splits a stored `TaskResult` (`{value, meta}`) into result and meta; anything else is shown
/// whole as the result.
fn split_result(text: &str) -> (Value, Option<Value>) {
    match parse_json(text) {
        Value::Object(mut map) if map.contains_key("value") => {
            let value = map.remove("value").unwrap_or(Value::Null);
            let meta = map.remove("meta").filter(|m| !m.is_null());
            (value, meta)
        }
        other => (other, None),
    }
}

pub(crate) fn results_view(tasks: &[TaskInfo]) -> ResultsView {
    ResultsView(
        tasks
            .iter()
            .map(|t| {
                let (result, meta) = match t.result_json.as_deref().map(split_result) {
                    Some((value, meta)) => (Some(value), meta),
                    None => (None, None),
                };
                (
                    t.name.clone(),
                    ResultView {
                        status: t.status.clone(),
                        result,
                        error: visible_error(t),
                        meta,
                        reason: t.reason.clone(),
                    },
                )
            })
            .collect(),
    )
}

/// Stored JSON, or the text itself as a string when it is not JSON (written by something else).
pub(crate) fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_results_split_into_value_and_meta() {
        let (v, m) = split_result(r#"{"value":"hi","meta":{"model":"smollm2"}}"#);
        assert_eq!(v, json!("hi"));
        assert_eq!(m, Some(json!({"model": "smollm2"})));
        let (v, m) = split_result(r#"{"value":[1,2]}"#);
        assert_eq!(v, json!([1, 2]));
        assert_eq!(m, None);
        let (v, m) = split_result("not json");
        assert_eq!(v, json!("not json"));
        assert_eq!(m, None);
    }
}
