//! Submission: idempotency, refusals that write nothing, large workflows.

mod common;

use common::*;
use gleitzeit_queue::{Priority, QueueError, SubmitOutcome};

#[tokio::test]
async fn created_writes_workflow_tasks_roots_and_index() {
    let env = env().await;
    let req = diamond("fail_fast");
    let id = env.submit(&req).await;
    assert_eq!(id, req.workflow_id);

    let info = env.queue.workflow(&id).await.unwrap().unwrap();
    assert_eq!(info.status, "running");
    assert_eq!(info.policy, "fail_fast");
    assert_eq!((info.total, info.open), (6, 6));
    assert_eq!(env.counters(&id).await, (6, 0, 0, 0, 0));
    assert_eq!(info.created_ms, NOW);
    assert_eq!(info.finished_ms, None);

    assert_eq!(env.status(&id, 0).await, "ready");
    for i in 1..6 {
        assert_eq!(env.status(&id, i).await, "waiting", "task {i}");
    }
    assert_eq!(
        env.task_field(&id, 5, "pending").await.as_deref(),
        Some("4")
    );
    assert_eq!(
        env.task_field(&id, 0, "children").await.as_deref(),
        Some("1,2,3,4")
    );
    assert_eq!(
        env.task_field(&id, 0, "attempts").await.as_deref(),
        Some("0")
    );

    // Exactly the root is queued, as a reference.
    let stream = env.queue.keys().stream(CAP, Priority::Normal);
    assert_eq!(env.xlen(&stream).await, 1);
    let caps = env.queue.capabilities().await.unwrap();
    assert_eq!(caps, vec![CAP.to_owned()]);
    let listed = env.queue.list(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    // The group exists (created at id 0) on the stream.
    let groups: deadpool_redis::redis::Value = env.cmd(&["XINFO", "GROUPS", &stream]).await;
    assert!(format!("{groups:?}").contains("workers"));
    // A "submitted" event was written.
    let events = env
        .queue
        .events(&id, "0", std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind.as_str(), events[0].status.as_str()),
        ("workflow", "submitted")
    );
}

/// A small workflow's hash is a listpack (while every value is at most Redis's
/// `hash-max-listpack-value`, 64 bytes: short specs, few children per task), which finds a
/// field by scanning from its head: the fields every task reads or writes (status, open,
/// completed, input) come first.
#[tokio::test]
async fn the_workflow_hash_is_a_listpack_with_the_hot_fields_first() {
    let env = env().await;
    let id = env
        .submit(&request(
            "fail_fast",
            &[
                t("root", &[]),
                t("A", &[0]),
                t("B", &[0]),
                t("join", &[1, 2]),
            ],
        ))
        .await;
    let key = env.queue.keys().workflow(&id);
    let encoding: String = env.cmd(&["OBJECT", "ENCODING", &key]).await;
    assert_eq!(encoding, "listpack");
    let fields: Vec<String> = env.cmd(&["HKEYS", &key]).await;
    assert_eq!(fields[..4], ["status", "open", "completed", "input"]);
}

#[tokio::test]
async fn idempotent_resubmit_returns_existing_and_conflict_writes_nothing() {
    let env = env().await;
    let mut first = diamond("fail_fast");
    first.idempotency_key = Some("order-42".into());
    let id = env.submit(&first).await;
    let idem: Option<String> = env.cmd(&["GET", &env.queue.keys().idem("order-42")]).await;
    assert_eq!(idem, Some(format!("{id}\ndigest-1")));

    // Same key, same digest, new workflow id → the existing workflow, nothing new.
    let mut again = diamond("fail_fast");
    again.idempotency_key = Some("order-42".into());
    let keys_before: Vec<String> = env.cmd(&["KEYS", "*"]).await;
    let dbsize: u64 = env.cmd(&["DBSIZE"]).await;
    assert_eq!(
        env.queue.submit(&again).await.unwrap(),
        SubmitOutcome::Existing { id: id.clone() }
    );

    // Same key, different digest → conflict; nothing written.
    let mut other = diamond("fail_fast");
    other.idempotency_key = Some("order-42".into());
    other.digest = "digest-2".into();
    assert_eq!(
        env.queue.submit(&other).await.unwrap(),
        SubmitOutcome::Conflict {
            existing_id: id.clone()
        }
    );
    let mut keys_after: Vec<String> = env.cmd(&["KEYS", "*"]).await;
    let mut keys_before = keys_before;
    keys_before.sort();
    keys_after.sort();
    assert_eq!(keys_before, keys_after);
    assert_eq!(env.cmd::<u64>(&["DBSIZE"]).await, dbsize);
    assert!(env
        .queue
        .workflow(&other.workflow_id)
        .await
        .unwrap()
        .is_none());
    assert!(env
        .queue
        .workflow(&again.workflow_id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        env.xlen(&env.queue.keys().stream(CAP, Priority::Normal))
            .await,
        1
    );
    assert_eq!(env.queue.list(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_existing_workflow_id_is_refused_without_writes() {
    let env = env().await;
    let req = diamond("fail_fast");
    env.submit(&req).await;
    let dbsize: u64 = env.cmd(&["DBSIZE"]).await;
    let mut same_id = request("continue", &[t("other", &[])]);
    same_id.workflow_id = req.workflow_id.clone();
    match env.queue.submit(&same_id).await {
        Err(QueueError::WorkflowExists(id)) => assert_eq!(id, req.workflow_id),
        other => panic!("expected WorkflowExists, got {other:?}"),
    }
    assert_eq!(env.cmd::<u64>(&["DBSIZE"]).await, dbsize);
    assert_eq!(
        env.wf_field(&req.workflow_id, "policy").await.as_deref(),
        Some("fail_fast")
    );
    assert_eq!(
        env.xlen(&env.queue.keys().stream(CAP, Priority::Normal))
            .await,
        1
    );
}

#[tokio::test]
async fn inconsistent_requests_are_refused_before_redis() {
    let env = env().await;
    let mut cycle = request("fail_fast", &[t("a", &[1]), t("b", &[0])]);
    assert!(matches!(
        env.queue.submit(&cycle).await,
        Err(QueueError::InvalidArgument(_))
    ));
    cycle.tasks.clear();
    assert!(matches!(
        env.queue.submit(&cycle).await,
        Err(QueueError::InvalidArgument(_))
    ));

    let mut bad_children = diamond("fail_fast");
    bad_children.tasks[0].children.pop();
    assert!(matches!(
        env.queue.submit(&bad_children).await,
        Err(QueueError::InvalidArgument(_))
    ));

    // A reference to a task that is not an ancestor (a sibling) is refused.
    let mut bad_ref = diamond("fail_fast");
    bad_ref.tasks[1].refs = vec![2];
    assert!(matches!(
        env.queue.submit(&bad_ref).await,
        Err(QueueError::InvalidArgument(_))
    ));
    // Ancestors (transitively) are fine.
    let mut good_ref = diamond("fail_fast");
    good_ref.tasks[5].refs = vec![0, 3];
    env.submit(&good_ref).await;

    // A name with a control character would break the packed definition that lists it.
    let mut bad_name = diamond("fail_fast");
    bad_name.tasks[1].name = "A\u{1e}B".into();
    match env.queue.submit(&bad_name).await {
        Err(QueueError::InvalidArgument(m)) => assert!(m.contains("control character"), "{m}"),
        other => panic!("a control character in a name: {other:?}"),
    }

    let mut bad_cap = diamond("fail_fast");
    bad_cap.tasks[2].capability = "llm:a#high".into();
    assert!(matches!(
        env.queue.submit(&bad_cap).await,
        Err(QueueError::InvalidArgument(_))
    ));
    let mut bad_policy = diamond("sometimes");
    bad_policy.policy = "sometimes".into();
    assert!(matches!(
        env.queue.submit(&bad_policy).await,
        Err(QueueError::InvalidArgument(_))
    ));
    let mut bad_id = diamond("fail_fast");
    bad_id.workflow_id = "has|pipe".into();
    assert!(matches!(
        env.queue.submit(&bad_id).await,
        Err(QueueError::InvalidArgument(_))
    ));
    let mut dup = request("fail_fast", &[t("x", &[]), t("x", &[])]);
    dup.tasks[1].name = "x".into();
    assert!(matches!(
        env.queue.submit(&dup).await,
        Err(QueueError::InvalidArgument(_))
    ));

    // Only the one valid workflow reached Redis.
    assert_eq!(env.queue.list(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_thousand_task_workflow_is_written_in_one_call() {
    let env = env().await;
    // 500 roots on two capabilities/priorities, each with one child.
    let names: Vec<String> = (0..1000).map(|i| format!("task {i}")).collect();
    let deps: Vec<[u32; 1]> = (0..1000u32).map(|i| [i - i % 2]).collect();
    let specs: Vec<T<'_>> = (0..1000usize)
        .map(|i| {
            let mut spec = if i % 2 == 0 {
                t(&names[i], &[])
            } else {
                t(&names[i], &deps[i])
            };
            if i % 4 == 0 {
                spec.cap = "ext:Python Tasks";
                spec.priority = Priority::High;
            }
            spec
        })
        .collect();
    let mut req = request("continue", &specs);
    // A large spec per task as well (~2 KiB each, ~2 MiB in total).
    for t in &mut req.tasks {
        t.spec_json = format!(r#"{{"prompt":"{}"}}"#, "x".repeat(2000));
    }
    let id = env.submit(&req).await;
    let info = env.queue.workflow(&id).await.unwrap().unwrap();
    assert_eq!((info.total, info.open), (1000, 1000));
    let k = env.queue.keys();
    assert_eq!(env.xlen(&k.stream(CAP, Priority::Normal)).await, 250);
    assert_eq!(
        env.xlen(&k.stream("ext:Python Tasks", Priority::High))
            .await,
        250
    );
    assert_eq!(env.status(&id, 998).await, "ready");
    assert_eq!(env.status(&id, 999).await, "waiting");
    let tasks = env.queue.tasks(&id).await.unwrap();
    assert_eq!(tasks.len(), 1000);
    assert_eq!(tasks[999].name, "task 999");
    assert_eq!(
        env.queue.capabilities().await.unwrap(),
        vec!["ext:Python Tasks".to_owned(), CAP.to_owned()]
    );
}
