//! Redis URLs for messages: the password never appears in output.

/// Returns `url` with the password of its user-info part replaced by `***`.
///
/// `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`,
/// `redis://:secret@host` → `redis://:***@host`. URLs without a password are returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    // The last '@' ends the user info: a password may itself contain '@'.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted_userinfo = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        // `redis://secret@host`: the redis crate takes a lone user-info as the password.
        None if !userinfo.is_empty() => "***".to_owned(),
        None => String::new(),
    };
    format!(
        "{}{}{}",
        &url[..authority_start],
        redacted_userinfo,
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://:secret@host"), "redis://:***@host");
        assert_eq!(redact_url("rediss://:p@ss@host/"), "rediss://:***@host/");
        assert_eq!(redact_url("redis://secret@host"), "redis://***@host");
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://host:6379/2?protocol=resp3",
            "unix:///run/redis.sock",
            "not a url",
            "redis://host/path@x",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
