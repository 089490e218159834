//! Running the `gleitzeit-bench` command as a process, for the tests that check it works end
//! to end in each of its modes (they assert what it reports, never its figures).

use tokio::process::Command;

use crate::worker::clean_env;
use crate::{bins, within};

/// Runs `gleitzeit-bench <args>` (no `GLEITZEIT_*` variable inherited), asserts it succeeded
/// and returns its standard output. `what` names the run in the hang-guard message.
pub async fn run(what: &str, args: &[&str]) -> String {
    let out = output(what, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gleitzeit-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `gleitzeit-bench <args>` in the repository's root (no `GLEITZEIT_*` variable
/// inherited) and returns how it ended, succeeded or not.
pub async fn output(what: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bins::binary(bins::BENCH));
    clean_env(&mut cmd);
    cmd.args(args)
        .current_dir(crate::repo::root())
        .kill_on_drop(true);
    within(what, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("running gleitzeit-bench {args:?}: {e}"))
}
