//! `imds-tun up` running in a test host: started with the host's own state and key
//! directories (so no test touches /run/imds-tun or /var/lib/imds-tun of the machine), its
//! ready line awaited, and stopped (SIGTERM, then SIGKILL) when dropped.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::netns::TestHost;

/// A running `imds-tun up`.
pub struct Up {
    pub child: Child,
    /// The ready line, then the further lines asked for (the doors' `export` lines).
    pub lines: Vec<String>,
}

impl Up {
    /// `imds-tun up ARGS` in `host`.
    pub fn start<S: AsRef<OsStr>>(host: &TestHost, args: impl IntoIterator<Item = S>) -> Up {
        Up::start_in(host, host.command(env!("CARGO_BIN_EXE_imds-tun")), args, 0)
    }

    /// `imds-tun up ARGS` through `command` (the binary inside `host`, with whatever mounts
    /// the test needs), waiting for the ready line and `extra_lines` more lines.
    pub fn start_in<S: AsRef<OsStr>>(
        host: &TestHost,
        command: Command,
        args: impl IntoIterator<Item = S>,
        extra_lines: usize,
    ) -> Up {
        Up::start_with(host, command, args, extra_lines, Stdio::inherit())
    }

    /// [`Up::start`] with its standard error (the log) going to `log`.
    pub fn start_logged<S: AsRef<OsStr>>(
        host: &TestHost,
        args: impl IntoIterator<Item = S>,
        log: &std::path::Path,
    ) -> Up {
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let command = host.command(env!("CARGO_BIN_EXE_imds-tun"));
        Up::start_with(host, command, args, 0, Stdio::from(file))
    }

    fn start_with<S: AsRef<OsStr>>(
        host: &TestHost,
        mut command: Command,
        args: impl IntoIterator<Item = S>,
        extra_lines: usize,
        stderr: Stdio,
    ) -> Up {
        let mut child = command
            .arg("up")
            .arg("--state-dir")
            .arg(host.dir().join("state"))
            .arg("--key-dir")
            .arg(host.dir().join("keys"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start imds-tun up: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .take(1 + extra_lines)
            .map_while(Result::ok)
            .collect();
        let up = Up { child, lines };
        assert!(
            up.lines.first().is_some_and(|l| l.contains("ready")),
            "unexpected output of up: {:?}",
            up.lines
        );
        up
    }

    /// The ready line.
    pub fn ready_line(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of our own child.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit; fails the test after `limit`.
    pub fn wait(mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "imds-tun did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM first, so `up` undoes its changes and logs its counters.
            // SAFETY: kill(2) with the pid of our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
