//! Reading task fields of workflows in either task layout.
//!
//! Workflows submitted by this version keep their tasks' fields in the workflow hash
//! (`<i>.<field>`, [`task_field`]); workflows written by earlier versions, which can still be
//! in flight during a rolling upgrade, keep one hash per task ([`Keys::task`]). A reader of
//! one workflow asks its `layout` field first ([`TaskLayout::of`], as [`Queue::tasks`]
//! does); a reader that visits tasks of many workflows at once (placement's demand, the
//! backlog by capability) would pay a round trip for that, so it asks both places in the
//! same pipeline ([`TaskReads`]) and keeps the answer that found the task. Only one of the
//! two can: a workflow has task hashes or task fields, never both.

use deadpool_redis::redis::{self, FromRedisValue, Value};

use crate::error::QueueError;
use crate::keys::{state_fields, task_field, Keys, LAYOUT_FIELDS, STATE_FIELD, STATE_PARTS};
use crate::queue::Queue;
use crate::reply;

const CTX: &str = "task fields";

/// Where a workflow's tasks are stored, as its workflow hash's `layout` field
/// ([`LAYOUT_FIELD`](crate::keys::LAYOUT_FIELD)) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskLayout {
    /// Fields `<i>.<field>` of the workflow hash ([`LAYOUT_FIELDS`]): every workflow
    /// submitted by this version.
    Fields,
    /// One hash per task ([`Keys::task`]): no `layout` field, written by an earlier
    /// version.
    TaskHashes,
}

impl TaskLayout {
    /// The layout of workflow `workflow_id`, whose `layout` field is `layout`. A layout this
    /// version does not know (written by a newer one) is an error, not a misread.
    ///
    /// # Errors
    /// [`QueueError::UnexpectedReply`] for an unknown layout.
    pub(crate) fn of(workflow_id: &str, layout: Option<&str>) -> Result<TaskLayout, QueueError> {
        match layout {
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

    /// Adds to `pipe` the `HMGET` of `fields` (task field names without the `<i>.` prefix)
    /// of task `index` of workflow `workflow_id` (keys `keys`, its shard's) in this layout.
    /// Its reply is the fields' values in that order, as for a task hash.
    pub(crate) fn hmget(
        self,
        pipe: &mut redis::Pipeline,
        keys: &Keys,
        workflow_id: &str,
        index: u32,
        fields: &[&str],
    ) {
        match self {
            TaskLayout::Fields => {
                pipe.cmd("HMGET")
                    .arg(keys.workflow(workflow_id))
                    .arg(stored_names(index, fields));
            }
            TaskLayout::TaskHashes => {
                pipe.cmd("HMGET")
                    .arg(keys.task(workflow_id, index))
                    .arg(fields);
            }
        }
    }

    /// The values of `fields`, in order, from the reply of [`TaskLayout::hmget`] for the same
    /// fields: in the fields layout the parts of the state field are taken apart.
    pub(crate) fn values(self, fields: &[&str], row: Vec<Option<String>>) -> Vec<Option<String>> {
        match self {
            TaskLayout::TaskHashes => row,
            TaskLayout::Fields => from_stored(fields, row),
        }
    }
}

/// Whether task field `field` is a part of the state field ([`STATE_FIELD`]).
fn in_state(field: &str) -> bool {
    STATE_PARTS.contains(&field)
}

/// The workflow hash fields that hold `fields` of task `index` in the fields layout: each
/// field outside the state by its own name, in order, then the state field once if any of
/// its parts is asked for.
fn stored_names(index: u32, fields: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = fields
        .iter()
        .filter(|f| !in_state(f))
        .map(|f| task_field(index, f))
        .collect();
    if fields.iter().any(|f| in_state(f)) {
        names.push(task_field(index, STATE_FIELD));
    }
    names
}

/// The values of `fields` from the values of [`stored_names`]: a part of the state is
/// absent when the part is empty or the state is absent or malformed ([`state_fields`]).
fn from_stored(fields: &[&str], row: Vec<Option<String>>) -> Vec<Option<String>> {
    let mut stored = row.into_iter();
    // The fields outside the state come first, in order; the state last.
    let own: Vec<Option<String>> = fields
        .iter()
        .filter(|f| !in_state(f))
        .map(|_| stored.next().flatten())
        .collect();
    let state = stored.next().flatten();
    let parts = state.as_deref().and_then(state_fields).unwrap_or_default();
    let mut own = own.into_iter();
    fields
        .iter()
        .map(|f| {
            if in_state(f) {
                parts
                    .iter()
                    .find(|(part, _)| part == f)
                    .map(|(_, v)| (*v).to_owned())
            } else {
                own.next().flatten()
            }
        })
        .collect()
}

/// A pipeline reading the same fields (`fields`, in that order) of several tasks, each of a
/// workflow in either layout. Each task's answer decodes like the reply of `HMGET <task
/// hash> <fields…>` (e.g. as a tuple of `Option`s, one per field).
pub(crate) struct TaskReads<'f> {
    fields: &'f [&'f str],
    pipe: redis::Pipeline,
    tasks: usize,
}

impl<'f> TaskReads<'f> {
    /// Reads of `fields` (task field names without the `<i>.` prefix), no task yet.
    pub(crate) fn new(fields: &'f [&'f str]) -> TaskReads<'f> {
        TaskReads {
            fields,
            pipe: redis::pipe(),
            tasks: 0,
        }
    }

    /// Adds task `index` of workflow `workflow_id`, whose keys are `keys` (its shard's): one
    /// `HMGET` of the workflow hash's `<index>.<field>` fields, one of the task hash.
    pub(crate) fn push(&mut self, keys: &Keys, workflow_id: &str, index: u32) {
        for layout in [TaskLayout::Fields, TaskLayout::TaskHashes] {
            layout.hmget(&mut self.pipe, keys, workflow_id, index, self.fields);
        }
        self.tasks += 1;
    }

    /// Runs the reads: one answer per task added, in order. A task found in neither place
    /// (its workflow expired) answers every field absent.
    ///
    /// # Errors
    /// Redis errors, or an answer that does not decode as `T`.
    pub(crate) async fn run<T: FromRedisValue>(&self, queue: &Queue) -> Result<Vec<T>, QueueError> {
        if self.tasks == 0 {
            return Ok(Vec::new());
        }
        pick(self.fields, queue.query_pipe(&self.pipe).await?)
    }
}

/// Each task's answer from the replies of a [`TaskReads`] pipeline (two per task, the fields
/// layout's first): the task hash's when only it found any field, else the workflow hash's.
fn pick<T: FromRedisValue>(fields: &[&str], replies: Vec<Value>) -> Result<Vec<T>, QueueError> {
    if !replies.len().is_multiple_of(2) {
        return Err(QueueError::unexpected(
            CTX,
            format!("{} replies for reads in pairs", replies.len()),
        ));
    }
    let mut out = Vec::with_capacity(replies.len() / 2);
    let mut it = replies.into_iter();
    while let (Some(in_workflow), Some(in_task_hash)) = (it.next(), it.next()) {
        let answer = if found(&in_task_hash)? && !found(&in_workflow)? {
            in_task_hash
        } else {
            let row: Vec<Option<String>> = FromRedisValue::from_redis_value(in_workflow)
                .map_err(|e| QueueError::unexpected(CTX, e.to_string()))?;
            Value::Array(
                from_stored(fields, row)
                    .into_iter()
                    .map(|v| v.map_or(Value::Nil, |s| Value::BulkString(s.into_bytes())))
                    .collect(),
            )
        };
        out.push(
            T::from_redis_value(answer).map_err(|e| QueueError::unexpected(CTX, e.to_string()))?,
        );
    }
    Ok(out)
}

/// Whether an `HMGET` reply has any field set.
fn found(hmget: &Value) -> Result<bool, QueueError> {
    Ok(reply::array(CTX, hmget)?
        .iter()
        .any(|v| !matches!(v, Value::Nil)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::STATE_SEPARATOR;

    fn hmget(values: &[Option<&str>]) -> Value {
        Value::Array(
            values
                .iter()
                .map(|v| match v {
                    Some(s) => Value::BulkString(s.as_bytes().to_vec()),
                    None => Value::Nil,
                })
                .collect(),
        )
    }

    type Row = (Option<String>, Option<String>);

    fn row(a: Option<&str>, b: Option<&str>) -> Row {
        (a.map(str::to_owned), b.map(str::to_owned))
    }

    #[test]
    fn the_layout_field_names_the_layout() {
        assert_eq!(
            TaskLayout::of("w", Some(LAYOUT_FIELDS)).unwrap(),
            TaskLayout::Fields
        );
        assert_eq!(TaskLayout::of("w", None).unwrap(), TaskLayout::TaskHashes);
        assert!(matches!(
            TaskLayout::of("w", Some("packed")),
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

    #[test]
    fn reads_name_the_fields_of_each_layout() {
        let keys = Keys::new("ns").unwrap();
        let mut reads = TaskReads::new(&["status", "children", "pending"]);
        reads.push(&keys, "wf", 3);
        let cmds: Vec<Vec<String>> = reads
            .pipe
            .cmd_iter()
            .map(|c| {
                c.args_iter()
                    .map(|a| match a {
                        redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .collect();
        // The fields layout reads the state once, for both of its parts asked for.
        assert_eq!(
            cmds,
            [
                vec!["HMGET", "{ns}:wf:wf", "3.children", "3.s"],
                vec!["HMGET", "{ns}:wf:wf:t:3", "status", "children", "pending"],
            ]
        );
    }

    #[test]
    fn takes_the_layout_that_holds_the_task() {
        let running = state("running", "0");
        let replies = vec![
            // Fields layout: children, then the state.
            hmget(&[Some("4,5"), Some(&running)]),
            hmget(&[None, None]),
            // Task hash (a workflow written by an earlier version): status, children.
            hmget(&[None, None]),
            hmget(&[Some("waiting"), None]),
            // Neither (expired).
            hmget(&[None, None]),
            hmget(&[None, None]),
            // A state absent does not hide the rest.
            hmget(&[Some("1"), None]),
            hmget(&[None, None]),
        ];
        let rows: Vec<Row> = pick(&["status", "children"], replies).unwrap();
        assert_eq!(
            rows,
            vec![
                row(Some("running"), Some("4,5")),
                row(Some("waiting"), None),
                row(None, None),
                row(None, Some("1")),
            ]
        );
    }

    #[test]
    fn decodes_typed_answers_and_refuses_malformed_replies() {
        let fields = ["cap", "pending"];
        let waiting = state("waiting", "2");
        let rows: Vec<(Option<String>, Option<u64>)> = pick(
            &fields,
            vec![
                hmget(&[None, None]),
                hmget(&[Some("llm:x"), Some("2")]),
                hmget(&[Some("llm:y"), Some(&waiting)]),
                hmget(&[None, None]),
            ],
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![
                (Some("llm:x".to_owned()), Some(2)),
                (Some("llm:y".to_owned()), Some(2))
            ]
        );
        assert!(pick::<Row>(&fields, vec![hmget(&[None, None])]).is_err());
        assert!(pick::<Row>(&fields, vec![Value::Int(1), hmget(&[None, None])]).is_err());
        let not_a_count = state("waiting", "two");
        assert!(pick::<(Option<String>, Option<u64>)>(
            &fields,
            vec![
                hmget(&[Some("llm:x"), Some(&not_a_count)]),
                hmget(&[None, None])
            ]
        )
        .is_err());
        assert!(pick::<Row>(&fields, Vec::new()).unwrap().is_empty());
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
            stored_names(4, &fields),
            ["4.name".to_owned(), "4.s".to_owned()]
        );
        let values = TaskLayout::Fields.values(&fields, vec![Some("B".into()), Some(packed)]);
        assert_eq!(
            values,
            [Some("99"), Some("B"), Some("completed"), None, Some("17-0")]
                .map(|v| v.map(str::to_owned))
        );
        // No state (the task or its workflow is gone): every part absent.
        assert_eq!(
            TaskLayout::Fields.values(&["status", "name"], vec![Some("B".into()), None]),
            [None, Some("B".to_owned())]
        );
        assert_eq!(
            TaskLayout::TaskHashes.values(&["status"], vec![Some("ready".into())]),
            [Some("ready".to_owned())]
        );
    }
}
