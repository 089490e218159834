//! Running `gleitzeit-submit` as a process, the way operators and scripts do.

use std::fmt;
use std::path::Path;
use std::process::Stdio;

use gleitzeit_queue::TlsFiles;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::worker::clean_env;
use crate::{bins, HANG_GUARD};

/// What a command printed and how it exited.
#[derive(Clone)]
pub struct Output {
    /// The command line (for messages).
    pub command: String,
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Standard output parsed as one JSON document.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self:?}"))
    }

    /// Asserts the exit code, showing the output otherwise.
    pub fn assert_code(&self, code: i32) -> &Output {
        assert_eq!(self.code, code, "unexpected exit code:\n{self:?}");
        self
    }

    /// Standard output and standard error together.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\nexit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// `gleitzeit-submit` bound to one Redis and namespace (given as flags, never inherited from
/// the environment).
#[derive(Debug, Clone)]
pub struct Cli {
    redis_url: String,
    namespace: String,
    tls: TlsFiles,
}

impl Cli {
    /// The CLI for this Redis and namespace.
    pub fn new(redis_url: &str, namespace: &str) -> Cli {
        Cli {
            redis_url: redis_url.to_owned(),
            namespace: namespace.to_owned(),
            tls: TlsFiles::default(),
        }
    }

    /// The same CLI, given these TLS files as `--redis-tls-*` flags.
    pub fn with_tls(mut self, tls: TlsFiles) -> Cli {
        self.tls = tls;
        self
    }

    /// Runs `gleitzeit-submit <args>` with `--redis-url` and `--namespace` added.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None).await
    }

    /// Runs a command feeding `stdin` to it.
    pub async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(bins::binary(bins::SUBMIT));
        clean_env(&mut cmd);
        cmd.args(args)
            .arg("--redis-url")
            .arg(&self.redis_url)
            .arg("--namespace")
            .arg(&self.namespace);
        for (flag, file) in [
            ("--redis-tls-ca", &self.tls.ca),
            ("--redis-tls-cert", &self.tls.cert),
            ("--redis-tls-key", &self.tls.key),
        ] {
            if let Some(file) = file {
                cmd.arg(flag).arg(file);
            }
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let command = format!("gleitzeit-submit {}", args.join(" "));
        let mut child = cmd.spawn().expect("spawning gleitzeit-submit");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A command refused before it reads its input (a bad flag) may exit first.
            if let Err(e) = pipe.write_all(text.as_bytes()).await {
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe,
                    "writing the CLI's stdin: {e}"
                );
            }
            drop(pipe);
        }
        let out = match tokio::time::timeout(HANG_GUARD, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => panic!("running {command}: {e}"),
            Err(_) => panic!("{command} did not finish within {HANG_GUARD:?}"),
        };
        Output {
            command,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `submit FILE --events`: asserts success and returns the printed workflow id. Every
    /// transition becomes an event, so tests can wait for a task's `running` or `retrying`.
    pub async fn submit_file(&self, path: &Path) -> String {
        let path = path.to_str().expect("UTF-8 path");
        let out = self.run(&["submit", path, "--events"]).await;
        out.assert_code(0);
        let id = out.stdout.trim().to_owned();
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "submit did not print a workflow id:\n{out:?}"
        );
        id
    }

    /// Writes `yaml` to a temporary `.yaml` file and submits it; returns the workflow id.
    pub async fn submit_yaml(&self, yaml: &str) -> String {
        let file = yaml_file(yaml);
        self.submit_file(file.path()).await
    }

    /// `status ID --json`.
    pub async fn status_json(&self, id: &str) -> Output {
        self.run(&["status", id, "--json"]).await
    }

    /// `results ID --json`.
    pub async fn results_json(&self, id: &str) -> Output {
        self.run(&["results", id, "--json"]).await
    }
}

/// A temporary `.yaml` file holding `text` (deleted when dropped).
pub fn yaml_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .prefix("workflow-")
        .suffix(".yaml")
        .tempfile()
        .expect("temporary workflow file");
    std::fs::write(file.path(), text).expect("writing the workflow file");
    file
}
