//! Command-line arguments (clap derive). The binary parses these and hands them to
//! [`crate::run`]; nothing here touches Redis or the file system.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Shown under `--help`: callers branch on these numbers (see [`crate::ExitCode`]).
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  unexpected error
  2  invalid workflow, input or usage (nothing was written)
  3  cannot reach Redis
  4  workflow failed or was cancelled
  5  not found (workflow or dead letter)
  6  idempotency key used by a different workflow
  7  --wait or watch timed out (the workflow keeps running)
  8  refused by the current state (nothing was changed for that item)
  9  Redis refused the credentials (wrong password or unknown user)
  10  the Redis user lacks a permission (ACL; see `gleitzeit-submit acl`)
  11  Redis is full (maxmemory, noeviction): new work refused, nothing written
  12  written to the primary, not confirmed by the replicas asked for (--replica-acks)";

/// Submit LLM workflows to a Gleitzeit worker fleet and follow them.
#[derive(Debug, Clone, Parser)]
#[command(name = "gleitzeit-submit", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Redis to talk to (`redis://[USER:PASSWORD@]HOST:PORT[/DB]`, `rediss://` for TLS), or
    /// the sentinels of a primary with replicas
    /// (`redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`), or a Redis
    /// Cluster (`redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]`).
    // hide_env_values: the URL may carry a password, which `--help` must never print.
    #[arg(
        long,
        global = true,
        env = "GLEITZEIT_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// PEM file of the CA certificates to trust for a rediss:// URL, instead of the system
    /// store (which honours SSL_CERT_FILE).
    #[arg(
        long,
        global = true,
        env = "GLEITZEIT_REDIS_TLS_CA",
        value_name = "PEM"
    )]
    pub redis_tls_ca: Option<PathBuf>,

    /// PEM client certificate for a Redis with `tls-auth-clients yes` (needs --redis-tls-key).
    #[arg(
        long,
        global = true,
        env = "GLEITZEIT_REDIS_TLS_CERT",
        value_name = "PEM"
    )]
    pub redis_tls_cert: Option<PathBuf>,

    /// PEM private key of --redis-tls-cert.
    #[arg(
        long,
        global = true,
        env = "GLEITZEIT_REDIS_TLS_KEY",
        value_name = "PEM"
    )]
    pub redis_tls_key: Option<PathBuf>,

    /// Key namespace of the deployment (every key starts with `{<namespace>}:`).
    #[arg(
        long,
        global = true,
        env = "GLEITZEIT_NAMESPACE",
        default_value = "gleitzeit"
    )]
    pub namespace: String,

    /// Shards the namespace's workflows are spread over (1-256; docs/scaling.md). Unset:
    /// the count the namespace records (one for a namespace that records none). Set: the
    /// first submission records it; a namespace that records another count is refused.
    #[arg(long, global = true, env = "GLEITZEIT_SHARDS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: Option<u16>,

    /// Replicas that must confirm a submitted workflow before `submit` succeeds (Redis
    /// replicates asynchronously: a failover right after a submission can lose it). Exit
    /// code 12 when fewer confirm within 2 s. 0: do not wait.
    #[arg(
        long,
        global = true,
        env = "GLEITZEIT_REPLICA_ACKS",
        default_value_t = 0,
        value_name = "N"
    )]
    pub replica_acks: u32,

    /// Machine-readable output: one JSON document on stdout (errors too).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The operations.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Check a workflow file and print every problem; opens no connection.
    #[command(after_help = EXIT_CODES_HELP)]
    Validate(ValidateArgs),
    /// Validate, then submit a workflow; prints its id.
    #[command(after_help = EXIT_CODES_HELP)]
    Submit(SubmitArgs),
    /// Show a workflow's status and the status of each task.
    #[command(after_help = EXIT_CODES_HELP)]
    Status(IdArgs),
    /// Show each task's result (or failure) with model, tokens and duration.
    #[command(after_help = EXIT_CODES_HELP)]
    Results(IdArgs),
    /// Cancel a running workflow.
    #[command(after_help = EXIT_CODES_HELP)]
    Cancel(IdArgs),
    /// List recent workflows, newest first.
    #[command(after_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Show every capability stream: ready backlog, pending, oldest ready age, consumers,
    /// retries waiting and dead letters.
    #[command(after_help = EXIT_CODES_HELP)]
    Queues,
    /// Inspect, requeue or purge dead letters (tasks that failed for good).
    #[command(after_help = EXIT_CODES_HELP)]
    Dead(DeadArgs),
    /// Follow a workflow live until it ends (exit code as `submit --wait`).
    #[command(after_help = EXIT_CODES_HELP)]
    Watch(WatchArgs),
    /// Show the live workers, their load, the queue totals and the LLM endpoints.
    #[command(after_help = EXIT_CODES_HELP)]
    Fleet,
    /// Show each LLM endpoint's health, load, loaded models and recent latency; with a
    /// subcommand, publish endpoints to the fleet (see `endpoints --help`).
    #[command(after_help = EXIT_CODES_HELP)]
    Endpoints(EndpointsArgs),
    /// Find the state a long-running fleet leaves behind (consumers of workers gone for long,
    /// endpoints nobody reports on, idle capabilities nobody serves) and, with --yes, remove
    /// it. Never removes anything that holds or receives work.
    #[command(after_help = EXIT_CODES_HELP)]
    Prune(PruneArgs),
    /// Print `ACL SETUSER` lines that give each role exactly the Redis commands and keys it
    /// uses (pipe them into `redis-cli`); opens no connection. See docs/acl.md.
    #[command(after_help = EXIT_CODES_HELP)]
    Acl(AclArgs),
}

/// `endpoints` arguments: without a subcommand, the health view.
#[derive(Debug, Clone, Args)]
pub struct EndpointsArgs {
    #[command(subcommand)]
    pub command: Option<EndpointsCommand>,
}

/// Endpoints published to the fleet, adopted by workers with `published_endpoints: adopt`.
#[derive(Debug, Clone, Subcommand)]
pub enum EndpointsCommand {
    /// Publish an endpoint (replacing one of the same name), checked like an endpoint of the
    /// worker configuration file.
    #[command(after_help = EXIT_CODES_HELP)]
    Add(EndpointAddArgs),
    /// Withdraw a published endpoint.
    #[command(after_help = EXIT_CODES_HELP)]
    Remove(EndpointNameArgs),
    /// List the published endpoints and strategy.
    #[command(after_help = EXIT_CODES_HELP)]
    Published,
    /// Publish the routing strategy (replaces the workers' configured one while they adopt).
    #[command(after_help = EXIT_CODES_HELP)]
    Strategy(StrategyArgs),
}

/// `endpoints add` arguments: the fields of a configuration file's endpoint and its
/// `routing.endpoints.<name>` attributes.
#[derive(Debug, Clone, Args)]
pub struct EndpointAddArgs {
    /// Unique endpoint name.
    pub name: String,
    /// Provider API: ollama, openai or anthropic.
    #[arg(long)]
    pub kind: String,
    /// Base URL (`http://host:port`; OpenAI-compatible URLs without `/v1`).
    #[arg(long)]
    pub url: String,
    /// Models served, comma-separated; `*` = any.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub models: Vec<String>,
    /// The NAME of the environment variable that holds the API key on the workers (never the
    /// key: a value that looks like one is refused).
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Lower is tried first by the `priority` strategy.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// The endpoint runs models on a GPU.
    #[arg(long)]
    pub gpu: bool,
    /// Most calls in flight on it across the fleet (unset: unlimited).
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u32>,
    /// Memory for models, GB.
    #[arg(long, value_name = "GB")]
    pub memory_gb: Option<f64>,
    /// Most models kept loaded at once (Ollama's OLLAMA_MAX_LOADED_MODELS).
    #[arg(long, value_name = "N")]
    pub max_loaded: Option<u32>,
    /// A tag (repeat for several); tasks select endpoints by tag.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Limit for one HTTP request (`300s`, `5m`, or seconds).
    #[arg(long, default_value = "300s")]
    pub timeout: String,
}

/// One published endpoint.
#[derive(Debug, Clone, Args)]
pub struct EndpointNameArgs {
    /// The endpoint's name.
    pub name: String,
}

/// `endpoints strategy` arguments.
#[derive(Debug, Clone, Args)]
pub struct StrategyArgs {
    /// round_robin, least_loaded, priority, fastest or model_affinity.
    pub strategy: String,
}

/// `acl` arguments.
#[derive(Debug, Clone, Args)]
pub struct AclArgs {
    /// Which role's user to print (`all`: one line per role).
    #[arg(long, value_enum, default_value_t = RoleArg::All)]
    pub role: RoleArg,

    /// Take the password from this environment variable (the lines carry its SHA-256, never
    /// the password). Without it the lines set the placeholder password `CHANGE_ME`.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

/// The `--role` values of `acl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Submitter,
    Worker,
    Service,
    Monitor,
    Operator,
    All,
}

/// `dead` arguments.
#[derive(Debug, Clone, Args)]
pub struct DeadArgs {
    #[command(subcommand)]
    pub command: DeadCommand,
}

/// The `dead` operations.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadCommand {
    /// List dead letters, newest first.
    #[command(after_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Show one dead letter with its task's definition, attempts and last error.
    #[command(after_help = EXIT_CODES_HELP)]
    Inspect(EntryArgs),
    /// Put dead-lettered tasks back to work (attempts reset) and reopen their workflows.
    #[command(after_help = EXIT_CODES_HELP)]
    Requeue(SelectArgs),
    /// Delete dead letters (and nothing else).
    #[command(after_help = EXIT_CODES_HELP)]
    Purge(PurgeArgs),
}

/// One dead letter.
#[derive(Debug, Clone, Args)]
pub struct EntryArgs {
    /// Dead-letter id (as printed by `dead list`: `<shard>/<entry id>` in a sharded namespace).
    pub entry_id: String,
}

/// One dead letter, or all of them (optionally of one capability).
#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Dead-letter id (as printed by `dead list`: `<shard>/<entry id>` in a sharded namespace).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub entry_id: Option<String>,

    /// Every dead letter (oldest first).
    #[arg(long)]
    pub all: bool,

    /// With --all: only the dead letters of this capability (`llm:<model>`, `ext:<service>`).
    #[arg(long, conflicts_with = "entry_id", value_name = "CAPABILITY")]
    pub capability: Option<String>,
}

/// `dead purge` arguments.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    /// Confirm deleting with --all (refused without it).
    #[arg(long)]
    pub yes: bool,
}

/// `prune` arguments.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// How long state must have been idle to count as stale (`90m`, `2h`, `1d`).
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub older_than: Duration,

    /// Remove what is found (without it, only report).
    #[arg(long)]
    pub yes: bool,
}

/// `watch` arguments.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Workflow id (as printed by `submit`).
    pub id: String,

    /// Stop watching after this long (`90s`, `5m`); the workflow keeps running (exit 7).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

/// Where a workflow comes from and which input it gets.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Workflow file (.yaml, .yml or .json), or `-` for standard input.
    pub file: PathBuf,

    /// Format of the workflow text. `auto` takes it from the file extension, and for standard
    /// input from the content.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,

    /// Set a workflow input value: `key=value`. The value is taken as JSON when it is valid
    /// JSON (`n=3`, `tags=["a"]`), else as a string. Repeatable; wins over --input-file.
    #[arg(long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,

    /// A JSON object of workflow input values.
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
}

/// `validate` arguments.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub source: SourceArgs,
}

/// `submit` arguments.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Submitting again with the same key and the same workflow returns the first workflow's
    /// id; the same key with a different workflow is refused (exit 6).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// Follow the workflow until it ends, showing progress on stderr, then print its results.
    #[arg(long)]
    pub wait: bool,

    /// Give up waiting after this long (`90s`, `5m`); the workflow keeps running (exit 7).
    #[arg(long, requires = "wait", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// Record every transition of the workflow's tasks (ready, running, retrying, their
    /// ends) in its events stream, not only the workflow's own events: for a program that
    /// follows the stream itself from the start. `--wait` and `watch` need no flag.
    #[arg(long)]
    pub events: bool,

    /// How long the workflow's results and events stay in Redis after it ends, for workflows
    /// whose file sets no `retention` (`1h`, `7d`; at least 1s). Default 24h.
    #[arg(
        long,
        env = "GLEITZEIT_RETENTION",
        value_parser = parse_retention,
        value_name = "DURATION"
    )]
    pub retention: Option<Duration>,
}

/// Arguments of the commands that take one workflow id.
#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    /// Workflow id (as printed by `submit`).
    pub id: String,
}

/// `list` arguments.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// How many workflows to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// The `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Yaml,
    Json,
    Auto,
}

/// A retention: a duration of at least one second (Redis expires keys in whole seconds).
fn parse_retention(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(1) {
        return Err(format!("retention `{}` must be at least 1s", text.trim()));
    }
    Ok(d)
}

/// Durations as people write them; a bare number means seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("`{text}` is not a valid duration"));
    }
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a valid duration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn globals_have_documented_defaults() {
        let cli = Cli::try_parse_from(["gleitzeit-submit", "list"]).unwrap();
        // The environment of the test process could set these; only assert when it does not.
        if std::env::var_os("GLEITZEIT_REDIS_URL").is_none() {
            assert_eq!(cli.redis_url, "redis://127.0.0.1:6379");
        }
        if std::env::var_os("GLEITZEIT_NAMESPACE").is_none() {
            assert_eq!(cli.namespace, "gleitzeit");
        }
        if std::env::var_os("GLEITZEIT_REDIS_TLS_CA").is_none() {
            assert_eq!(cli.redis_tls_ca, None);
        }
        assert!(!cli.json);
        match cli.command {
            Command::List(args) => assert_eq!(args.limit, 20),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn tls_flags_parse_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "gleitzeit-submit",
            "list",
            "--redis-tls-ca",
            "/etc/ca.pem",
            "--redis-tls-cert",
            "/etc/client.pem",
            "--redis-tls-key",
            "/etc/client.key",
        ])
        .unwrap();
        assert_eq!(cli.redis_tls_ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(cli.redis_tls_cert, Some(PathBuf::from("/etc/client.pem")));
        assert_eq!(cli.redis_tls_key, Some(PathBuf::from("/etc/client.key")));
    }

    #[test]
    fn submit_flags_parse() {
        let cli = Cli::try_parse_from([
            "gleitzeit-submit",
            "--json",
            "submit",
            "-",
            "--format",
            "json",
            "--input",
            "a=1",
            "--input",
            "b=x",
            "--idempotency-key",
            "k1",
            "--wait",
            "--timeout",
            "1m30s",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Submit(args) = cli.command else {
            panic!("not submit")
        };
        assert_eq!(args.source.file, PathBuf::from("-"));
        assert_eq!(args.source.format, FormatArg::Json);
        assert_eq!(args.source.inputs, vec!["a=1", "b=x"]);
        assert_eq!(args.idempotency_key.as_deref(), Some("k1"));
        assert!(args.wait);
        assert_eq!(args.timeout, Some(Duration::from_secs(90)));
    }

    #[test]
    fn timeout_needs_wait() {
        let err = Cli::try_parse_from(["gleitzeit-submit", "submit", "f.yaml", "--timeout", "5s"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn durations_accept_plain_seconds_and_humantime() {
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn operations_parse() {
        let cli = Cli::try_parse_from(["gleitzeit-submit", "dead", "requeue", "--all"]).unwrap();
        let Command::Dead(DeadArgs {
            command: DeadCommand::Requeue(sel),
        }) = cli.command
        else {
            panic!("not dead requeue")
        };
        assert!(sel.all && sel.entry_id.is_none() && sel.capability.is_none());
        // An id or --all, never both, never neither.
        for bad in [
            vec!["gleitzeit-submit", "dead", "requeue"],
            vec!["gleitzeit-submit", "dead", "requeue", "1-0", "--all"],
            vec![
                "gleitzeit-submit",
                "dead",
                "purge",
                "1-0",
                "--capability",
                "x",
            ],
        ] {
            let err = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2);
        }
        let cli = Cli::try_parse_from([
            "gleitzeit-submit",
            "dead",
            "purge",
            "--all",
            "--capability",
            "llm:x",
            "--yes",
        ])
        .unwrap();
        let Command::Dead(DeadArgs {
            command: DeadCommand::Purge(p),
        }) = cli.command
        else {
            panic!("not dead purge")
        };
        assert!(p.yes && p.select.all);
        assert_eq!(p.select.capability.as_deref(), Some("llm:x"));
        let cli = Cli::try_parse_from([
            "gleitzeit-submit",
            "--namespace",
            "team-a",
            "acl",
            "--role",
            "worker",
            "--password-env",
            "PW",
        ])
        .unwrap();
        let Command::Acl(a) = cli.command else {
            panic!("not acl")
        };
        assert_eq!(
            (a.role, a.password_env.as_deref()),
            (RoleArg::Worker, Some("PW"))
        );
        assert_eq!(cli.namespace, "team-a");
        let cli = Cli::try_parse_from(["gleitzeit-submit", "acl"]).unwrap();
        let Command::Acl(a) = cli.command else {
            panic!("not acl")
        };
        assert_eq!((a.role, a.password_env), (RoleArg::All, None));
        let cli =
            Cli::try_parse_from(["gleitzeit-submit", "watch", "w1", "--timeout", "5s"]).unwrap();
        let Command::Watch(w) = cli.command else {
            panic!("not watch")
        };
        assert_eq!(
            (w.id.as_str(), w.timeout),
            ("w1", Some(Duration::from_secs(5)))
        );
    }

    #[test]
    fn help_lists_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for code in crate::ExitCode::ALL {
            assert!(
                help.contains(&format!("  {}  {}", code.code(), code.describe())),
                "help lacks exit code {code:?}:\n{help}"
            );
        }
    }
}
