//! Prometheus metrics of the worker: the catalogue of every metric ([`CATALOGUE`]), the
//! recorder, the recording helpers the loops call, the router observer and the fleet-wide
//! gauges read from Redis.
//!
//! Per-worker counters and histograms are recorded through the `metrics` facade with the name
//! constants of [`catalogue`]; the Prometheus recorder ([`install`]) renders them for
//! `/metrics` (served by `health.rs`). Without an installed recorder (a worker run with
//! `metrics_addr: off`, or through [`crate::run_with_executor`]) every recording is a no-op.
//! Fleet-wide values (streams, leases, services, workflow totals) come from shared Redis state
//! and are refreshed by [`fleet`] every `metrics.fleet_interval`; every worker exports the
//! same value, so dashboards aggregate them with `max by (...)` (docs/metrics.md).

pub mod catalogue;
pub mod fleet;
pub mod observer;
pub mod record;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use catalogue::*;
pub use observer::RouterMetrics;

/// The process's recorder (one per process: the `metrics` facade has one global recorder).
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's global recorder (once; later calls
/// return the same handle), describes every catalogue entry and sets the process gauges.
/// `None` when another recorder was installed first (then nothing is exported).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(COMPLETION_CALL_SIZE.to_owned()), CALL_SIZE_BUCKETS)
                }) {
                Ok(b) => b,
                // Only an empty bucket list is refused; the constants are not empty.
                Err(e) => {
                    tracing::error!(error = %e, "cannot configure the metrics recorder");
                    return None;
                }
            };
            match builder.install_recorder() {
                Ok(handle) => {
                    describe_all();
                    metrics::gauge!(WORKER_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed; /metrics stays empty");
                    None
                }
            }
        })
        .clone()
}

/// The installed recorder's handle, if [`install`] ran and succeeded.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned().flatten()
}

/// Renders every metric in the Prometheus text format (empty without a recorder).
pub fn render() -> String {
    match handle() {
        Some(h) => {
            // Histograms are aggregated lazily; upkeep before rendering keeps them current.
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}

/// Registers help text for every catalogue entry with the installed recorder, so the scrape
/// carries `# HELP`/`# TYPE` lines before the first sample.
pub fn describe_all() {
    for d in CATALOGUE {
        match d.kind {
            MetricKind::Counter => metrics::describe_counter!(d.name, d.help),
            MetricKind::Gauge => metrics::describe_gauge!(d.name, d.help),
            MetricKind::Histogram => metrics::describe_histogram!(d.name, d.help),
        }
    }
}
