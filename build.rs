//! Build script: the git commit for `imds-tun --version` and the `imds_tun_build_info` metric.
//!
//! `IMDS_TUN_COMMIT` is `git rev-parse --short HEAD` when the source is a git checkout and git
//! is installed, else "unknown" (a source tarball, a container build without .git).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=IMDS_TUN_COMMIT={commit}");
    // Rebuild when HEAD moves: the reflog of HEAD changes on every commit, checkout and merge
    // (in a worktree too: --git-path resolves the worktree's own files).
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
