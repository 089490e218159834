//! `prune`: find and remove the state a long-running fleet leaves behind (consumers of
//! workers gone for long, endpoints nobody reports on, idle capabilities nobody serves); see
//! [`gleitzeit_queue::Queue::prune`] for what counts as stale and why removing it loses no work.
//! Without `--yes` it only reports.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use gleitzeit_core::now_ms;
use gleitzeit_queue::PruneReport;
use serde::Serialize;

use crate::cli::PruneArgs;
use crate::error::CliError;
use crate::exit::ExitCode;
use crate::report::format_age;
use crate::session::{print_view, Ctx};

/// One consumer in `prune --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumerView {
    pub stream: String,
    pub consumer: String,
    pub idle_ms: u64,
}

/// One health view in `prune --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthView {
    pub endpoint: String,
    pub worker: String,
    pub updated_ms: Option<u64>,
}

/// `prune --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruneView {
    /// True with `--yes` (removed), false for the report only.
    pub applied: bool,
    /// The idle time that makes state stale, seconds.
    pub older_than_s: u64,
    pub consumers: Vec<ConsumerView>,
    pub health: Vec<HealthView>,
    pub endpoints: Vec<String>,
    pub capabilities: Vec<String>,
    /// Capabilities kept because work arrived while pruning.
    pub kept: Vec<String>,
}

impl PruneView {
    fn new(report: PruneReport, older_than: Duration, applied: bool) -> PruneView {
        PruneView {
            applied,
            older_than_s: older_than.as_secs(),
            consumers: report
                .consumers
                .into_iter()
                .map(|c| ConsumerView {
                    stream: c.stream,
                    consumer: c.consumer,
                    idle_ms: c.idle_ms,
                })
                .collect(),
            health: report
                .health
                .into_iter()
                .map(|h| HealthView {
                    endpoint: h.endpoint,
                    worker: h.worker,
                    updated_ms: h.updated_ms,
                })
                .collect(),
            endpoints: report.endpoints,
            capabilities: report.capabilities,
            kept: report.kept,
        }
    }
}

/// `prune` for people.
pub fn render_prune(v: &PruneView) -> String {
    let mut out = String::new();
    let idle = format_age(Duration::from_secs(v.older_than_s));
    if v.consumers.is_empty()
        && v.health.is_empty()
        && v.endpoints.is_empty()
        && v.capabilities.is_empty()
    {
        let _ = writeln!(out, "nothing stale (idle for {idle} or more)");
    } else {
        let verb = if v.applied { "removed" } else { "stale" };
        for c in &v.consumers {
            let _ = writeln!(
                out,
                "{verb} consumer   {} on {} (idle {}, nothing pending)",
                c.consumer,
                c.stream,
                format_age(Duration::from_millis(c.idle_ms))
            );
        }
        for h in &v.health {
            let _ = writeln!(
                out,
                "{verb} health     {}'s view of endpoint {}",
                h.worker, h.endpoint
            );
        }
        for e in &v.endpoints {
            let _ = writeln!(
                out,
                "{verb} endpoint   {e} (no live worker reports on it, no call in flight)"
            );
        }
        for c in &v.capabilities {
            let _ = writeln!(
                out,
                "{verb} capability {c} (empty streams, no live worker serves it)"
            );
        }
    }
    for c in &v.kept {
        let _ = writeln!(out, "kept capability {c}: work arrived while pruning");
    }
    if !v.applied && !out.starts_with("nothing") {
        out.push_str("\nnothing was removed; run again with --yes to remove the above\n");
    }
    out
}

/// `prune`.
pub(crate) async fn prune(
    ctx: &Ctx,
    args: &PruneArgs,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let queue = ctx.connect().await?;
    let report = queue
        .prune(args.older_than, now_ms(), args.yes)
        .await
        .map_err(|e| ctx.queue_err(e))?;
    let view = PruneView::new(report, args.older_than, args.yes);
    print_view(ctx.json, out, &view, render_prune)?;
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(applied: bool) -> PruneView {
        PruneView {
            applied,
            older_than_s: 3600,
            consumers: vec![ConsumerView {
                stream: "{gleitzeit}:q:llm:old".into(),
                consumer: "host-1-ab".into(),
                idle_ms: 7_200_000,
            }],
            health: vec![],
            endpoints: vec!["gpu-old".into()],
            capabilities: vec!["llm:old".into()],
            kept: vec![],
        }
    }

    #[test]
    fn a_report_says_nothing_was_removed_and_how_to_remove_it() {
        let text = render_prune(&view(false));
        assert!(text.starts_with(
            "stale consumer   host-1-ab on {gleitzeit}:q:llm:old (idle 2h, nothing pending)\n"
        ));
        assert!(text.contains("stale endpoint   gpu-old"));
        assert!(text.contains("stale capability llm:old"));
        assert!(text.ends_with("run again with --yes to remove the above\n"));
        let applied = render_prune(&view(true));
        assert!(applied.starts_with("removed consumer") && !applied.contains("--yes"));
    }

    #[test]
    fn nothing_stale_says_so() {
        let mut v = view(false);
        v.consumers.clear();
        v.endpoints.clear();
        v.capabilities.clear();
        assert_eq!(render_prune(&v), "nothing stale (idle for 1h or more)\n");
    }
}
