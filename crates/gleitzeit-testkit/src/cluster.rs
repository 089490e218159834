//! A throw-away Redis Cluster for tests: primaries and their replicas, each a real
//! `redis-server --cluster-enabled yes` on a free loopback port, joined by
//! `redis-cli --cluster create`, killed on drop.
//!
//! [`RedisCluster::start`] returns once every node reports `cluster_state:ok` and agrees on
//! the slots. [`RedisCluster::failover`] promotes the replica of the primary that serves a
//! key (`CLUSTER FAILOVER` on the replica, the coordinated failover an operator runs before
//! maintenance); [`RedisCluster::kill_primary_of`] kills that primary with SIGKILL and waits
//! until its replica has taken its slots (a crash; `cluster-node-timeout` is 2 s here).

use std::process::{Command, Stdio};

use crate::redis::{info_field, settle, HarnessError, RedisServer};

const HARNESS: &str = "redis cluster";

/// A running Redis Cluster. Killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` primaries with `replicas` replicas each and joins them into one
    /// cluster (slots spread evenly by `redis-cli --cluster create`).
    ///
    /// # Errors
    /// As [`RedisServer::start`]; [`HarnessError::Reply`] when `redis-cli` fails or the
    /// cluster does not settle.
    pub fn start(primaries: usize, replicas: usize) -> Result<RedisCluster, HarnessError> {
        let total = primaries * (1 + replicas);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            nodes.push(RedisServer::start_with_args(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                // A replica may be promoted however long its link was down: the tests kill
                // primaries on purpose.
                "--cluster-replica-validity-factor",
                "0",
            ])?);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => HarnessError::Reply(
                    "redis-cli was not found on PATH; install it (apt-get install redis-tools)"
                        .to_owned(),
                ),
                _ => HarnessError::Io(e),
            })?;
        if !out.status.success() {
            return Err(HarnessError::Reply(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let cluster = RedisCluster { nodes };
        cluster.settled(primaries)?;
        Ok(cluster)
    }

    /// Waits until every node says `cluster_state:ok`, knows every node, and sees
    /// `primaries` primaries serving slots and every other node replicating.
    fn settled(&self, primaries: usize) -> Result<(), HarnessError> {
        let known = self.nodes.len();
        for n in &self.nodes {
            settle(HARNESS, "every node to see the cluster ok", || {
                let info = n.admin(&["CLUSTER", "INFO"]).ok()?;
                let ok = info_field(&info, "cluster_state")? == "ok"
                    && info_field(&info, "cluster_known_nodes")?
                        .parse::<usize>()
                        .ok()?
                        == known;
                let lines = parse_nodes(&n.admin(&["CLUSTER", "NODES"]).ok()?);
                let serving = lines
                    .iter()
                    .filter(|l| l.primary && !l.slots.is_empty())
                    .count();
                let replicating = lines.iter().filter(|l| l.replica_of.is_some()).count();
                (ok && serving == primaries && replicating == known - primaries).then_some(())
            })?;
        }
        // A replica assigned by `--cluster create` has not copied its primary yet: a crash
        // now would promote an empty node.
        for n in &self.nodes {
            settle(HARNESS, "every replica's first sync", || {
                let info = n.admin(&["INFO", "replication"]).ok()?;
                match info_field(&info, "role")?.as_str() {
                    "master" => Some(()),
                    _ => (info_field(&info, "master_link_status")? == "up").then_some(()),
                }
            })?;
        }
        Ok(())
    }

    /// The URL of the cluster: `redis+cluster://` and every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Every node.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The ports of the primaries, as the first answering node sees them.
    ///
    /// # Errors
    /// [`HarnessError::Reply`] when no node answers.
    pub fn primary_ports(&self) -> Result<Vec<u16>, HarnessError> {
        let nodes = self.cluster_nodes()?;
        Ok(nodes
            .iter()
            .filter(|n| n.primary && !n.failed && !n.slots.is_empty())
            .map(|n| n.port)
            .collect())
    }

    /// The port of the primary serving `key`.
    ///
    /// # Errors
    /// [`HarnessError::Reply`] when no node answers.
    pub fn primary_of(&self, key: &str) -> Result<u16, HarnessError> {
        let slot: u16 = self
            .any_admin(&["CLUSTER", "KEYSLOT", key])?
            .parse()
            .map_err(|_| HarnessError::Reply("CLUSTER KEYSLOT: not a number".to_owned()))?;
        let nodes = self.cluster_nodes()?;
        nodes
            .iter()
            .find(|n| {
                n.primary && !n.failed && n.slots.iter().any(|(a, b)| *a <= slot && slot <= *b)
            })
            .map(|n| n.port)
            .ok_or_else(|| HarnessError::Reply(format!("no primary serves slot {slot}")))
    }

    /// Promotes the replica of the primary serving `key` (`CLUSTER FAILOVER` on the replica)
    /// and waits until every running node sees it as the primary. Returns its port.
    ///
    /// # Errors
    /// [`HarnessError::Reply`] when there is no replica or the cluster does not settle.
    pub fn failover(&self, key: &str) -> Result<u16, HarnessError> {
        let old = self.primary_of(key)?;
        let replica = self.replica_of(old)?;
        self.node(replica)?.admin(&["CLUSTER", "FAILOVER"])?;
        self.promoted(key, old)
    }

    /// Kills the primary serving `key` with SIGKILL and waits until its replica serves the
    /// key's slot for every running node. Returns the new primary's port.
    ///
    /// # Errors
    /// As [`RedisCluster::failover`].
    pub fn kill_primary_of(&mut self, key: &str) -> Result<u16, HarnessError> {
        let old = self.primary_of(key)?;
        self.replica_of(old)?;
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port() == old) {
            n.kill();
        }
        self.promoted(key, old)
    }

    fn node(&self, port: u16) -> Result<&RedisServer, HarnessError> {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .ok_or_else(|| HarnessError::Reply(format!("no node on port {port}")))
    }

    fn replica_of(&self, primary: u16) -> Result<u16, HarnessError> {
        let nodes = self.cluster_nodes()?;
        let id = nodes
            .iter()
            .find(|n| n.port == primary)
            .map(|n| n.id.clone())
            .ok_or_else(|| HarnessError::Reply(format!("no node on port {primary}")))?;
        nodes
            .iter()
            .find(|n| n.replica_of.as_deref() == Some(id.as_str()) && !n.failed)
            .map(|n| n.port)
            .ok_or_else(|| HarnessError::Reply(format!("the primary on {primary} has no replica")))
    }

    /// Waits until every running node names one primary other than `old` for `key`'s slot.
    fn promoted(&self, key: &str, old: u16) -> Result<u16, HarnessError> {
        let slot: u16 = self
            .any_admin(&["CLUSTER", "KEYSLOT", key])?
            .parse()
            .map_err(|_| HarnessError::Reply("CLUSTER KEYSLOT: not a number".to_owned()))?;
        settle(
            HARNESS,
            "the replica to take over the slot on every node",
            || {
                let mut agreed = None;
                for n in self.nodes.iter().filter(|n| n.port() != old) {
                    let text = n.admin(&["CLUSTER", "NODES"]).ok()?;
                    let port = parse_nodes(&text)
                        .into_iter()
                        .find(|m| {
                            m.primary
                                && !m.failed
                                && m.slots.iter().any(|(a, b)| *a <= slot && slot <= *b)
                        })?
                        .port;
                    if port == old || agreed.is_some_and(|p| p != port) {
                        return None;
                    }
                    agreed = Some(port);
                }
                agreed
            },
        )
    }

    fn any_admin(&self, args: &[&str]) -> Result<String, HarnessError> {
        let mut last = None;
        for n in &self.nodes {
            match n.admin(args) {
                Ok(reply) => return Ok(reply),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Reply("no node".to_owned())))
    }

    fn cluster_nodes(&self) -> Result<Vec<NodeLine>, HarnessError> {
        Ok(parse_nodes(&self.any_admin(&["CLUSTER", "NODES"])?))
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    port: u16,
    primary: bool,
    failed: bool,
    replica_of: Option<String>,
    slots: Vec<(u16, u16)>,
}

/// `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <state> <slot>...`
fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = f[2];
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => {
                        let n = s.parse().ok()?;
                        Some((n, n))
                    }
                })
                .collect();
            Some(NodeLine {
                id: f[0].to_owned(),
                port,
                primary: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                replica_of: (f[3] != "-").then(|| f[3].to_owned()),
                slots,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_forms_and_fails_over() {
        let mut cluster = RedisCluster::start(3, 1).expect("cluster");
        assert_eq!(cluster.nodes().len(), 6);
        assert_eq!(cluster.primary_ports().unwrap().len(), 3);
        assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));
        let key = "{gleitzeit}:x";
        let old = cluster.primary_of(key).unwrap();
        let primary = cluster.node(old).unwrap();
        primary.admin(&["SET", key, "v"]).unwrap();
        // The replica is in sync: it acknowledges the write.
        assert_eq!(primary.admin(&["WAIT", "1", "10000"]).unwrap(), "1");
        let new = cluster.failover(key).unwrap();
        assert_ne!(old, new);
        assert_eq!(cluster.primary_of(key).unwrap(), new);
        let killed = cluster.kill_primary_of(key).unwrap();
        assert_ne!(killed, new);
        // Both failovers kept the write.
        assert_eq!(
            cluster.node(killed).unwrap().admin(&["GET", key]).unwrap(),
            "v"
        );
    }
}
