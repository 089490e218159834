// Over 800 lines: one server handle with its plain, TLS (private CA made by openssl) and
// append-only variants and their tests; the certificate making is the part to move out next.

//! A throw-away `redis-server` for tests.
//!
//! [`RedisServer::start`] runs the `redis-server` binary found on `PATH` on a free loopback
//! port, without persistence, in its own temporary directory, and returns once the server
//! answers `PING`. Tests get a real Redis (never a mock) that is killed when the handle is
//! dropped, plus [`RedisServer::kill`] / [`RedisServer::restart`] to simulate outages.
//!
//! [`RedisServer::start_tls`] runs the same server with TLS only (`--port 0 --tls-port P`),
//! with a private CA, a server certificate for `127.0.0.1`/`localhost` and a client
//! certificate made by `openssl` in the server's temporary directory ([`TlsFiles`]), so TLS
//! clients are tested against a real handshake without touching the system trust store.
//!
//! [`RedisServer::start_aof`] starts one that writes an append-only file with
//! `appendfsync always`, so a server killed with SIGKILL comes back from
//! [`RedisServer::restart`] with every acknowledged write.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often readiness is probed and for how long (attempts × interval ≈ 10 s). The probe
/// is an actual `PING` on the socket, so a ready server is detected on the first attempt
/// that can see it; the bound only limits how long a broken start is waited for.
const READY_ATTEMPTS: u32 = 400;
const READY_INTERVAL: Duration = Duration::from_millis(25);

/// How many free ports are tried when another process grabs the chosen port between
/// picking it and `redis-server` binding it.
const PORT_ATTEMPTS: u32 = 5;

/// Why the harness could not provide a server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// `redis-server` is not on `PATH`; install it (Debian: `apt-get install redis-server`).
    #[error(
        "redis-server was not found on PATH; install it (e.g. `apt-get install redis-server`)"
    )]
    NotInstalled,
    /// The temporary directory or the process could not be set up.
    #[error("redis harness I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server process exited before it answered `PING`.
    #[error("redis-server on port {port} exited during start-up: {log}")]
    Exited {
        /// The port it was asked to listen on.
        port: u16,
        /// The tail of its log file.
        log: String,
    },
    /// The server did not answer `PING` within the bounded number of attempts.
    #[error("redis-server on port {port} did not answer PING in time: {log}")]
    NotReady {
        /// The port it was asked to listen on.
        port: u16,
        /// The tail of its log file.
        log: String,
    },
    /// Redis answered an administrative command with an error (its text).
    #[error("redis refused the command: {0}")]
    Reply(String),
    /// `restart` was called while the server is still running.
    #[error("redis-server is still running; kill it before restarting")]
    StillRunning,
    /// `openssl` is not on `PATH`; TLS servers need it for their certificates.
    #[error("openssl was not found on PATH; install it (e.g. `apt-get install openssl`)")]
    OpensslNotInstalled,
    /// An `openssl` command making the test certificates failed.
    #[error("openssl {step} failed: {stderr}")]
    Openssl {
        /// Which certificate or key was being made.
        step: String,
        /// What openssl printed.
        stderr: String,
    },
}

/// Whether a TLS server asks clients for a certificate (its `tls-auth-clients` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `tls-auth-clients optional`: a client certificate is verified when one is sent.
    Optional,
    /// `tls-auth-clients yes`: clients without a certificate signed by the CA are refused.
    Required,
}

impl ClientAuth {
    fn as_arg(self) -> &'static str {
        match self {
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "yes",
        }
    }
}

/// The PEM files of a TLS server: a private CA (trusted by nobody else), the server's
/// certificate for `127.0.0.1` and `localhost`, and a client certificate the server accepts.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    dir: PathBuf,
}

impl TlsFiles {
    /// The private CA's certificate: what a client must trust to accept the server.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A client certificate signed by the private CA.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    /// The key of [`TlsFiles::client_cert`].
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// Makes the CA, then the server and client certificates it signs, in `dir`.
    fn generate(dir: PathBuf) -> Result<TlsFiles, HarnessError> {
        std::fs::create_dir_all(&dir)?;
        let files = TlsFiles { dir };
        let d = &files.dir;
        // P-256 keys: quick to generate, and accepted by rustls, OpenSSL and Python's ssl.
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            "CA certificate",
            d,
            &[
                &[
                    "req",
                    "-x509",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=Gleitzeit test CA",
                ][..],
                &ec[..],
                &[
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                ],
            ]
            .concat(),
        )?;
        for (name, cn, ext) in [
            (
                "server",
                "localhost",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "gleitzeit-client",
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            let ext_file = format!("{name}.ext");
            std::fs::write(
                d.join(&ext_file),
                format!(
                    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}"
                ),
            )?;
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            let subj = format!("/CN={cn}");
            openssl(
                &format!("{name} key"),
                d,
                &[
                    &["req", "-new", "-subj", &subj][..],
                    &ec[..],
                    &["-keyout", &key, "-out", &csr],
                ]
                .concat(),
            )?;
            openssl(
                &format!("{name} certificate"),
                d,
                &[
                    "x509",
                    "-req",
                    "-days",
                    "2",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-extfile",
                    &ext_file,
                    "-out",
                    &crt,
                ],
            )?;
        }
        Ok(files)
    }
}

/// Runs `openssl args` in `dir`; `step` names the result in errors.
fn openssl(step: &str, dir: &Path, args: &[&str]) -> Result<(), HarnessError> {
    let out = match Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            return Err(HarnessError::OpensslNotInstalled)
        }
        Err(err) => return Err(HarnessError::Io(err)),
    };
    if out.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Openssl {
            step: step.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// How the server listens: plain TCP, or TLS only with the given files and client auth.
#[derive(Debug, Clone)]
struct Tls {
    files: TlsFiles,
    auth: ClientAuth,
}

/// A running `redis-server` on `127.0.0.1:<port>`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    tls: Option<Tls>,
    persistence: Persistence,
    /// Further `redis-server` arguments (kept for [`RedisServer::restart`]).
    extra: Vec<String>,
}

/// Whether the server keeps its dataset across [`RedisServer::kill`] and
/// [`RedisServer::restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persistence {
    /// No RDB, no AOF: a restarted server is empty.
    None,
    /// An append-only file fsynced after every write (`appendfsync always`).
    AofAlways,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Errors
    /// [`HarnessError::NotInstalled`] when `redis-server` is missing; `Exited`/`NotReady`
    /// with the server's log when it does not come up.
    pub fn start() -> Result<RedisServer, HarnessError> {
        RedisServer::start_with(None, Persistence::None, Vec::new())
    }

    /// [`RedisServer::start`] with further `redis-server` arguments (`--replicaof HOST
    /// PORT` for a replica, say), given as on its command line.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_with_args(args: &[&str]) -> Result<RedisServer, HarnessError> {
        let extra = args.iter().map(|a| (*a).to_owned()).collect();
        RedisServer::start_with(None, Persistence::None, extra)
    }

    /// Starts a TLS-only server (no plain TCP port) with a fresh private CA, server and
    /// client certificates ([`RedisServer::tls_files`]) and waits until it answers `PING`.
    /// [`RedisServer::url`] is then a `rediss://` URL.
    ///
    /// # Errors
    /// As [`RedisServer::start`], plus [`HarnessError::OpensslNotInstalled`] /
    /// [`HarnessError::Openssl`] when the certificates cannot be made.
    pub fn start_tls(auth: ClientAuth) -> Result<RedisServer, HarnessError> {
        RedisServer::start_with(Some(auth), Persistence::None, Vec::new())
    }

    /// Starts a server like [`RedisServer::start`] that writes an append-only file and fsyncs
    /// it after every write (`appendonly yes`, `appendfsync always`): after a SIGKILL
    /// ([`RedisServer::kill`]), [`RedisServer::restart`] loads it, so every write the server
    /// acknowledged before it died is there again.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_aof() -> Result<RedisServer, HarnessError> {
        RedisServer::start_with(None, Persistence::AofAlways, Vec::new())
    }

    fn start_with(
        auth: Option<ClientAuth>,
        persistence: Persistence,
        extra: Vec<String>,
    ) -> Result<RedisServer, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("gleitzeit-redis-")
            .tempdir()?;
        let tls = match auth {
            Some(auth) => Some(Tls {
                files: TlsFiles::generate(dir.path().join("tls"))?,
                auth,
            }),
            None => None,
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match spawn_ready(dir.path(), port, tls.as_ref(), persistence, &extra) {
                Ok(child) => {
                    return Ok(RedisServer {
                        port,
                        child: Some(child),
                        dir,
                        tls,
                        persistence,
                        extra,
                    })
                }
                // A lost race for the port shows up as an early exit; try another port.
                Err(err @ HarnessError::Exited { .. }) => last_error = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or(HarnessError::NotReady {
            port: 0,
            log: String::new(),
        }))
    }

    /// `redis://127.0.0.1:<port>/`, or `rediss://127.0.0.1:<port>/` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The certificates of a TLS server; `None` for a plain one.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|t| &t.files)
    }

    /// `redis://<user>:<password>@127.0.0.1:<port>/`: the URL of an ACL user (user and
    /// password are percent-encoded).
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!(
            "redis://{}:{}@127.0.0.1:{}/",
            percent_encode(user),
            percent_encode(password),
            self.port
        )
    }

    /// Runs one command as the `default` user (the administrator: the harness starts Redis
    /// without ACL), for tests that set up ACL users (`ACL SETUSER`) or change the
    /// configuration (`CONFIG SET`) after start. Returns the reply as text: a simple or bulk
    /// string, an integer, or the elements of an array joined by newlines.
    ///
    /// # Errors
    /// [`HarnessError::Io`] when the server cannot be reached; [`HarnessError::Reply`] with
    /// Redis's error text when it refuses the command.
    pub fn admin<S: AsRef<str>>(&self, args: &[S]) -> Result<String, HarnessError> {
        admin_at(self.port, args)
    }

    /// Runs one command line as `redis-cli` would read it (words separated by blanks, a
    /// word in double quotes may hold blanks and `\"`, `\\`, `\n`, `\xHH` escapes) through
    /// [`RedisServer::admin`].
    ///
    /// # Errors
    /// [`HarnessError::Reply`] for a line that does not parse or a refused command; as
    /// [`RedisServer::admin`].
    pub fn admin_line(&self, line: &str) -> Result<String, HarnessError> {
        let words = split_command_line(line).map_err(HarnessError::Reply)?;
        self.admin(&words)
    }

    /// The TCP port the server listens on (kept across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server (`None` while it is killed), for tests that
    /// signal it themselves (SIGSTOP / SIGCONT to simulate a server that stops answering).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is (still) running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL (an abrupt outage: no shutdown, no save) and reaps it.
    /// Killing an already stopped server does nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The process may already have exited; either way it is reaped below.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers `PING`. The
    /// dataset is empty, unless the server was started with [`RedisServer::start_aof`]: then
    /// it loads the append-only file first.
    ///
    /// # Errors
    /// [`HarnessError::StillRunning`] if it was not killed first; start errors as in
    /// [`RedisServer::start`] (for example when another process took the port meanwhile).
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        if self.is_running() {
            return Err(HarnessError::StillRunning);
        }
        self.kill();
        let child = spawn_ready(
            self.dir.path(),
            self.port,
            self.tls.as_ref(),
            self.persistence,
            &self.extra,
        )?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Calls per command from the text of `INFO commandstats` (`cmdstat_<name>:calls=N,…`), by
/// lower-case name; other lines are ignored. Counts include the commands scripts run.
pub fn command_calls(info: &str) -> std::collections::BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            let command = key.strip_prefix("cmdstat_")?;
            let calls = value
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Some((command.to_ascii_lowercase(), calls))
        })
        .collect()
}

/// Splits a command line the way `redis-cli` does: blank-separated words; `"..."` with the
/// escapes `\"`, `\\`, `\n`, `\r`, `\t` and `\xHH`; `'...'` with `\'`.
///
/// # Errors
/// A description of an unbalanced quote or a quote not followed by a blank.
pub fn split_command_line(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unbalanced quote in {line:?}")),
                    Some(c) if c == first => break,
                    Some('\\') if first == '"' => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('r') => word.push('\r'),
                        Some('t') => word.push('\t'),
                        Some('x') => {
                            let hex: String = chars.by_ref().take(2).collect();
                            let b = u8::from_str_radix(&hex, 16)
                                .map_err(|_| format!("bad \\x escape in {line:?}"))?;
                            word.push(char::from(b));
                        }
                        Some(c) => word.push(c),
                        None => return Err(format!("unbalanced quote in {line:?}")),
                    },
                    Some('\\') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        word.push('\'');
                    }
                    Some(c) => word.push(c),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(format!(
                    "closing quote must be followed by a blank in {line:?}"
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
}

/// Reads one RESP2 reply.
fn read_reply(r: &mut impl std::io::BufRead) -> Result<String, HarnessError> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(HarnessError::Reply(rest.to_owned())),
        "$" => {
            let n: i64 = rest.parse().unwrap_or(-1);
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let n: i64 = rest.parse().unwrap_or(0);
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(HarnessError::Reply(format!("unexpected reply {line:?}"))),
    }
}

/// Percent-encodes everything but unreserved URL characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One command to `127.0.0.1:<port>` (a server or a sentinel) over a fresh plain
/// connection; the reply as text (see [`RedisServer::admin`]).
///
/// # Errors
/// [`HarnessError::Io`] when nothing answers; [`HarnessError::Reply`] with the error text.
pub fn admin_at<S: AsRef<str>>(port: u16, args: &[S]) -> Result<String, HarnessError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref().as_bytes();
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    stream.write_all(&req)?;
    let mut reader = std::io::BufReader::new(stream);
    read_reply(&mut reader)
}

/// Asks the OS for a free loopback port. The listener is closed before `redis-server`
/// binds, so another process can win the port; `start` retries with a new one then.
pub(crate) fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn spawn_ready(
    dir: &Path,
    port: u16,
    tls: Option<&Tls>,
    persistence: Persistence,
    extra: &[String],
) -> Result<Child, HarnessError> {
    let log = dir.join(format!("redis-{port}.log"));
    // A TLS server is probed over a Unix socket: the harness speaks plain RESP only.
    let socket = dir.join(format!("redis-{port}.sock"));
    let mut cmd = Command::new("redis-server");
    match tls {
        None => {
            cmd.arg("--port").arg(port.to_string());
        }
        Some(tls) => {
            cmd.args(["--port", "0", "--tls-port"])
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(tls.files.server_cert())
                .arg("--tls-key-file")
                .arg(tls.files.server_key())
                .arg("--tls-ca-cert-file")
                .arg(tls.files.ca_cert())
                .args(["--tls-auth-clients", tls.auth.as_arg()])
                .arg("--unixsocket")
                .arg(&socket)
                .args(["--unixsocketperm", "700"]);
        }
    }
    cmd.args(["--bind", "127.0.0.1"]).args(["--save", ""]);
    match persistence {
        Persistence::None => cmd.args(["--appendonly", "no"]),
        Persistence::AofAlways => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
    };
    let spawned = cmd
        .args(extra)
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == ErrorKind::NotFound => return Err(HarnessError::NotInstalled),
        Err(err) => return Err(HarnessError::Io(err)),
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for _ in 0..READY_ATTEMPTS {
        if let Some(_status) = child.try_wait()? {
            return Err(HarnessError::Exited {
                port,
                log: log_tail(&log),
            });
        }
        let ready = match tls {
            None => ping(addr),
            Some(_) => ping_unix(&socket),
        };
        if ready {
            return Ok(child);
        }
        std::thread::sleep(READY_INTERVAL);
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(HarnessError::NotReady {
        port,
        log: log_tail(&log),
    })
}

/// One `PING` over a fresh connection; true only for a `+PONG` reply.
pub(crate) fn ping(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
    {
        return false;
    }
    ping_on(stream)
}

/// [`ping`] over the server's Unix socket.
fn ping_unix(path: &Path) -> bool {
    let Ok(stream) = UnixStream::connect(path) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
    {
        return false;
    }
    ping_on(stream)
}

fn ping_on(mut stream: impl Read + Write) -> bool {
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    let mut read = 0;
    while read < reply.len() {
        match stream.read(&mut reply[read..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
    }
    &reply == b"+PONG\r\n"
}

pub(crate) fn log_tail(path: &PathBuf) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        }
        Err(err) => format!("(no log: {err})"),
    }
}

/// How long a multi-server harness (Sentinel group, cluster) may take to come up or to fail
/// over before it gives up: a bound against hanging, not a speed check (forming a cluster
/// takes about 2 s here, a crash failover 3-5 s).
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// How often such a harness looks at the servers' state while it waits.
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// Polls `cond` until it returns `Some`, or fails naming `what` (prefixed by `harness`)
/// after [`SETTLE_LIMIT`].
pub(crate) fn settle<T>(
    harness: &str,
    what: &str,
    mut cond: impl FnMut() -> Option<T>,
) -> Result<T, HarnessError> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if start.elapsed() > SETTLE_LIMIT {
            return Err(HarnessError::Reply(format!(
                "{harness}: {what} did not happen within {} s",
                SETTLE_LIMIT.as_secs()
            )));
        }
        std::thread::sleep(SETTLE_POLL);
    }
}

/// The value of a `field:value` line of an INFO (or CLUSTER INFO) reply.
pub(crate) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_dies_on_drop() {
        let server = RedisServer::start().expect("redis-server starts");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()));
        assert!(ping(addr));
        assert_eq!(
            server.url(),
            format!("redis://127.0.0.1:{}/", server.port())
        );
        drop(server);
        assert!(!ping(addr), "server must be gone after drop");
    }

    #[test]
    fn kill_and_restart_on_the_same_port() {
        let mut server = RedisServer::start().expect("redis-server starts");
        let port = server.port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(matches!(server.restart(), Err(HarnessError::StillRunning)));
        server.kill();
        assert!(!server.is_running());
        assert!(!ping(addr));
        server.restart().expect("restart");
        assert_eq!(server.port(), port);
        assert!(server.is_running());
        assert!(ping(addr));
    }

    /// One `SET` over a fresh connection; true only for a `+OK` reply.
    fn set(addr: SocketAddr, key: &str, value: &str) -> bool {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return false;
        };
        let cmd = format!(
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
            key.len(),
            value.len()
        );
        let mut reply = [0u8; 5];
        stream.write_all(cmd.as_bytes()).is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+OK\r\n"
    }

    /// `EXISTS key` over a fresh connection.
    fn exists(addr: SocketAddr, key: &str) -> bool {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return false;
        };
        let cmd = format!("*2\r\n$6\r\nEXISTS\r\n${}\r\n{key}\r\n", key.len());
        let mut reply = [0u8; 4];
        stream.write_all(cmd.as_bytes()).is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b":1\r\n"
    }

    #[test]
    fn aof_server_keeps_acknowledged_writes_across_sigkill() {
        let mut server = RedisServer::start_aof().expect("redis-server starts");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()));
        assert!(server.pid().is_some());
        assert!(set(addr, "kept", "1"));
        server.kill();
        assert_eq!(server.pid(), None);
        server.restart().expect("restart");
        assert!(exists(addr, "kept"), "the AOF was loaded on restart");

        let mut plain = RedisServer::start().expect("redis-server starts");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, plain.port()));
        assert!(set(addr, "gone", "1"));
        plain.kill();
        plain.restart().expect("restart");
        assert!(
            !exists(addr, "gone"),
            "without persistence the restart is empty"
        );
    }

    #[test]
    fn tls_server_refuses_plain_resp_and_restarts_with_tls() {
        let mut server = RedisServer::start_tls(ClientAuth::Optional).expect("tls redis starts");
        let port = server.port();
        assert_eq!(server.url(), format!("rediss://127.0.0.1:{port}/"));
        let files = server.tls_files().expect("tls files").clone();
        for f in [files.ca_cert(), files.client_cert(), files.client_key()] {
            let pem = std::fs::read_to_string(&f).expect("pem file");
            assert!(pem.starts_with("-----BEGIN "), "{} is not PEM", f.display());
        }
        // The port speaks TLS only: a plain PING gets no +PONG.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(!ping(addr));
        server.kill();
        server.restart().expect("restart");
        assert!(server.is_running());
        assert_eq!(server.url(), format!("rediss://127.0.0.1:{port}/"));
    }

    #[test]
    fn tls_certificates_verify_against_the_private_ca() {
        let server = RedisServer::start_tls(ClientAuth::Required).expect("tls redis starts");
        let files = server.tls_files().expect("tls files");
        for cert in [files.server_cert(), files.client_cert()] {
            let out = Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(files.ca_cert())
                .arg(&cert)
                .output()
                .expect("openssl verify runs");
            assert!(out.status.success(), "{}: {:?}", cert.display(), out);
        }
    }

    #[test]
    fn admin_commands_and_command_lines() {
        let server = RedisServer::start().expect("redis-server starts");
        assert_eq!(server.admin(&["SET", "k", "a b"]).unwrap(), "OK");
        assert_eq!(server.admin_line(r#"GET "k""#).unwrap(), "a b");
        assert!(matches!(
            server.admin(&["NOSUCH"]),
            Err(HarnessError::Reply(text)) if text.contains("unknown command")
        ));
        assert_eq!(
            split_command_line(r#"ACL SETUSER u ">p \"q\"" '~{a}:*'"#).unwrap(),
            vec!["ACL", "SETUSER", "u", ">p \"q\"", "~{a}:*"]
        );
        assert!(split_command_line(r#"a "b"#).is_err());
        assert_eq!(
            server.url_as("u", "p@ss"),
            format!("redis://u:p%40ss@127.0.0.1:{}/", server.port())
        );
    }

    #[test]
    fn two_servers_get_different_ports() {
        let a = RedisServer::start().expect("first");
        let b = RedisServer::start().expect("second");
        assert_ne!(a.port(), b.port());
    }
}
