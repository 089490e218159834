//! Demand per capability for placement: ready tasks, running tasks not counted as demand,
//! and the tasks about to be ready weighted by the share of their parents that runs.

mod common;

use common::*;

const A: &str = "llm:a";
const B: &str = "llm:b";
const J: &str = "llm:j";

fn task<'a>(name: &'a str, deps: &'a [u32], cap: &'a str) -> T<'a> {
    T {
        cap,
        ..t(name, deps)
    }
}

#[tokio::test]
async fn ready_running_and_about_to_be_ready() {
    let env = env().await;
    // root (a) → left (b), right (b) → join (j), twice.
    let shape = [
        task("root", &[], A),
        task("left", &[0], B),
        task("right", &[0], B),
        task("join", &[1, 2], J),
    ];
    env.submit(&request("fail_fast", &shape)).await;
    env.submit(&request("fail_fast", &shape)).await;
    let q = &env.queue;
    let caps = [A, B, J, "llm:none"];

    // Two roots queued: ready demand for a, nothing else yet (no parent runs).
    let d = q.demand(&caps, 100).await.unwrap();
    assert_eq!((d[0].ready, d[0].running, d[0].soon), (2, 0, 0.0));
    assert_eq!(
        (d[1].weight(), d[2].weight(), d[3].weight()),
        (0.0, 0.0, 0.0)
    );

    // Both roots delivered, one begun: that one is no longer demand and its two children
    // are about to be ready; the other still waits to run.
    let mut c = env.consumer("w1").await;
    let roots = env.read_all(&mut c, A).await;
    assert_eq!(roots.len(), 2);
    begin_ok(&env, &roots[0], "w1").await;
    let d = q.demand(&caps, 100).await.unwrap();
    assert_eq!((d[0].ready, d[0].running), (1, 1));
    assert_eq!(d[1].soon, 2.0, "the running root's two children");
    assert_eq!(d[2].weight(), 0.0);
    begin_ok(&env, &roots[1], "w1").await;
    let d = q.demand(&caps, 100).await.unwrap();
    assert_eq!((d[0].ready, d[0].running), (0, 2));
    assert_eq!(d[1].soon, 4.0, "both roots run: two children each");

    // The first root completes: its children are ready; once both run, the join waits on
    // two running parents.
    run_ok_begun(&env, &roots[0], "w1").await;
    let d = q.demand(&caps, 100).await.unwrap();
    assert_eq!((d[1].ready, d[1].soon), (2, 2.0));
    let mids = env.read_all(&mut c, B).await;
    assert_eq!(mids.len(), 2);
    for m in &mids {
        begin_ok(&env, m, "w1").await;
    }
    let d = q.demand(&caps, 100).await.unwrap();
    assert_eq!((d[1].ready, d[1].running), (0, 2));
    assert_eq!(
        d[2].soon, 1.0,
        "one join, each of its two parents running counts half"
    );
}

/// Completes a delivery that was already begun.
async fn run_ok_begun(env: &Env, d: &gleitzeit_queue::Delivery, consumer: &str) {
    assert_eq!(
        env.queue
            .complete(d, consumer, r#"{"v":1}"#, NOW)
            .await
            .unwrap(),
        gleitzeit_queue::ScriptCode::Ok
    );
}
