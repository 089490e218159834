//! Environment and flag overrides. This file holds a single test because it changes the
//! process environment, which the other tests of the binary would otherwise see.

use std::time::Duration;

use clap::Parser;
use gleitzeit_worker::{EndpointKind, WorkerArgs};

#[test]
fn environment_overrides_file_and_flags_override_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.yaml");
    std::fs::write(
        &path,
        "namespace: from-file\nconcurrency: 3\ngroup: file-group\nclaim_idle: 90s\n",
    )
    .unwrap();

    // Variables this test does not set must not leak in from the surrounding environment.
    for (name, _) in std::env::vars() {
        if name.starts_with("GLEITZEIT_") {
            std::env::remove_var(name);
        }
    }
    std::env::set_var("GLEITZEIT_CONFIG", &path);
    std::env::set_var("GLEITZEIT_CONCURRENCY", "11");
    std::env::set_var("GLEITZEIT_NAMESPACE", "from-env");
    std::env::set_var("GLEITZEIT_CAPABILITIES", "llm:smollm2, llm:other");
    std::env::set_var("GLEITZEIT_DRAIN_TIMEOUT", "7s");
    std::env::set_var("GLEITZEIT_CLAIM_IDLE_OVERRIDES", "llm:big*=10m,llm:x=2m");
    std::env::set_var(
        "GLEITZEIT_ENDPOINTS",
        r#"[{"name":"sim","kind":"openai","url":"http://127.0.0.1:9","models":["smollm2"]}]"#,
    );

    let args =
        WorkerArgs::try_parse_from(["gleitzeit-worker", "--namespace", "from-flag"]).unwrap();
    let cfg = args.load().unwrap();
    // File value kept where nothing overrides it.
    assert_eq!(cfg.group, "file-group");
    assert_eq!(cfg.claim_idle, Duration::from_secs(90));
    // Environment beats the file.
    assert_eq!(cfg.concurrency, 11);
    assert_eq!(cfg.capabilities, vec!["llm:smollm2", "llm:other"]);
    assert_eq!(cfg.drain_timeout, Duration::from_secs(7));
    assert_eq!(cfg.claim_idle_overrides.len(), 2);
    assert_eq!(
        cfg.claim_idle_overrides["llm:big*"],
        Duration::from_secs(600)
    );
    assert_eq!(cfg.endpoints.len(), 1);
    assert_eq!(cfg.endpoints[0].kind, EndpointKind::OpenAi);
    // A flag beats the environment.
    assert_eq!(cfg.namespace, "from-flag");
    let settings = cfg.validate().unwrap();
    assert_eq!(
        settings.claim_idle_for("llm:bigmodel"),
        Duration::from_secs(600)
    );

    // A malformed value is reported against its variable.
    std::env::set_var("GLEITZEIT_DRAIN_TIMEOUT", "whenever");
    let e = WorkerArgs::try_parse_from(["gleitzeit-worker"])
        .err()
        .unwrap();
    assert!(e.to_string().contains("whenever"), "{e}");
    std::env::set_var("GLEITZEIT_DRAIN_TIMEOUT", "1s");
    std::env::set_var("GLEITZEIT_ENDPOINTS", "[{name: x}]");
    let e = WorkerArgs::try_parse_from(["gleitzeit-worker"])
        .unwrap()
        .load()
        .unwrap_err();
    assert!(e.to_string().contains("GLEITZEIT_ENDPOINTS"), "{e}");
}
