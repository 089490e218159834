//! `endpoints add|remove|published|strategy`: the endpoints and the routing strategy published
//! to the fleet in Redis ([`gleitzeit_queue::published`]), adopted by workers configured with
//! `published_endpoints: adopt`.
//!
//! An endpoint is checked with the rules of a worker's configuration file
//! ([`gleitzeit_llm::spec`]) before any connection opens, so a refused one writes nothing.
//! Its API key is only ever named by environment variable (`--api-key-env`), resolved on
//! each worker; a value shaped like a key is refused without being repeated. Every command
//! prints what is published afterwards: `{"published": [ENTRY], "strategy": str|null}` with
//! `ENTRY = {"endpoint": {...}, "routing": {...}}` as stored.

use std::io::Write;
use std::str::FromStr;

use gleitzeit_llm::spec::{duration_serde, EndpointKind};
use gleitzeit_llm::{EndpointRouting, EndpointSpec, PublishedEndpoint, SpecProblem, Strategy};
use gleitzeit_queue::{Published, Queue};
use serde::Serialize;
use serde_json::Value;

use crate::cli::{EndpointAddArgs, EndpointsCommand};
use crate::error::CliError;
use crate::exit::ExitCode;
use crate::report::table;
use crate::session::{print_view, runtime, Ctx};

/// What every `endpoints` publishing command prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishedView {
    /// Each published endpoint as stored (`{"endpoint", "routing"}`), by name.
    pub published: Vec<Value>,
    /// The published strategy, `null` when none is (each worker uses its configured one).
    pub strategy: Option<String>,
}

/// Runs one of the publishing commands.
pub(crate) fn run(
    ctx: &Ctx,
    command: EndpointsCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    // Everything local first: a refused endpoint or strategy never opens a connection.
    match command {
        EndpointsCommand::Add(args) => {
            let endpoint = endpoint_of(&args)?;
            let value = serde_json::to_string(&endpoint)
                .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
            runtime()?.block_on(async {
                let queue = ctx.connect().await?;
                queue
                    .publish_endpoint(&endpoint.endpoint.name, &value)
                    .await
                    .map_err(|e| ctx.queue_err(e))?;
                show(ctx, &queue, out).await
            })
        }
        EndpointsCommand::Remove(args) => runtime()?.block_on(async {
            let queue = ctx.connect().await?;
            let removed = queue
                .unpublish_endpoint(&args.name)
                .await
                .map_err(|e| ctx.queue_err(e))?;
            if !removed {
                writeln!(err, "note: no endpoint {:?} was published", args.name)?;
            }
            show(ctx, &queue, out).await
        }),
        EndpointsCommand::Published => runtime()?.block_on(async {
            let queue = ctx.connect().await?;
            show(ctx, &queue, out).await
        }),
        EndpointsCommand::Strategy(args) => {
            let strategy = Strategy::from_str(&args.strategy).map_err(CliError::Usage)?;
            runtime()?.block_on(async {
                let queue = ctx.connect().await?;
                queue
                    .publish_strategy(&strategy.to_string())
                    .await
                    .map_err(|e| ctx.queue_err(e))?;
                show(ctx, &queue, out).await
            })
        }
    }
}

/// The endpoint `add` publishes, or every problem with its arguments.
pub(crate) fn endpoint_of(args: &EndpointAddArgs) -> Result<PublishedEndpoint, CliError> {
    let mut problems = Vec::new();
    let kind = match serde_json::from_value::<EndpointKind>(Value::String(args.kind.clone())) {
        Ok(kind) => kind,
        Err(e) => {
            problems.push(SpecProblem {
                field: "endpoint.kind".to_owned(),
                message: e.to_string(),
            });
            EndpointKind::Ollama
        }
    };
    let mut spec = EndpointSpec::new(args.name.clone(), kind, args.url.clone());
    match duration_serde::parse(&args.timeout) {
        Ok(d) => spec.timeout = d,
        Err(message) => problems.push(SpecProblem {
            field: "endpoint.timeout".to_owned(),
            message,
        }),
    }
    spec.models = args.models.iter().map(|m| m.trim().to_owned()).collect();
    spec.api_key_env = args.api_key_env.clone();
    let endpoint = PublishedEndpoint {
        endpoint: spec,
        routing: EndpointRouting {
            priority: args.priority,
            max_concurrent: args.max_concurrent,
            gpu: args.gpu,
            memory_gb: args.memory_gb,
            tags: args.tags.clone(),
            max_loaded: args.max_loaded,
            preload: Vec::new(),
        },
    };
    problems.extend(endpoint.problems());
    if problems.is_empty() {
        Ok(endpoint)
    } else {
        Err(CliError::InvalidEndpoint {
            name: args.name.clone(),
            problems,
        })
    }
}

/// Reads what is published and prints it.
async fn show(ctx: &Ctx, queue: &Queue, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let published = queue.published().await.map_err(|e| ctx.queue_err(e))?;
    let view = view_of(&published);
    print_view(ctx.json, out, &view, render)?;
    Ok(ExitCode::Ok)
}

/// The view of what is stored; a value that is not JSON (not written by this command) is shown
/// as its text.
pub(crate) fn view_of(published: &Published) -> PublishedView {
    PublishedView {
        published: published
            .endpoints
            .values()
            .map(|raw| serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone())))
            .collect(),
        strategy: published.strategy.clone(),
    }
}

/// The published endpoints as a table, then the strategy.
pub(crate) fn render(view: &PublishedView) -> String {
    let mut text = if view.published.is_empty() {
        "no endpoints published\n".to_owned()
    } else {
        let field = |v: &Value, path: &[&str]| -> String {
            let mut at = v;
            for p in path {
                at = &at[*p];
            }
            match at {
                Value::Null => "-".to_owned(),
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            }
        };
        let rows: Vec<Vec<String>> = view
            .published
            .iter()
            .map(|e| {
                vec![
                    field(e, &["endpoint", "name"]),
                    field(e, &["endpoint", "kind"]),
                    field(e, &["endpoint", "url"]),
                    field(e, &["endpoint", "models"]),
                    field(e, &["endpoint", "api_key_env"]),
                    field(e, &["routing", "priority"]),
                    field(e, &["routing", "max_concurrent"]),
                    field(e, &["routing", "gpu"]),
                    field(e, &["routing", "tags"]),
                ]
            })
            .collect();
        table(
            &[
                "ENDPOINT", "KIND", "URL", "MODELS", "KEY ENV", "PRIORITY", "MAX", "GPU", "TAGS",
            ],
            &rows,
        )
    };
    match &view.strategy {
        Some(s) => text.push_str(&format!("strategy: {s}\n")),
        None => text.push_str("strategy: not published (each worker uses its configured one)\n"),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn add_args(extra: &[&str]) -> EndpointAddArgs {
        let mut argv = vec!["gleitzeit-submit", "endpoints", "add"];
        argv.extend_from_slice(extra);
        let cli = crate::Cli::try_parse_from(argv).unwrap();
        match cli.command {
            crate::cli::Command::Endpoints(a) => match a.command {
                Some(EndpointsCommand::Add(args)) => args,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arguments_become_the_file_shapes() {
        let e = endpoint_of(&add_args(&[
            "gpu",
            "--kind",
            "openai",
            "--url",
            "http://10.0.0.5:8000",
            "--models",
            "a,b",
            "--api-key-env",
            "OPENAI_API_KEY",
            "--priority",
            "-1",
            "--gpu",
            "--max-concurrent",
            "4",
            "--tag",
            "fast",
            "--tag",
            "big",
            "--timeout",
            "90s",
        ]))
        .unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "endpoint": {"name": "gpu", "kind": "openai", "url": "http://10.0.0.5:8000",
                             "api_key_env": "OPENAI_API_KEY", "models": ["a", "b"],
                             "timeout": "1m 30s"},
                "routing": {"priority": -1, "max_concurrent": 4, "gpu": true,
                            "tags": ["fast", "big"]}
            })
        );
    }

    #[test]
    fn every_problem_is_named_and_a_key_is_never_repeated() {
        let Err(CliError::InvalidEndpoint { problems, .. }) = endpoint_of(&add_args(&[
            "x",
            "--kind",
            "bedrock",
            "--url",
            "nope",
            "--timeout",
            "soon",
            "--max-concurrent",
            "0",
            "--api-key-env",
            "sk-proj-abcdefghijklmnop",
        ])) else {
            panic!("accepted")
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "endpoint.kind",
                "endpoint.timeout",
                "endpoint.url",
                "endpoint.api_key_env",
                "routing.max_concurrent"
            ]
        );
        assert!(problems.iter().all(|p| !p.message.contains("sk-proj")));
    }
}
