//! Shared pieces of the integration tests: the Python venv with the real SDKs, and a running
//! `imds-tun` process that is killed when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

pub mod netns;
pub mod scripted_net;
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
        Server::start_with(config, [] as [&str; 0])
    }

    /// [`Server::start`] with more `serve` arguments (e.g. `--ctl PATH`, `--metrics ADDR`).
    pub fn start_with<S: AsRef<std::ffi::OsStr>>(
        config: Option<&Path>,
        args: impl IntoIterator<Item = S>,
    ) -> Server {
        Server::spawn(config, args, Stdio::inherit())
    }

    /// [`Server::start_with`] with its standard error (the log) going to `log`.
    pub fn start_logged<S: AsRef<std::ffi::OsStr>>(
        config: Option<&Path>,
        args: impl IntoIterator<Item = S>,
        log: &Path,
    ) -> Server {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        Server::spawn(config, args, Stdio::from(file))
    }

    fn spawn<S: AsRef<std::ffi::OsStr>>(
        config: Option<&Path>,
        args: impl IntoIterator<Item = S>,
        stderr: Stdio,
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imds-tun"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--key-dir"])
            .arg(key_dir())
            .args(args);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start imds-tun: {e}"));
        let addr = serving_addr(&mut child);
        Server { child, addr }
    }
}

/// Reads `serve`'s ready line from `child`'s piped stdout and returns the address it names.
pub fn serving_addr(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{e}"));
    // "imds-tun: serving azure, gce, aws on 127.0.0.1:PORT"
    line.trim()
        .rsplit(" on ")
        .next()
        .map(str::to_string)
        .filter(|a| a.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("unexpected ready line: {line:?}"))
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of our own child.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// SIGTERM, then waits (at most 10 s) for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) with the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
                return status;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "imds-tun serve did not exit after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

/// The resident set size of process `pid`, in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// CLOCK_MONOTONIC now, in seconds: the clock Python's `time.clock_gettime(CLOCK_MONOTONIC)`
/// reads, so times taken here and in a client script compare.
pub fn monotonic_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a valid, owned struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
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
