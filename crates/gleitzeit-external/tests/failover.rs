//! Instances dying, restarting and carrying many calls at once, against real Python services.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{
    free_port, init_logs, python, redis_conn, static_pool, test_config, PyService, ServiceSpec,
};
use deadpool_redis::redis;
use futures::StreamExt;
use gleitzeit_external::{ExternalCall, ExternalError, InstanceState};
use gleitzeit_testkit::redis::RedisServer;
use serde_json::json;

const SERVICE: &str = "Python Tasks";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_mid_call_fails_that_call_and_the_next_goes_elsewhere() {
    init_logs();
    let Some(py) = python() else { return };
    let redis_server = RedisServer::start().unwrap();
    let mut a = PyService::start(&py, &ServiceSpec::new(SERVICE)).await;
    let mut b = PyService::start(&py, &ServiceSpec::new(SERVICE)).await;
    let pool = std::sync::Arc::new(static_pool(
        SERVICE,
        &[a.local_url(), b.local_url()],
        test_config(),
    ));
    assert_eq!(
        pool.wait_ready(SERVICE, 2, Duration::from_secs(30))
            .await
            .unwrap(),
        2
    );

    // A call that blocks in the service, telling the test (through Redis) who runs it.
    let marker = "gleitzeit-external-test:started";
    let in_flight = tokio::spawn({
        let pool = pool.clone();
        let url = redis_server.url();
        async move {
            pool.call(
                ExternalCall::new(SERVICE, "mark_and_sleep")
                    .args(vec![json!(url), json!(marker), json!(120)])
                    .timeout(Duration::from_secs(300)),
            )
            .await
        }
    });
    let mut conn = redis_conn(&redis_server.url()).await;
    let (_, pid): (String, u32) = redis::cmd("BLPOP")
        .arg(marker)
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (victim, survivor) = if pid == a.pid {
        (&mut a, &b)
    } else {
        assert_eq!(pid, b.pid);
        (&mut b, &a)
    };
    victim.kill().await;

    let err = in_flight.await.unwrap().unwrap_err();
    match &err {
        ExternalError::Disconnected { url, reason, .. } => {
            assert_eq!(url, &victim.local_url());
            assert!(reason.contains("service disconnected mid-call"), "{reason}");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(err.retryable());

    // The dead instance is no longer picked: the next calls go to the survivor.
    for i in 0..5 {
        let value = pool
            .call(ExternalCall::new(SERVICE, "echo").args(vec![json!(i)]))
            .await
            .unwrap();
        assert_eq!(value["pid"], json!(survivor.pid), "call {i}");
    }
    let victim_status = pool
        .status()
        .into_iter()
        .find(|s| s.url == victim.local_url())
        .unwrap();
    assert!(!victim_status.state.is_ready(), "{victim_status:?}");
    assert_eq!(victim_status.in_flight, 0);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_is_reconnected() {
    init_logs();
    let Some(py) = python() else { return };
    let port = free_port();
    let spec = ServiceSpec::new(SERVICE).port(port);
    let mut svc = PyService::start(&py, &spec).await;
    let pool = static_pool(SERVICE, &[svc.local_url()], test_config());
    let first = pool
        .call(ExternalCall::new(SERVICE, "echo").args(vec![json!("before")]))
        .await
        .unwrap();
    assert_eq!(first["pid"], json!(svc.pid));

    // Crash (SIGKILL: the connection just breaks) and restart on the same address.
    svc.kill().await;
    let mut state = pool_state_watch(&pool);
    wait_until(&mut state, |s| !s.is_ready()).await;
    let svc2 = PyService::start(&py, &spec).await;
    let value = pool
        .call(ExternalCall::new(SERVICE, "echo").args(vec![json!("after crash")]))
        .await
        .unwrap();
    assert_eq!(value["value"], json!("after crash"));
    assert_eq!(value["pid"], json!(svc2.pid));
    let instance = pool.status()[0].instance.clone();
    assert_eq!(instance.as_deref(), Some(svc2.instance.as_str()));

    // Clean shutdown (SIGTERM: the service disconnects its clients) and restart.
    let mut svc2 = svc2;
    svc2.terminate().await;
    let mut state = pool_state_watch(&pool);
    wait_until(&mut state, |s| !s.is_ready()).await;
    let svc3 = PyService::start(&py, &spec).await;
    let value = pool
        .call(ExternalCall::new(SERVICE, "echo").args(vec![json!("after restart")]))
        .await
        .unwrap();
    assert_eq!(value["pid"], json!(svc3.pid));
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_calls_in_flight_each_get_their_own_answer() {
    init_logs();
    let Some(py) = python() else { return };
    let svc = PyService::start(&py, &ServiceSpec::new(SERVICE).max_concurrency(256)).await;
    let pool = static_pool(SERVICE, &[svc.local_url()], test_config());
    pool.wait_ready(SERVICE, 1, Duration::from_secs(30))
        .await
        .unwrap();

    const IN_FLIGHT: usize = 100;
    const TOTAL: usize = 2000;
    let started = Instant::now();
    let outcomes: Vec<(usize, Result<serde_json::Value, ExternalError>)> =
        futures::stream::iter(0..TOTAL)
            .map(|i| {
                let pool = &pool;
                async move {
                    // Unique per call; the short wait keeps the calls overlapping in the service.
                    let sent = format!("request-{i}-{}", uuid_like(i));
                    let result = pool
                        .call(
                            ExternalCall::new(SERVICE, "echo_async")
                                .args(vec![json!(sent), json!(0.01)]),
                        )
                        .await;
                    (i, result.map(|v| json!({"sent": sent, "got": v["value"]})))
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
    let elapsed = started.elapsed();

    let mut wrong = 0;
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (i, outcome) in &outcomes {
        match outcome {
            Ok(v) if v["sent"] == v["got"] => {
                seen.insert(*i);
            }
            Ok(_) => wrong += 1,
            Err(e) => errors.push(e.clone()),
        }
    }
    println!(
        "measured: {TOTAL} calls, {IN_FLIGHT} in flight, {wrong} wrong replies, {} errors, \
         {:.2}s, {:.0} calls/s",
        errors.len(),
        elapsed.as_secs_f64(),
        TOTAL as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(wrong, 0);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(seen.len(), TOTAL);
    assert_eq!(pool.status()[0].in_flight, 0);

    // The same burst fired all at once (not a rolling window): 100 calls started together.
    let started = Instant::now();
    let burst = futures::future::join_all((0..IN_FLIGHT).map(|i| {
        let pool = &pool;
        async move {
            let v = pool
                .call(ExternalCall::new(SERVICE, "echo_async").args(vec![json!(i), json!(0.2)]))
                .await
                .unwrap();
            v["value"] == json!(i)
        }
    }))
    .await;
    let burst_elapsed = started.elapsed();
    let burst_wrong = burst.iter().filter(|ok| !**ok).count();
    println!(
        "measured: burst of {IN_FLIGHT} concurrent calls sleeping 0.2s each finished in {:.2}s, \
         {burst_wrong} wrong",
        burst_elapsed.as_secs_f64()
    );
    assert_eq!(burst_wrong, 0);
    pool.close().await;
}

/// A deterministic per-call suffix, so answers cannot match by accident.
fn uuid_like(i: usize) -> String {
    format!("{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// A receiver of the state of the pool's single instance.
fn pool_state_watch(
    pool: &gleitzeit_external::ServicePool,
) -> tokio::sync::watch::Receiver<InstanceState> {
    pool.subscribe(SERVICE)
        .into_iter()
        .next()
        .expect("one instance")
}

async fn wait_until(
    rx: &mut tokio::sync::watch::Receiver<InstanceState>,
    done: impl FnMut(&InstanceState) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(60), rx.wait_for(done))
        .await
        .expect("state change in time")
        .expect("connection alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_crashes_under_load_only_fail_retryably_and_never_misroute() {
    init_logs();
    let Some(py) = python() else { return };
    let port = free_port();
    let spec = ServiceSpec::new(SERVICE).port(port).max_concurrency(64);
    let mut svc = PyService::start(&py, &spec).await;
    let pool = std::sync::Arc::new(static_pool(SERVICE, &[svc.local_url()], test_config()));
    pool.wait_ready(SERVICE, 1, Duration::from_secs(30))
        .await
        .unwrap();

    const LOOPS: usize = 20;
    const CYCLES: usize = 5;
    // Successful calls so far; the crash cycle waits for traffic on every restarted service.
    let (ok_tx, mut ok_rx) = tokio::sync::watch::channel(0usize);
    let ok_tx = std::sync::Arc::new(ok_tx);
    let stop = tokio_util::sync::CancellationToken::new();
    let workers: Vec<_> = (0..LOOPS)
        .map(|w| {
            let pool = pool.clone();
            let stop = stop.clone();
            let ok_tx = ok_tx.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut n = 0usize;
                while !stop.is_cancelled() {
                    n += 1;
                    let sent = format!("{w}-{n}");
                    match pool
                        .call(
                            ExternalCall::new(SERVICE, "echo_async")
                                .args(vec![json!(sent), json!(0.005)]),
                        )
                        .await
                    {
                        Ok(v) if v["value"] == json!(sent) => {
                            tally.ok += 1;
                            ok_tx.send_modify(|n| *n += 1);
                        }
                        Ok(_) => tally.wrong += 1,
                        Err(e) if e.retryable() => {
                            match e {
                                ExternalError::Disconnected { .. } => tally.disconnected += 1,
                                ExternalError::NoInstance { .. } => tally.no_instance += 1,
                                _ => tally.other_retryable += 1,
                            }
                            // Pace by events, not time: wait until an instance is back.
                            let _ = pool.wait_ready(SERVICE, 1, Duration::from_secs(60)).await;
                        }
                        Err(e) => tally.fatal.push(e),
                    }
                }
                tally
            })
        })
        .collect();

    for cycle in 0..CYCLES {
        // Let the loops run on the current instance first.
        let before = *ok_rx.borrow();
        tokio::time::timeout(
            Duration::from_secs(60),
            ok_rx.wait_for(|n| *n >= before + 200),
        )
        .await
        .expect("calls succeed on the running service")
        .unwrap();
        svc.kill().await;
        let mut state = pool_state_watch(&pool);
        wait_until(&mut state, |s| !s.is_ready()).await;
        svc = PyService::start(&py, &spec).await;
        let v = pool
            .call(ExternalCall::new(SERVICE, "echo").args(vec![json!(cycle)]))
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: the restarted service is not used: {e}"));
        assert_eq!(v["pid"], json!(svc.pid), "cycle {cycle}");
    }
    stop.cancel();
    let mut total = Tally::default();
    for w in workers {
        let t = w.await.unwrap();
        total.ok += t.ok;
        total.wrong += t.wrong;
        total.disconnected += t.disconnected;
        total.no_instance += t.no_instance;
        total.other_retryable += t.other_retryable;
        total.fatal.extend(t.fatal);
    }
    println!(
        "measured: {CYCLES} crash/restart cycles under {LOOPS} concurrent call loops: \
         {} ok, {} wrong replies, {} disconnected mid-call, {} no instance, \
         {} other retryable, {} non-retryable",
        total.ok,
        total.wrong,
        total.disconnected,
        total.no_instance,
        total.other_retryable,
        total.fatal.len()
    );
    assert_eq!(total.wrong, 0);
    assert!(total.fatal.is_empty(), "{:?}", total.fatal);
    assert!(total.ok >= CYCLES * 200);
    pool.close().await;
}

#[derive(Default)]
struct Tally {
    ok: usize,
    wrong: usize,
    disconnected: usize,
    no_instance: usize,
    other_retryable: usize,
    fatal: Vec<ExternalError>,
}
