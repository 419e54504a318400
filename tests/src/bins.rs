//! Finding the workspace's binaries (`vrouter`, `vrouter-perf`, ...) built by cargo.

use std::path::{Path, PathBuf};

use crate::cmd::{Error, Result};

/// Path of the workspace binary `name`, built beforehand with `cargo build --bins`.
///
/// If `VROUTER_BIN_DIR` is set, only that directory is used. Otherwise the first existing file
/// among: the profile directory of the running test executable (`<target>/<profile>/`), then
/// `$CARGO_TARGET_DIR/{debug,release}`, then `<workspace>/target/{debug,release}`.
pub fn binary_path(name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VROUTER_BIN_DIR") {
        let path = Path::new(&dir).join(name);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::new(format!(
                "binary {name:?} not found at {} (VROUTER_BIN_DIR is set): run `cargo build --bins` \
                 with the profile that directory holds, or fix VROUTER_BIN_DIR",
                path.display()
            )))
        };
    }
    let candidates = candidate_dirs();
    for dir in &candidates {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    let searched: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    Err(Error::new(format!(
        "binary {name:?} not found; run `cargo build --bins` (same profile and target dir as \
         the tests) first, or set VROUTER_BIN_DIR. Searched: {}",
        searched.join(", ")
    )))
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    // A test executable lives in <target>/<profile>/deps/; binaries in <target>/<profile>/.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name().is_some_and(|n| n == "deps") {
                if let Some(profile) = deps.parent() {
                    dirs.push(profile.to_path_buf());
                }
            }
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut targets = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        targets.push(if dir.is_relative() {
            workspace.join(dir)
        } else {
            dir
        });
    }
    targets.push(workspace.join("target"));
    for target in targets {
        for profile in ["debug", "release"] {
            let dir = target.join(profile);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_error_says_what_to_do() {
        let err = binary_path("no-such-binary-xyz").unwrap_err();
        assert!(err.message().contains("cargo build --bins"), "{err}");
    }
}
