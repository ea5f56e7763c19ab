//! Shared pieces of the integration tests: the Python venv with the real SDKs, and a running
//! `imds-tun` process that is killed when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

pub mod netns;
pub mod smoltcp_phy;
pub mod up;

/// The venv under the target directory with `tests/sdk/requirements.txt` installed, created
/// once per test binary and reused across runs while the requirements are unchanged.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| venv("sdk-venv", "tests/sdk/requirements.txt"))
}

/// The python of venv `name` under the target directory with `requirements` (relative to the
/// crate) installed; made on first use and remade when the requirements change.
pub fn venv(name: &str, requirements: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reqs = root.join(requirements);
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.stamp");
    let wanted = std::fs::read_to_string(&reqs).unwrap_or_else(|e| panic!("{e}"));
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&reqs));
    std::fs::write(&stamp, wanted).unwrap_or_else(|e| panic!("{e}"));
    python
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The key store every test server of this build shares (created 0700 on first use, under
/// the target directory, never the host's /var/lib/imds-tun).
pub fn key_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("keys")
}

/// `imds-tun serve` on an ephemeral loopback port; killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    /// Starts the server with `config` (or the embedded default) and waits for its ready line.
    pub fn start(config: Option<&Path>) -> Server {
        Server::start_with(config, &[])
    }

    /// [`Server::start`] with more arguments for `serve`.
    pub fn start_with(config: Option<&Path>, args: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imds-tun"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--key-dir"])
            .arg(key_dir())
            .args(args);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start imds-tun: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{e}"));
        // "imds-tun: serving azure, gce, aws on 127.0.0.1:PORT"
        let addr = line
            .trim()
            .rsplit(" on ")
            .next()
            .map(str::to_string)
            .filter(|a| a.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected ready line: {line:?}"));
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that a client script ran at least `min` checks: each check prints a line starting
/// with `ok`, so a script that exited 0 after checking little is caught.
pub fn assert_checks(what: &str, stdout: &str, min: usize) {
    let checks = stdout.lines().filter(|l| l.starts_with("ok")).count();
    assert!(
        checks >= min,
        "{what}: only {checks} checks ran (at least {min} expected):\n{stdout}"
    );
}
