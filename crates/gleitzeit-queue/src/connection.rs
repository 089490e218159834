//! Where Redis is and how to reach it. [`RedisTarget`] — a URL plus the optional TLS files
//! ([`TlsFiles`]) — is the one description every Redis connection of the Rust code is built
//! from: the queue's pool and its blocking-read connections, the discovery pool of external
//! services ([`RedisTarget::pool`]) and direct clients ([`RedisTarget::client`]).
//!
//! `rediss://` URLs connect over TLS (rustls). Without [`TlsFiles::ca`] the server is
//! verified against the system trust store (which honours `SSL_CERT_FILE`); with it, the
//! given CA certificates are trusted *instead of* the system store, so a private CA works
//! without changing the machine. [`TlsFiles::cert`] and [`TlsFiles::key`] present a client
//! certificate, for servers with `tls-auth-clients yes`.

use std::path::{Path, PathBuf};

use deadpool_redis::redis::{
    self, ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    /// The connection pool could not be built.
    #[error("redis connection pool: {0}")]
    Pool(String),
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

    /// Whether the URL asks for TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.url
            .get(..9)
            .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"))
    }

    /// Checks the URL and the TLS files without opening a socket: the URL parses, TLS files
    /// are only set for `rediss://`, certificate and key go together, and every file exists
    /// and holds PEM of the right kind.
    ///
    /// # Errors
    /// The first problem found, naming the setting (and file) at fault.
    pub fn validate(&self) -> Result<(), ConnectionError> {
        self.connection_info().map(|_| ())
    }

    /// The parsed URL with the TLS parameters attached.
    fn connection_info(&self) -> Result<ConnectionInfo, ConnectionError> {
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(ConnectionError::Url)?;
        let tls_url = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        if !tls_url {
            if let Some(setting) = self.tls.set_settings().next() {
                return Err(ConnectionError::TlsWithoutRediss { setting });
            }
        }
        match self.tls.load()? {
            // Building a client is how redis-rs attaches (and checks) the certificates.
            Some(certs) => Ok(redis::Client::build_with_tls(info, certs)
                .map_err(ConnectionError::Tls)?
                .get_connection_info()
                .clone()),
            None => Ok(info),
        }
    }

    /// A client for single connections (blocking reads, tools).
    ///
    /// # Errors
    /// As [`RedisTarget::validate`].
    pub fn client(&self) -> Result<redis::Client, ConnectionError> {
        redis::Client::open(self.connection_info()?).map_err(ConnectionError::Url)
    }

    /// A small deadpool-redis pool of `max_size` connections on the Tokio runtime, for
    /// occasional reads (service discovery). Connects lazily.
    ///
    /// # Errors
    /// As [`RedisTarget::validate`], plus [`ConnectionError::Pool`].
    pub fn pool(&self, max_size: usize) -> Result<deadpool_redis::Pool, ConnectionError> {
        let manager =
            deadpool_redis::Manager::new(self.connection_info()?).map_err(ConnectionError::Url)?;
        deadpool_redis::Pool::builder(manager)
            .max_size(max_size)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| ConnectionError::Pool(e.to_string()))
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
