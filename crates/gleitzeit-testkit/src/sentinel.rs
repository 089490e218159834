//! A throw-away Redis Sentinel deployment for tests: a primary, its replicas and a quorum of
//! sentinels, each a real `redis-server` process on a free loopback port, killed on drop.
//!
//! [`SentinelGroup::start`] returns once every replica is in sync with the primary and every
//! sentinel knows the replicas and the other sentinels, so a failover can start at once.
//! [`SentinelGroup::failover`] asks a sentinel for a failover (`SENTINEL FAILOVER`, what an
//! operator does before maintenance); [`SentinelGroup::kill_primary`] kills the primary with
//! SIGKILL and lets the sentinels notice and elect a replica (a crash). Both return once
//! every sentinel names the new primary and that server says it is one.
//!
//! The sentinels are told that a primary is down after 1 s without an answer
//! (`down-after-milliseconds`), so a crash is failed over within a few seconds.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::redis::{
    admin_at, free_port, info_field, log_tail, ping, settle, HarnessError, RedisServer,
};

const HARNESS: &str = "sentinel group";

/// The name the sentinels monitor the primary under (the `SERVICE` of the URL).
pub const SERVICE: &str = "gleitzeit";

/// One sentinel process.
#[derive(Debug)]
struct Sentinel {
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A primary with replicas, watched by sentinels. Killed on drop.
#[derive(Debug)]
pub struct SentinelGroup {
    /// Every data server; the first was started as the primary.
    servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
    dir: tempfile::TempDir,
}

/// The value after `field` in a flat name/value reply rendered one element per line.
fn flat_field(reply: &str, field: &str) -> Option<String> {
    let lines: Vec<&str> = reply.lines().collect();
    lines
        .chunks(2)
        .find(|pair| pair.first() == Some(&field))
        .and_then(|pair| pair.get(1))
        .map(|v| (*v).to_owned())
}

impl SentinelGroup {
    /// Starts a primary, `replicas` replicas of it and `sentinels` sentinels (quorum: a
    /// majority of them), and waits until the replicas are in sync and the sentinels know
    /// each other and every replica.
    ///
    /// # Errors
    /// As [`RedisServer::start`]; [`HarnessError::Reply`] when the group does not settle.
    pub fn start(replicas: usize, sentinels: usize) -> Result<SentinelGroup, HarnessError> {
        assert!(sentinels > 0, "a sentinel group needs a sentinel");
        let dir = tempfile::Builder::new()
            .prefix("gleitzeit-sentinel-")
            .tempdir()?;
        let primary = RedisServer::start()?;
        let primary_port = primary.port().to_string();
        let mut servers = vec![primary];
        for _ in 0..replicas {
            servers.push(RedisServer::start_with_args(&[
                "--replicaof",
                "127.0.0.1",
                &primary_port,
            ])?);
        }
        for replica in &servers[1..] {
            settle(HARNESS, "a replica's first sync", || {
                let info = replica.admin(&["INFO", "replication"]).ok()?;
                (info_field(&info, "master_link_status")? == "up").then_some(())
            })?;
        }
        let quorum = sentinels / 2 + 1;
        let mut group = SentinelGroup {
            servers,
            sentinels: Vec::new(),
            dir,
        };
        for k in 0..sentinels {
            let sentinel = group.spawn_sentinel(k, &primary_port, quorum)?;
            group.sentinels.push(sentinel);
        }
        for s in &group.sentinels {
            settle(
                HARNESS,
                "the sentinels to know the replicas and each other",
                || {
                    let master = admin_at(s.port, &["SENTINEL", "MASTER", SERVICE]).ok()?;
                    let slaves: usize = flat_field(&master, "num-slaves")?.parse().ok()?;
                    let others: usize = flat_field(&master, "num-other-sentinels")?.parse().ok()?;
                    (slaves == replicas && others == sentinels - 1).then_some(())
                },
            )?;
        }
        Ok(group)
    }

    fn spawn_sentinel(
        &self,
        k: usize,
        primary_port: &str,
        quorum: usize,
    ) -> Result<Sentinel, HarnessError> {
        let port = free_port()?;
        let conf = self.dir.path().join(format!("sentinel-{k}.conf"));
        let log = self.dir.path().join(format!("sentinel-{k}.log"));
        // The sentinel rewrites its configuration file as it learns the deployment.
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {log}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}\n\
                 sentinel down-after-milliseconds {SERVICE} 1000\n\
                 sentinel failover-timeout {SERVICE} 10000\n\
                 sentinel parallel-syncs {SERVICE} 1\n",
                dir = self.dir.path().display(),
                log = log.display(),
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => HarnessError::NotInstalled,
                _ => HarnessError::Io(e),
            })?;
        let mut sentinel = Sentinel { port, child, log };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let up = settle(HARNESS, "a sentinel to answer PING", || {
            if let Ok(Some(_)) = sentinel.child.try_wait() {
                return Some(false);
            }
            ping(addr).then_some(true)
        })?;
        if !up {
            return Err(HarnessError::Exited {
                port,
                log: log_tail(&sentinel.log),
            });
        }
        Ok(sentinel)
    }

    /// `redis+sentinel://127.0.0.1:<p1>,127.0.0.1:<p2>,…/gleitzeit`: every sentinel, the
    /// service name, no credentials.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}", hosts.join(","))
    }

    /// The ports of the sentinels.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The port of the primary as the first sentinel that answers names it.
    ///
    /// # Errors
    /// [`HarnessError::Reply`] when no sentinel answers.
    pub fn primary_port(&self) -> Result<u16, HarnessError> {
        let mut last = None;
        for s in &self.sentinels {
            match admin_at(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE]) {
                Ok(reply) => {
                    if let Some(port) = reply.lines().nth(1).and_then(|p| p.parse().ok()) {
                        return Ok(port);
                    }
                    last = Some(HarnessError::Reply(format!("unexpected reply {reply:?}")));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Reply("no sentinel".to_owned())))
    }

    /// The ports of every data server (primary and replicas, in start order).
    pub fn server_ports(&self) -> Vec<u16> {
        self.servers.iter().map(RedisServer::port).collect()
    }

    /// The data server listening on `port`.
    pub fn server(&self, port: u16) -> Option<&RedisServer> {
        self.servers.iter().find(|s| s.port() == port)
    }

    /// The current primary (as the sentinels name it).
    ///
    /// # Errors
    /// As [`SentinelGroup::primary_port`].
    pub fn primary(&self) -> Result<&RedisServer, HarnessError> {
        let port = self.primary_port()?;
        self.server(port)
            .ok_or_else(|| HarnessError::Reply(format!("no server of the group on port {port}")))
    }

    /// Asks a sentinel to fail over now (`SENTINEL FAILOVER`) and waits until every
    /// sentinel names another primary, that server is a primary, and the old primary
    /// replicates from it. Returns the new primary's port.
    ///
    /// # Errors
    /// [`HarnessError::Reply`] when the sentinel refuses or the group does not settle.
    pub fn failover(&self) -> Result<u16, HarnessError> {
        let old = self.primary_port()?;
        admin_at(self.sentinels[0].port, &["SENTINEL", "FAILOVER", SERVICE])?;
        let new = self.settled_after(old)?;
        settle(
            HARNESS,
            "the old primary to replicate from the new one",
            || {
                let info = admin_at(old, &["INFO", "replication"]).ok()?;
                let follows = info_field(&info, "master_port")? == new.to_string()
                    && info_field(&info, "master_link_status")? == "up";
                follows.then_some(())
            },
        )?;
        Ok(new)
    }

    /// Kills the primary with SIGKILL and waits until every sentinel names another primary
    /// and that server is one (the old one stays down). Returns the new primary's port.
    ///
    /// # Errors
    /// [`HarnessError::Reply`] when the group does not settle.
    pub fn kill_primary(&mut self) -> Result<u16, HarnessError> {
        let old = self.primary_port()?;
        if let Some(server) = self.servers.iter_mut().find(|s| s.port() == old) {
            server.kill();
        }
        self.settled_after(old)
    }

    /// Waits until every sentinel names one primary other than `old` that says it is one.
    fn settled_after(&self, old: u16) -> Result<u16, HarnessError> {
        settle(HARNESS, "the sentinels to agree on a new primary", || {
            let mut named = None;
            for s in &self.sentinels {
                let reply =
                    admin_at(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE]).ok()?;
                let port: u16 = reply.lines().nth(1)?.parse().ok()?;
                if port == old || named.is_some_and(|n| n != port) {
                    return None;
                }
                named = Some(port);
            }
            let port = named?;
            let role = admin_at(port, &["ROLE"]).ok()?;
            (role.lines().next()? == "master").then_some(port)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_moves_the_primary_and_keeps_the_data() {
        let group = SentinelGroup::start(1, 3).expect("sentinel group");
        let url = group.url();
        assert!(url.starts_with("redis+sentinel://127.0.0.1:"), "{url}");
        assert!(url.ends_with("/gleitzeit"), "{url}");
        let old = group.primary_port().unwrap();
        let primary = group.primary().unwrap();
        primary.admin(&["SET", "k", "v"]).unwrap();
        // The write reaches the replica before the failover (WAIT returns the count).
        assert_eq!(primary.admin(&["WAIT", "1", "10000"]).unwrap(), "1");
        let new = group.failover().unwrap();
        assert_ne!(new, old);
        assert_eq!(group.primary_port().unwrap(), new);
        let promoted = group.server(new).unwrap();
        assert_eq!(promoted.admin(&["GET", "k"]).unwrap(), "v");
        // The old primary is a replica now: writes are refused.
        let err = group
            .server(old)
            .unwrap()
            .admin(&["SET", "k", "w"])
            .unwrap_err();
        assert!(err.to_string().contains("READONLY"), "{err}");
    }

    #[test]
    fn a_killed_primary_is_replaced() {
        let mut group = SentinelGroup::start(1, 3).expect("sentinel group");
        let old = group.primary_port().unwrap();
        let new = group.kill_primary().unwrap();
        assert_ne!(new, old);
        assert_eq!(
            group
                .server(new)
                .unwrap()
                .admin(&["ROLE"])
                .unwrap()
                .lines()
                .next(),
            Some("master")
        );
    }
}
