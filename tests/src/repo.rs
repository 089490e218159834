//! The repository's own files and the external checkers the file tests run on them: the
//! dashboard and deployment tests read `grafana/` and `deploy/` from the working tree and,
//! where installed, hand them to Prometheus' `promtool`.

use std::path::{Path, PathBuf};

/// The repository root (the parent of this package's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The text of a file, by its path relative to the repository root.
///
/// # Panics
/// When the file cannot be read: the test's subject is missing.
pub fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// An external program: the first `name` on `PATH`, else `/usr/bin/<name>` (where the Debian
/// packages put it); `None` when neither exists, so the caller can skip and say why.
pub fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .or_else(|| Some(Path::new("/usr/bin").join(name)).filter(|p| p.is_file()))
}
