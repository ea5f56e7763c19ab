//! Shared helpers for the privileged device tests: a throw-away network namespace per test,
//! a temporary directory, and the root check.
//!
//! These tests run as root in CI and must FAIL, never skip, when they cannot run: a skipped
//! privileged test is indistinguishable from a passing one in a CI log. Everything happens in a
//! network namespace the test creates (`ip netns add imdstun-test-...`) and in temporary
//! files; the host's interfaces, routes and `/etc/hosts` are never touched. The namespace and
//! the directory are deleted by `Drop`, so also when the test fails.

#![allow(dead_code)] // each test crate uses a different subset

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use imds_tun::device::Paths;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fails the test unless it can run: root, and /dev/net/tun present.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged device test: must run as root (CI runs these as root; locally use sudo)"
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "privileged device test: /dev/net/tun is missing (modprobe tun)"
    );
}

/// A named network namespace that exists for the life of this value.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        require_root();
        let name = unique("imdstun-test");
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("running `ip netns add`");
        assert!(st.success(), "ip netns add {name} failed");
        Netns { name }
    }

    /// Runs `f` on a new thread that has entered the namespace (setns affects only the
    /// calling thread), and returns its result; a panic in `f` fails the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let ns = File::open(&path).expect("opening the namespace");
                // SAFETY: setns on an fd we own, for this thread only.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// `ip -n <ns> ARGS`: stdout, and whether it succeeded.
    pub fn ip(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("running ip");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(unique("imdstun-test"));
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir { path }
    }

    /// State directory and a hosts file (with `content`) inside this directory.
    pub fn paths(&self, hosts_content: &[u8]) -> Paths {
        let hosts = self.path.join("hosts");
        std::fs::write(&hosts, hosts_content).expect("writing the test hosts file");
        Paths {
            state_dir: self.path.join("state"),
            hosts_file: hosts,
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The IPv4 header checksum (RFC 1071) of `h`.
pub fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
