//! Redis key names of service discovery, and the name rules that keep them unambiguous.

// Key strings are built only by gleitzeit-queue's `Keys` (every Redis key name of the project
// in one module); the Python registrar (`python/gleitzeit/discovery.py`) mirrors them.

use gleitzeit_queue::Keys;

/// `{<ns>}:svc:<service>` — zset of a service's instances, score = expiry time in ms.
///
/// # Errors
/// The namespace cannot be a hash tag.
pub fn service_key(namespace: &str, service: &str) -> Result<String, String> {
    service_key_in(namespace, service, false)
}

/// `{<ns>}:svc:<service>:<instance>` — hash describing one instance (url, functions, ...).
///
/// # Errors
/// The namespace cannot be a hash tag.
pub fn instance_key(namespace: &str, service: &str, instance: &str) -> Result<String, String> {
    instance_key_in(namespace, service, instance, false)
}

/// The keys of one layout: the home prefix, or (`spread`, a namespace over several shards)
/// the service's own prefix `{<ns>~svc~<service>}:`.
fn layout(namespace: &str, spread: bool) -> Result<Keys, String> {
    Ok(Keys::new(namespace)
        .map_err(|e| e.to_string())?
        .with_spread(spread))
}

/// [`service_key`] in either layout (`spread`: `{<ns>~svc~<service>}:svc:<service>`).
///
/// # Errors
/// The namespace cannot be a hash tag.
pub fn service_key_in(namespace: &str, service: &str, spread: bool) -> Result<String, String> {
    Ok(layout(namespace, spread)?.service(service))
}

/// [`instance_key`] in either layout.
///
/// # Errors
/// The namespace cannot be a hash tag.
pub fn instance_key_in(
    namespace: &str,
    service: &str,
    instance: &str,
    spread: bool,
) -> Result<String, String> {
    Ok(layout(namespace, spread)?.service_instance(service, instance))
}

/// Checks a namespace can be a hash tag: non-empty, at most 64 bytes, no braces, whitespace or
/// control characters (the same rule as gleitzeit-queue's `Keys::new`).
///
/// # Errors
/// A message naming the problem.
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    if namespace.is_empty() {
        return Err("namespace must not be empty".to_owned());
    }
    if namespace.len() > 64 {
        return Err(format!("namespace {namespace:?} must be at most 64 bytes"));
    }
    if namespace
        .chars()
        .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "namespace {namespace:?} must not contain '{{', '}}', whitespace or control characters"
        ));
    }
    Ok(())
}

/// Checks a service name can be embedded in keys and capabilities: 1–256 bytes, no braces or
/// control characters, no leading or trailing whitespace (spaces inside are fine:
/// `Python Tasks`).
///
/// # Errors
/// A message naming the problem.
pub fn validate_service_name(service: &str) -> Result<(), String> {
    if service.is_empty() || service.len() > 256 {
        return Err(format!("service name {service:?} must be 1-256 bytes"));
    }
    if service
        .chars()
        .any(|c| c == '{' || c == '}' || c.is_control())
    {
        return Err(format!(
            "service name {service:?} must not contain '{{', '}}' or control characters"
        ));
    }
    if service.trim() != service {
        return Err(format!(
            "service name {service:?} must not start or end with whitespace"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixture() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/protocol/keys.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn keys_match_the_shared_fixture() {
        let fixture = fixture();
        let examples = fixture["examples"].as_array().unwrap();
        assert!(!examples.is_empty());
        for ex in examples {
            let ns = ex["namespace"].as_str().unwrap();
            let svc = ex["service"].as_str().unwrap();
            let inst = ex["instance"].as_str().unwrap();
            assert_eq!(
                service_key(ns, svc).unwrap(),
                ex["service_key"].as_str().unwrap()
            );
            assert_eq!(
                instance_key(ns, svc, inst).unwrap(),
                ex["instance_key"].as_str().unwrap()
            );
            assert_eq!(
                service_key_in(ns, svc, true).unwrap(),
                ex["spread_service_key"].as_str().unwrap()
            );
            assert_eq!(
                instance_key_in(ns, svc, inst, true).unwrap(),
                ex["spread_instance_key"].as_str().unwrap()
            );
            assert!(validate_namespace(ns).is_ok());
            assert!(validate_service_name(svc).is_ok());
        }
    }

    #[test]
    fn invalid_names_of_the_fixture_are_refused() {
        let fixture = fixture();
        let invalid = fixture["invalid_names"].as_array().unwrap();
        assert!(!invalid.is_empty());
        for case in invalid {
            let value = case["value"].as_str().unwrap();
            let outcome = match case["what"].as_str().unwrap() {
                "namespace" => validate_namespace(value),
                "service" => validate_service_name(value),
                other => panic!("unknown name kind {other}"),
            };
            assert!(outcome.is_err(), "{case}");
        }
    }
}
