//! Configuration: file parsing, defaults, validation of every field, secret handling.

use std::path::PathBuf;
use std::time::Duration;

use gleitzeit_worker::{ConfigError, EndpointKind, EndpointSpec, WorkerConfig};

fn no_env(_: &str) -> Option<String> {
    None
}

fn endpoint(name: &str) -> EndpointSpec {
    EndpointSpec {
        name: name.to_owned(),
        kind: EndpointKind::OpenAi,
        url: "http://127.0.0.1:8080".to_owned(),
        api_key_env: None,
        api_key_file: None,
        models: vec!["smollm2".to_owned()],
        timeout: Duration::from_secs(60),
    }
}

/// Validates `cfg` and returns the fields the error names (panics when it validates).
fn invalid_fields(cfg: &WorkerConfig) -> Vec<String> {
    match cfg.validate_with_env(&no_env) {
        Ok(_) => panic!("configuration unexpectedly valid: {cfg:?}"),
        Err(e) => {
            assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
            e.fields().into_iter().map(str::to_owned).collect()
        }
    }
}

fn assert_invalid(cfg: WorkerConfig, field: &str) {
    let fields = invalid_fields(&cfg);
    assert_eq!(fields, vec![field.to_owned()], "expected only {field}");
}

#[test]
fn defaults_validate_and_derive_intervals() {
    let s = WorkerConfig::default().validate_with_env(&no_env).unwrap();
    assert_eq!(s.redis_url, "redis://127.0.0.1:6379");
    assert_eq!(s.namespace, "gleitzeit");
    assert_eq!(s.group, "workers");
    assert_eq!(s.concurrency, 32);
    assert!(s.allows_capability("llm:smollm2"));
    // External streams are allowed by default, but without a service token nothing serves them.
    assert!(s.allows_capability("ext:Python Tasks"));
    assert!(s.external.is_none());
    assert_eq!(s.caps_refresh, Duration::from_secs(1));
    assert_eq!(s.read_block, Duration::from_secs(1));
    assert_eq!(s.read_linger, Duration::from_millis(2));
    assert_eq!(s.claim_idle, Duration::from_secs(60));
    assert_eq!(s.reclaim_interval, Duration::from_secs(30));
    assert_eq!(s.heartbeat_interval, Duration::from_secs(20));
    assert_eq!(s.max_deliveries, 5);
    assert_eq!(s.drain_timeout, Duration::from_secs(30));
    assert_eq!(s.promote_interval_max, Duration::from_secs(1));
    // No endpoint configured: one local Ollama serving any model.
    assert_eq!(s.endpoints.len(), 1);
    assert_eq!(s.endpoints[0].kind, EndpointKind::Ollama);
    assert_eq!(s.endpoints[0].url, "http://127.0.0.1:11434");
    assert!(s.endpoints[0].serves_model("anything"));
    assert!(s.endpoints[0].api_key.is_none());
}

#[test]
fn yaml_file_sets_fields_and_overrides() {
    let cfg = WorkerConfig::from_yaml(
        r#"
redis_url: redis://10.1.2.3:6380/2
namespace: prod
group: fleet
concurrency: 7
capabilities: ["llm:smollm2", "llm:llama*"]
caps_refresh: 250ms
claim_idle: 2m
claim_idle_overrides: { "llm:llama*": 10m }
max_deliveries: 3
drain_timeout: 5
promote_interval_max: 1.5
endpoints:
  - { name: a, kind: openai, url: "http://127.0.0.1:9000", models: [smollm2] }
  - { name: b, kind: ollama, url: "http://127.0.0.1:11434" }
"#,
        "inline",
    )
    .unwrap();
    let s = cfg.validate_with_env(&no_env).unwrap();
    assert_eq!(s.namespace, "prod");
    assert_eq!(s.group, "fleet");
    assert_eq!(s.concurrency, 7);
    assert_eq!(s.read_block, Duration::from_millis(250));
    assert_eq!(s.claim_idle_for("llm:smollm2"), Duration::from_secs(120));
    assert_eq!(s.claim_idle_for("llm:llama3.2"), Duration::from_secs(600));
    // Derived from the shortest claim idle time.
    assert_eq!(s.heartbeat_interval, Duration::from_secs(40));
    assert_eq!(s.reclaim_interval, Duration::from_secs(60));
    assert_eq!(s.drain_timeout, Duration::from_secs(5));
    assert_eq!(s.promote_interval_max, Duration::from_millis(1500));
    assert_eq!(s.endpoints.len(), 2);
    assert!(s.endpoints[0].serves_model("smollm2"));
    assert!(!s.endpoints[0].serves_model("llama3.2"));
    // `models` defaults to any model.
    assert!(s.endpoints[1].serves_model("llama3.2"));
    assert_eq!(s.endpoints[1].timeout, Duration::from_secs(300));
}

#[test]
fn unknown_fields_and_bad_types_are_parse_errors() {
    let e = WorkerConfig::from_yaml("concurency: 3\n", "f.yaml").unwrap_err();
    assert!(matches!(e, ConfigError::Parse { .. }));
    assert!(e.to_string().contains("concurency"), "{e}");
    let e = WorkerConfig::from_yaml("claim_idle: soon\n", "f.yaml").unwrap_err();
    assert!(e.to_string().contains("soon"), "{e}");
    let e = WorkerConfig::from_yaml(
        "endpoints: [{name: a, kind: bedrock, url: 'http://x'}]\n",
        "f.yaml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("bedrock"), "{e}");
}

#[test]
fn missing_file_is_a_read_error() {
    let e = WorkerConfig::from_file(&PathBuf::from("/nonexistent/worker.yaml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
}

#[test]
fn empty_file_means_defaults() {
    assert_eq!(
        WorkerConfig::from_yaml("  \n", "f").unwrap(),
        WorkerConfig::default()
    );
}

#[test]
fn each_field_is_validated() {
    let base = WorkerConfig::default;

    assert_invalid(
        WorkerConfig {
            redis_url: "http://127.0.0.1:6379".into(),
            ..base()
        },
        "redis_url",
    );
    // The Sentinel and cluster forms are checked too, under the same field.
    assert_invalid(
        WorkerConfig {
            redis_url: "redis+sentinel://s1:26379,s2".into(),
            ..base()
        },
        "redis_url",
    );
    assert_invalid(
        WorkerConfig {
            redis_url: "redis+cluster://n1:7000/2".into(),
            ..base()
        },
        "redis_url",
    );
    for good in [
        "redis+sentinel://s1:26379,s2/gleitzeit",
        "redis+cluster://n1:7000,n2:7001",
    ] {
        assert!(
            WorkerConfig {
                redis_url: good.into(),
                ..base()
            }
            .validate()
            .is_ok(),
            "{good}"
        );
    }
    assert_invalid(
        WorkerConfig {
            namespace: "a{b}".into(),
            ..base()
        },
        "namespace",
    );
    assert_invalid(
        WorkerConfig {
            namespace: String::new(),
            ..base()
        },
        "namespace",
    );
    assert_invalid(
        WorkerConfig {
            group: "two words".into(),
            ..base()
        },
        "group",
    );
    assert_invalid(
        WorkerConfig {
            concurrency: 0,
            ..base()
        },
        "concurrency",
    );
    assert_invalid(
        WorkerConfig {
            concurrency: 10_000_000,
            ..base()
        },
        "concurrency",
    );
    assert_invalid(
        WorkerConfig {
            capabilities: vec![],
            ..base()
        },
        "capabilities",
    );
    assert_invalid(
        WorkerConfig {
            capabilities: vec!["llm:*".into(), "".into()],
            ..base()
        },
        "capabilities[1]",
    );
    assert_invalid(
        WorkerConfig {
            caps_refresh: Duration::ZERO,
            read_block: Some(Duration::from_secs(1)),
            ..base()
        },
        "caps_refresh",
    );
    assert_invalid(
        WorkerConfig {
            read_block: Some(Duration::ZERO),
            ..base()
        },
        "read_block",
    );
    // A linger as long as the blocking read is refused; zero turns it off.
    assert_invalid(
        WorkerConfig {
            read_block: Some(Duration::from_millis(100)),
            read_linger: Duration::from_millis(100),
            ..base()
        },
        "read_linger",
    );
    let off = WorkerConfig {
        read_linger: Duration::ZERO,
        ..base()
    };
    assert_eq!(
        off.validate_with_env(&no_env).unwrap().read_linger,
        Duration::ZERO
    );
    assert_invalid(
        WorkerConfig {
            claim_idle: Duration::ZERO,
            reclaim_interval: Some(Duration::from_secs(1)),
            heartbeat_interval: Some(Duration::from_secs(1)),
            ..base()
        },
        "claim_idle",
    );
    assert_invalid(
        WorkerConfig {
            claim_idle_overrides: [("llm:x".to_owned(), Duration::ZERO)].into(),
            reclaim_interval: Some(Duration::from_secs(1)),
            heartbeat_interval: Some(Duration::from_secs(1)),
            ..base()
        },
        "claim_idle_overrides[llm:x]",
    );
    assert_invalid(
        WorkerConfig {
            claim_idle_overrides: [("".to_owned(), Duration::from_secs(5))].into(),
            ..base()
        },
        "claim_idle_overrides[]",
    );
    assert_invalid(
        WorkerConfig {
            reclaim_interval: Some(Duration::ZERO),
            ..base()
        },
        "reclaim_interval",
    );
    assert_invalid(
        WorkerConfig {
            heartbeat_interval: Some(Duration::from_secs(60)),
            ..base()
        },
        "heartbeat_interval",
    );
    // A per-capability claim idle shorter than the heartbeat is caught too.
    assert_invalid(
        WorkerConfig {
            heartbeat_interval: Some(Duration::from_secs(10)),
            claim_idle_overrides: [("llm:fast".to_owned(), Duration::from_secs(5))].into(),
            ..base()
        },
        "heartbeat_interval",
    );
    assert_invalid(
        WorkerConfig {
            max_deliveries: 0,
            ..base()
        },
        "max_deliveries",
    );
    assert_invalid(
        WorkerConfig {
            promote_interval_max: Duration::ZERO,
            ..base()
        },
        "promote_interval_max",
    );
}

#[test]
fn retention_is_refused_with_where_it_moved() {
    let err = WorkerConfig::from_yaml("retention: 1h\n", "worker.yaml").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("worker.yaml"), "{text}");
    assert!(text.contains("unknown field `retention`"), "{text}");
    assert!(
        text.contains("gleitzeit-submit --retention") && text.contains("retention:"),
        "{text}"
    );
}

#[test]
fn each_endpoint_field_is_validated() {
    let with = |e: EndpointSpec| WorkerConfig {
        endpoints: vec![endpoint("ok"), e],
        ..WorkerConfig::default()
    };
    assert_invalid(
        with(EndpointSpec {
            name: " ".into(),
            ..endpoint("x")
        }),
        "endpoints[1].name",
    );
    assert_invalid(with(endpoint("ok")), "endpoints[1].name");
    assert_invalid(
        with(EndpointSpec {
            url: "localhost:8080".into(),
            ..endpoint("x")
        }),
        "endpoints[1].url",
    );
    assert_invalid(
        with(EndpointSpec {
            url: "ftp://127.0.0.1/".into(),
            ..endpoint("x")
        }),
        "endpoints[1].url",
    );
    assert_invalid(
        with(EndpointSpec {
            models: vec![],
            ..endpoint("x")
        }),
        "endpoints[1].models",
    );
    assert_invalid(
        with(EndpointSpec {
            models: vec!["ok".into(), "two words".into()],
            ..endpoint("x")
        }),
        "endpoints[1].models[1]",
    );
    assert_invalid(
        with(EndpointSpec {
            timeout: Duration::ZERO,
            ..endpoint("x")
        }),
        "endpoints[1].timeout",
    );
    assert_invalid(
        with(EndpointSpec {
            api_key_env: Some("GLEITZEIT_TEST_UNSET_KEY_VARIABLE".into()),
            ..endpoint("x")
        }),
        "endpoints[1].api_key_env",
    );
    assert_invalid(
        with(EndpointSpec {
            api_key_env: Some("K".into()),
            api_key_file: Some("/tmp/k".into()),
            ..endpoint("x")
        }),
        "endpoints[1].api_key_env",
    );
    assert_invalid(
        with(EndpointSpec {
            api_key_file: Some("/nonexistent/key".into()),
            ..endpoint("x")
        }),
        "endpoints[1].api_key_file",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let cfg = WorkerConfig {
        concurrency: 0,
        namespace: "a b".into(),
        max_deliveries: 0,
        endpoints: vec![EndpointSpec {
            url: "nope".into(),
            ..endpoint("x")
        }],
        ..WorkerConfig::default()
    };
    let fields = invalid_fields(&cfg);
    for f in [
        "namespace",
        "concurrency",
        "max_deliveries",
        "endpoints[0].url",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
}

#[test]
fn secrets_are_read_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "sk-file-secret-4711\n").unwrap();
    let cfg = WorkerConfig {
        redis_url: "redis://:redis-pass-0815@127.0.0.1:6379/0".into(),
        endpoints: vec![
            EndpointSpec {
                api_key_env: Some("MY_KEY".into()),
                ..endpoint("env")
            },
            EndpointSpec {
                api_key_file: Some(key_file.clone()),
                ..endpoint("file")
            },
        ],
        ..WorkerConfig::default()
    };
    let env = |name: &str| (name == "MY_KEY").then(|| "sk-env-secret-1234".to_owned());
    let s = cfg.validate_with_env(&env).unwrap();
    assert_eq!(
        s.endpoints[0].api_key.as_ref().unwrap().expose(),
        "sk-env-secret-1234"
    );
    assert_eq!(
        s.endpoints[1].api_key.as_ref().unwrap().expose(),
        "sk-file-secret-4711"
    );
    for shown in [
        format!("{cfg:?}"),
        format!("{s:?}"),
        format!("{:?}", s.endpoints),
        s.redis_url_redacted(),
    ] {
        assert!(!shown.contains("sk-env-secret-1234"), "{shown}");
        assert!(!shown.contains("sk-file-secret-4711"), "{shown}");
        assert!(!shown.contains("redis-pass-0815"), "{shown}");
    }
    // The error for a missing variable names it but holds no value.
    let e = WorkerConfig {
        endpoints: vec![EndpointSpec {
            api_key_env: Some("MY_KEY".into()),
            ..endpoint("env")
        }],
        ..WorkerConfig::default()
    }
    .validate_with_env(&no_env)
    .unwrap_err();
    assert!(e.to_string().contains("MY_KEY"), "{e}");
}

#[test]
fn example_configs_validate() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned());
    for (file, kind) in [
        ("worker.yaml", EndpointKind::OpenAi),
        ("worker-ollama.yaml", EndpointKind::Ollama),
        ("worker-openai.yaml", EndpointKind::OpenAi),
    ] {
        let cfg = WorkerConfig::from_file(&root.join(file)).unwrap();
        let s = cfg
            .validate_with_env(&env)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(s.endpoints[0].kind, kind, "{file}");
    }
    let local = WorkerConfig::from_file(&root.join("worker.yaml"))
        .unwrap()
        .validate_with_env(&no_env)
        .unwrap();
    assert!(local.endpoints[0].serves_model("smollm2"));
    // The cloud example refuses to start without its key.
    let e = WorkerConfig::from_file(&root.join("worker-openai.yaml"))
        .unwrap()
        .validate_with_env(&no_env)
        .unwrap_err();
    assert_eq!(e.fields(), vec!["endpoints[0].api_key_env"]);
}

#[test]
fn serialised_config_round_trips() {
    let cfg = WorkerConfig {
        concurrency: 3,
        read_block: Some(Duration::from_millis(200)),
        claim_idle_overrides: [("llm:big*".to_owned(), Duration::from_secs(600))].into(),
        endpoints: vec![endpoint("a")],
        ..WorkerConfig::default()
    };
    let text = serde_yaml_ng::to_string(&cfg).unwrap();
    assert_eq!(WorkerConfig::from_yaml(&text, "round trip").unwrap(), cfg);
}

/// Real PEM files (a private CA, a client certificate and key) from a TLS test server.
fn tls_server() -> gleitzeit_testkit::redis::RedisServer {
    gleitzeit_testkit::redis::RedisServer::start_tls(gleitzeit_testkit::redis::ClientAuth::Optional)
        .expect("tls redis-server")
}

#[test]
fn redis_tls_files_are_checked_before_connecting() {
    let server = tls_server();
    let files = server.tls_files().expect("tls files");
    let rediss = || WorkerConfig {
        redis_url: server.url().into(),
        ..WorkerConfig::default()
    };

    // All three, readable PEM, with rediss://: carried into the settings.
    let s = WorkerConfig {
        redis_tls_ca: Some(files.ca_cert()),
        redis_tls_cert: Some(files.client_cert()),
        redis_tls_key: Some(files.client_key()),
        ..rediss()
    }
    .validate_with_env(&no_env)
    .expect("valid TLS settings");
    assert_eq!(s.redis_tls.ca, Some(files.ca_cert()));
    assert_eq!(s.redis_tls.cert, Some(files.client_cert()));
    assert_eq!(s.redis_tls.key, Some(files.client_key()));
    assert!(s.redis_target().is_tls());

    // TLS files with a plain URL.
    assert_invalid(
        WorkerConfig {
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_tls_ca: Some(files.ca_cert()),
            ..WorkerConfig::default()
        },
        "redis_tls_ca",
    );
    // Certificate and key go together: the missing one is named.
    assert_invalid(
        WorkerConfig {
            redis_tls_cert: Some(files.client_cert()),
            ..rediss()
        },
        "redis_tls_key",
    );
    assert_invalid(
        WorkerConfig {
            redis_tls_key: Some(files.client_key()),
            ..rediss()
        },
        "redis_tls_cert",
    );
    // A missing file, named with its path.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let cfg = WorkerConfig {
        redis_tls_ca: Some(missing.clone()),
        ..rediss()
    };
    assert_invalid(cfg.clone(), "redis_tls_ca");
    let message = cfg.validate_with_env(&no_env).unwrap_err().to_string();
    assert!(message.contains("missing-ca.pem"), "{message}");
    // Not PEM, and PEM of the wrong kind.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not pem at all\n").unwrap();
    assert_invalid(
        WorkerConfig {
            redis_tls_cert: Some(garbage),
            redis_tls_key: Some(files.client_key()),
            ..rediss()
        },
        "redis_tls_cert",
    );
    assert_invalid(
        WorkerConfig {
            redis_tls_cert: Some(files.client_cert()),
            redis_tls_key: Some(files.client_cert()),
            ..rediss()
        },
        "redis_tls_key",
    );
}

#[test]
fn redis_tls_fields_parse_from_yaml_and_flags() {
    let cfg = WorkerConfig::from_yaml(
        "redis_url: rediss://redis.internal:6380\nredis_tls_ca: /etc/gleitzeit/ca.pem\n\
         redis_tls_cert: /etc/gleitzeit/client.pem\nredis_tls_key: /etc/gleitzeit/client.key\n",
        "test",
    )
    .unwrap();
    assert_eq!(
        cfg.redis_tls_ca,
        Some(PathBuf::from("/etc/gleitzeit/ca.pem"))
    );
    assert_eq!(
        cfg.redis_tls_cert,
        Some(PathBuf::from("/etc/gleitzeit/client.pem"))
    );
    assert_eq!(
        cfg.redis_tls_key,
        Some(PathBuf::from("/etc/gleitzeit/client.key"))
    );

    use clap::Parser;
    let args = gleitzeit_worker::WorkerArgs::try_parse_from([
        "gleitzeit-worker",
        "--redis-tls-ca",
        "/flags/ca.pem",
        "--redis-tls-cert",
        "/flags/client.pem",
        "--redis-tls-key",
        "/flags/client.key",
    ])
    .unwrap();
    let mut cfg = cfg;
    args.apply(&mut cfg).unwrap();
    assert_eq!(cfg.redis_tls_ca, Some(PathBuf::from("/flags/ca.pem")));
    assert_eq!(cfg.redis_tls_cert, Some(PathBuf::from("/flags/client.pem")));
    assert_eq!(cfg.redis_tls_key, Some(PathBuf::from("/flags/client.key")));
}

#[test]
fn read_linger_parses_from_yaml_and_flags() {
    let cfg = WorkerConfig::from_yaml("read_linger: 5ms\n", "test").unwrap();
    assert_eq!(cfg.read_linger, Duration::from_millis(5));
    use clap::Parser;
    let args =
        gleitzeit_worker::WorkerArgs::try_parse_from(["gleitzeit-worker", "--read-linger", "0s"])
            .unwrap();
    let mut cfg = cfg;
    args.apply(&mut cfg).unwrap();
    assert_eq!(cfg.read_linger, Duration::ZERO);
    let s = cfg.validate_with_env(&no_env).unwrap();
    assert_eq!(s.read_linger, Duration::ZERO);
}
