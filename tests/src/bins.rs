//! Locating the `gleitzeit-worker`, `gleitzeit-submit` and `gleitzeit-bench` binaries.
//!
//! Cargo builds only the binaries of the package under test for its integration tests, and
//! these belong to other packages: `cargo test -p gleitzeit-e2e` would find none of them,
//! or stale ones left behind by an earlier build. So the first lookup in a test process runs
//! `cargo build --bins` for their packages into the target directory and profile of the test
//! executable itself (`target/<profile>/`). When they are up to date that is a quick no-op;
//! when they are not, the tests run the code as it is now rather than an old build.
//!
//! Set `GLEITZEIT_E2E_BIN_DIR` to a directory holding prebuilt binaries to skip the build (for
//! running the test executables without cargo).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The worker binary's name.
pub const WORKER: &str = "gleitzeit-worker";
/// The CLI binary's name.
pub const SUBMIT: &str = "gleitzeit-submit";
/// The benchmark binary's name.
pub const BENCH: &str = "gleitzeit-bench";

/// The path of binary `name`, building the binaries first if this process has not yet.
///
/// # Panics
/// When the build fails or the binary is missing afterwards: the test cannot run.
pub fn binary(name: &str) -> PathBuf {
    let dir = bin_dir();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{name} is missing in {} (built with `cargo build --bins`?)",
        dir.display()
    );
    path
}

/// `target/<profile>/` of the test executable (or `GLEITZEIT_E2E_BIN_DIR`).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("GLEITZEIT_E2E_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let dir = profile_dir();
        build(&dir);
        dir
    })
}

/// Where test artefacts (worker logs) are kept: `target/<profile>/e2e-logs/`.
pub fn log_dir() -> PathBuf {
    let dir = profile_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir).expect("creating the e2e log directory");
    dir
}

/// The test executable lives in `target/<profile>/deps/`; binaries go to `target/<profile>/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("the test executable is in target/<profile>/deps/")
}

/// Prefixes of the variables Cargo sets for the package under test only.
const PACKAGE_VARS: [&str; 7] = [
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "OUT_DIR",
];

fn build(profile_dir: &Path) {
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile directory name");
    let target_dir = profile_dir.parent().expect("target directory");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    // Cargo gives the test process the variables of the package under test
    // (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, …). Build scripts that watch them (ring's
    // does) would see them change between this build and the enclosing `cargo test`, and
    // each would rebuild what the other just built, on every run.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if PACKAGE_VARS.iter().any(|p| key_text.starts_with(p)) {
            cmd.env_remove(&key);
        }
    }
    cmd.args([
        "build",
        "--bins",
        "-p",
        "gleitzeit-worker",
        "-p",
        "gleitzeit-submit",
        "-p",
        "gleitzeit-bench",
    ])
    .arg("--manifest-path")
    .arg(&manifest)
    .arg("--target-dir")
    .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().expect("running cargo to build the binaries");
    assert!(
        out.status.success(),
        "building the worker, CLI and benchmark binaries failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
