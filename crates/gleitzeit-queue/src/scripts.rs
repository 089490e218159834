//! The Lua scripts of `lua/` and the meaning of their integer return codes.
//!
//! Each script is compiled into the binary (`include_str!`) with `lua/lib.lua` prepended
//! (the helpers and key patterns the scripts share) and invoked through
//! [`redis::Script`](deadpool_redis::redis::Script), which runs `EVALSHA` and loads the
//! script again when Redis answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).
//! Every script's codes map to exactly one enum here; the headers of the `.lua` files
//! document the same codes.
//!
//! Each script also starts with a Redis 7 shebang that says how it behaves when Redis is at
//! `maxmemory` under `noeviction`: scripts that take new work in (submit, requeue) are
//! refused before they write anything, so a full Redis turns new work away at the door;
//! scripts that carry accepted work to its end (begin, complete, fail, promote, cancel,
//! heartbeat, read, reclaim, the lease scripts) are flagged `allow-oom`, so that work still
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

/// Defines a return-code enum with its code table, `from_code` and `code`.
macro_rules! codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every code, for exhaustive checks.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The variant for a script's integer return code.
            pub fn from_code(code: i64) -> Option<$name> {
                match code {
                    $($code => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The script's integer return code.
            pub fn code(self) -> i64 {
                match self {
                    $($name::$variant => $code,)+
                }
            }
        }
    };
}

codes! {
    /// `submit.lua` return codes (first element of its reply).
    SubmitCode {
        /// Written; the workflow runs.
        Created = 1,
        /// Same idempotency key and digest as an existing workflow; nothing written.
        Existing = 2,
        /// Same idempotency key, different digest; nothing written.
        Conflict = 3,
        /// The workflow id is taken; nothing written.
        IdExists = 4,
    }
}

codes! {
    /// `begin.lua` return codes (first element of its reply).
    BeginCode {
        /// The task is running; spec and inputs follow.
        Run = 1,
        /// The task cannot run; the entry was acknowledged and deleted.
        NotRunnable = 2,
        /// The entry is not pending for this consumer and delivery; nothing changed.
        Stale = 3,
    }
}

codes! {
    /// `complete.lua` return codes.
    CompleteCode {
        /// The result was recorded and ready dependents were queued (the workflow ended
        /// if this was its last open task).
        Completed = 1,
        /// Not this consumer's delivery any more (reclaimed); nothing changed.
        Stale = 2,
        /// The task had already finished; nothing changed.
        Duplicate = 3,
        /// The task was cancelled while it ran; the result is kept, nothing released.
        Cancelled = 4,
        /// The entry is ours but the task was never begun; nothing changed.
        NotRunning = 5,
        /// The task no longer exists (expired); the entry was acknowledged.
        NotFound = 6,
    }
}

codes! {
    /// `fail.lua` return codes.
    FailCode {
        /// The task waits in the delayed set for its next attempt.
        RetryScheduled = 1,
        /// The task failed for good; the failure policy was applied.
        Failed = 2,
        /// Not this consumer's delivery any more (reclaimed); nothing changed.
        Stale = 3,
        /// The task had already finished; nothing changed.
        Duplicate = 4,
        /// The task was cancelled while it ran; the error is kept.
        Cancelled = 5,
        /// The entry is ours but the task is neither ready nor running; nothing changed.
        NotRunning = 6,
        /// The task no longer exists (expired); the entry was acknowledged.
        NotFound = 7,
    }
}

codes! {
    /// `cancel.lua` return codes.
    CancelCode {
        /// The workflow was running and is now cancelled.
        Cancelled = 1,
        /// The workflow had already ended; unchanged.
        AlreadyFinished = 2,
        /// No such workflow (never existed, or expired).
        NotFound = 3,
    }
}

codes! {
    /// `requeue.lua` return codes (first element of its reply).
    RequeueCode {
        /// The task is ready again (attempts reset), the tasks its failure closed are
        /// reopened, the workflow runs again and the dead letter is deleted.
        Requeued = 1,
        /// No dead letter with this id (or it names no task); nothing changed.
        NotFound = 2,
        /// The workflow no longer exists (its retention ended); nothing changed.
        Expired = 3,
        /// The workflow was cancelled by a user; nothing changed.
        Cancelled = 4,
        /// The task is not failed any more (already requeued); nothing changed.
        NotFailed = 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each code maps to exactly the documented variant and back; unknown codes map to None.
    fn check<T: Copy + PartialEq + std::fmt::Debug>(
        all: &[T],
        expected: &[(i64, T)],
        from: fn(i64) -> Option<T>,
        code: fn(T) -> i64,
    ) {
        assert_eq!(all.len(), expected.len(), "every variant is listed");
        for &(c, v) in expected {
            assert_eq!(from(c), Some(v), "code {c}");
            assert_eq!(code(v), c);
        }
        assert_eq!(from(0), None);
        assert_eq!(from(expected.len() as i64 + 1), None);
        assert_eq!(from(-1), None);
    }

    #[test]
    fn submit_codes() {
        use SubmitCode::*;
        check(
            SubmitCode::ALL,
            &[(1, Created), (2, Existing), (3, Conflict), (4, IdExists)],
            SubmitCode::from_code,
            SubmitCode::code,
        );
    }

    #[test]
    fn begin_codes() {
        use BeginCode::*;
        check(
            BeginCode::ALL,
            &[(1, Run), (2, NotRunnable), (3, Stale)],
            BeginCode::from_code,
            BeginCode::code,
        );
    }

    #[test]
    fn complete_codes() {
        use CompleteCode::*;
        check(
            CompleteCode::ALL,
            &[
                (1, Completed),
                (2, Stale),
                (3, Duplicate),
                (4, Cancelled),
                (5, NotRunning),
                (6, NotFound),
            ],
            CompleteCode::from_code,
            CompleteCode::code,
        );
    }

    #[test]
    fn fail_codes() {
        use FailCode::*;
        check(
            FailCode::ALL,
            &[
                (1, RetryScheduled),
                (2, Failed),
                (3, Stale),
                (4, Duplicate),
                (5, Cancelled),
                (6, NotRunning),
                (7, NotFound),
            ],
            FailCode::from_code,
            FailCode::code,
        );
    }

    #[test]
    fn cancel_codes() {
        use CancelCode::*;
        check(
            CancelCode::ALL,
            &[(1, Cancelled), (2, AlreadyFinished), (3, NotFound)],
            CancelCode::from_code,
            CancelCode::code,
        );
    }

    #[test]
    fn requeue_codes() {
        use RequeueCode::*;
        check(
            RequeueCode::ALL,
            &[
                (1, Requeued),
                (2, NotFound),
                (3, Expired),
                (4, Cancelled),
                (5, NotFailed),
            ],
            RequeueCode::from_code,
            RequeueCode::code,
        );
    }

    #[test]
    fn every_script_carries_the_shared_prelude_and_its_header() {
        let s = Scripts::new();
        for script in [
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
        ] {
            assert_eq!(script.get_hash().len(), 40);
            assert!(s.name_of(script.get_hash()).is_some(), "name_of knows it");
        }
        let hashes: std::collections::HashSet<_> = [
            s.submit.get_hash(),
            s.begin.get_hash(),
            s.complete.get_hash(),
            s.fail.get_hash(),
            s.promote.get_hash(),
            s.cancel.get_hash(),
            s.heartbeat.get_hash(),
            s.read.get_hash(),
            s.reclaim.get_hash(),
            s.requeue.get_hash(),
            s.lease_acquire.get_hash(),
            s.lease_settle.get_hash(),
        ]
        .into_iter()
        .collect();
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
