//! The Lua scripts of `lua/`, as one Redis function library loaded once per Redis.
//!
//! Every script is compiled into the binary (`include_str!`). [`Library`] puts
//! `lua/lib.lua` (the helpers, key patterns and return codes the scripts share) and every
//! script's body, each wrapped as one function, into a single library for `FUNCTION LOAD`.
//! Each body is a local function of the library (`script_<name>`) before it is registered,
//! so a later script can run an earlier one's body (complete_many.lua runs complete.lua's).
//! A call is an `FCALL` ([`Call`], run by `Queue::invoke`); when Redis does not know the
//! function (a fresh server, after a restart without persistence, or `FUNCTION FLUSH`),
//! the library is loaded and the call repeated once.
//!
//! Why functions and not `EVALSHA`: an `EVALSHA` script runs its whole text on every call,
//! and lib.lua's ~40 helper definitions cost 2.1–2.5 µs of Redis CPU per call (measured,
//! docs/benchmarks.md); a library runs lib.lua once, when Redis loads it.
//!
//! The library's name carries a hash of its text (`gleitzeit_<12 hex>`), and so do its
//! functions (`gleitzeit_<12 hex>_<script>`): workers of two versions on one Redis (a
//! rolling upgrade) each call their own code, and loading never replaces a library another
//! process still uses.
//!
//! Each function also says how it behaves when Redis is at `maxmemory` under `noeviction`:
//! scripts that take new work in (submit, requeue) are refused before they write anything,
//! so a full Redis turns new work away at the door; scripts that carry accepted work to its
//! end (begin, complete, complete_many, fail, promote, cancel, heartbeat, read, reclaim, prune, trim, the lease
//! scripts, watch) are flagged `allow-oom`, so that work still finishes and its retention frees the
//! memory.

use deadpool_redis::redis::{self, ToRedisArgs};
use sha1_smol::Sha1;

const LIB: &str = include_str!("../../../lua/lib.lua");

/// How a function behaves when Redis is out of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// Takes new work in: refused while Redis is out of memory.
    NewWork,
    /// Finishes accepted work: runs even out of memory.
    AcceptedWork,
}

/// The scripts of `lua/`: (file name, body, memory behaviour).
const SOURCES: [(&str, &str, Memory); 16] = [
    (
        "submit.lua",
        include_str!("../../../lua/submit.lua"),
        Memory::NewWork,
    ),
    (
        "begin.lua",
        include_str!("../../../lua/begin.lua"),
        Memory::AcceptedWork,
    ),
    (
        "complete.lua",
        include_str!("../../../lua/complete.lua"),
        Memory::AcceptedWork,
    ),
    (
        "complete_many.lua",
        include_str!("../../../lua/complete_many.lua"),
        Memory::AcceptedWork,
    ),
    (
        "fail.lua",
        include_str!("../../../lua/fail.lua"),
        Memory::AcceptedWork,
    ),
    (
        "promote.lua",
        include_str!("../../../lua/promote.lua"),
        Memory::AcceptedWork,
    ),
    (
        "cancel.lua",
        include_str!("../../../lua/cancel.lua"),
        Memory::AcceptedWork,
    ),
    (
        "heartbeat.lua",
        include_str!("../../../lua/heartbeat.lua"),
        Memory::AcceptedWork,
    ),
    (
        "read.lua",
        include_str!("../../../lua/read.lua"),
        Memory::AcceptedWork,
    ),
    (
        "reclaim.lua",
        include_str!("../../../lua/reclaim.lua"),
        Memory::AcceptedWork,
    ),
    (
        "requeue.lua",
        include_str!("../../../lua/requeue.lua"),
        Memory::NewWork,
    ),
    // Removing frees memory: it must run when Redis is full.
    (
        "prune.lua",
        include_str!("../../../lua/prune.lua"),
        Memory::AcceptedWork,
    ),
    // Trimming frees memory too.
    (
        "trim.lua",
        include_str!("../../../lua/trim.lua"),
        Memory::AcceptedWork,
    ),
    (
        "lease_acquire.lua",
        include_str!("../../../lua/lease_acquire.lua"),
        Memory::AcceptedWork,
    ),
    (
        "lease_settle.lua",
        include_str!("../../../lua/lease_settle.lua"),
        Memory::AcceptedWork,
    ),
    (
        "watch.lua",
        include_str!("../../../lua/watch.lua"),
        Memory::AcceptedWork,
    ),
];

/// One function of the library.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    /// The name `FCALL` uses (`gleitzeit_<hash>_<script>`).
    name: String,
    /// The script's file name, which errors name.
    file: &'static str,
}

impl Function {
    /// A call of this function, to which keys and arguments are added.
    pub(crate) fn prepare_invoke(&self) -> Call {
        Call {
            name: self.name.clone(),
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One `FCALL`: the function, its keys and its arguments.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    name: String,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call {
    /// Adds a key (KEYS[n] inside the function).
    pub(crate) fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Call {
        self.keys.extend(key.to_redis_args());
        self
    }

    /// Adds an argument (ARGV[n] inside the function).
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Call {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// The `FCALL` command.
    pub(crate) fn command(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&self.name).arg(self.keys.len());
        for k in &self.keys {
            cmd.arg(k.as_slice());
        }
        for a in &self.args {
            cmd.arg(a.as_slice());
        }
        cmd
    }
}

/// The library and its functions, built once per [`Queue`](crate::Queue).
#[derive(Debug)]
pub(crate) struct Scripts {
    /// The library's source, for `FUNCTION LOAD`.
    pub library: String,
    /// The library's name (`gleitzeit_<hash>`).
    pub library_name: String,
    pub submit: Function,
    pub begin: Function,
    pub complete: Function,
    pub complete_many: Function,
    pub fail: Function,
    pub promote: Function,
    pub cancel: Function,
    pub heartbeat: Function,
    pub read: Function,
    pub reclaim: Function,
    pub requeue: Function,
    pub prune: Function,
    pub trim: Function,
    pub lease_acquire: Function,
    pub lease_settle: Function,
    pub watch: Function,
}

/// The functions' source: lib.lua, then each script's body as the callback of one function.
fn functions_source(prefix: &str) -> String {
    let mut out = String::from(LIB);
    for (file, body, memory) in SOURCES {
        let stem = stem(file);
        let flags = match memory {
            Memory::NewWork => "{}",
            Memory::AcceptedWork => "{'allow-oom'}",
        };
        // A local function of the library first, so a later script may call an earlier
        // one's body (complete_many.lua runs complete.lua's as `script_complete`).
        out.push_str(&format!(
            "\nlocal function script_{stem}(KEYS, ARGV)\nuse_prefix(ARGV[1])\n{body}\nend\n\
             redis.register_function{{function_name='{prefix}{stem}', flags={flags}, \
             callback=script_{stem}}}\n"
        ));
    }
    out
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        // The hash of the text with a placeholder where the names go: the names carry it.
        let digest = Sha1::from(functions_source("@")).digest().to_string();
        let library = format!("gleitzeit_{}", &digest[..12]);
        let prefix = format!("{library}_");
        let function = |wanted: &str| {
            let (file, _, _) = SOURCES
                .into_iter()
                .find(|(file, _, _)| stem(file) == wanted)
                .expect("a script of lua/");
            Function {
                name: format!("{prefix}{wanted}"),
                file,
            }
        };
        Scripts {
            library: format!("#!lua name={library}\n{}", functions_source(&prefix)),
            library_name: library,
            submit: function("submit"),
            begin: function("begin"),
            complete: function("complete"),
            complete_many: function("complete_many"),
            fail: function("fail"),
            promote: function("promote"),
            cancel: function("cancel"),
            heartbeat: function("heartbeat"),
            read: function("read"),
            reclaim: function("reclaim"),
            requeue: function("requeue"),
            prune: function("prune"),
            trim: function("trim"),
            lease_acquire: function("lease_acquire"),
            lease_settle: function("lease_settle"),
            watch: function("watch"),
        }
    }

    fn all(&self) -> [&Function; 16] {
        [
            &self.submit,
            &self.begin,
            &self.complete,
            &self.complete_many,
            &self.fail,
            &self.promote,
            &self.cancel,
            &self.heartbeat,
            &self.read,
            &self.reclaim,
            &self.requeue,
            &self.prune,
            &self.trim,
            &self.lease_acquire,
            &self.lease_settle,
            &self.watch,
        ]
    }

    /// The file name of the script behind a function name (Redis names the function in
    /// errors).
    pub(crate) fn name_of(&self, function: &str) -> Option<&'static str> {
        self.all()
            .into_iter()
            .find(|f| f.name == function)
            .map(|f| f.file)
    }
}

/// `"begin.lua"` → `"begin"`: the part of a function's name after the library's.
fn stem(file: &str) -> &str {
    file.strip_suffix(".lua").unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_is_one_function_of_the_library() {
        let s = Scripts::new();
        assert!(s.library.starts_with("#!lua name=gleitzeit_"));
        for f in s.all() {
            assert!(
                s.library.contains(&format!("function_name='{}'", f.name)),
                "{} registered",
                f.name
            );
            assert_eq!(s.name_of(&f.name), Some(f.file));
        }
        let names: std::collections::HashSet<_> = s.all().iter().map(|f| &f.name).collect();
        assert_eq!(names.len(), 16, "each function is distinct");
        // Only the scripts that take new work in may be refused when Redis is full.
        for (file, _, memory) in SOURCES {
            let f = format!("function_name='{}_{}', flags=", s.library_name, stem(file));
            let at = s.library.find(&f).expect(file);
            let oom = s.library[at..].starts_with(&format!("{f}{{'allow-oom'}}"));
            assert_eq!(oom, memory == Memory::AcceptedWork, "{file}");
        }
    }
}
