//! A throw-away `redis-server` for tests.
//!
//! [`RedisServer::start`] runs the `redis-server` binary found on `PATH` on a free loopback
//! port, without persistence, in its own temporary directory, and returns once the server
//! answers `PING`. Tests get a real Redis (never a mock) that is killed when the handle is
//! dropped, plus [`RedisServer::kill`] / [`RedisServer::restart`] to simulate outages.
//! [`RedisServer::start_aof`] starts one that writes an append-only file with
//! `appendfsync always`, so a server killed with SIGKILL comes back from
//! [`RedisServer::restart`] with every acknowledged write.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    /// `restart` was called while the server is still running.
    #[error("redis-server is still running; kill it before restarting")]
    StillRunning,
}

/// A running `redis-server` on `127.0.0.1:<port>`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    persistence: Persistence,
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
        RedisServer::start_with(Persistence::None)
    }

    /// Starts a server like [`RedisServer::start`] that writes an append-only file and fsyncs
    /// it after every write (`appendonly yes`, `appendfsync always`): after a SIGKILL
    /// ([`RedisServer::kill`]), [`RedisServer::restart`] loads it, so every write the server
    /// acknowledged before it died is there again.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_aof() -> Result<RedisServer, HarnessError> {
        RedisServer::start_with(Persistence::AofAlways)
    }

    fn start_with(persistence: Persistence) -> Result<RedisServer, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("gleitzeit-redis-")
            .tempdir()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match spawn_ready(dir.path(), port, persistence) {
                Ok(child) => {
                    return Ok(RedisServer {
                        port,
                        child: Some(child),
                        dir,
                        persistence,
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

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
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
        let child = spawn_ready(self.dir.path(), self.port, self.persistence)?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asks the OS for a free loopback port. The listener is closed before `redis-server`
/// binds, so another process can win the port; `start` retries with a new one then.
fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn spawn_ready(dir: &Path, port: u16, persistence: Persistence) -> Result<Child, HarnessError> {
    let log = dir.join(format!("redis-{port}.log"));
    let mut cmd = Command::new("redis-server");
    cmd.arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""]);
    match persistence {
        Persistence::None => cmd.args(["--appendonly", "no"]),
        Persistence::AofAlways => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
    };
    let spawned = cmd
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
        if ping(addr) {
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
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
        || stream.write_all(b"PING\r\n").is_err()
    {
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

fn log_tail(path: &PathBuf) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        }
        Err(err) => format!("(no log: {err})"),
    }
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
    fn two_servers_get_different_ports() {
        let a = RedisServer::start().expect("first");
        let b = RedisServer::start().expect("second");
        assert_ne!(a.port(), b.port());
    }
}
