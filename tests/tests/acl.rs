//! Least privilege: the `ACL SETUSER` lines `gleitzeit-submit acl` prints are accepted by a
//! real Redis, and the whole fleet runs under them — a workflow submitted as the submitter
//! user is run by a worker process under the worker user and inspected with the operator
//! commands under the monitor user, and a Python task service registers under the service
//! user. A user missing one command gets an error naming that command and the role; a wrong
//! password gets exit code 9 and stops a worker at start.

use std::process::Stdio;

use gleitzeit_e2e::bins;
use gleitzeit_e2e::cli::Cli;
use gleitzeit_e2e::sim::echo_openai;
use gleitzeit_e2e::worker::WorkerProcess;
use gleitzeit_e2e::workflows::diamond;
use gleitzeit_e2e::{within, Deployment, NAMESPACE};
use serde_json::Value;

/// The environment variable the password is handed over in, and the password.
const PW_VAR: &str = "GLEITZEIT_E2E_ACL_PASSWORD";
const PW: &str = "s3cret pass\"word";

/// Runs `gleitzeit-submit --namespace e2e acl ARGS` (no Redis involved) with the password in
/// [`PW_VAR`]; returns (exit code, stdout, stderr).
async fn acl(args: &[&str]) -> (i32, String, String) {
    let out = within(
        "gleitzeit-submit acl",
        tokio::process::Command::new(bins::binary(bins::SUBMIT))
            .args(["--namespace", NAMESPACE, "acl"])
            .args(args)
            .env(PW_VAR, PW)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("running gleitzeit-submit acl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The printed lines of every role, with the password from the environment.
async fn lines() -> Vec<String> {
    let (code, out, err) = acl(&["--role", "all", "--password-env", PW_VAR]).await;
    assert_eq!(code, 0, "acl failed: {err}");
    assert!(
        !out.contains(PW),
        "the password must never be printed:\n{out}"
    );
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 5, "one line per role:\n{out}");
    lines
}

/// The line of one role's user.
fn line_of<'a>(lines: &'a [String], role: &str) -> &'a str {
    let user = format!("ACL SETUSER {NAMESPACE}-{role} ");
    lines
        .iter()
        .find(|l| l.starts_with(&user))
        .unwrap_or_else(|| panic!("no line for {role}: {lines:?}"))
}

/// Applies lines through an administrator connection; each must be accepted.
fn apply(dep: &Deployment, lines: &[impl AsRef<str>]) {
    for line in lines {
        let reply = dep
            .redis
            .admin_line(line.as_ref())
            .unwrap_or_else(|e| panic!("Redis refused {:?}: {e}", line.as_ref()));
        assert_eq!(reply, "OK", "{}", line.as_ref());
    }
}

/// The CLI as one role's user.
fn cli_as(dep: &Deployment, role: &str, password: &str) -> Cli {
    Cli::new(
        &dep.redis.url_as(&format!("{NAMESPACE}-{role}"), password),
        NAMESPACE,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_lines_are_accepted_and_the_fleet_runs_under_them() {
    let dep = Deployment::start().await;
    let lines = lines().await;
    apply(&dep, &lines);
    // Without --password-env: the placeholder, said so on stderr; Redis accepts those too.
    let (code, out, err) = acl(&["--role", "monitor"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(" >CHANGE_ME "), "{out}");
    assert!(err.contains("CHANGE_ME"), "{err}");
    dep.redis
        .admin_line(&out.replace("e2e-monitor", "e2e-placeholder"))
        .expect("the placeholder line is accepted");

    let sim = echo_openai().await;
    let spec = dep
        .worker(&sim.url())
        .set("redis_url", dep.redis.url_as("e2e-worker", PW))
        .set("published_endpoints", "adopt");
    let worker = WorkerProcess::spawn("w", &spec);
    worker.consumer().await;

    let submitter = cli_as(&dep, "submitter", PW);
    let id = submitter.submit_yaml(&diamond("acl")).await;
    // `watch` follows the events (XREAD BLOCK) until the workflow ends: exit 0 = completed.
    submitter.run(&["watch", &id]).await.assert_code(0);
    let status = submitter.status_json(&id).await;
    status.assert_code(0);
    assert_eq!(status.json()["status"], "completed");
    submitter.results_json(&id).await.assert_code(0);
    submitter.run(&["--json", "list"]).await.assert_code(0);
    // `submit --wait` as the submitter, and `cancel` of a finished workflow (cancel.lua).
    let waited = submitter
        .run_with_stdin(
            &["--json", "submit", "-", "--wait"],
            Some(&diamond("acl-wait")),
        )
        .await;
    waited.assert_code(0);
    assert_eq!(waited.json()["status"], "completed");
    submitter.run(&["cancel", &id]).await.assert_code(0);

    let monitor = cli_as(&dep, "monitor", PW);
    let fleet = monitor.run(&["--json", "fleet"]).await;
    fleet.assert_code(0);
    let workers = fleet.json()["workers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        workers.len(),
        1,
        "the worker registry works under the worker user"
    );
    for cmd in [
        &["--json", "queues"][..],
        &["--json", "endpoints"],
        &["--json", "dead", "list"],
    ] {
        monitor.run(cmd).await.assert_code(0);
    }
    let operator = cli_as(&dep, "operator", PW);
    operator
        .run(&["--json", "dead", "list"])
        .await
        .assert_code(0);
    // Publishing endpoints is the operator's; reading them the monitor's and the worker's.
    let sim_url = sim.url();
    let add = [
        "--json",
        "endpoints",
        "add",
        "pub",
        "--kind",
        "openai",
        "--url",
        &sim_url,
    ];
    operator.run(&add).await.assert_code(0);
    operator
        .run(&["--json", "endpoints", "strategy", "priority"])
        .await
        .assert_code(0);
    worker
        .wait_log("published endpoints adopted version=2 endpoints=pub")
        .await;
    monitor
        .run(&["--json", "endpoints", "published"])
        .await
        .assert_code(0);
    monitor.run(&add).await.assert_code(10);
    operator
        .run(&["--json", "endpoints", "remove", "pub"])
        .await
        .assert_code(0);
    // Pruning is the operator's too: every command it sends is granted (the live worker's
    // consumers and capabilities stay).
    let pruned = operator
        .run(&["--json", "prune", "--older-than", "0s", "--yes"])
        .await;
    pruned.assert_code(0);
    assert_eq!(pruned.json()["applied"], true);
    assert_eq!(pruned.json()["capabilities"], serde_json::json!([]));

    let refused: Vec<String> = worker
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("NOPERM") || l.contains("permission"))
        .collect();
    assert!(refused.is_empty(), "the worker was refused: {refused:?}");
    // The monitor may not write: its user cannot cancel (a submitter command), and is told
    // which command it lacks and which role `cancel` needs.
    let denied = monitor.run(&["--json", "cancel", &id]).await;
    denied.assert_code(10);
    let doc: Value = denied.json();
    assert_eq!(doc["error"]["kind"], "permission");
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`evalsha`"), "{message}");
    assert!(message.contains("role submitter"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_missing_one_command_is_told_which_and_a_worker_stops_at_start() {
    let dep = Deployment::start().await;
    let lines = lines().await;
    // The monitor without TIME (what a category ACL such as +@read lacks).
    let monitor = line_of(&lines, "monitor").replace(" +time", "");
    // The worker without MULTI (the worker registry's transaction).
    let worker = line_of(&lines, "worker").replace(" +multi", "");
    assert!(monitor != line_of(&lines, "monitor") && worker != line_of(&lines, "worker"));
    apply(&dep, &[monitor, worker]);

    // A capability stream to look at (written as the administrator).
    dep.cli.submit_yaml(&diamond("queued")).await;
    let queues = cli_as(&dep, "monitor", PW).run(&["queues"]).await;
    queues.assert_code(10);
    assert!(queues.stderr.contains("`time`"), "{}", queues.stderr);
    assert!(queues.stderr.contains("role monitor"), "{}", queues.stderr);

    let sim = echo_openai().await;
    let spec = dep
        .worker(&sim.url())
        .set("redis_url", dep.redis.url_as("e2e-worker", PW));
    let mut w = WorkerProcess::spawn("w", &spec);
    let status = w.wait_exit().await;
    assert!(!status.success(), "the worker must stop at start, not loop");
    let log = w.log_lines().join("\n");
    assert!(log.contains("role worker"), "{log}");
    assert!(log.contains("multi"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_exits_9_and_stops_a_worker_at_start() {
    let dep = Deployment::start().await;
    apply(&dep, &lines().await);
    for user in ["submitter", "nobody"] {
        let out = cli_as(&dep, user, "wrong-password").run(&["list"]).await;
        out.assert_code(9);
        assert!(
            out.stderr.contains("refused the credentials"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("wrong-password"), "{}", out.stderr);
    }
    let json = cli_as(&dep, "submitter", "wrong-password")
        .run(&["--json", "status", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"])
        .await;
    json.assert_code(9);
    assert_eq!(json.json()["error"]["kind"], "auth");

    let sim = echo_openai().await;
    let spec = dep.worker(&sim.url()).set(
        "redis_url",
        dep.redis.url_as("e2e-worker", "wrong-password"),
    );
    let mut w = WorkerProcess::spawn("w", &spec);
    let status = w.wait_exit().await;
    assert!(!status.success());
    let log = w.log_lines().join("\n");
    assert!(log.contains("refused the worker's credentials"), "{log}");
}

/// The Python interpreter with the `gleitzeit` package (`GLEITZEIT_PYTHON`, else the
/// repository's `.venv`), or `None` when there is none (scripts/bootstrap.sh installs it).
fn python() -> Option<std::path::PathBuf> {
    let candidate = std::env::var_os("GLEITZEIT_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| gleitzeit_e2e::repo::root().join(".venv/bin/python"));
    let ok = std::process::Command::new(&candidate)
        .args(["-c", "import gleitzeit.service, redis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(candidate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_service_registers_under_the_service_user() {
    let Some(python) = python() else {
        println!("skipped: no Python with the gleitzeit package (scripts/bootstrap.sh)");
        return;
    };
    let dep = Deployment::start().await;
    apply(&dep, &lines().await);
    const TOKEN: &str = "acl-test-token-0042";
    let root = gleitzeit_e2e::repo::root();
    let mut service = tokio::process::Command::new(python)
        .args([
            "-m",
            "gleitzeit.service",
            "--name",
            "Python Tasks",
            "--port",
            "0",
        ])
        .arg("--redis-url")
        .arg(dep.redis.url_as("e2e-service", PW))
        .args(["--namespace", NAMESPACE, "--log-level", "WARNING", "tasks"])
        .env("PYTHONPATH", root.join("examples/python"))
        .env("GLEITZEIT_SERVICE_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning the Python service");
    let mut out = tokio::io::BufReader::new(service.stdout.take().expect("stdout"));
    let mut ready = String::new();
    within(
        "the service's ready line",
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut ready),
    )
    .await
    .expect("reading the ready line");
    assert!(ready.contains("\"ready\""), "{ready}");

    // The registration heartbeat (MULTI/EXEC of ZREMRANGEBYSCORE, ZADD, HSET, PEXPIRE) was
    // accepted under the service user.
    let instances: Vec<String> = dep
        .store
        .query(
            deadpool_redis::redis::cmd("ZRANGE")
                .arg(format!("{{{NAMESPACE}}}:svc:Python Tasks"))
                .arg(0)
                .arg(-1),
        )
        .await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    let hash = dep
        .store
        .hash(&format!(
            "{{{NAMESPACE}}}:svc:Python Tasks:{}",
            instances[0]
        ))
        .await;
    assert_eq!(
        hash.get("service").map(String::as_str),
        Some("Python Tasks")
    );
    // The service user can do nothing else: not even the first PING of another role.
    let other = cli_as(&dep, "service", PW).run(&["list"]).await;
    other.assert_code(10);
    assert!(other.stderr.contains("`ping`"), "{}", other.stderr);
}
