//! The one table of return codes every Lua script shares.
//!
//! `lua/lib.lua` defines `CODE`, which is prepended to every script; a script that reports a
//! status returns `CODE.<NAME>` (its whole reply, or the first element of an array reply) and
//! its header lists the codes it can return. [`ScriptCode`] is the same table in Rust: same
//! names (`NOT_FOUND` is [`ScriptCode::NotFound`]), same numbers, and a test reads lib.lua so
//! the two cannot drift. A number therefore means the same thing whichever script returned
//! it, and callers (the worker above all) match on one vocabulary.
//!
//! [`Returns`] names the codes one script can return; every reply is parsed through it, so
//! a code lib.lua does not define, or one the script never returns, is a
//! [`QueueError::UnexpectedReply`] naming the script and the code.

use crate::error::QueueError;

/// Defines [`ScriptCode`] and its list of every code from one table.
macro_rules! script_codes {
    ($($(#[$meta:meta])* $variant:ident = $code:literal,)+) => {
        /// A script's status, as `CODE` in `lua/lib.lua` numbers it. Each script returns only
        /// some of these (its header lists them); the operations that hand one to callers
        /// say which.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(i64)]
        pub enum ScriptCode {
            $($(#[$meta])* $variant = $code,)+
        }

        impl ScriptCode {
            /// Every code, in the order of lib.lua's table.
            pub const ALL: &'static [ScriptCode] = &[$(ScriptCode::$variant,)+];
        }
    };
}

script_codes! {
    /// Done as asked: submit wrote the workflow, begin started the task, complete recorded
    /// the result (and released the dependents), cancel cancelled the workflow, requeue put
    /// the task back to work.
    Ok = 1,
    /// Fenced out: the entry is pending for another consumer or delivery (it was reclaimed),
    /// or no longer pending while the task has not finished. Nothing changed.
    Stale = 2,
    /// The task had already finished. Nothing changed (a leftover pending entry of this
    /// delivery is acknowledged).
    Duplicate = 3,
    /// Cancelled by a user: the task was cancelled while it ran (its result or error is kept
    /// for inspection, nothing released, the entry acknowledged), or the dead letter's
    /// workflow was cancelled (nothing changed).
    Cancelled = 4,
    /// The entry is this delivery's but the task is not running (nor ready, for a failure):
    /// it was never begun. Nothing changed.
    NotRunning = 5,
    /// What the call names does not exist: the task or its workflow (expired; a pending
    /// entry is acknowledged), the workflow to cancel, the dead letter to requeue.
    NotFound = 6,
    /// The failed task waits in the delayed set for its next attempt (or, deferred, for
    /// capacity).
    RetryScheduled = 7,
    /// The task failed for good; the failure policy was applied if the workflow was running.
    Failed = 8,
    /// The delivered task cannot run; the entry was acknowledged and deleted.
    NotRunnable = 9,
    /// Same idempotency key and digest as an existing workflow; nothing written.
    Existing = 10,
    /// Same idempotency key, another digest; nothing written.
    Conflict = 11,
    /// A workflow with the requested id already exists; nothing written.
    IdExists = 12,
    /// The workflow to cancel had already ended (completed, failed or cancelled); unchanged.
    AlreadyFinished = 13,
    /// The dead letter's workflow no longer exists (its retention ended); nothing changed.
    Expired = 14,
    /// The dead letter's task is not failed any more (already requeued); nothing changed.
    NotFailed = 15,
}

impl ScriptCode {
    /// The integer the scripts return.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The code for a script's integer, `None` for one lib.lua does not define.
    pub fn from_code(code: i64) -> Option<ScriptCode> {
        ScriptCode::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// The code for `script`'s integer reply; an unknown code is an
    /// [`QueueError::UnexpectedReply`] naming the script and the code.
    ///
    /// # Errors
    /// As said.
    pub fn parse(script: &'static str, code: i64) -> Result<ScriptCode, QueueError> {
        ScriptCode::from_code(code)
            .ok_or_else(|| QueueError::unexpected(script, format!("unknown return code {code}")))
    }
}

/// The codes one script can return (its header lists the same; a test compares them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Returns {
    /// The script's file name, which errors name.
    pub(crate) script: &'static str,
    /// Every code it returns.
    pub(crate) codes: &'static [ScriptCode],
}

impl Returns {
    /// The code of this script's integer reply: one lib.lua defines and the script returns.
    pub(crate) fn parse(&self, code: i64) -> Result<ScriptCode, QueueError> {
        let parsed = ScriptCode::parse(self.script, code)?;
        if self.codes.contains(&parsed) {
            Ok(parsed)
        } else {
            Err(self.unexpected(parsed))
        }
    }

    /// The error for a code this script does not return (a caller's fallback match arm).
    pub(crate) fn unexpected(&self, code: ScriptCode) -> QueueError {
        QueueError::unexpected(
            self.script,
            format!(
                "return code {} ({code:?}) is not one this script returns",
                code.code()
            ),
        )
    }
}

use ScriptCode as C;

/// `submit.lua`.
pub(crate) const SUBMIT: Returns = Returns {
    script: "submit.lua",
    codes: &[C::Ok, C::Existing, C::Conflict, C::IdExists],
};
/// `begin.lua`.
pub(crate) const BEGIN: Returns = Returns {
    script: "begin.lua",
    codes: &[C::Ok, C::NotRunnable, C::Stale],
};
/// `complete.lua`.
pub(crate) const COMPLETE: Returns = Returns {
    script: "complete.lua",
    codes: &[
        C::Ok,
        C::Stale,
        C::Duplicate,
        C::Cancelled,
        C::NotRunning,
        C::NotFound,
    ],
};
/// `complete_many.lua`: per delivery, what `complete.lua` returns.
pub(crate) const COMPLETE_MANY: Returns = Returns {
    script: "complete_many.lua",
    codes: COMPLETE.codes,
};
/// `fail.lua`.
pub(crate) const FAIL: Returns = Returns {
    script: "fail.lua",
    codes: &[
        C::RetryScheduled,
        C::Failed,
        C::Stale,
        C::Duplicate,
        C::Cancelled,
        C::NotRunning,
        C::NotFound,
    ],
};
/// The begin replies `read.lua` returns with the entries it began (lib.lua's
/// `begin_entry`): no fence, so never `Stale`.
pub(crate) const READ: Returns = Returns {
    script: "read.lua",
    codes: &[C::Ok, C::NotRunnable],
};
/// `cancel.lua`.
pub(crate) const CANCEL: Returns = Returns {
    script: "cancel.lua",
    codes: &[C::Ok, C::AlreadyFinished, C::NotFound],
};
/// `watch.lua`.
pub(crate) const WATCH: Returns = Returns {
    script: "watch.lua",
    codes: &[C::Ok, C::NotFound],
};
/// `requeue.lua`.
pub(crate) const REQUEUE: Returns = Returns {
    script: "requeue.lua",
    codes: &[C::Ok, C::NotFound, C::Expired, C::Cancelled, C::NotFailed],
};

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `NotFound` -> `NOT_FOUND`: the Rust name as lib.lua spells it.
    fn lua_name(code: ScriptCode) -> String {
        let mut out = String::new();
        for (i, ch) in format!("{code:?}").chars().enumerate() {
            if ch.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_uppercase());
        }
        out
    }

    /// The `NAME = n,` lines of lib.lua's `local CODE = { ... }`, in order.
    fn lib_table() -> Vec<(String, i64)> {
        let lib = include_str!("../../../lua/lib.lua");
        let start = lib.find("local CODE = {\n").expect("lib.lua defines CODE");
        let body = &lib[start..];
        let end = body.find("\n}\n").expect("CODE's table ends");
        body[..end]
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("--"))
            .map(|l| {
                let (name, n) = l
                    .trim_end_matches(',')
                    .split_once('=')
                    .unwrap_or_else(|| panic!("not NAME = n: {l:?}"));
                let n = n.trim().parse().unwrap_or_else(|_| panic!("{l:?}"));
                (name.trim().to_owned(), n)
            })
            .collect()
    }

    /// Every `CODE.NAME` in `text`, with the number written after it as ` (n)` if any.
    fn mentions(text: &str) -> Vec<(String, Option<i64>)> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("CODE.") {
            rest = &rest[i + 5..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            let after = &rest[name.len()..];
            let n = after
                .strip_prefix(" (")
                .and_then(|a| a.split_once(')'))
                .and_then(|(n, _)| n.parse().ok());
            out.push((name, n));
        }
        out
    }

    #[test]
    fn the_rust_enum_is_lib_luas_table() {
        let rust: Vec<(String, i64)> = ScriptCode::ALL
            .iter()
            .map(|&c| (lua_name(c), c.code()))
            .collect();
        assert_eq!(rust, lib_table(), "ScriptCode and lib.lua's CODE differ");
        let numbers: BTreeSet<i64> = rust.iter().map(|(_, n)| *n).collect();
        assert_eq!(numbers.len(), rust.len(), "every number once");
        for &c in ScriptCode::ALL {
            assert_eq!(ScriptCode::from_code(c.code()), Some(c));
        }
        for unknown in [0, -1, ScriptCode::ALL.len() as i64 + 1] {
            assert_eq!(ScriptCode::from_code(unknown), None);
        }
    }

    /// The codes each lib.lua helper returns, by name: a script that calls one returns
    /// them too.
    fn lib_helpers() -> Vec<(String, BTreeSet<String>)> {
        let lib = include_str!("../../../lua/lib.lua");
        let mut out = Vec::new();
        for part in lib.split("\nlocal function ").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let codes: BTreeSet<String> = mentions(part).into_iter().map(|(c, _)| c).collect();
            if !codes.is_empty() {
                out.push((name, codes));
            }
        }
        out
    }

    /// Each script's header lists exactly the codes its body returns (itself or through a
    /// lib.lua helper it calls), with lib.lua's numbers, and those are the codes its
    /// [`Returns`] accepts; no script returns a bare number as its status.
    #[test]
    fn each_script_returns_the_codes_its_header_and_returns_list() {
        let mut helpers = lib_helpers();
        // An earlier script's body, which a later one may call (scripts.rs).
        helpers.push((
            "script_complete".to_owned(),
            COMPLETE.codes.iter().map(|&c| lua_name(c)).collect(),
        ));
        assert!(
            helpers.iter().any(|(n, _)| n == "begin_entry"),
            "lib.lua's helpers are found"
        );
        for (returns, text) in [
            (SUBMIT, include_str!("../../../lua/submit.lua")),
            (BEGIN, include_str!("../../../lua/begin.lua")),
            (READ, include_str!("../../../lua/read.lua")),
            (COMPLETE, include_str!("../../../lua/complete.lua")),
            (
                COMPLETE_MANY,
                include_str!("../../../lua/complete_many.lua"),
            ),
            (FAIL, include_str!("../../../lua/fail.lua")),
            (CANCEL, include_str!("../../../lua/cancel.lua")),
            (REQUEUE, include_str!("../../../lua/requeue.lua")),
            (WATCH, include_str!("../../../lua/watch.lua")),
        ] {
            let name = returns.script;
            let header_end = text
                .lines()
                .take_while(|l| l.starts_with("--"))
                .map(|l| l.len() + 1)
                .sum::<usize>();
            assert!(header_end > 0, "{name}: header");
            let (header, body) = text.split_at(header_end);
            let expected: BTreeSet<String> = returns.codes.iter().map(|&c| lua_name(c)).collect();

            let listed = mentions(&header[header.find("Returns").expect(name)..]);
            for (code, n) in &listed {
                let c = ScriptCode::ALL
                    .iter()
                    .find(|&&c| lua_name(c) == *code)
                    .unwrap_or_else(|| panic!("{name}: header names unknown CODE.{code}"));
                assert_eq!(*n, Some(c.code()), "{name}: header number of CODE.{code}");
            }
            let listed: BTreeSet<String> = listed.into_iter().map(|(c, _)| c).collect();
            assert_eq!(listed, expected, "{name}: header vs Returns");

            let mut used: BTreeSet<String> = mentions(body).into_iter().map(|(c, _)| c).collect();
            for (helper, codes) in &helpers {
                if body.contains(&format!("{helper}(")) {
                    used.extend(codes.iter().cloned());
                }
            }
            assert_eq!(used, expected, "{name}: body vs Returns");
            for line in body.lines().map(str::trim) {
                let bare = ["return ", "return { "].iter().any(|p| {
                    line.strip_prefix(p)
                        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
                });
                assert!(!bare, "{name}: bare status in {line:?}");
            }
        }
    }

    #[test]
    fn parse_names_the_script_and_the_code() {
        assert_eq!(COMPLETE.parse(2).unwrap(), ScriptCode::Stale);
        assert_eq!(FAIL.parse(2).unwrap(), ScriptCode::Stale, "one number each");
        let unknown = COMPLETE.parse(99).unwrap_err().to_string();
        assert!(
            unknown.contains("complete.lua") && unknown.contains("99"),
            "{unknown}"
        );
        let foreign = COMPLETE.parse(ScriptCode::Failed.code()).unwrap_err();
        let text = foreign.to_string();
        assert!(
            text.contains("complete.lua") && text.contains("Failed"),
            "{text}"
        );
        assert!(!foreign.is_retryable());
        let err = ScriptCode::parse("cancel.lua", 0).unwrap_err().to_string();
        assert!(
            err.contains("cancel.lua") && err.contains("code 0"),
            "{err}"
        );
    }
}
