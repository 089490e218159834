//! Process exit codes of `gleitzeit-submit`.
//!
//! Scripts and the Python package branch on these numbers, so they are part of the stable
//! contract: a value is never reused for another meaning.

/// What the process tells its caller through its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitCode {
    /// 0: the command did what was asked (a submitted workflow was accepted, a waited-for
    /// workflow completed, a query found its workflow).
    Ok = 0,
    /// 1: an unexpected error (Redis answered something this version does not understand, an
    /// output stream closed). Retrying does not help; it is a bug or a version mismatch.
    Internal = 1,
    /// 2: invalid input or usage: the workflow failed validation, an `--input` was malformed,
    /// a flag was wrong. Nothing was written to Redis. Fix the input; retrying as is won't help.
    Invalid = 2,
    /// 3: Redis could not be reached. Retrying once Redis is up can help.
    Unreachable = 3,
    /// 4: the workflow failed or was cancelled (`results`, `submit --wait`).
    WorkflowFailed = 4,
    /// 5: no workflow with that id (never existed, or expired after its retention time), or
    /// no dead letter with that id (`dead inspect|requeue|purge`).
    NotFound = 5,
    /// 6: the idempotency key is already used by a workflow with a different body.
    Conflict = 6,
    /// 7: `submit --wait --timeout` or `watch --timeout` ran out before the workflow finished. The workflow keeps
    /// running; follow it with `status`/`results`.
    Timeout = 7,
    /// 8: the state refused the operation (`dead requeue`: the workflow was cancelled by a
    /// user or expired, or the task is no longer failed; `dead purge --all` without `--yes`
    /// is a usage error, 2). Nothing was changed for the refused items; others were done.
    Refused = 8,
    /// 9: Redis refused the credentials: wrong password, unknown or disabled user
    /// (`WRONGPASS`), or a password is required and the URL has none (`NOAUTH`). Retrying
    /// with the same URL does not help; fix the user or password.
    AuthFailed = 9,
    /// 10: the Redis user's ACL lacks a command or key this command uses (`NOPERM`); the
    /// message names it and the role. Grant the role (`gleitzeit-submit acl`, docs/acl.md).
    NoPermission = 10,
    /// 11: Redis is full (`maxmemory` reached, policy `noeviction`) and refused new work;
    /// nothing was written. Accepted workflows still finish; retry once finished workflows
    /// have expired (their retention), or raise `maxmemory` / shorten retention.
    RedisFull = 11,
    /// 12: `submit --replica-acks N`: the workflow was written to the primary, but fewer
    /// than N replicas confirmed it in time. It runs unless the primary fails before a
    /// replica copies it; check the replicas. Submitting again with the same idempotency key
    /// is safe.
    NotReplicated = 12,
}

impl ExitCode {
    /// The numeric process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Every code, in numeric order (used to document and to test the table).
    pub const ALL: [ExitCode; 13] = [
        ExitCode::Ok,
        ExitCode::Internal,
        ExitCode::Invalid,
        ExitCode::Unreachable,
        ExitCode::WorkflowFailed,
        ExitCode::NotFound,
        ExitCode::Conflict,
        ExitCode::Timeout,
        ExitCode::Refused,
        ExitCode::AuthFailed,
        ExitCode::NoPermission,
        ExitCode::RedisFull,
        ExitCode::NotReplicated,
    ];

    /// A one-line description, used by `--help`.
    pub fn describe(self) -> &'static str {
        match self {
            ExitCode::Ok => "success",
            ExitCode::Internal => "unexpected error",
            ExitCode::Invalid => "invalid workflow, input or usage (nothing was written)",
            ExitCode::Unreachable => "cannot reach Redis",
            ExitCode::WorkflowFailed => "workflow failed or was cancelled",
            ExitCode::NotFound => "not found (workflow or dead letter)",
            ExitCode::Conflict => "idempotency key used by a different workflow",
            ExitCode::Timeout => "--wait or watch timed out (the workflow keeps running)",
            ExitCode::Refused => "refused by the current state (nothing was changed for that item)",
            ExitCode::AuthFailed => {
                "Redis refused the credentials (wrong password or unknown user)"
            }
            ExitCode::NoPermission => {
                "the Redis user lacks a permission (ACL; see `gleitzeit-submit acl`)"
            }
            ExitCode::RedisFull => {
                "Redis is full (maxmemory, noeviction): new work refused, nothing written"
            }
            ExitCode::NotReplicated => {
                "written to the primary, not confirmed by the replicas asked for (--replica-acks)"
            }
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_documented_ones() {
        let numbers: Vec<u8> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(numbers, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(ExitCode::Invalid.code(), 2);
        assert_eq!(ExitCode::Unreachable.code(), 3);
        assert_eq!(ExitCode::WorkflowFailed.code(), 4);
        assert_eq!(ExitCode::NotFound.code(), 5);
        assert_eq!(ExitCode::Conflict.code(), 6);
        assert_eq!(ExitCode::Timeout.code(), 7);
        assert_eq!(ExitCode::Refused.code(), 8);
        assert_eq!(ExitCode::AuthFailed.code(), 9);
        assert_eq!(ExitCode::NoPermission.code(), 10);
        assert_eq!(ExitCode::NotReplicated.code(), 12);
    }

    #[test]
    fn every_code_is_described() {
        for code in ExitCode::ALL {
            assert!(!code.describe().is_empty());
        }
    }
}
