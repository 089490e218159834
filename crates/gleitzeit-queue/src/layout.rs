//! Reading task fields of workflows in any task layout.
//!
//! Workflows submitted by this version keep their tasks' fields in the workflow hash
//! (`<i>.<field>`, [`task_field`]), the packed layout ([`LAYOUT_PACKED`]): a task's state, its
//! definition and its children are one field each, the rest fields of their own. Workflows
//! written by earlier versions, which can still be in flight during a rolling upgrade, keep
//! one field per task field ([`LAYOUT_FIELDS`]) or one hash per task ([`Keys::task`]). A
//! reader asks a workflow's `layout` field first ([`TaskLayout::of`]), then reads the fields
//! where that layout keeps them ([`TaskLayout::hmget`], [`TaskLayout::values`]); a reader of
//! tasks of many workflows ([`TaskReads`]) asks each workflow once, in one pipeline.

use std::collections::HashMap;

use deadpool_redis::redis::{self, FromRedisValue, Value};

use crate::error::QueueError;
use crate::keys::{
    task_field, unpacked_task_fields, Keys, CHILDREN_FIELD, DEFINITION_FIELD, DEFINITION_PARTS,
    LAYOUT_FIELD, LAYOUT_FIELDS, LAYOUT_PACKED, STATE_FIELD, STATE_PARTS,
};
use crate::queue::Queue;

const CTX: &str = "task fields";

/// Where a workflow's tasks are stored, as its workflow hash's `layout` field
/// ([`LAYOUT_FIELD`]) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskLayout {
    /// Fields of the workflow hash, the state, definition and children packed
    /// ([`LAYOUT_PACKED`]): every workflow submitted by this version once the fleet runs it.
    Packed,
    /// Fields `<i>.<field>` of the workflow hash, the state packed ([`LAYOUT_FIELDS`]):
    /// written while a worker of the version before is live.
    Fields,
    /// One hash per task ([`Keys::task`]): no `layout` field, written by an earlier
    /// version.
    TaskHashes,
}

/// Where a task field is kept in the packed and fields layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// A field of its own, `<i>.<field>`.
    Own,
    /// A part of the state field.
    State,
    /// A part of the definition field (packed layout).
    Definition,
    /// The children field (packed layout).
    Children,
}

impl TaskLayout {
    /// The layout of workflow `workflow_id`, whose `layout` field is `layout`. A layout this
    /// version does not know (written by a newer one) is an error, not a misread.
    ///
    /// # Errors
    /// [`QueueError::UnexpectedReply`] for an unknown layout.
    pub(crate) fn of(workflow_id: &str, layout: Option<&str>) -> Result<TaskLayout, QueueError> {
        match layout {
            Some(LAYOUT_PACKED) => Ok(TaskLayout::Packed),
            Some(LAYOUT_FIELDS) => Ok(TaskLayout::Fields),
            None => Ok(TaskLayout::TaskHashes),
            Some(other) => Err(QueueError::unexpected(
                CTX,
                format!(
                    "workflow {workflow_id} stores its tasks in layout {other:?}, unknown to \
                     this version"
                ),
            )),
        }
    }

    /// Where this layout keeps task field `field` (task hashes: every field its own).
    fn stored(self, field: &str) -> Stored {
        match self {
            TaskLayout::TaskHashes => Stored::Own,
            _ if STATE_PARTS.contains(&field) => Stored::State,
            TaskLayout::Packed if DEFINITION_PARTS.contains(&field) => Stored::Definition,
            TaskLayout::Packed if field == "children" => Stored::Children,
            _ => Stored::Own,
        }
    }

    /// The packed fields (kind, name) a read of `fields` asks for, in this order: each once
    /// if any field it holds is asked for, the state also when the children are (it tells
    /// whether a task without a children field exists). None for task hashes.
    fn packed_reads(self, fields: &[&str]) -> Vec<(Stored, &'static str)> {
        let wants = |s: Stored| fields.iter().any(|f| self.stored(f) == s);
        [
            (Stored::State, STATE_FIELD),
            (Stored::Definition, DEFINITION_FIELD),
            (Stored::Children, CHILDREN_FIELD),
        ]
        .into_iter()
        .filter(|&(kind, _)| wants(kind) || (kind == Stored::State && wants(Stored::Children)))
        .collect()
    }

    /// The hash fields that hold `fields` of task `index`: each field of its own by its name,
    /// in order, then the packed ones ([`TaskLayout::packed_reads`]). Task hashes: the fields
    /// themselves.
    fn stored_names(self, index: u32, fields: &[&str]) -> Vec<String> {
        if self == TaskLayout::TaskHashes {
            return fields.iter().map(|f| (*f).to_owned()).collect();
        }
        fields
            .iter()
            .filter(|f| self.stored(f) == Stored::Own)
            .copied()
            .chain(self.packed_reads(fields).into_iter().map(|(_, name)| name))
            .map(|f| task_field(index, f))
            .collect()
    }

    /// Adds to `pipe` the `HMGET` of `fields` (task field names without the `<i>.` prefix)
    /// of task `index` of workflow `workflow_id` (keys `keys`, its shard's) in this layout.
    /// Its reply, through [`TaskLayout::values`], is the fields' values in that order.
    pub(crate) fn hmget(
        self,
        pipe: &mut redis::Pipeline,
        keys: &Keys,
        workflow_id: &str,
        index: u32,
        fields: &[&str],
    ) {
        let key = match self {
            TaskLayout::TaskHashes => keys.task(workflow_id, index),
            _ => keys.workflow(workflow_id),
        };
        pipe.cmd("HMGET")
            .arg(key)
            .arg(self.stored_names(index, fields));
    }

    /// The values of `fields`, in order, from the reply of [`TaskLayout::hmget`] for the same
    /// fields: packed fields are taken apart (a part of the state is absent when empty; the
    /// children of a packed task without a children field are `""`, as the other layouts
    /// store them).
    pub(crate) fn values(self, fields: &[&str], row: Vec<Option<String>>) -> Vec<Option<String>> {
        if self == TaskLayout::TaskHashes {
            return row;
        }
        let mut stored = row.into_iter();
        // The fields of their own come first, in order; then the packed ones.
        let own: Vec<Option<String>> = fields
            .iter()
            .filter(|f| self.stored(f) == Stored::Own)
            .map(|_| stored.next().flatten())
            .collect();
        let mut unpacked: HashMap<&str, String> = HashMap::new();
        let mut exists = false;
        for (kind, field) in self.packed_reads(fields) {
            if let Some(v) = stored.next().flatten() {
                exists |= kind == Stored::State;
                for (f, part) in unpacked_task_fields(field, &v).unwrap_or_default() {
                    unpacked.insert(f, part);
                }
            }
        }
        let mut own = own.into_iter();
        fields
            .iter()
            .map(|f| match self.stored(f) {
                Stored::Own => own.next().flatten(),
                Stored::Children => unpacked
                    .get(f)
                    .cloned()
                    .or_else(|| exists.then(String::new)),
                _ => unpacked.get(f).cloned(),
            })
            .collect()
    }
}

/// A pipeline reading the same fields (`fields`, in that order) of several tasks, each of a
/// workflow in any layout. Each task's answer decodes like the reply of `HMGET <task
/// hash> <fields…>` (e.g. as a tuple of `Option`s, one per field).
pub(crate) struct TaskReads<'f> {
    fields: &'f [&'f str],
    tasks: Vec<(Keys, String, u32)>,
}

impl<'f> TaskReads<'f> {
    /// Reads of `fields` (task field names without the `<i>.` prefix), no task yet.
    pub(crate) fn new(fields: &'f [&'f str]) -> TaskReads<'f> {
        TaskReads {
            fields,
            tasks: Vec::new(),
        }
    }

    /// Adds task `index` of workflow `workflow_id`, whose keys are `keys` (its shard's).
    pub(crate) fn push(&mut self, keys: &Keys, workflow_id: &str, index: u32) {
        self.tasks
            .push((keys.clone(), workflow_id.to_owned(), index));
    }

    /// Runs the reads: each workflow's layout (one pipeline), then the tasks' fields where
    /// it keeps them (another); one answer per task added, in order. A task of a workflow
    /// that expired answers every field absent.
    ///
    /// # Errors
    /// Redis errors, a layout unknown to this version, or an answer that does not decode as
    /// `T`.
    pub(crate) async fn run<T: FromRedisValue>(&self, queue: &Queue) -> Result<Vec<T>, QueueError> {
        if self.tasks.is_empty() {
            return Ok(Vec::new());
        }
        // Each workflow once, by its hash's key (which names its shard too); each task's
        // workflow by its place in that list.
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut slots = Vec::with_capacity(self.tasks.len());
        let mut names: Vec<&str> = Vec::new();
        let mut pipe = redis::pipe();
        for (keys, wf, _) in &self.tasks {
            let key = keys.workflow(wf);
            let slot = *seen.entry(key).or_insert_with_key(|key| {
                pipe.cmd("HGET").arg(key).arg(LAYOUT_FIELD);
                names.push(wf);
                names.len() - 1
            });
            slots.push(slot);
        }
        let found: Vec<Option<String>> = queue.query_pipe(&pipe).await?;
        let layouts = names
            .iter()
            .zip(&found)
            .map(|(wf, layout)| TaskLayout::of(wf, layout.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut pipe = redis::pipe();
        for ((keys, wf, index), &slot) in self.tasks.iter().zip(&slots) {
            layouts[slot].hmget(&mut pipe, keys, wf, *index, self.fields);
        }
        let rows: Vec<Vec<Option<String>>> = queue.query_pipe(&pipe).await?;
        rows.into_iter()
            .zip(slots)
            .map(|(row, slot)| {
                let answer = Value::Array(
                    layouts[slot]
                        .values(self.fields, row)
                        .into_iter()
                        .map(|v| v.map_or(Value::Nil, |s| Value::BulkString(s.into_bytes())))
                        .collect(),
                );
                T::from_redis_value(answer).map_err(|e| QueueError::unexpected(CTX, e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{pack_children, pack_definition, Priority, STATE_SEPARATOR};

    #[test]
    fn the_layout_field_names_the_layout() {
        assert_eq!(
            TaskLayout::of("w", Some(LAYOUT_PACKED)).unwrap(),
            TaskLayout::Packed
        );
        assert_eq!(
            TaskLayout::of("w", Some(LAYOUT_FIELDS)).unwrap(),
            TaskLayout::Fields
        );
        assert_eq!(TaskLayout::of("w", None).unwrap(), TaskLayout::TaskHashes);
        assert!(matches!(
            TaskLayout::of("w", Some("compact")),
            Err(QueueError::UnexpectedReply { .. })
        ));
    }

    /// A state field as lua/lib.lua packs it, with `status` and `pending` set.
    fn state(status: &str, pending: &str) -> String {
        let mut parts = vec![""; STATE_PARTS.len()];
        parts[0] = status;
        parts[1] = pending;
        parts.join(&STATE_SEPARATOR.to_string())
    }

    fn hmget_args(layout: TaskLayout, fields: &[&str]) -> Vec<String> {
        let keys = Keys::new("ns").unwrap();
        let mut pipe = redis::pipe();
        layout.hmget(&mut pipe, &keys, "wf", 3, fields);
        let cmd = pipe.cmd_iter().next().expect("one command");
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn reads_name_the_fields_of_each_layout() {
        let fields = ["status", "children", "pending", "cap"];
        // The state once for both of its parts; in the packed layout the children's field,
        // and the state also tells whether a task without that field exists.
        assert_eq!(
            hmget_args(TaskLayout::Packed, &fields),
            ["HMGET", "{ns}:wf:wf", "3.cap", "3.s", "3.k"]
        );
        assert_eq!(
            hmget_args(TaskLayout::Packed, &["children"]),
            ["HMGET", "{ns}:wf:wf", "3.s", "3.k"]
        );
        assert_eq!(
            hmget_args(TaskLayout::Packed, &["spec", "result", "name"]),
            ["HMGET", "{ns}:wf:wf", "3.result", "3.d"]
        );
        assert_eq!(
            hmget_args(TaskLayout::Fields, &fields),
            ["HMGET", "{ns}:wf:wf", "3.children", "3.cap", "3.s"]
        );
        assert_eq!(
            hmget_args(TaskLayout::TaskHashes, &fields),
            [
                "HMGET",
                "{ns}:wf:wf:t:3",
                "status",
                "children",
                "pending",
                "cap"
            ]
        );
    }

    fn owned(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[test]
    fn packed_fields_come_apart_in_the_order_asked() {
        let def = pack_definition("B", 3, None, 2, &[(0, "A"), (4, "E")], r#"{"x":"1\u001f"}"#);
        let kids = pack_children(&[(5, "llm:m", Priority::High), (6, "ext:s", Priority::Normal)]);
        let fields = [
            "spec",
            "children",
            "status",
            "name",
            "refs",
            "result",
            "on_failure",
            "max_attempts",
        ];
        // Stored order: result (own), then state, definition, children.
        let row = vec![
            Some("\"r\"".to_owned()),
            Some(state("running", "0")),
            Some(def),
            Some(kids),
        ];
        assert_eq!(
            TaskLayout::Packed.values(&fields, row),
            owned(&[
                Some(r#"{"x":"1\u001f"}"#),
                Some("5,6"),
                Some("running"),
                Some("B"),
                Some("0,4"),
                Some("\"r\""),
                Some(""),
                Some("3"),
            ])
        );
        // A task without children has no children field: "" while the task exists...
        assert_eq!(
            TaskLayout::Packed.values(&["children"], vec![Some(state("waiting", "1")), None]),
            owned(&[Some("")])
        );
        // ... and nothing once it is gone.
        assert_eq!(
            TaskLayout::Packed.values(&["children", "name"], vec![None, None, None]),
            owned(&[None, None])
        );
    }

    #[test]
    fn the_state_parts_come_apart_in_the_order_asked() {
        let mut parts = vec![""; STATE_PARTS.len()];
        parts[0] = "completed";
        parts[3] = "17-0";
        parts[8] = "99";
        let packed = parts.join(&STATE_SEPARATOR.to_string());
        let fields = ["finished_ms", "name", "status", "consumer", "entry"];
        assert_eq!(
            TaskLayout::Fields.stored_names(4, &fields),
            ["4.name".to_owned(), "4.s".to_owned()]
        );
        let values = TaskLayout::Fields.values(&fields, vec![Some("B".into()), Some(packed)]);
        assert_eq!(
            values,
            owned(&[Some("99"), Some("B"), Some("completed"), None, Some("17-0")])
        );
        // No state (the task or its workflow is gone): every part absent.
        assert_eq!(
            TaskLayout::Fields.values(&["status", "name"], vec![Some("B".into()), None]),
            owned(&[None, Some("B")])
        );
        assert_eq!(
            TaskLayout::TaskHashes.values(&["status"], vec![Some("ready".into())]),
            owned(&[Some("ready")])
        );
    }
}
