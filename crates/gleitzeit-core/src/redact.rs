//! URLs for messages and logs: a password never appears in output.

/// Returns `url` with the password of its user-info part replaced by `***`.
///
/// `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`,
/// `redis://:secret@host` → `redis://:***@host`, and `redis://secret@host` → `redis://***@host`
/// (the Redis client takes a lone user-info as the password). The last `@` of the authority
/// ends the user info, so a password may itself contain `@`. URLs without a password are
/// returned unchanged. Query parameters named like a password (`sentinel_password=` of a
/// `redis+sentinel://` URL) have their value replaced by `***` too. Text that is not a URL (no `scheme://`) is replaced entirely: it may be
/// a mistyped URL that still holds a password.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").filter(|&i| is_scheme(&url[..i])) else {
        return "<unparsable URL>".to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let redacted = match authority.rfind('@') {
        None => url.to_owned(),
        Some(at) => {
            let userinfo = &authority[..at];
            let redacted_userinfo = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
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
    };
    redact_query(redacted)
}

/// Replaces the values of query parameters whose name holds "password".
fn redact_query(url: String) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url;
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{base}?{}", params.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// A URL scheme: a letter, then letters, digits, `+`, `-` or `.` (RFC 3986).
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
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
        assert_eq!(
            redact_url("redis://:hunter2@example.com:6379/0"),
            "redis://:***@example.com:6379/0"
        );
        assert_eq!(redact_url("rediss://:p@ss@host/"), "rediss://:***@host/");
    }

    #[test]
    fn sentinel_urls_hide_both_passwords() {
        assert_eq!(
            redact_url("redis+sentinel://app:secret@s1:26379,s2/svc/0?sentinel_password=t0p&x=1"),
            "redis+sentinel://app:***@s1:26379,s2/svc/0?sentinel_password=***&x=1"
        );
        assert_eq!(
            redact_url("redis+sentinel://s1,s2/svc?sentinel_username=u&sentinel_password=p"),
            "redis+sentinel://s1,s2/svc?sentinel_username=u&sentinel_password=***"
        );
    }

    #[test]
    fn a_password_without_user_is_hidden() {
        assert_eq!(redact_url("redis://secret@host"), "redis://***@host");
        assert_eq!(
            redact_url("redis://secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://host:6379/2?protocol=resp3",
            "unix:///run/redis.sock",
            "redis://host/path@x",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn text_that_is_not_a_url_is_replaced() {
        for text in [
            "not a url hunter2",
            "redis//:secret@host",
            "://secret@host",
            "",
        ] {
            assert_eq!(redact_url(text), "<unparsable URL>", "{text}");
        }
    }
}
