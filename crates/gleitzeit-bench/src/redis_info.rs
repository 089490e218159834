//! What Redis spent on a measured run: `INFO cpu commandstats stats` (one call) read before
//! and after, parsed and subtracted.
//!
//! The CPU figure is `used_cpu_sys + used_cpu_user` of the whole redis-server process.
//! `commandstats` counts every command, including those a Lua script runs inside Redis
//! (Redis 7 reports them too), so "commands" is all the work done, not only round trips.
//! "Reads" (`total_reads_processed`) counts the reads Redis made from its clients' sockets:
//! requests that arrive together share one, and each costs Redis a wake-up's worth of work
//! when they arrive one by one — on a 2-core machine of this kind about as much as the
//! scripts of a task (docs/benchmarks.md, "The ninth round").

use std::collections::BTreeMap;

use gleitzeit_queue::RedisTarget;

/// One reading of a server's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `used_cpu_sys + used_cpu_user`, seconds.
    pub cpu_s: f64,
    /// Calls per command (`cmdstat_<name>:calls=N,…`), by lower-case name.
    pub calls: BTreeMap<String, u64>,
    /// `total_reads_processed`: reads from client sockets.
    pub reads: u64,
}

/// What the server did between two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    /// CPU time, microseconds.
    pub cpu_us: f64,
    /// Script calls: `EVALSHA`, `EVAL` and `FCALL` (Gleitzeit's scripts are functions of a
    /// library; BullMQ's are `EVALSHA` scripts).
    pub scripts: u64,
    /// All commands, those run inside scripts included.
    pub commands: u64,
    /// Reads from client sockets (the measuring connection's own few included).
    pub reads: u64,
}

/// A [`Cost`] divided by the units of work (tasks) it paid for.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerTask {
    /// Redis CPU, µs.
    pub cpu_us: f64,
    /// Script calls.
    pub scripts: f64,
    /// Commands, those run inside scripts included.
    pub commands: f64,
    /// Reads from client sockets.
    pub reads: f64,
}

impl Cost {
    /// Per unit of work (a task).
    pub fn per(&self, units: usize) -> PerTask {
        let n = units.max(1) as f64;
        PerTask {
            cpu_us: self.cpu_us / n,
            scripts: self.scripts as f64 / n,
            commands: self.commands as f64 / n,
            reads: self.reads as f64 / n,
        }
    }
}

impl Snapshot {
    /// Parses the text of `INFO cpu`, `INFO commandstats` and `INFO stats` (one reply or
    /// several concatenated); other sections and unknown lines are ignored.
    pub fn parse(info: &str) -> Snapshot {
        let fields = || info.lines().filter_map(|line| line.trim().split_once(':'));
        let cpu_s = fields()
            .filter(|(key, _)| matches!(*key, "used_cpu_sys" | "used_cpu_user"))
            .map(|(_, value)| value.parse::<f64>().unwrap_or(0.0))
            .sum();
        let reads = fields()
            .find(|(key, _)| *key == "total_reads_processed")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        Snapshot {
            cpu_s,
            calls: gleitzeit_testkit::redis::command_calls(info),
            reads,
        }
    }

    /// What happened from `self` (earlier) to `after`.
    pub fn until(&self, after: &Snapshot) -> Cost {
        let calls = |s: &Snapshot, name: &str| s.calls.get(name).copied().unwrap_or(0);
        let delta = |name: &str| calls(after, name).saturating_sub(calls(self, name));
        Cost {
            cpu_us: ((after.cpu_s - self.cpu_s) * 1e6).max(0.0),
            scripts: delta("evalsha") + delta("eval") + delta("fcall"),
            commands: after.calls.keys().map(|name| delta(name)).sum::<u64>(),
            reads: after.reads.saturating_sub(self.reads),
        }
    }
}

/// Reads `INFO cpu commandstats stats` from `target`.
pub async fn snapshot(target: &RedisTarget) -> anyhow::Result<Snapshot> {
    let client = target.client()?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    // One call for all three sections (Redis 7 takes several), so the reading is one
    // instant: a CPU figure read before two more `INFO` calls counted them in the run.
    let text: String = deadpool_redis::redis::cmd("INFO")
        .arg("cpu")
        .arg("commandstats")
        .arg("stats")
        .query_async(&mut conn)
        .await?;
    Ok(Snapshot::parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# CPU\r\nused_cpu_sys:0.880139\r\nused_cpu_user:1.023817\r\n\
        used_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n\
        used_cpu_sys_main_thread:0.876322\r\nused_cpu_user_main_thread:1.025467\r\n\r\n\
        # Commandstats\r\n\
        cmdstat_evalsha:calls=100,usec=6100,usec_per_call=61.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_hgetall:calls=7,usec=20,usec_per_call=2.86,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setname:calls=2,usec=3,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n\
        # Stats\r\ntotal_connections_received:4\r\ntotal_reads_processed:1200\r\n\
        total_writes_processed:1100\r\n";

    const AFTER: &str = "# CPU\r\nused_cpu_sys:1.380139\r\nused_cpu_user:2.023817\r\n\
        used_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n\r\n\
        # Commandstats\r\n\
        cmdstat_evalsha:calls=400,usec=24400,usec_per_call=61.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_EVAL:calls=5,usec=500,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_hgetall:calls=17,usec=50,usec_per_call=2.94,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setname:calls=2,usec=3,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=1,usec=30,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n\
        # Stats\r\ntotal_reads_processed:1450\r\ntotal_writes_processed:1400\r\n";

    #[test]
    fn parses_cpu_and_commandstats() {
        let s = Snapshot::parse(BEFORE);
        // sys + user of the process only: the _children and _main_thread lines are not added.
        assert!((s.cpu_s - 1.903956).abs() < 1e-9, "{}", s.cpu_s);
        assert_eq!(s.calls["evalsha"], 100);
        assert_eq!(s.calls["hgetall"], 7);
        assert_eq!(s.calls["client|setname"], 2);
        assert_eq!(s.calls.len(), 3);
        // Reads from total_reads_processed, not from total_writes_processed beside it.
        assert_eq!(s.reads, 1200);
        assert_eq!(Snapshot::parse(""), Snapshot::default());
        assert_eq!(Snapshot::parse("garbage\r\ncmdstat_x:usec=3").calls["x"], 0);
    }

    #[test]
    fn difference_between_two_readings() {
        let cost = Snapshot::parse(BEFORE).until(&Snapshot::parse(AFTER));
        assert!((cost.cpu_us - 1_500_000.0).abs() < 1e-3, "{}", cost.cpu_us);
        // 300 EVALSHA + 5 EVAL (a command name in upper case is folded).
        assert_eq!(cost.scripts, 305);
        // 300 + 5 + 10 HGETALL + 0 CLIENT SETNAME + 1 INFO (new since the first reading).
        assert_eq!(cost.commands, 316);
        assert_eq!(cost.reads, 250);
        let per = cost.per(100);
        assert!((per.cpu_us - 15_000.0).abs() < 1e-6);
        assert!((per.scripts - 3.05).abs() < 1e-9);
        assert!((per.commands - 3.16).abs() < 1e-9);
        assert!((per.reads - 2.5).abs() < 1e-9);
        // A restarted server (counters lower after) does not underflow.
        let back = Snapshot::parse(AFTER).until(&Snapshot::parse(BEFORE));
        assert_eq!(
            (back.cpu_us, back.scripts, back.commands, back.reads),
            (0.0, 0, 0, 0)
        );
    }
}
