//! This process's identity in the fleet: one id for the stream consumer, the worker registry
//! and the shared endpoint health views.

/// `<hostname>-<pid>-<8 random hex>`: unique per process even when pids repeat across
/// containers with the same host name.
pub fn consumer_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let host = if host.is_empty() {
        "worker".to_owned()
    } else {
        host
    };
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
