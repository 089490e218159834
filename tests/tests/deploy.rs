//! The deployment files under `deploy/` checked against the code that will run them: every
//! YAML parses, the worker's probes hit its real health paths on its real default metrics
//! port, the grace period outlasts the drain, every `GLEITZEIT_*` variable set is one the
//! worker or the Python service reads, the worker configuration in the ConfigMap (and the
//! compose file's) parses and validates with the worker's own code, Redis persists with AOF and
//! never evicts, KEDA scales the worker Deployment, and Grafana gets its provisioning.
//! Nothing here runs Docker or Kubernetes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser};
use gleitzeit_e2e::repo::{read, root, tool};
use gleitzeit_worker::config::DEFAULT_METRICS_ADDR;
use gleitzeit_worker::{WorkerArgs, WorkerConfig};
use serde::Deserialize;
use serde_yaml_ng::Value;

/// Every document of a (multi-document) YAML file, with merge keys (`<<: *anchor`) applied.
fn documents(relative: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(&read(relative))
        .map(|doc| {
            let mut v = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
            v.apply_merge()
                .unwrap_or_else(|e| panic!("{relative}: merge keys: {e}"));
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Files under `deploy/` (recursively), relative to the repository root.
fn deploy_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("reading deploy/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).expect("under the root");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("deploy"), &root(), &mut out);
    out.sort();
    out
}

fn yaml_files() -> Vec<String> {
    deploy_files()
        .into_iter()
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".yml"))
        .collect()
}

/// Every Kubernetes object in `deploy/k8s`.
fn k8s_objects() -> Vec<Value> {
    yaml_files()
        .into_iter()
        .filter(|f| f.starts_with("deploy/k8s/") && !f.ends_with("kustomization.yaml"))
        .flat_map(|f| documents(&f))
        .collect()
}

fn k8s(kind: &str, name: &str) -> Value {
    k8s_objects()
        .into_iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
}

fn compose() -> Value {
    documents("deploy/compose.yaml").remove(0)
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A sequence of scalars (arguments, volumes, file lists) as strings; `what` names it when
/// it is not a sequence.
fn strings(v: &Value, what: &str) -> Vec<String> {
    v.as_sequence().expect(what).iter().map(str_of).collect()
}

/// The value following `flag` in an argument list (`--flag value`).
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone())
}

/// The worker's default metrics port, from the worker's own constant.
fn default_metrics_port() -> u16 {
    DEFAULT_METRICS_ADDR
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("DEFAULT_METRICS_ADDR has a port")
}

/// A duration parsed by the worker's own flag parser (the way it reads the variable).
fn worker_duration(flag: &str, text: &str) -> Duration {
    let args = WorkerArgs::try_parse_from(["gleitzeit-worker", flag, text])
        .unwrap_or_else(|e| panic!("{flag} {text}: {e}"));
    let mut cfg = WorkerConfig::default();
    args.apply(&mut cfg).expect("applying flags");
    match flag {
        "--drain-timeout" => cfg.drain_timeout,
        other => panic!("unexpected flag {other}"),
    }
}

/// `GLEITZEIT_*` variables the worker reads: every clap `env` of its flags, plus the default
/// name of the service-token variable (read through the configuration, not clap).
fn worker_env_names() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = WorkerArgs::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let external = read("crates/gleitzeit-external/src/config.rs");
    let token = external
        .lines()
        .find(|l| l.contains("pub const DEFAULT_TOKEN_ENV"))
        .and_then(|l| l.split('"').nth(1))
        .expect("DEFAULT_TOKEN_ENV in gleitzeit-external");
    names.insert(token.to_owned());
    names
}

/// `GLEITZEIT_*` names the Python package reads: the string literals in its source.
fn python_env_names() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("python/gleitzeit") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "py") {
                let text = std::fs::read_to_string(&path).expect("python source");
                for part in text.split("\"GLEITZEIT_").skip(1) {
                    let rest: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if part[rest.len()..].starts_with('"') {
                        out.insert(format!("GLEITZEIT_{rest}"));
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&root().join("python/gleitzeit"), &mut out);
    out
}

/// One container's environment as Kubernetes would hand it over: literal values with
/// `$(VAR)` references expanded, Secret and field references replaced by stand-ins.
fn container_env(container: &Value) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in container["env"].as_sequence().into_iter().flatten() {
        let name = str_of(&e["name"]);
        let value = if let Some(v) = e.get("value") {
            let mut v = str_of(v);
            for (k, val) in &env {
                v = v.replace(&format!("$({k})"), val);
            }
            v
        } else if let Some(r) = e["valueFrom"].get("secretKeyRef") {
            format!("secret-{}", str_of(&r["key"]))
        } else if e["valueFrom"].get("fieldRef").is_some() {
            "10.0.0.1".to_owned()
        } else {
            panic!("env {name}: neither value nor a known valueFrom");
        };
        env.insert(name, value);
    }
    env
}

/// Applies `GLEITZEIT_*` variables to a configuration the way the worker does, by handing each
/// to the clap flag that reads it.
fn apply_worker_env(cfg: &mut WorkerConfig, env: &BTreeMap<String, String>) {
    let cmd = WorkerArgs::command();
    let mut argv = vec!["gleitzeit-worker".to_owned()];
    for arg in cmd.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some(value) = env.get(&*var.to_string_lossy()) else {
            continue;
        };
        if long == "config" {
            continue; // the test reads the mounted file itself
        }
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            if value == "true" {
                argv.push(format!("--{long}"));
            }
        } else {
            argv.push(format!("--{long}={value}"));
        }
    }
    let args = WorkerArgs::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    args.apply(cfg).expect("applying the environment");
}

fn pod_spec(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]
}

fn first_container(deployment: &Value) -> &Value {
    &pod_spec(deployment)["containers"][0]
}

#[test]
fn every_yaml_file_parses_and_every_manifest_is_listed() {
    let files = yaml_files();
    assert!(files.len() >= 10, "{files:?}");
    for f in &files {
        let docs = documents(f);
        assert!(!docs.is_empty(), "{f}: no document");
        if f.starts_with("deploy/k8s/") {
            for d in &docs {
                assert!(d["apiVersion"].as_str().is_some(), "{f}: apiVersion");
                assert!(d["kind"].as_str().is_some(), "{f}: kind");
            }
        }
    }
    // Every namespaced object is in the gleitzeit namespace.
    for o in k8s_objects() {
        if o["kind"] != "Namespace" {
            assert_eq!(
                o["metadata"]["namespace"], "gleitzeit",
                "{:?}",
                o["metadata"]
            );
        }
    }
    // kustomization.yaml lists exactly the manifests in deploy/k8s.
    let kustomization = documents("deploy/k8s/kustomization.yaml").remove(0);
    let listed: BTreeSet<String> = strings(&kustomization["resources"], "resources")
        .into_iter()
        .collect();
    let present: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix("deploy/k8s/"))
        .filter(|f| *f != "kustomization.yaml")
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, present);
}

#[test]
fn the_worker_deployment_probes_its_health_paths_and_outlasts_the_drain() {
    let port = default_metrics_port();
    let d = k8s("Deployment", "gleitzeit-worker");
    let c = first_container(&d);
    let ports: BTreeMap<String, u64> = c["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                str_of(&p["name"]),
                p["containerPort"].as_u64().expect("port"),
            )
        })
        .collect();
    let resolve = |p: &Value| -> u64 {
        match p {
            Value::Number(n) => n.as_u64().expect("port number"),
            Value::String(name) => ports[name],
            other => panic!("probe port {other:?}"),
        }
    };
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(resolve(&get["port"]), u64::from(port), "{probe} port");
    }
    let env = container_env(c);
    let addr = &env["GLEITZEIT_METRICS_ADDR"];
    assert!(addr.ends_with(&format!(":{port}")), "{addr}");
    let annotations = &d["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string().as_str());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert!(c["resources"]["requests"]["cpu"].as_str().is_some());
    assert!(c["resources"]["limits"]["memory"].as_str().is_some());

    // The grace period exceeds the drain deadline the worker is given explicitly.
    let drain = worker_duration("--drain-timeout", &env["GLEITZEIT_DRAIN_TIMEOUT"]);
    let grace = pod_spec(&d)["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(grace) > drain,
        "grace {grace}s must exceed the drain {drain:?}"
    );
    // Rolling upgrades never take capacity away before the new pods are ready.
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0)
    );

    // The same in compose: Docker waits longer than the drain before SIGKILL.
    let worker = &compose()["services"]["worker"];
    let env = worker["environment"].clone();
    let drain = worker_duration("--drain-timeout", &str_of(&env["GLEITZEIT_DRAIN_TIMEOUT"]));
    let stop = worker_duration("--drain-timeout", &str_of(&worker["stop_grace_period"]));
    assert!(
        stop > drain,
        "stop_grace_period {stop:?} vs drain {drain:?}"
    );
    assert!(str_of(&env["GLEITZEIT_METRICS_ADDR"]).ends_with(&format!(":{port}")));
    // The image exposes the same port.
    assert!(read("deploy/Dockerfile").contains(&format!("EXPOSE {port}")));
}

#[test]
fn every_gleitzeit_variable_set_is_one_the_programs_read() {
    let worker = worker_env_names();
    let python = python_env_names();
    // The derivations found what they are meant to find.
    for name in [
        "GLEITZEIT_DRAIN_TIMEOUT",
        "GLEITZEIT_METRICS_ADDR",
        "GLEITZEIT_SERVICE_TOKEN",
    ] {
        assert!(worker.contains(name), "{name} not in {worker:?}");
    }
    for name in [
        "GLEITZEIT_SERVICE_TOKEN",
        "GLEITZEIT_SERVICE_ADVERTISE",
        "GLEITZEIT_REDIS_URL",
    ] {
        assert!(python.contains(name), "{name} not in {python:?}");
    }
    let check = |what: &str, names: Vec<String>, allowed: &BTreeSet<String>| {
        let gz: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with("GLEITZEIT_"))
            .collect();
        assert!(!gz.is_empty(), "{what}: sets no GLEITZEIT_ variable");
        for n in gz {
            assert!(
                allowed.contains(&n),
                "{what}: {n} is read by nobody ({allowed:?})"
            );
        }
    };
    for (name, allowed) in [
        ("gleitzeit-worker", &worker),
        ("gleitzeit-python-tasks", &python),
    ] {
        let d = k8s("Deployment", name);
        check(
            name,
            container_env(first_container(&d)).into_keys().collect(),
            allowed,
        );
    }
    let services = compose()["services"].clone();
    for (name, allowed) in [("worker", &worker), ("python-tasks", &python)] {
        let env = services[name]["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("compose {name}: environment mapping"));
        check(
            &format!("compose {name}"),
            env.keys().map(str_of).collect(),
            allowed,
        );
    }
    // And no file in deploy/ mentions a variable neither program reads (typos in comments
    // and Dockerfiles included).
    let known: BTreeSet<String> = worker.union(&python).cloned().collect();
    for f in deploy_files() {
        let text = read(&f);
        for part in text.split("GLEITZEIT_").skip(1) {
            let rest: String = part
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if rest.is_empty() {
                continue; // `GLEITZEIT_*` in prose
            }
            let name = format!("GLEITZEIT_{rest}");
            assert!(known.contains(&name), "{f}: {name} is read by nobody");
        }
    }
}

#[test]
fn the_configmap_worker_configuration_parses_and_validates() {
    let d = k8s("Deployment", "gleitzeit-worker");
    let c = first_container(&d);
    // The file the worker is pointed at is the ConfigMap key, mounted.
    let args = strings(&c["args"], "args");
    let config_path = flag_value(&args, "--config").expect("--config in args");
    let (dir, key) = config_path.rsplit_once('/').expect("a path");
    let mount = c["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == dir)
        .expect("the config directory is mounted");
    let volume = pod_spec(&d)["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let cm_name = str_of(&volume["configMap"]["name"]);
    let cm = k8s("ConfigMap", &cm_name);
    let text = str_of(&cm["data"][key]);

    let env = container_env(c);
    let mut cfg = WorkerConfig::from_yaml(&text, "ConfigMap worker.yaml").expect("parses");
    apply_worker_env(&mut cfg, &env);
    let settings = cfg
        .validate_with_env(&|name| env.get(name).cloned())
        .unwrap_or_else(|e| panic!("the ConfigMap configuration is invalid: {e}"));
    assert_eq!(settings.namespace, "gleitzeit");
    assert_eq!(settings.drain_timeout, Duration::from_secs(30));
    assert_eq!(
        settings.metrics_addr.map(|a| a.port()),
        Some(default_metrics_port())
    );
    assert!(settings.redis_url.contains("secret-redis-password@redis"));
    assert!(
        settings.external.is_some(),
        "the service token reaches the worker"
    );
    // Every endpoint's key variable is provided by the Deployment (from the Secret).
    assert!(!settings.endpoints.is_empty());
    for (i, ep) in cfg.endpoints.iter().enumerate() {
        if let Some(var) = &ep.api_key_env {
            assert!(env.contains_key(var), "endpoint {i}: {var} not set");
            assert!(settings.endpoints[i].api_key.is_some());
        }
    }
    // Secret references point at keys the Secret has.
    let secret = k8s("Secret", "gleitzeit-secrets");
    for name in ["gleitzeit-worker", "gleitzeit-python-tasks"] {
        let d = k8s("Deployment", name);
        for e in first_container(&d)["env"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if let Some(r) = e["valueFrom"].get("secretKeyRef") {
                assert_eq!(r["name"], "gleitzeit-secrets");
                assert!(
                    secret["stringData"].get(str_of(&r["key"])).is_some(),
                    "{name}: secret key {:?} missing",
                    r["key"]
                );
            }
        }
    }

    // The compose workers: deploy/config/worker.yaml plus their environment.
    let worker = &compose()["services"]["worker"];
    let env: BTreeMap<String, String> = worker["environment"]
        .as_mapping()
        .expect("environment")
        .iter()
        .map(|(k, v)| (str_of(k), str_of(v)))
        .collect();
    let mounted = strings(&worker["volumes"], "volumes")
        .into_iter()
        .find(|v| v.contains(&format!(":{}", env["GLEITZEIT_CONFIG"])))
        .expect("GLEITZEIT_CONFIG is a mounted file");
    let source = mounted.split(':').next().expect("source");
    let file = format!("deploy/{}", source.trim_start_matches("./"));
    let mut cfg = WorkerConfig::from_yaml(&read(&file), &file).expect("parses");
    apply_worker_env(&mut cfg, &env);
    let settings = cfg
        .validate_with_env(&|name| env.get(name).cloned())
        .unwrap_or_else(|e| panic!("{file} with the compose environment is invalid: {e}"));
    assert_eq!(settings.redis_url, "redis://redis:6379");
    assert!(settings
        .endpoints
        .iter()
        .any(|e| e.url == "http://ollama:11434"));
}

#[test]
fn redis_keeps_an_append_only_file_and_never_evicts() {
    let services = compose()["services"].clone();
    let command = strings(&services["redis"]["command"], "redis command");
    let flag = |name: &str| flag_value(&command, name);
    assert_eq!(flag("--appendonly").as_deref(), Some("yes"), "{command:?}");
    assert_eq!(flag("--appendfsync").as_deref(), Some("everysec"));
    assert_eq!(flag("--maxmemory-policy").as_deref(), Some("noeviction"));
    assert!(services["redis"]["volumes"][0]
        .as_str()
        .is_some_and(|v| v.ends_with(":/data")));

    let conf = str_of(&k8s("ConfigMap", "redis-config")["data"]["redis.conf"]);
    let setting = |name: &str| {
        conf.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name} ")).map(str::trim))
            .map(str::to_owned)
    };
    assert_eq!(setting("appendonly").as_deref(), Some("yes"), "{conf}");
    assert_eq!(setting("appendfsync").as_deref(), Some("everysec"));
    assert_eq!(setting("maxmemory-policy").as_deref(), Some("noeviction"));
    assert_eq!(setting("dir").as_deref(), Some("/data"));
    let sts = k8s("StatefulSet", "redis");
    let claim = str_of(&sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]);
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert!(c["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .any(|m| m["name"] == claim.as_str() && m["mountPath"] == "/data"));
    let args = strings(&c["args"], "args");
    assert!(
        args.iter().any(|a| a == "/etc/redis/redis.conf"),
        "{args:?}"
    );
}

#[test]
fn keda_scales_the_worker_deployment_and_prometheus_finds_the_workers() {
    let so = k8s("ScaledObject", "gleitzeit-worker");
    let target = &so["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment");
    let name = str_of(&target["name"]);
    k8s("Deployment", &name); // exists
    assert_eq!(name, "gleitzeit-worker");
    let trigger = &so["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    assert!(str_of(&trigger["metadata"]["query"]).contains("gleitzeit_stream_ready"));
    // The backlog gauges come from the workers: scaling to zero would leave no metric to
    // scale up on.
    assert!(so["spec"]["minReplicaCount"].as_u64().unwrap_or(0) >= 1);

    // ServiceMonitor → Service → worker pods, on the metrics port.
    let svc = k8s("Service", "gleitzeit-worker");
    let sm = k8s("ServiceMonitor", "gleitzeit-worker");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels")
    {
        assert_eq!(&svc["metadata"]["labels"][str_of(k).as_str()], v);
    }
    let port_name = str_of(&sm["spec"]["endpoints"][0]["port"]);
    assert!(svc["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .any(|p| p["name"] == port_name.as_str()));
    let pod_labels =
        &k8s("Deployment", "gleitzeit-worker")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_mapping().expect("selector") {
        assert_eq!(&pod_labels[str_of(k).as_str()], v);
    }

    // The PrometheusRule carries exactly the rule file compose loads.
    let rule = k8s("PrometheusRule", "gleitzeit");
    let file = documents("deploy/prometheus/alerts.yml").remove(0);
    assert_eq!(rule["spec"]["groups"], file["groups"]);

    // Compose: Prometheus scrapes the worker service on the metrics port.
    let prom = documents("deploy/prometheus/prometheus.yml").remove(0);
    let job = prom["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "gleitzeit-worker")
        .expect("the worker job")
        .clone();
    let sd = &job["dns_sd_configs"][0];
    assert_eq!(sd["names"][0], "worker");
    assert_eq!(sd["port"].as_u64(), Some(u64::from(default_metrics_port())));
}

#[test]
fn compose_runs_the_whole_stack_and_mounts_what_it_names() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    for s in [
        "redis",
        "worker",
        "python-tasks",
        "ollama",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(s), "compose lacks {s}");
    }
    assert_eq!(
        c["services"]["worker"]["deploy"]["replicas"].as_u64(),
        Some(2)
    );
    assert_eq!(
        c["services"]["worker"]["build"]["dockerfile"],
        "deploy/Dockerfile"
    );
    assert_eq!(
        c["services"]["python-tasks"]["build"]["dockerfile"],
        "deploy/python.Dockerfile"
    );
    // The service token comes from the environment, never a literal.
    for s in ["worker", "python-tasks"] {
        let token = str_of(&c["services"][s]["environment"]["GLEITZEIT_SERVICE_TOKEN"]);
        assert!(
            token.starts_with("${GLEITZEIT_SERVICE_TOKEN"),
            "{s}: {token}"
        );
    }
    let grafana = strings(&c["services"]["grafana"]["volumes"], "grafana volumes");
    assert!(
        grafana
            .iter()
            .any(|v| v.starts_with("../grafana/provisioning:/etc/grafana/provisioning")),
        "{grafana:?}"
    );
    // Every bind mount's source exists (relative to deploy/).
    for (name, svc) in services {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let v = str_of(v);
            let source = v.split(':').next().expect("source");
            if source.starts_with('.') {
                let path = root().join("deploy").join(source);
                assert!(path.exists(), "{}: {source} does not exist", str_of(name));
            }
        }
    }
    // The Dockerfiles are multi-stage / non-root as promised.
    let worker_image = read("deploy/Dockerfile");
    assert!(worker_image.contains(" AS builder"));
    assert!(worker_image.contains("--mount=type=cache"));
    assert!(worker_image.contains("USER 10001"));
    let python_image = read("deploy/python.Dockerfile");
    assert!(python_image.contains("gleitzeit-service"));
    assert!(python_image.contains("USER 10001"));
}

#[test]
fn promtool_accepts_the_prometheus_configuration_and_rules() {
    // `promtool` ships with the Debian package `prometheus`.
    let Some(promtool) = tool("promtool") else {
        eprintln!(
            "SKIPPED promtool_accepts_the_prometheus_configuration_and_rules: no `promtool` on \
             PATH or in /usr/bin (scripts/bootstrap.sh installs the Debian package `prometheus`)"
        );
        return;
    };
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .output()
            .expect("running promtool");
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let rules = root().join("deploy/prometheus/alerts.yml");
    run(&["check", "rules", &rules.to_string_lossy()]);
    // The configuration names the rule file by its path inside the container; check it with
    // that path pointing at the file in the repository.
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = read("deploy/prometheus/prometheus.yml")
        .replace("/etc/prometheus/alerts.yml", &rules.to_string_lossy());
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).expect("writing the configuration copy");
    run(&["check", "config", &path.to_string_lossy()]);
}
