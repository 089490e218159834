//! The fault suite: seeded mixed workloads (`gleitzeit_e2e::faults::workload`) run by real
//! worker processes against a real Redis and the provider simulators while one fault is
//! injected; then health is restored, every workflow's end event awaited, and the checker
//! (`gleitzeit_e2e::faults::check`) counts what was lost, duplicated, answered wrongly or
//! left unfinished. Each scenario prints one summary line.
//!
//! Crash-type faults (a worker killed or frozen, Redis killed and restarted from its
//! append-only file or frozen, a task service killed mid-call) must leave every workflow
//! completed with nothing lost or duplicated. Endpoint trouble (refused connections, 503
//! "server busy", 429 with `Retry-After`, hanging calls) is injected by
//! `gleitzeit_e2e::faults::proxy::FaultProxy` in front of the simulators; it must leave every
//! workflow completed too, and where the endpoint said "not now" (refused, busy, rate
//! limited) without spending an attempt of a task.
//!
//! Sizes: the matrix every test run uses is small; `GLEITZEIT_FAULT_FULL=1` runs the full one
//! (`docs/reliability.md`). `GLEITZEIT_FAULT_SEED=<n>` repeats a run's workload.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gleitzeit_e2e::faults::check::{check, drain, Report};
use gleitzeit_e2e::faults::fleet::{
    ollama_sims, servers, spec, submit, until, workers, LATENCY, POLL,
};
use gleitzeit_e2e::faults::proxy::{FaultProxy, Mode, Trigger};
use gleitzeit_e2e::faults::workload::Workload;
use gleitzeit_e2e::faults::{seed, sized};
use gleitzeit_e2e::store::Store;
use gleitzeit_e2e::worker::signal;
use gleitzeit_e2e::workflows::{capability, now_ms};
use gleitzeit_e2e::{within, Deployment, HANG_GUARD, NAMESPACE};
use gleitzeit_queue::keys::task_field;
use gleitzeit_testkit::llm::MockOllama;
use gleitzeit_testkit::redis::RedisServer;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn announce(scenario: &str, workload: &Workload) {
    eprintln!(
        "scenario {scenario} starting: seed={} {} (GLEITZEIT_FAULT_SEED={} repeats it)",
        workload.seed,
        workload.summary(),
        workload.seed
    );
}

/// Waits until `consumer` holds at least one entry (so a fault now leaves orphans).
async fn holding(store: &Store, consumer: &str) {
    let cap = capability();
    within("the worker to hold entries", async {
        while store.pending_of(&cap, consumer).await.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
}

/// The tasks (workflow id, task index) whose entries `consumer` still holds right after its
/// fault: the orphans another worker must re-run. Read before claim_idle has passed, so
/// nobody has reclaimed them yet. (Entries it finished before the fault are acknowledged,
/// though they stay in the stream until it is trimmed: they are not orphans.)
async fn orphaned(store: &Store, consumer: &str) -> Vec<(String, u32)> {
    let cap = capability();
    let mut out = Vec::new();
    for p in store.pending_of(&cap, consumer).await {
        if let Some(e) = store.stream_entry(&cap, &p.id).await {
            if let Ok(t) = e.get("t").parse() {
                out.push((e.get("wf").to_owned(), t));
            }
        }
    }
    assert!(
        !out.is_empty(),
        "{consumer} held entries at its fault: the scenario has orphans to re-run"
    );
    out
}

/// The longest time from `since_ms` to the next `running` event of each held task (its
/// re-run by another worker). A task whose `completed` event is stamped at or before
/// `since_ms` was finished by the worker itself (its completion was on its way to Redis when
/// the fault came) and needs no re-run; every other one must have run again.
async fn worst_orphan_delay(store: &Store, held: &[(String, u32)], since_ms: u64) -> Duration {
    let mut worst = 0u64;
    let (mut rerun, mut finished) = (0usize, 0usize);
    for (wf, t) in held {
        let index = t.to_string();
        let events: Vec<(String, u64)> = store
            .events(wf)
            .await
            .into_iter()
            .filter(|e| e.get("kind") == "task" && e.get("i") == index)
            .filter_map(|e| Some((e.get("status").to_owned(), e.get("ms").parse().ok()?)))
            .collect();
        if events
            .iter()
            .any(|(status, ms)| status == "completed" && *ms <= since_ms)
        {
            finished += 1;
            continue;
        }
        let restart = events
            .iter()
            .filter(|(status, _)| status == "running")
            .map(|&(_, ms)| ms)
            .find(|ms| *ms >= since_ms);
        if let Some(ms) = restart {
            rerun += 1;
            worst = worst.max(ms - since_ms);
        }
    }
    eprintln!(
        "orphans: {} entries held at the fault, {rerun} re-run, {finished} finished by the \
         worker before it, worst delay {worst} ms",
        held.len()
    );
    assert_eq!(
        rerun + finished,
        held.len(),
        "every orphan ran again after the fault"
    );
    Duration::from_millis(worst)
}

// ---------------------------------------------------------------------------------------
// Crash-type scenarios
// ---------------------------------------------------------------------------------------

/// A worker of three (concurrency 8, claim_idle 5 s) SIGKILLed with a backlog queued; the
/// other two reclaim what it held.
async fn worker_sigkill_under_backlog() -> Report {
    let scenario = "worker_sigkill_under_backlog";
    let workload = Workload::diamonds("kill", seed(), sized(24, 400));
    announce(scenario, &workload);
    let dep = Deployment::start().await;
    let sims = ollama_sims(1, LATENCY).await;
    let spec = spec(&dep, &[sims[0].url()], 8, "5s");
    let mut fleet = workers(3, &spec).await;
    let ids = submit(&dep, &workload).await;

    // A quarter of the calls made: a backlog is queued and the victim holds entries.
    let quarter = workload.task_count() as u64 / 4;
    within("a quarter of the calls", sims[0].wait_received(quarter)).await;
    let victim = fleet[0].consumer().await;
    holding(&dep.store, &victim).await;
    fleet[0].sigkill().await;
    // After the worker is gone: a completion it stamped and sent just before is on its
    // way, not an orphan's re-run.
    let killed_ms = now_ms();
    let orphans = orphaned(&dep.store, &victim).await;

    let mut report = check(scenario, &dep.store, &workload, &ids, &servers(&sims)).await;
    report.orphan_delay = Some(worst_orphan_delay(&dep.store, &orphans, killed_ms).await);
    report
}

/// A worker of three frozen (SIGSTOP) until the others have reclaimed every entry it held,
/// then resumed (SIGCONT): its late completions must be fenced off.
async fn worker_sigstop_beyond_claim_idle() -> Report {
    let scenario = "worker_sigstop_beyond_claim_idle";
    let workload = Workload::mixed("stop", seed(), sized(24, 400));
    announce(scenario, &workload);
    let dep = Deployment::start().await;
    let sims = ollama_sims(1, LATENCY).await;
    let spec = spec(&dep, &[sims[0].url()], 8, "3s");
    let fleet = workers(3, &spec).await;
    let ids = submit(&dep, &workload).await;

    let quarter = workload.task_count() as u64 / 4;
    within("a quarter of the calls", sims[0].wait_received(quarter)).await;
    let victim = fleet[0].consumer().await;
    holding(&dep.store, &victim).await;
    fleet[0].sigstop().await;
    // Once it is stopped (see the kill above).
    let stopped_ms = now_ms();
    let orphans = orphaned(&dep.store, &victim).await;
    // Frozen for longer than claim_idle: until nothing is pending for it any more.
    let cap = capability();
    until("the frozen worker's entries to be reclaimed", || async {
        dep.store.pending_of(&cap, &victim).await.is_empty()
    })
    .await;
    fleet[0].sigcont();

    let mut report = check(scenario, &dep.store, &workload, &ids, &servers(&sims)).await;
    report.orphan_delay = Some(worst_orphan_delay(&dep.store, &orphans, stopped_ms).await);
    report
}

/// Redis (append-only file, fsync always) killed with SIGKILL mid-run and restarted from its
/// file.
async fn redis_sigkill_aof_restart() -> Report {
    let scenario = "redis_sigkill_aof_restart";
    let workload = Workload::mixed("aof", seed(), sized(20, 300));
    announce(scenario, &workload);
    let mut dep = Deployment::on(RedisServer::start_aof().expect("starting redis-server")).await;
    let sims = ollama_sims(1, LATENCY).await;
    let spec = spec(&dep, &[sims[0].url()], 8, "2s");
    let _fleet = workers(2, &spec).await;
    let ids = submit(&dep, &workload).await;

    let third = workload.task_count() as u64 / 3;
    within("a third of the calls", sims[0].wait_received(third)).await;
    dep.redis.kill();
    // The outage itself: how long Redis stays down is the fault's size, not a wait for
    // something to happen.
    tokio::time::sleep(sized(Duration::from_secs(1), Duration::from_secs(5))).await;
    dep.redis
        .restart()
        .expect("restarting redis-server from its AOF");
    // The store's connection died with the server.
    let store = Store::connect(&dep.url(), NAMESPACE).await;
    check(scenario, &store, &workload, &ids, &servers(&sims)).await
}

/// Redis frozen (SIGSTOP) mid-run, then resumed (SIGCONT).
async fn redis_paused() -> Report {
    let scenario = "redis_paused";
    let workload = Workload::mixed("pause", seed(), sized(20, 300));
    announce(scenario, &workload);
    let dep = Deployment::start().await;
    let sims = ollama_sims(1, LATENCY).await;
    let spec = spec(&dep, &[sims[0].url()], 8, "2s");
    let _fleet = workers(2, &spec).await;
    let ids = submit(&dep, &workload).await;

    let third = workload.task_count() as u64 / 3;
    within("a third of the calls", sims[0].wait_received(third)).await;
    let pid = dep.redis.pid().expect("redis-server runs");
    signal(pid, rustix::process::Signal::STOP);
    // The pause itself: its length is the fault's size.
    tokio::time::sleep(sized(Duration::from_secs(3), Duration::from_secs(10))).await;
    signal(pid, rustix::process::Signal::CONT);
    check(scenario, &dep.store, &workload, &ids, &servers(&sims)).await
}

const SERVICE: &str = "Fault Tasks";
const SERVICE_TOKEN: &str = "fault-suite-token-7";

/// The Python of the project's virtual environment, when it has the `gleitzeit` package.
fn python() -> Option<PathBuf> {
    let candidate = match std::env::var_os("GLEITZEIT_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
    };
    let ok = candidate.exists()
        && std::process::Command::new(&candidate)
            .args(["-c", "import gleitzeit.service, redis"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    ok.then_some(candidate)
}

/// A task service instance serving `tests/pyfns/fault_fns.py`; killed on drop.
struct Service {
    child: Child,
    pid: u32,
}

async fn start_service(python: &Path, redis_url: &str) -> Service {
    let mut child = Command::new(python)
        .args(["-m", "gleitzeit.service", "--name", SERVICE, "--port", "0"])
        .args(["--redis-url", redis_url, "--namespace", NAMESPACE])
        .args(["--log-level", "WARNING", "fault_fns"])
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("pyfns"),
        )
        .env("GLEITZEIT_SERVICE_TOKEN", SERVICE_TOKEN)
        .env("FAULT_REDIS_URL", redis_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning the Python task service");
    let pid = child.id().expect("pid of a process just started");
    let mut out = BufReader::new(child.stdout.take().expect("the service's stdout"));
    let mut line = String::new();
    within("the service's ready line", out.read_line(&mut line))
        .await
        .expect("reading the service's ready line");
    assert!(line.contains("\"ready\""), "unexpected first line: {line}");
    // The service prints nothing more; keep the pipe open so it never sees a broken pipe.
    std::mem::forget(out);
    Service { child, pid }
}

/// Two instances of a Python task service; one is killed (SIGKILL) while it runs a call.
async fn service_killed_mid_call() -> Option<Report> {
    let scenario = "service_killed_mid_call";
    let Some(python) = python() else {
        eprintln!("scenario {scenario} skipped: no Python with the gleitzeit package");
        return None;
    };
    let workload = Workload::service_diamonds("svc", seed(), sized(8, 100), SERVICE, "fault_echo");
    announce(scenario, &workload);
    let dep = Deployment::start().await;
    let sims = ollama_sims(1, LATENCY).await;
    let mut services = vec![
        start_service(&python, &dep.url()).await,
        start_service(&python, &dep.url()).await,
    ];
    let token = tempfile::NamedTempFile::new().expect("token file");
    std::fs::write(token.path(), SERVICE_TOKEN).expect("writing the token file");
    let spec = spec(&dep, &[sims[0].url()], 8, "3s").set(
        "external",
        json!({"enabled": true, "token_file": token.path()}),
    );
    let _fleet = workers(2, &spec).await;
    let ids = submit(&dep, &workload).await;

    // A call has started on some instance: kill that one while it runs.
    let started: u32 = dep
        .store
        .blpop("fault:started")
        .await
        .unwrap_or_else(|| panic!("no external call started within {HANG_GUARD:?}"))
        .parse()
        .expect("a pid");
    let victim = services
        .iter()
        .position(|s| s.pid == started)
        .expect("the call ran on one of the two instances");
    let mut killed = services.remove(victim);
    killed.child.kill().await.expect("killing the service");

    let report = check(scenario, &dep.store, &workload, &ids, &servers(&sims)).await;
    drop(services);
    Some(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sigkill_under_backlog_loses_nothing() {
    let report = worker_sigkill_under_backlog().await;
    report.print();
    report.assert_all_completed();
    report.assert_no_attempt_spent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sigstop_beyond_claim_idle_loses_nothing() {
    let report = worker_sigstop_beyond_claim_idle().await;
    report.print();
    report.assert_all_completed();
    report.assert_no_attempt_spent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sigkill_with_aof_restart_loses_nothing() {
    let report = redis_sigkill_aof_restart().await;
    report.print();
    report.assert_all_completed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_loses_nothing() {
    let report = redis_paused().await;
    report.print();
    report.assert_all_completed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_killed_mid_call_loses_nothing() {
    if let Some(report) = service_killed_mid_call().await {
        report.print();
        report.assert_all_completed();
    }
}

// ---------------------------------------------------------------------------------------
// Endpoint trouble, injected by the fault proxy
// ---------------------------------------------------------------------------------------

/// `n` simulators, each behind its own fault proxy.
async fn proxied(n: usize, latency: Duration) -> (Vec<MockOllama>, Vec<FaultProxy>) {
    let sims = ollama_sims(n, latency).await;
    let mut proxies = Vec::with_capacity(n);
    for sim in &sims {
        proxies.push(FaultProxy::start(&sim.url()).await);
    }
    (sims, proxies)
}

fn urls(proxies: &[FaultProxy]) -> Vec<String> {
    proxies.iter().map(FaultProxy::url).collect()
}

fn total_passed(proxies: &[FaultProxy]) -> u64 {
    proxies.iter().map(|p| p.counters().passed).sum()
}

fn proxy_summary(proxies: &[FaultProxy]) {
    for (i, p) in proxies.iter().enumerate() {
        eprintln!("proxy ep{i}: {:?}", p.counters());
    }
}

/// Both endpoints refuse connections for a while (8 s, 20 s in the full matrix), then are
/// back.
async fn every_endpoint_refusing() -> Report {
    let scenario = "every_endpoint_refusing";
    let workload = Workload::mixed("refuse", seed(), sized(20, 300));
    announce(scenario, &workload);
    let dep = Deployment::start().await;
    let (sims, proxies) = proxied(2, LATENCY).await;
    let _fleet = workers(2, &spec(&dep, &urls(&proxies), 8, "5s")).await;
    let ids = submit(&dep, &workload).await;

    let eighth = workload.task_count() as u64 / 8;
    until("an eighth of the calls to pass", || async {
        total_passed(&proxies) >= eighth
    })
    .await;
    for p in &proxies {
        p.set_mode(Mode::Refuse).await;
    }
    // The outage itself: its length is the fault's size.
    tokio::time::sleep(sized(Duration::from_secs(8), Duration::from_secs(20))).await;
    for p in &proxies {
        p.set_mode(Mode::Pass).await;
    }
    let report = check(scenario, &dep.store, &workload, &ids, &servers(&sims)).await;
    proxy_summary(&proxies);
    report
}

/// One endpoint that answers 503 "server busy" beyond 4 requests in flight (three workers
/// of concurrency 8, no `max_concurrent` configured); it recovers after three quarters of
/// the calls passed.
async fn endpoint_overloaded() -> Report {
    let scenario = "endpoint_overloaded";
    let workload = Workload::mixed("busy", seed(), sized(20, 300));
    announce(scenario, &workload);
    let dep = Deployment::start().await;
    let (sims, proxies) = proxied(1, Duration::from_millis(50)).await;
    proxies[0].set_mode(Mode::Busy { max_in_flight: 4 }).await;
    proxies[0].then(
        Trigger::Passed(workload.task_count() as u64 * 3 / 4),
        Mode::Pass,
    );
    let _fleet = workers(3, &spec(&dep, &urls(&proxies), 8, "5s")).await;
    let ids = submit(&dep, &workload).await;

    let report = check(scenario, &dep.store, &workload, &ids, &servers(&sims)).await;
    proxy_summary(&proxies);
    report
}

/// One endpoint that answers 429 with `Retry-After: 3` after a quarter of the calls, until
/// it has refused a number of them.
async fn endpoint_rate_limited() -> Report {
    let scenario = "endpoint_rate_limited";
    let workload = Workload::mixed("limit", seed(), sized(20, 300));
    announce(scenario, &workload);
    let dep = Deployment::start().await;
    let (sims, proxies) = proxied(1, LATENCY).await;
    let tasks = workload.task_count() as u64;
    proxies[0]
        .then(
            Trigger::Passed(tasks / 4),
            Mode::RateLimit {
                retry_after_secs: 3,
            },
        )
        .then(Trigger::Limited(sized(40, 200)), Mode::Pass);
    let _fleet = workers(2, &spec(&dep, &urls(&proxies), 8, "5s")).await;
    let ids = submit(&dep, &workload).await;

    let report = check(scenario, &dep.store, &workload, &ids, &servers(&sims)).await;
    proxy_summary(&proxies);
    report
}

/// One of two endpoints accepts calls and never answers them until the workers gave up on
/// some (task timeout 3 s); then it answers again.
async fn endpoint_hanging() -> Report {
    let scenario = "endpoint_hanging";
    let workload = Workload::mixed("hang", seed(), sized(20, 300)).with_timeout("3s");
    announce(scenario, &workload);
    let dep = Deployment::start().await;
    let (sims, proxies) = proxied(2, LATENCY).await;
    proxies[0].set_mode(Mode::Hang).await;
    proxies[0].then(Trigger::Abandoned(sized(3, 10)), Mode::Pass);
    let _fleet = workers(2, &spec(&dep, &urls(&proxies), 8, "5s")).await;
    let ids = submit(&dep, &workload).await;

    let report = check(scenario, &dep.store, &workload, &ids, &servers(&sims)).await;
    proxy_summary(&proxies);
    report
}

/// One endpoint dead (connections refused) while the other answers 429 with
/// `Retry-After: 3`; the rate limit ends after a number of refusals, then the dead one
/// comes back.
async fn one_dead_other_rate_limited() -> Report {
    let scenario = "one_dead_other_rate_limited";
    let workload = Workload::mixed("deadlimit", seed(), sized(20, 300));
    announce(scenario, &workload);
    let dep = Deployment::start().await;
    let (sims, proxies) = proxied(2, LATENCY).await;
    let _fleet = workers(2, &spec(&dep, &urls(&proxies), 8, "5s")).await;
    let ids = submit(&dep, &workload).await;

    let eighth = workload.task_count() as u64 / 8;
    until("an eighth of the calls to pass", || async {
        total_passed(&proxies) >= eighth
    })
    .await;
    proxies[0].set_mode(Mode::Refuse).await;
    proxies[1]
        .set_mode(Mode::RateLimit {
            retry_after_secs: 3,
        })
        .await;
    proxies[1].then(Trigger::Limited(sized(40, 200)), Mode::Pass);
    tokio::select! {
        _ = proxies[1].wait_schedule_done() => {}
        // Every workflow ended (failed) under the fault before the limit was used up.
        _ = drain(&dep.store, &ids) => {}
    }
    for p in &proxies {
        p.set_mode(Mode::Pass).await;
    }

    let report = check(scenario, &dep.store, &workload, &ids, &servers(&sims)).await;
    proxy_summary(&proxies);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refusing_then_back_completes_without_spending_attempts() {
    let report = every_endpoint_refusing().await;
    report.print();
    report.assert_all_completed();
    report.assert_no_attempt_spent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_overloaded_completes_without_spending_attempts() {
    let report = endpoint_overloaded().await;
    report.print();
    report.assert_all_completed();
    report.assert_no_attempt_spent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_rate_limited_completes_without_spending_attempts() {
    let report = endpoint_rate_limited().await;
    report.print();
    report.assert_all_completed();
    report.assert_no_attempt_spent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_hanging_then_back_completes() {
    let report = endpoint_hanging().await;
    report.print();
    report.assert_all_completed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_dead_other_rate_limited_completes_without_spending_attempts() {
    let report = one_dead_other_rate_limited().await;
    report.print();
    report.assert_all_completed();
    report.assert_no_attempt_spent();
}

// ---------------------------------------------------------------------------------------
// The checker itself
// ---------------------------------------------------------------------------------------

/// The checker sees each kind of damage: a result answering another task, a second
/// completion event, a completed task whose result is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_counts_damaged_records() {
    let workload = Workload::diamonds("damage", seed(), 3);
    let dep = Deployment::start().await;
    let sims = ollama_sims(1, Duration::ZERO).await;
    let _fleet = workers(1, &spec(&dep, &[sims[0].url()], 8, "5s")).await;
    let ids = submit(&dep, &workload).await;

    let clean = check("clean", &dep.store, &workload, &ids, &servers(&sims)).await;
    clean.print();
    clean.assert_all_completed();

    let keys = dep.store.keys();
    let join = 5; // Root, four branches, Join.
                  // Task fields live in the workflow hash, as `<index>.<field>`.
    let join_result = task_field(join, "result");
    let other: String = dep
        .store
        .query(
            deadpool_redis::redis::cmd("HGET")
                .arg(keys.workflow(&ids[1]))
                .arg(&join_result),
        )
        .await;
    let _: i64 = dep
        .store
        .query(
            deadpool_redis::redis::cmd("HSET")
                .arg(keys.workflow(&ids[0]))
                .arg(&join_result)
                .arg(&other),
        )
        .await;
    let _: String = dep
        .store
        .query(
            deadpool_redis::redis::cmd("XADD")
                .arg(keys.events(&ids[1]))
                .arg("*")
                .arg("kind")
                .arg("task")
                .arg("status")
                .arg("completed")
                .arg("task")
                .arg("North")
                .arg("i")
                .arg(1),
        )
        .await;
    let _: i64 = dep
        .store
        .query(
            deadpool_redis::redis::cmd("HDEL")
                .arg(keys.workflow(&ids[2]))
                .arg(&join_result),
        )
        .await;

    let damaged = check("damaged", &dep.store, &workload, &ids, &servers(&sims)).await;
    damaged.print();
    assert_eq!(
        (
            damaged.completed,
            damaged.unexpected,
            damaged.duplicated,
            damaged.lost,
            damaged.stuck
        ),
        (3, 1, 1, 1, 0),
        "{damaged:#?}"
    );
}
