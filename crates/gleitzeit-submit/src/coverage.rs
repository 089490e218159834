//! Who will run a workflow's tasks: the capabilities no live worker serves, and the services no
//! live instance of is registered for. Said at once by `submit`, `submit --wait` and `watch`,
//! so a workflow never waits in silence for a worker or a service that is not there.
//!
//! A worker serves a capability when one of its configured patterns matches it (the registry
//! record's `patterns`; records of older workers only list the capabilities they read). The
//! answer is advisory: a worker may start a second later, so nothing is refused.

use gleitzeit_core::pattern::Pattern;
use gleitzeit_queue::{Queue, QueueError, WorkerRecord};
use serde::Serialize;

/// Why some of a workflow's tasks will wait, one notice per reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// The capability concerned, or empty when no worker is live at all.
    pub capability: String,
    /// One line for people.
    pub message: String,
}

/// The external service of a capability (`ext:<service>`).
fn service_of(capability: &str) -> Option<&str> {
    capability.strip_prefix("ext:")
}

/// Whether `worker` reads (or will read) `capability`.
fn serves(worker: &WorkerRecord, capability: &str) -> bool {
    let by_pattern = worker
        .patterns
        .iter()
        .filter_map(|p| Pattern::new(p).ok())
        .any(|p| p.matches(capability));
    by_pattern || worker.capabilities.iter().any(|c| c == capability)
}

/// The notices for a workflow with these capabilities, given the live workers and, per
/// service, how many live instances are registered (`None`: not looked up).
pub(crate) fn notices(
    namespace: &str,
    capabilities: &[String],
    workers: &[WorkerRecord],
    instances: &dyn Fn(&str) -> Option<u64>,
) -> Vec<Notice> {
    if capabilities.is_empty() {
        return Vec::new();
    }
    if workers.is_empty() {
        return vec![Notice {
            capability: String::new(),
            message: format!(
                "no live worker in namespace {namespace:?}: the workflow waits until a \
                 gleitzeit-worker starts there"
            ),
        }];
    }
    let mut served: Vec<String> = workers
        .iter()
        .flat_map(|w| {
            if w.patterns.is_empty() {
                w.capabilities.clone()
            } else {
                w.patterns.clone()
            }
        })
        .collect();
    served.sort();
    served.dedup();
    let mut out = Vec::new();
    for cap in capabilities {
        if !workers.iter().any(|w| serves(w, cap)) {
            out.push(Notice {
                capability: cap.clone(),
                message: format!(
                    "no live worker serves {cap}; live workers serve: {}. Its tasks wait until \
                     one does",
                    served.join(", ")
                ),
            });
            continue;
        }
        if let Some(service) = service_of(cap) {
            if instances(service) == Some(0) {
                out.push(Notice {
                    capability: cap.clone(),
                    message: format!(
                        "no instance of service {service:?} is registered; its tasks wait until \
                         one registers (gleitzeit-service, or start_task_service() in Python)"
                    ),
                });
            }
        }
    }
    out
}

/// Looks up the live workers and service instances and returns the notices. A Redis user
/// without the permissions to look (an older ACL) gets no notices rather than an error: the
/// check is advice, the submission already succeeded.
pub(crate) async fn check(
    queue: &Queue,
    namespace: &str,
    capabilities: &[String],
    now_ms: u64,
) -> Result<Vec<Notice>, QueueError> {
    if capabilities.is_empty() {
        return Ok(Vec::new());
    }
    let workers = match queue.workers(now_ms).await {
        Ok(w) => w,
        Err(QueueError::NoPermission(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut counts = std::collections::HashMap::new();
    for cap in capabilities {
        if let Some(service) = service_of(cap) {
            match queue.service_instance_count(service, now_ms).await {
                Ok(n) => {
                    counts.insert(service.to_owned(), n);
                }
                Err(QueueError::NoPermission(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(notices(namespace, capabilities, &workers, &|s| {
        counts.get(s).copied()
    }))
}

/// The capabilities of a workflow's tasks that have not ended, sorted, each once.
pub(crate) fn open_capabilities(tasks: &[gleitzeit_queue::TaskInfo]) -> Vec<String> {
    let mut caps: Vec<String> = tasks
        .iter()
        .filter(|t| !crate::report::is_terminal(&t.status))
        .map(|t| t.capability.clone())
        .collect();
    caps.sort();
    caps.dedup();
    caps
}

/// Checks and writes each notice as a `note:` line on `err` (stderr); returns them for JSON
/// output.
pub(crate) async fn say(
    ctx: &crate::session::Ctx,
    queue: &Queue,
    capabilities: &[String],
    err: &mut dyn std::io::Write,
) -> Result<Vec<Notice>, crate::error::CliError> {
    let notices = check(
        queue,
        &ctx.namespace,
        capabilities,
        gleitzeit_core::now_ms(),
    )
    .await
    .map_err(|e| ctx.queue_err(e))?;
    for n in &notices {
        writeln!(err, "note: {}", n.message)?;
    }
    Ok(notices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(patterns: &[&str], caps: &[&str]) -> WorkerRecord {
        WorkerRecord {
            id: "w".into(),
            patterns: patterns.iter().map(|s| (*s).to_owned()).collect(),
            capabilities: caps.iter().map(|s| (*s).to_owned()).collect(),
            ..WorkerRecord::default()
        }
    }

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn no_worker_at_all_is_one_notice() {
        let n = notices("prod", &caps(&["llm:a"]), &[], &|_| None);
        assert_eq!(n.len(), 1);
        assert!(n[0]
            .message
            .contains("no live worker in namespace \"prod\""));
    }

    #[test]
    fn patterns_cover_capabilities_that_appear_later() {
        let w = [worker(&["llm:*"], &["llm:smollm2"])];
        assert!(notices("ns", &caps(&["llm:llama3"]), &w, &|_| None).is_empty());
        let n = notices(
            "ns",
            &caps(&["llm:llama3", "ext:Python Tasks"]),
            &w,
            &|_| None,
        );
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].capability, "ext:Python Tasks");
        assert_eq!(
            n[0].message,
            "no live worker serves ext:Python Tasks; live workers serve: llm:*. Its tasks wait \
             until one does"
        );
    }

    #[test]
    fn older_records_match_what_they_read() {
        let w = [worker(&[], &["llm:smollm2"])];
        assert!(notices("ns", &caps(&["llm:smollm2"]), &w, &|_| None).is_empty());
        assert_eq!(notices("ns", &caps(&["llm:x"]), &w, &|_| None).len(), 1);
    }

    #[test]
    fn a_served_service_without_instances_is_said() {
        let w = [worker(&["llm:*", "ext:*"], &[])];
        let n = notices("ns", &caps(&["ext:Python Tasks"]), &w, &|_| Some(0));
        assert_eq!(n.len(), 1);
        assert!(n[0]
            .message
            .contains("no instance of service \"Python Tasks\""));
        assert!(notices("ns", &caps(&["ext:Python Tasks"]), &w, &|_| Some(2)).is_empty());
        assert!(notices("ns", &caps(&["ext:Python Tasks"]), &w, &|_| None).is_empty());
    }
}
