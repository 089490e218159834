//! The Lua scripts of `lua/`, loaded once per [`Queue`](crate::Queue).
//!
//! Each script is compiled into the binary (`include_str!`) with `lua/lib.lua` prepended
//! (the helpers, key patterns and return codes the scripts share) and invoked through
//! [`redis::Script`](deadpool_redis::redis::Script), which runs `EVALSHA` and loads the
//! script again when Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).
//! The codes the scripts return are the one table of `codes.rs`.
//!
//! Each script also starts with a Redis 7 shebang that says how it behaves when Redis is at
//! `maxmemory` under `noeviction`: scripts that take new work in (submit, requeue) are
//! refused before they write anything, so a full Redis turns new work away at the door;
//! scripts that carry accepted work to its end (begin, complete, fail, promote, cancel,
//! heartbeat, read, reclaim, prune, the lease scripts) are flagged `allow-oom`, so that work still
//! finishes and its retention frees the memory.

use deadpool_redis::redis::Script;

const LIB: &str = include_str!("../../../lua/lib.lua");

/// Shebang of the scripts that take new work in: refused while Redis is out of memory.
const SHEBANG_NEW_WORK: &str = "#!lua\n";
/// Shebang of the scripts that finish accepted work: they run even out of memory.
const SHEBANG_ACCEPTED_WORK: &str = "#!lua flags=allow-oom\n";

/// The loaded scripts of one [`Queue`](crate::Queue).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub submit: Script,
    pub begin: Script,
    pub complete: Script,
    pub fail: Script,
    pub promote: Script,
    pub cancel: Script,
    pub heartbeat: Script,
    pub read: Script,
    pub reclaim: Script,
    pub requeue: Script,
    pub prune: Script,
    pub lease_acquire: Script,
    pub lease_settle: Script,
}

fn with_lib(shebang: &str, body: &str) -> Script {
    Script::new(&format!("{shebang}{LIB}\n{body}"))
}

impl Scripts {
    /// The file name of the script with this SHA1 (Redis names a script by its hash in
    /// errors).
    pub(crate) fn name_of(&self, sha: &str) -> Option<&'static str> {
        [
            (&self.submit, "submit.lua"),
            (&self.begin, "begin.lua"),
            (&self.complete, "complete.lua"),
            (&self.fail, "fail.lua"),
            (&self.promote, "promote.lua"),
            (&self.cancel, "cancel.lua"),
            (&self.heartbeat, "heartbeat.lua"),
            (&self.read, "read.lua"),
            (&self.reclaim, "reclaim.lua"),
            (&self.requeue, "requeue.lua"),
            (&self.prune, "prune.lua"),
            (&self.lease_acquire, "lease_acquire.lua"),
            (&self.lease_settle, "lease_settle.lua"),
        ]
        .into_iter()
        .find(|(s, _)| s.get_hash() == sha)
        .map(|(_, name)| name)
    }

    pub(crate) fn new() -> Scripts {
        Scripts {
            submit: with_lib(SHEBANG_NEW_WORK, include_str!("../../../lua/submit.lua")),
            begin: with_lib(
                SHEBANG_ACCEPTED_WORK,
                include_str!("../../../lua/begin.lua"),
            ),
            complete: with_lib(
                SHEBANG_ACCEPTED_WORK,
                include_str!("../../../lua/complete.lua"),
            ),
            fail: with_lib(SHEBANG_ACCEPTED_WORK, include_str!("../../../lua/fail.lua")),
            promote: with_lib(
                SHEBANG_ACCEPTED_WORK,
                include_str!("../../../lua/promote.lua"),
            ),
            cancel: with_lib(
                SHEBANG_ACCEPTED_WORK,
                include_str!("../../../lua/cancel.lua"),
            ),
            heartbeat: with_lib(
                SHEBANG_ACCEPTED_WORK,
                include_str!("../../../lua/heartbeat.lua"),
            ),
            read: with_lib(SHEBANG_ACCEPTED_WORK, include_str!("../../../lua/read.lua")),
            reclaim: with_lib(
                SHEBANG_ACCEPTED_WORK,
                include_str!("../../../lua/reclaim.lua"),
            ),
            requeue: with_lib(SHEBANG_NEW_WORK, include_str!("../../../lua/requeue.lua")),
            // Removing frees memory: it must run when Redis is full.
            prune: with_lib(
                SHEBANG_ACCEPTED_WORK,
                include_str!("../../../lua/prune.lua"),
            ),
            lease_acquire: with_lib(
                SHEBANG_ACCEPTED_WORK,
                include_str!("../../../lua/lease_acquire.lua"),
            ),
            lease_settle: with_lib(
                SHEBANG_ACCEPTED_WORK,
                include_str!("../../../lua/lease_settle.lua"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_carries_the_shared_prelude_and_its_header() {
        let s = Scripts::new();
        let all = [
            &s.submit,
            &s.begin,
            &s.complete,
            &s.fail,
            &s.promote,
            &s.cancel,
            &s.heartbeat,
            &s.read,
            &s.reclaim,
            &s.requeue,
            &s.lease_acquire,
            &s.lease_settle,
        ];
        for script in all {
            assert_eq!(script.get_hash().len(), 40);
            assert!(s.name_of(script.get_hash()).is_some(), "name_of knows it");
        }
        let hashes: std::collections::HashSet<_> = all.iter().map(|x| x.get_hash()).collect();
        assert_eq!(hashes.len(), 12, "each script is distinct");
        for body in [
            include_str!("../../../lua/submit.lua"),
            include_str!("../../../lua/complete.lua"),
            include_str!("../../../lua/fail.lua"),
            include_str!("../../../lua/requeue.lua"),
        ] {
            assert!(body.contains("KEYS[1]") && body.contains("Returns"));
        }
    }
}
