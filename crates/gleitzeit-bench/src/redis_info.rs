//! What Redis spent on a measured run: `INFO cpu` and `INFO commandstats` read before and
//! after, parsed and subtracted.
//!
//! The CPU figure is `used_cpu_sys + used_cpu_user` of the whole redis-server process.
//! `commandstats` counts every command, including those a Lua script runs inside Redis
//! (Redis 7 reports them too), so "commands" is all the work done, not only round trips.

use std::collections::BTreeMap;

use gleitzeit_queue::RedisTarget;

/// One reading of a server's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `used_cpu_sys + used_cpu_user`, seconds.
    pub cpu_s: f64,
    /// Calls per command (`cmdstat_<name>:calls=N,…`), by lower-case name.
    pub calls: BTreeMap<String, u64>,
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
}

impl Cost {
    /// Per unit of work (a task), as (CPU µs, scripts, commands).
    pub fn per(&self, units: usize) -> (f64, f64, f64) {
        let n = units.max(1) as f64;
        (
            self.cpu_us / n,
            self.scripts as f64 / n,
            self.commands as f64 / n,
        )
    }
}

impl Snapshot {
    /// Parses the text of `INFO cpu` and `INFO commandstats` (one reply or both
    /// concatenated); other sections and unknown lines are ignored.
    pub fn parse(info: &str) -> Snapshot {
        let cpu_s = info
            .lines()
            .filter_map(|line| line.trim().split_once(':'))
            .filter(|(key, _)| matches!(*key, "used_cpu_sys" | "used_cpu_user"))
            .map(|(_, value)| value.parse::<f64>().unwrap_or(0.0))
            .sum();
        Snapshot {
            cpu_s,
            calls: gleitzeit_testkit::redis::command_calls(info),
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
        }
    }
}

/// Reads `INFO cpu` and `INFO commandstats` from `target`.
pub async fn snapshot(target: &RedisTarget) -> anyhow::Result<Snapshot> {
    let client = target.client()?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut text = String::new();
    for section in ["cpu", "commandstats"] {
        let part: String = deadpool_redis::redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await?;
        text.push_str(&part);
        text.push_str("\r\n");
    }
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
        cmdstat_client|setname:calls=2,usec=3,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n";

    const AFTER: &str = "# CPU\r\nused_cpu_sys:1.380139\r\nused_cpu_user:2.023817\r\n\
        used_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n\r\n\
        # Commandstats\r\n\
        cmdstat_evalsha:calls=400,usec=24400,usec_per_call=61.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_EVAL:calls=5,usec=500,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_hgetall:calls=17,usec=50,usec_per_call=2.94,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setname:calls=2,usec=3,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=1,usec=30,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn parses_cpu_and_commandstats() {
        let s = Snapshot::parse(BEFORE);
        // sys + user of the process only: the _children and _main_thread lines are not added.
        assert!((s.cpu_s - 1.903956).abs() < 1e-9, "{}", s.cpu_s);
        assert_eq!(s.calls["evalsha"], 100);
        assert_eq!(s.calls["hgetall"], 7);
        assert_eq!(s.calls["client|setname"], 2);
        assert_eq!(s.calls.len(), 3);
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
        let (cpu, scripts, commands) = cost.per(100);
        assert!((cpu - 15_000.0).abs() < 1e-6);
        assert!((scripts - 3.05).abs() < 1e-9);
        assert!((commands - 3.16).abs() < 1e-9);
        // A restarted server (counters lower after) does not underflow.
        let back = Snapshot::parse(AFTER).until(&Snapshot::parse(BEFORE));
        assert_eq!((back.cpu_us, back.scripts, back.commands), (0.0, 0, 0));
    }
}
