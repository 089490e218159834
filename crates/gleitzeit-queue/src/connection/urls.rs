//! The URLs of high-availability Redis: [`SentinelUrl`] (`redis+sentinel://`, a primary
//! with replicas behind Redis Sentinel) and [`ClusterUrl`] (`redis+cluster://`, a Redis
//! Cluster), parsed into what redis-rs's Sentinel and cluster clients take.

use super::ConnectionError;

/// A parsed `redis+sentinel://` URL (the form redis-py, Celery and others read too):
///
/// `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]`
/// `[?sentinel_username=U&sentinel_password=P]`
///
/// The hosts are the sentinels (port 26379 when left out), SERVICE the name they monitor
/// the primary under, USER and PASSWORD the primary's credentials, the query the
/// sentinels' own (when they require any). `rediss+sentinel://` speaks TLS to both.
/// Credentials are percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// TLS to sentinels and primary.
    pub tls: bool,
    /// The sentinels, in the order given.
    pub sentinels: Vec<(String, u16)>,
    /// The monitored service (master name).
    pub service: String,
    /// Database number on the primary.
    pub db: i64,
    /// User on the primary.
    pub username: Option<String>,
    /// Password on the primary.
    pub password: Option<String>,
    /// User on the sentinels.
    pub sentinel_username: Option<String>,
    /// Password on the sentinels.
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("tls", &self.tls)
            .field("sentinels", &self.sentinels)
            .field("service", &self.service)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// `Some(tls)` when `url`'s scheme is `redis+<kind>` (false) or `rediss+<kind>` (true),
/// case-insensitively.
fn tls_of_scheme(url: &str, kind: &str) -> Option<bool> {
    let (scheme, _) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (base, rest) = scheme.split_once('+')?;
    if rest != kind {
        return None;
    }
    match base {
        "redis" => Some(false),
        "rediss" => Some(true),
        _ => None,
    }
}

/// The sentinels' default port.
pub const SENTINEL_PORT: u16 = 26379;

impl SentinelUrl {
    /// `Some(tls)` when `url` has a Sentinel scheme.
    pub(super) fn scheme_of(url: &str) -> Option<bool> {
        tls_of_scheme(url, "sentinel")
    }

    /// Parses `url`.
    ///
    /// # Errors
    /// [`ConnectionError::SentinelUrl`] naming the part at fault.
    pub fn parse(url: &str) -> Result<SentinelUrl, ConnectionError> {
        let bad = |reason: String| ConnectionError::SentinelUrl(reason);
        let tls = Self::scheme_of(url).ok_or_else(|| {
            bad("the scheme must be redis+sentinel:// or rediss+sentinel://".to_owned())
        })?;
        let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (username, password, hosts) = split_userinfo(authority).map_err(bad)?;
        let mut sentinels = Vec::new();
        for (k, host) in hosts.split(',').enumerate() {
            sentinels.push(
                parse_host(host, SENTINEL_PORT)
                    .map_err(|why| bad(format!("sentinel {}: {why}", k + 1)))?,
            );
        }
        let mut parts = path.split('/');
        let service = parts.next().unwrap_or("");
        if service.is_empty() {
            return Err(bad(
                "the service name (the master name the sentinels monitor) is missing after the hosts"
                    .to_owned(),
            ));
        }
        let service = decode(service, "the service name").map_err(bad)?;
        let db = match parts.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad(format!("the database {d:?} is not a number >= 0")))?,
        };
        if let Some(extra) = parts.find(|p| !p.is_empty()) {
            return Err(bad(format!(
                "unexpected path part {extra:?} after /SERVICE/DB"
            )));
        }
        let mut sentinel_username = None;
        let mut sentinel_password = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sentinel_username" => {
                    sentinel_username = Some(decode(value, "sentinel_username").map_err(bad)?);
                }
                "sentinel_password" => {
                    sentinel_password = Some(decode(value, "sentinel_password").map_err(bad)?);
                }
                other => {
                    return Err(bad(format!(
                        "unknown parameter {other:?} (known: sentinel_username, sentinel_password)"
                    )))
                }
            }
        }
        Ok(SentinelUrl {
            tls,
            sentinels,
            service,
            db,
            username,
            password,
            sentinel_username,
            sentinel_password,
        })
    }
}

/// `[[USER]:PASSWORD@]HOSTS` of an authority: user and password percent-decoded (either may
/// be absent, as in `redis://` URLs), and the hosts part as it is.
#[allow(clippy::type_complexity)]
fn split_userinfo(authority: &str) -> Result<(Option<String>, Option<String>, &str), String> {
    let Some((userinfo, hosts)) = authority.rsplit_once('@') else {
        return Ok((None, None, authority));
    };
    let (user, pass) = match userinfo.split_once(':') {
        Some((user, pass)) => (user, Some(pass)),
        None => (userinfo, None),
    };
    let user = (!user.is_empty())
        .then(|| decode(user, "the user"))
        .transpose()?;
    let pass = pass.map(|p| decode(p, "the password")).transpose()?;
    Ok((user, pass, hosts))
}

/// Percent-decoded text; `what` names the part in the error.
fn decode(text: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("{what} is not UTF-8 once decoded"))
}

/// A parsed `redis+cluster://` URL:
///
/// `redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]`
///
/// The hosts are nodes to start from (port 6379 when left out): the client learns the rest
/// of the cluster from them. `rediss+cluster://` speaks TLS. A cluster has only database 0.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    /// TLS to every node.
    pub tls: bool,
    /// The nodes to start from.
    pub nodes: Vec<(String, u16)>,
    /// User on the nodes.
    pub username: Option<String>,
    /// Password on the nodes.
    pub password: Option<String>,
}

impl std::fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterUrl")
            .field("tls", &self.tls)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// Redis's default port.
const REDIS_PORT: u16 = 6379;

impl ClusterUrl {
    /// `Some(tls)` when `url` has a cluster scheme.
    pub(super) fn scheme_of(url: &str) -> Option<bool> {
        tls_of_scheme(url, "cluster")
    }

    /// Parses `url`.
    ///
    /// # Errors
    /// [`ConnectionError::ClusterUrl`] naming the part at fault.
    pub fn parse(url: &str) -> Result<ClusterUrl, ConnectionError> {
        let bad = |reason: String| ConnectionError::ClusterUrl(reason);
        let tls = Self::scheme_of(url).ok_or_else(|| {
            bad("the scheme must be redis+cluster:// or rediss+cluster://".to_owned())
        })?;
        let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
        if rest.contains('?') {
            return Err(bad("no query parameters are known".to_owned()));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !path.is_empty() {
            return Err(bad(format!(
                "unexpected path {path:?} (a cluster has only database 0)"
            )));
        }
        let (username, password, hosts) = split_userinfo(authority).map_err(bad)?;
        let mut nodes = Vec::new();
        for (k, host) in hosts.split(',').enumerate() {
            nodes.push(
                parse_host(host, REDIS_PORT)
                    .map_err(|why| bad(format!("node {}: {why}", k + 1)))?,
            );
        }
        Ok(ClusterUrl {
            tls,
            nodes,
            username,
            password,
        })
    }
}

/// `HOST[:PORT]` or `[IPV6][:PORT]`, `default_port` when the port is left out.
fn parse_host(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: an IPv6 address needs its closing ']'"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{text:?}: expected ':PORT' after ']'"))?,
                ),
            ),
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{text:?}: the host is empty"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{text:?}: the port {p:?} is not a number 1-65535"))?,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::super::{RedisTarget, TlsFiles};
    use super::*;

    #[test]
    fn sentinel_urls_parse_with_defaults_credentials_and_ipv6() {
        let u = SentinelUrl::parse("redis+sentinel://s1:26380,s2,[::1]:26381/mymaster").unwrap();
        assert!(!u.tls);
        assert_eq!(
            u.sentinels,
            vec![
                ("s1".to_owned(), 26380),
                ("s2".to_owned(), SENTINEL_PORT),
                ("::1".to_owned(), 26381)
            ]
        );
        assert_eq!((u.service.as_str(), u.db), ("mymaster", 0));
        assert_eq!((u.username.as_deref(), u.password.as_deref()), (None, None));

        let u = SentinelUrl::parse(
            "rediss+sentinel://app:p%40ss%3Aw@h:1/svc/3?sentinel_username=s&sentinel_password=t%26",
        )
        .unwrap();
        assert!(u.tls);
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("p@ss:w"));
        assert_eq!((u.service.as_str(), u.db), ("svc", 3));
        assert_eq!(u.sentinel_username.as_deref(), Some("s"));
        assert_eq!(u.sentinel_password.as_deref(), Some("t&"));
        // Password only, as redis:// URLs allow.
        let u = SentinelUrl::parse("redis+sentinel://:pw@h/svc").unwrap();
        assert_eq!(
            (u.username.as_deref(), u.password.as_deref()),
            (None, Some("pw"))
        );
        assert!(!format!("{u:?}").contains("pw"), "{u:?}");
    }

    #[test]
    fn bad_sentinel_urls_name_the_part_at_fault() {
        let cases = [
            ("redis+sentinel://h1,h2", "service name"),
            ("redis+sentinel://h1:0/svc", "sentinel 1"),
            ("redis+sentinel://h1,:26379/svc", "sentinel 2"),
            ("redis+sentinel://h1:x/svc", "port \"x\""),
            ("redis+sentinel://[::1/svc", "closing ']'"),
            ("redis+sentinel://h/svc/-1", "database \"-1\""),
            ("redis+sentinel://h/svc/0/x", "unexpected path part"),
            (
                "redis+sentinel://h/svc?master=x",
                "unknown parameter \"master\"",
            ),
        ];
        for (url, expected) in cases {
            let err = RedisTarget::new(url).validate().unwrap_err();
            assert!(
                matches!(err, ConnectionError::SentinelUrl(_)),
                "{url}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains(expected), "{url}: {text}");
            assert!(text.contains("redis+sentinel://[[USER]"), "{url}: {text}");
        }
        // A secret in a bad URL is not repeated.
        let err = RedisTarget::new("redis+sentinel://:hunter2@h:99999/svc")
            .validate()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // TLS files need the TLS form; the direct client is refused with a reason.
        let files = TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let err = RedisTarget::new("redis+sentinel://h/svc")
            .with_tls(files)
            .validate()
            .unwrap_err();
        assert!(
            matches!(err, ConnectionError::TlsWithoutRediss { .. }),
            "{err}"
        );
        let target = RedisTarget::new("redis+sentinel://h/svc");
        assert!(target.is_sentinel() && !target.is_tls());
        assert!(RedisTarget::new("rediss+sentinel://h/svc").is_tls());
        assert!(matches!(
            target.client().unwrap_err(),
            ConnectionError::NeedsOneServer(_)
        ));
    }

    #[test]
    fn cluster_urls_parse_and_name_the_part_at_fault() {
        let u = ClusterUrl::parse("redis+cluster://app:p%40w@n1:7000,n2,[::1]:7001").unwrap();
        assert!(!u.tls);
        assert_eq!(
            u.nodes,
            vec![
                ("n1".to_owned(), 7000),
                ("n2".to_owned(), REDIS_PORT),
                ("::1".to_owned(), 7001)
            ]
        );
        assert_eq!(
            (u.username.as_deref(), u.password.as_deref()),
            (Some("app"), Some("p@w"))
        );
        assert!(!format!("{u:?}").contains("p@w"));
        let target = RedisTarget::new("rediss+cluster://n1");
        assert!(target.is_cluster() && target.is_tls() && !target.is_sentinel());
        assert!(target.validate().is_ok());
        for (url, expected) in [
            ("redis+cluster://n1/3", "database 0"),
            ("redis+cluster://n1:x", "node 1"),
            ("redis+cluster://n1,:7000", "node 2"),
            ("redis+cluster://n1?x=1", "no query parameters"),
        ] {
            let err = RedisTarget::new(url).validate().unwrap_err();
            assert!(
                matches!(err, ConnectionError::ClusterUrl(_)),
                "{url}: {err}"
            );
            assert!(err.to_string().contains(expected), "{url}: {err}");
        }
        assert!(matches!(
            RedisTarget::new("redis+cluster://n1").client().unwrap_err(),
            ConnectionError::NeedsOneServer(_)
        ));
    }
}
