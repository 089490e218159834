//! The fleet-wide gauges: values that describe shared Redis state (stream backlogs, endpoint
//! leases, loaded models, service instances, dead letters, the retry set, workflow totals),
//! read every `metrics.fleet_interval`.
//!
//! Every worker exports them, so each series has one identical value per worker: dashboards
//! take `max by (...)` over workers, never `sum` (docs/metrics.md explains why this beats
//! electing one exporter: no lock, no gap in the series when the exporter dies, and any
//! single worker's scrape is complete).

use std::collections::HashSet;
use std::time::Duration;

use gleitzeit_core::now_ms;
use gleitzeit_queue::{Queue, QueueError};
use tokio_util::sync::CancellationToken;

use super::catalogue::*;

/// Capability prefix of external task streams (`ext:<service>`).
const EXT_PREFIX: &str = "ext:";

/// Refreshes the fleet gauges every `interval` until `stop` is cancelled. The first refresh
/// runs at once so a fresh worker's first scrape is complete.
pub async fn run(queue: Queue, interval: Duration, stop: CancellationToken) {
    let mut state = FleetState::default();
    let mut failing = false;
    loop {
        match refresh(&queue, &mut state).await {
            Ok(()) => {
                if failing {
                    tracing::info!("fleet metrics readable again");
                }
                failing = false;
            }
            Err(e) => {
                metrics::counter!(FLEET_REFRESH_ERRORS).increment(1);
                // Logged once per outage; the gauges keep their last values meanwhile.
                if !failing {
                    tracing::warn!(error = %e, "cannot refresh the fleet metrics");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Series set in earlier rounds, so ones that disappear are reset instead of going stale.
#[derive(Default)]
struct FleetState {
    loaded: HashSet<(String, String)>,
}

/// One round: reads everything, then sets the gauges.
async fn refresh(queue: &Queue, state: &mut FleetState) -> Result<(), QueueError> {
    let caps = queue.capabilities().await?;
    for cap in &caps {
        // One series per capability and priority, summed over the namespace's shards (the
        // oldest age is the oldest of any shard; consumers, the most in one shard).
        for priority in gleitzeit_queue::Priority::ALL {
            let (mut ready, mut pending, mut oldest, mut consumers) = (0, 0, 0, 0);
            for keys in queue.shards() {
                let s = queue.stream_stats(&keys.stream_ref(cap, priority)).await?;
                ready += s.ready;
                pending += s.pending;
                oldest = oldest.max(s.oldest_ready_age_ms.unwrap_or(0));
                consumers = consumers.max(s.consumers);
            }
            let labels = [
                ("capability", cap.clone()),
                ("priority", priority.as_str().to_owned()),
            ];
            // Ready: not delivered yet (the stream also holds finished entries until a trim).
            metrics::gauge!(STREAM_READY, &labels).set(ready as f64);
            metrics::gauge!(STREAM_PENDING, &labels).set(pending as f64);
            metrics::gauge!(STREAM_OLDEST_READY_AGE_SECONDS, &labels).set(oldest as f64 / 1000.0);
            metrics::gauge!(STREAM_CONSUMERS, &labels).set(consumers as f64);
        }
        if let Some(service) = cap.strip_prefix(EXT_PREFIX) {
            let n = queue.service_instance_count(service, now_ms()).await?;
            metrics::gauge!(SERVICE_INSTANCES, "service" => service.to_owned()).set(n as f64);
        }
    }

    let (dead, delayed) = queue.dead_and_delayed_counts().await?;
    metrics::gauge!(DEAD_LETTERS).set(dead as f64);
    metrics::gauge!(DELAYED_TASKS).set(delayed as f64);

    let mut loaded = HashSet::new();
    for ep in queue.endpoint_states(now_ms()).await? {
        metrics::gauge!(ENDPOINT_IN_FLIGHT, "endpoint" => ep.name.clone())
            .set(ep.live_leases as f64);
        // `loaded` is a JSON array of model names (docs/routing.md); an unreadable value
        // reads as nothing loaded.
        let models: Vec<String> = ep
            .models
            .get("loaded")
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        for m in models {
            loaded.insert((ep.name.clone(), m));
        }
    }
    for (ep, m) in &loaded {
        metrics::gauge!(ENDPOINT_LOADED_MODELS, "endpoint" => ep.clone(), "model" => m.clone())
            .set(1.0);
    }
    for (ep, m) in state.loaded.difference(&loaded) {
        metrics::gauge!(ENDPOINT_LOADED_MODELS, "endpoint" => ep.clone(), "model" => m.clone())
            .set(0.0);
    }
    state.loaded = loaded;

    let totals = queue.workflow_totals().await?;
    // Counters kept in Redis: exported as absolute values (every worker the same).
    metrics::counter!(WORKFLOWS_SUBMITTED).absolute(totals.submitted);
    metrics::counter!(WORKFLOWS_COMPLETED).absolute(totals.completed);
    metrics::counter!(WORKFLOWS_FAILED).absolute(totals.failed);
    metrics::counter!(WORKFLOWS_CANCELLED).absolute(totals.cancelled);
    Ok(())
}
