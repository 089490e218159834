//! Where Redis is and how to reach it. [`RedisTarget`] — a URL plus the optional TLS files
//! ([`TlsFiles`]) — is the one description every Redis connection of the Rust code is built
//! from: the queue's shared connection and its blocking-read connections, the shared
//! connection of the discovery of external services ([`RedisTarget::shared`]) and direct
//! clients ([`RedisTarget::client`]).
//!
//! Three forms of URL: one server (`redis://`, `rediss://`, `unix://`); a Redis Sentinel
//! deployment (`redis+sentinel://`, `rediss+sentinel://`; [`SentinelUrl`]), where the
//! sentinels are asked for the current primary each time a connection is opened, so a
//! connection lost to a failover is reopened on the promoted replica ([`Connector`]); or a
//! Redis Cluster (`redis+cluster://`, `rediss+cluster://`; [`ClusterUrl`]), reached through
//! redis-rs's cluster client, which routes each command to the primary of its key's slot and
//! follows `MOVED`/`ASK` and failovers. Every connection is a [`Conn`].
//!
//! `rediss://` URLs connect over TLS (rustls). Without [`TlsFiles::ca`] the server is
//! verified against the system trust store (which honours `SSL_CERT_FILE`); with it, the
//! given CA certificates are trusted *instead of* the system store, so a private CA works
//! without changing the machine. [`TlsFiles::cert`] and [`TlsFiles::key`] present a client
//! certificate, for servers with `tls-auth-clients yes`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{
    self,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
    AsyncConnectionConfig, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo,
    IntoConnectionInfo, Pipeline, RedisError, RedisFuture, TlsCertificates, TlsMode, Value,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

mod urls;

pub use urls::{ClusterUrl, SentinelUrl};

/// Setting name of the CA file (config key, and `GLEITZEIT_REDIS_TLS_CA` in the environment).
pub const TLS_CA_SETTING: &str = "redis_tls_ca";
/// Setting name of the client certificate file (`GLEITZEIT_REDIS_TLS_CERT`).
pub const TLS_CERT_SETTING: &str = "redis_tls_cert";
/// Setting name of the client key file (`GLEITZEIT_REDIS_TLS_KEY`).
pub const TLS_KEY_SETTING: &str = "redis_tls_key";

/// Why a Redis connection could not be described or built. None of these is retryable: the
/// configuration has to change.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The URL does not parse as a Redis URL.
    #[error("invalid redis url: {0}")]
    Url(#[source] redis::RedisError),
    /// A `redis+sentinel://` URL is malformed; the reason names the part at fault (never the
    /// password).
    #[error("invalid redis+sentinel url: {0}\nexpected redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB][?sentinel_username=U&sentinel_password=P]")]
    SentinelUrl(String),
    /// The sentinels answered, but monitor no primary under the URL's service name.
    #[error("the sentinels monitor no primary under the service name of the redis+sentinel:// URL (the part after the hosts); it must match a `sentinel monitor <name> ...` line of their configuration")]
    UnknownSentinelService,
    /// A `redis+cluster://` URL is malformed; the reason names the part at fault.
    #[error("invalid redis+cluster url: {0}\nexpected redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]")]
    ClusterUrl(String),
    /// This use needs one server's address, and the URL names a Sentinel deployment or a
    /// cluster.
    #[error("{0} needs the address of one Redis server; a redis+sentinel:// or redis+cluster:// URL is not supported there")]
    NeedsOneServer(&'static str),
    /// A TLS file is configured but the URL is not `rediss://`: the file would be ignored.
    #[error("{setting} is set but the redis url is not rediss:// (TLS files apply only to TLS connections)")]
    TlsWithoutRediss {
        /// The setting that is set.
        setting: &'static str,
    },
    /// Only one of client certificate and key is configured.
    #[error("{set} is set without {missing}: a client certificate needs its key and vice versa")]
    IncompleteClientIdentity {
        /// The setting that is set.
        set: &'static str,
        /// The setting that is missing.
        missing: &'static str,
    },
    /// A TLS file cannot be read.
    #[error("{setting}: cannot read {path}: {source}")]
    Read {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file is not PEM of the expected kind.
    #[error("{setting}: {path} is not a PEM {expected}: {reason}")]
    NotPem {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What the file should hold.
        expected: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// redis-rs refused the TLS parameters.
    #[error("redis TLS configuration: {0}")]
    Tls(#[source] redis::RedisError),
}

/// The PEM files of a TLS connection. All optional: an empty set means "system trust store,
/// no client certificate".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates to trust instead of the system store (`redis_tls_ca`).
    pub ca: Option<PathBuf>,
    /// Client certificate (chain) for `tls-auth-clients` servers (`redis_tls_cert`).
    pub cert: Option<PathBuf>,
    /// Private key of the client certificate (`redis_tls_key`).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether no file is set.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The settings that are set, in a fixed order (for errors).
    fn set_settings(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            (self.ca.is_some(), TLS_CA_SETTING),
            (self.cert.is_some(), TLS_CERT_SETTING),
            (self.key.is_some(), TLS_KEY_SETTING),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
    }

    /// Reads and checks the files; `None` when there is nothing to pass to redis-rs.
    fn load(&self) -> Result<Option<TlsCertificates>, ConnectionError> {
        let client_tls = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConnectionError::IncompleteClientIdentity {
                    set: TLS_CERT_SETTING,
                    missing: TLS_KEY_SETTING,
                })
            }
            (None, Some(_)) => {
                return Err(ConnectionError::IncompleteClientIdentity {
                    set: TLS_KEY_SETTING,
                    missing: TLS_CERT_SETTING,
                })
            }
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read_certificates(TLS_CERT_SETTING, cert)?,
                client_key: read_key(key)?,
            }),
        };
        let root_cert = match &self.ca {
            Some(ca) => Some(read_certificates(TLS_CA_SETTING, ca)?),
            None => None,
        };
        if client_tls.is_none() && root_cert.is_none() {
            return Ok(None);
        }
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, ConnectionError> {
    std::fs::read(path).map_err(|source| ConnectionError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

/// The file's bytes, once they are known to hold at least one PEM certificate and nothing
/// malformed.
fn read_certificates(setting: &'static str, path: &Path) -> Result<Vec<u8>, ConnectionError> {
    let pem = read(setting, path)?;
    let not_pem = |reason: String| ConnectionError::NotPem {
        setting,
        path: path.to_owned(),
        expected: "certificate file",
        reason,
    };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| not_pem(e.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(not_pem("it holds no CERTIFICATE block".to_owned()));
    }
    Ok(pem)
}

/// The file's bytes, once they are known to hold a PEM private key.
fn read_key(path: &Path) -> Result<Vec<u8>, ConnectionError> {
    let pem = read(TLS_KEY_SETTING, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| ConnectionError::NotPem {
        setting: TLS_KEY_SETTING,
        path: path.to_owned(),
        expected: "private key",
        reason: e.to_string(),
    })?;
    Ok(pem)
}

/// A Redis server to connect to: its URL and, for `rediss://`, the TLS files.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    url: String,
    tls: TlsFiles,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: only whether it is TLS is shown.
        f.debug_struct("RedisTarget")
            .field("tls", &self.is_tls())
            .field("tls_files", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// A target without TLS files (a `rediss://` URL then trusts the system store).
    pub fn new(url: impl Into<String>) -> RedisTarget {
        RedisTarget {
            url: url.into(),
            tls: TlsFiles::default(),
        }
    }

    /// The same target with these TLS files.
    pub fn with_tls(mut self, tls: TlsFiles) -> RedisTarget {
        self.tls = tls;
        self
    }

    /// The URL as given (may carry a password: do not log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TLS files.
    pub fn tls(&self) -> &TlsFiles {
        &self.tls
    }

    /// Whether the URL asks for TLS (`rediss://` or `rediss+sentinel://`).
    pub fn is_tls(&self) -> bool {
        let lower = self.url.get(..18).unwrap_or(&self.url).to_ascii_lowercase();
        lower.starts_with("rediss://")
            || lower.starts_with("rediss+sentinel://")
            || lower.starts_with("rediss+cluster://")
    }

    /// Whether the URL names a Redis Cluster (`redis+cluster://`, `rediss+cluster://`).
    pub fn is_cluster(&self) -> bool {
        ClusterUrl::scheme_of(&self.url).is_some()
    }

    /// Whether the URL names a Sentinel deployment (`redis+sentinel://`,
    /// `rediss+sentinel://`).
    pub fn is_sentinel(&self) -> bool {
        SentinelUrl::scheme_of(&self.url).is_some()
    }

    /// Checks the URL and the TLS files without opening a socket: the URL parses, TLS files
    /// are only set for `rediss://` (or `rediss+sentinel://`), certificate and key go
    /// together, and every file exists and holds PEM of the right kind.
    ///
    /// # Errors
    /// The first problem found, naming the setting (and file) at fault.
    pub fn validate(&self) -> Result<(), ConnectionError> {
        if self.is_sentinel() {
            self.sentinel_client().map(|_| ())
        } else if self.is_cluster() {
            self.cluster_client().map(|_| ())
        } else {
            self.connection_info().map(|_| ())
        }
    }

    /// TLS files may only accompany a TLS URL: they would be ignored otherwise.
    fn check_tls_files(&self, tls_url: bool) -> Result<(), ConnectionError> {
        if !tls_url {
            if let Some(setting) = self.tls.set_settings().next() {
                return Err(ConnectionError::TlsWithoutRediss { setting });
            }
        }
        Ok(())
    }

    /// The parsed URL with the TLS parameters attached (one server).
    fn connection_info(&self) -> Result<ConnectionInfo, ConnectionError> {
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(ConnectionError::Url)?;
        self.check_tls_files(matches!(info.addr(), ConnectionAddr::TcpTls { .. }))?;
        match self.tls.load()? {
            // Building a client is how redis-rs attaches (and checks) the certificates.
            Some(certs) => Ok(redis::Client::build_with_tls(info, certs)
                .map_err(ConnectionError::Tls)?
                .get_connection_info()
                .clone()),
            None => Ok(info),
        }
    }

    /// redis-rs's Sentinel client for a `redis+sentinel://` URL: it asks the sentinels in
    /// turn for the primary of the service and checks with `ROLE` that the server it names
    /// is a primary before handing out a connection.
    fn sentinel_client(&self) -> Result<SentinelClient, ConnectionError> {
        let url = SentinelUrl::parse(&self.url)?;
        self.check_tls_files(url.tls)?;
        let addrs = url
            .sentinels
            .iter()
            .map(|(host, port)| tcp_addr(host, *port, url.tls));
        let mut b = SentinelClientBuilder::new(addrs, &url.service, SentinelServerType::Master)
            .map_err(ConnectionError::Url)?
            .set_client_to_redis_db(url.db);
        if let Some(user) = &url.username {
            b = b.set_client_to_redis_username(user);
        }
        if let Some(password) = &url.password {
            b = b.set_client_to_redis_password(password);
        }
        if let Some(user) = &url.sentinel_username {
            b = b.set_client_to_sentinel_username(user);
        }
        if let Some(password) = &url.sentinel_password {
            b = b.set_client_to_sentinel_password(password);
        }
        if url.tls {
            b = b
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            // Loaded twice: the builder keeps one set for each side.
            if let Some(certs) = self.tls.load()? {
                b = b.set_client_to_redis_certificates(certs);
            }
            if let Some(certs) = self.tls.load()? {
                b = b.set_client_to_sentinel_certificates(certs);
            }
        }
        b.build().map_err(ConnectionError::Tls)
    }

    /// redis-rs's cluster client for a `redis+cluster://` URL (the nodes are where it starts:
    /// it learns the rest of the cluster from them).
    fn cluster_client(&self) -> Result<ClusterClient, ConnectionError> {
        let url = ClusterUrl::parse(&self.url)?;
        self.check_tls_files(url.tls)?;
        let nodes: Vec<ConnectionInfo> = url
            .nodes
            .iter()
            .map(|(host, port)| tcp_addr(host, *port, url.tls).into_connection_info())
            .collect::<Result<_, _>>()
            .map_err(ConnectionError::Url)?;
        let mut b = ClusterClientBuilder::new(nodes);
        if let Some(user) = &url.username {
            b = b.username(user);
        }
        if let Some(password) = &url.password {
            b = b.password(password);
        }
        if url.tls {
            b = b.tls(TlsMode::Secure);
            if let Some(certs) = self.tls.load()? {
                b = b.certs(certs);
            }
        }
        b.build().map_err(ConnectionError::Tls)
    }

    /// What opens connections to this target: the server itself, the primary the sentinels
    /// name at the time (asking them takes at most `connect_timeout` in all), or the cluster.
    ///
    /// # Errors
    /// As [`RedisTarget::validate`].
    pub fn connector(&self, connect_timeout: Duration) -> Result<Connector, ConnectionError> {
        if self.is_cluster() {
            return Ok(Connector::Cluster(Box::new(self.cluster_client()?)));
        }
        if self.is_sentinel() {
            Ok(Connector::Sentinel {
                client: Arc::new(tokio::sync::Mutex::new(self.sentinel_client()?)),
                timeout: connect_timeout,
            })
        } else {
            Ok(Connector::Direct(Box::new(
                redis::Client::open(self.connection_info()?).map_err(ConnectionError::Url)?,
            )))
        }
    }

    /// A client for single connections to one server (tools, benchmarks).
    ///
    /// # Errors
    /// As [`RedisTarget::validate`]; [`ConnectionError::NeedsOneServer`] for a Sentinel or
    /// cluster URL.
    pub fn client(&self) -> Result<redis::Client, ConnectionError> {
        if self.is_sentinel() || self.is_cluster() {
            return Err(ConnectionError::NeedsOneServer("a direct client"));
        }
        redis::Client::open(self.connection_info()?).map_err(ConnectionError::Url)
    }

    /// One shared, reconnecting connection to the target (following Sentinel failovers),
    /// for occasional commands outside the queue, such as service discovery. Connects
    /// lazily.
    ///
    /// # Errors
    /// As [`RedisTarget::validate`].
    pub fn shared(&self, timeout: Duration) -> Result<SharedConnection, ConnectionError> {
        let timeouts = Timeouts {
            connect: timeout,
            response: Some(timeout),
        };
        Ok(SharedConnection {
            link: Arc::new(crate::link::Link::new(self.connector(timeout)?, timeouts)),
        })
    }
}

/// How long opening a connection and each reply may take (`response: None` for blocking
/// reads, which the caller bounds itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the connection (for a cluster, to each node).
    pub connect: Duration,
    /// Each reply.
    pub response: Option<Duration>,
}

/// A connection to one server or to a cluster: what every command of the crate is sent on.
/// Cheap to clone (both kinds are multiplexed).
#[derive(Clone)]
pub enum Conn {
    /// One server (also the primary a Sentinel named).
    Single(MultiplexedConnection),
    /// A Redis Cluster: each command goes to the primary of its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Opens connections: to one server, to whichever server the sentinels name as the
/// primary when the connection is opened, or to a cluster. Cheap to clone.
#[derive(Clone)]
pub enum Connector {
    /// One server (boxed: a client is large, and connectors are cloned into every handle).
    Direct(Box<redis::Client>),
    /// The primary of a Sentinel deployment, looked up anew for every connection.
    Sentinel {
        /// redis-rs's Sentinel client (it keeps its connections to the sentinels, so it is
        /// used by one caller at a time).
        client: Arc<tokio::sync::Mutex<SentinelClient>>,
        /// Bound on asking the sentinels and connecting to the primary.
        timeout: Duration,
    },
    /// A Redis Cluster (boxed: the client is large).
    Cluster(Box<ClusterClient>),
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Both carry credentials: only the kind is shown.
        f.write_str(match self {
            Connector::Direct(_) => "Connector::Direct",
            Connector::Sentinel { .. } => "Connector::Sentinel",
            Connector::Cluster(_) => "Connector::Cluster",
        })
    }
}

impl Connector {
    /// A new connection with these timeouts.
    ///
    /// # Errors
    /// The connection error; for Sentinel also "no sentinel answered", "the service is not
    /// known", and a timeout (as an I/O error, so callers treat it as an outage and retry).
    pub async fn connect(&self, timeouts: Timeouts) -> Result<Conn, RedisError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(timeouts.response);
        match self {
            Connector::Direct(client) => client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map(Conn::Single),
            Connector::Cluster(client) => {
                let mut cluster_cfg = ClusterConfig::new().set_connection_timeout(timeouts.connect);
                if let Some(response) = timeouts.response {
                    cluster_cfg = cluster_cfg.set_response_timeout(response);
                }
                client
                    .get_async_connection_with_config(cluster_cfg)
                    .await
                    .map(Conn::Cluster)
            }
            Connector::Sentinel { client, timeout } => {
                let connect = async {
                    client
                        .lock()
                        .await
                        .get_async_connection_with_config(&cfg)
                        .await
                        .map(Conn::Single)
                };
                match tokio::time::timeout(*timeout, connect).await {
                    Ok(res) => res,
                    Err(_) => Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no primary found through the sentinels within {} ms",
                            timeout.as_millis()
                        ),
                    ))),
                }
            }
        }
    }
}

/// One connection shared by its clones, reopened after an error that may have broken it
/// (through the sentinels for a Sentinel URL). See [`RedisTarget::shared`].
#[derive(Clone)]
pub struct SharedConnection {
    link: Arc<crate::link::Link>,
}

impl std::fmt::Debug for SharedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnection").finish_non_exhaustive()
    }
}

impl SharedConnection {
    /// Runs a pipeline (atomic or not) and parses its reply.
    ///
    /// # Errors
    /// Redis and connection errors as [`crate::QueueError`].
    pub async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, crate::QueueError> {
        let mut lease = self.link.get().await?;
        let res = pipe
            .query_async::<T>(&mut lease.conn)
            .await
            .map_err(crate::QueueError::from);
        self.link.settle(lease, &res);
        res
    }
}

/// A TCP address, over TLS (verified) or not.
fn tcp_addr(host: &str, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    }
}

impl From<&str> for RedisTarget {
    fn from(url: &str) -> RedisTarget {
        RedisTarget::new(url)
    }
}

impl From<String> for RedisTarget {
    fn from(url: String) -> RedisTarget {
        RedisTarget::new(url)
    }
}

impl From<&String> for RedisTarget {
    fn from(url: &String) -> RedisTarget {
        RedisTarget::new(url.as_str())
    }
}

impl From<&RedisTarget> for RedisTarget {
    fn from(target: &RedisTarget) -> RedisTarget {
        target.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn plain_url_without_tls_files_is_fine_and_tls_files_need_rediss() {
        assert!(RedisTarget::new("redis://127.0.0.1:6379/")
            .validate()
            .is_ok());
        assert!(RedisTarget::new("rediss://127.0.0.1:6379/")
            .validate()
            .is_ok());
        let t = RedisTarget::new("redis://127.0.0.1:6379/").with_tls(TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        });
        let err = t.validate().unwrap_err();
        assert!(
            matches!(err, ConnectionError::TlsWithoutRediss { setting } if setting == TLS_CA_SETTING),
            "{err}"
        );
        assert!(err.to_string().contains("redis_tls_ca"), "{err}");
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let rediss = || RedisTarget::new("rediss://127.0.0.1:6379/");
        let missing = dir.path().join("missing.pem");
        let err = rediss()
            .with_tls(TlsFiles {
                ca: Some(missing.clone()),
                ..TlsFiles::default()
            })
            .validate()
            .unwrap_err();
        assert!(
            matches!(err, ConnectionError::Read { setting: TLS_CA_SETTING, ref path, .. } if *path == missing),
            "{err}"
        );

        let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
        let err = rediss()
            .with_tls(TlsFiles {
                ca: Some(garbage.clone()),
                ..TlsFiles::default()
            })
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConnectionError::NotPem {
                    setting: TLS_CA_SETTING,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        let err = rediss()
            .with_tls(TlsFiles {
                cert: Some(garbage.clone()),
                ..TlsFiles::default()
            })
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConnectionError::IncompleteClientIdentity {
                    set: TLS_CERT_SETTING,
                    missing: TLS_KEY_SETTING
                }
            ),
            "{err}"
        );
        let err = rediss()
            .with_tls(TlsFiles {
                key: Some(garbage),
                ..TlsFiles::default()
            })
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConnectionError::IncompleteClientIdentity {
                    set: TLS_KEY_SETTING,
                    missing: TLS_CERT_SETTING
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn debug_hides_the_url() {
        let t = RedisTarget::new("rediss://:secret@127.0.0.1:6379/");
        assert!(t.is_tls());
        assert!(!format!("{t:?}").contains("secret"));
    }
}
