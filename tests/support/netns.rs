//! Network namespaces for the end-to-end tests, never touching the host's own network or
//! files: each test host is a namespace created here and deleted on drop, and every command
//! runs in a private mount namespace whose `/etc/hosts` is a bind mount of a temporary file
//! (so `imds-tun up` edits that file, through a bind mount as in containers).
//!
//! Only link-local addresses (169.254.0.0/16) are used for the test hosts, and for the
//! "containers" routed behind them ([`Container`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Fails the test (never skips) when it cannot run as it must.
pub fn require_root() {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    assert_eq!(
        uid, 0,
        "this test needs root (it creates network namespaces and a TUN device); run `sudo tests/run`"
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing: `modprobe tun`"
    );
}

/// How the test host is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Only `lo`: the host with no other interface.
    LoopbackOnly,
    /// A veth link to a peer namespace with link-local addresses and a default route, like
    /// a normal host on a LAN.
    Veth,
}

/// A test host: a network namespace (plus, for [`Shape::Veth`], its peer) and a private
/// hosts file.
pub struct TestHost {
    pub name: String,
    peer: Option<String>,
    dir: PathBuf,
    pub hosts_file: PathBuf,
    resolv_conf: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A test host's state that `up` changes and must give back ([`TestHost::restorable`]).
pub struct Restorable {
    pub addresses: String,
    pub routes: String,
    pub hosts: String,
}

/// Original content of the test host's hosts file: like a real one, it resolves the
/// machine's own name (clients look it up, and without it they would ask DNS).
pub fn hosts_content() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n# keep this comment\n127.0.1.1\t{}\n",
        name.trim()
    )
}

/// The test host's resolv.conf: a resolver on the host's own loopback, where nothing listens,
/// so a stray DNS lookup fails at once and never leaves the namespace.
const RESOLV_CONF: &str = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";

impl TestHost {
    pub fn new(shape: Shape) -> TestHost {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("imdstun-e2e-{}-{n}", std::process::id());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, hosts_content()).unwrap_or_else(|e| panic!("{e}"));
        let resolv_conf = dir.join("resolv.conf");
        std::fs::write(&resolv_conf, RESOLV_CONF).unwrap_or_else(|e| panic!("{e}"));
        let mut host = TestHost {
            name: name.clone(),
            peer: None,
            dir,
            hosts_file,
            resolv_conf,
        };
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        if shape == Shape::Veth {
            let peer = format!("{name}-p");
            ip(&["netns", "add", &peer]);
            host.peer = Some(peer.clone());
            ip(&["-n", &peer, "link", "set", "lo", "up"]);
            ip(&[
                "-n", &name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                "netns", &peer,
            ]);
            ip(&["-n", &name, "addr", "add", "169.254.77.2/24", "dev", "eth0"]);
            ip(&["-n", &peer, "addr", "add", "169.254.77.1/24", "dev", "eth0"]);
            ip(&["-n", &name, "link", "set", "eth0", "up"]);
            ip(&["-n", &peer, "link", "set", "eth0", "up"]);
            ip(&[
                "-n",
                &name,
                "route",
                "add",
                "default",
                "via",
                "169.254.77.1",
            ]);
            host.wait_for_ipv6_link_local();
        }
        host
    }

    /// A command that runs `program` inside this host: its network namespace and a private
    /// mount namespace with the test hosts file bind-mounted on `/etc/hosts` (and the test
    /// resolv.conf on `/etc/resolv.conf`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.command_with_mounts(program, &[])
    }

    /// [`TestHost::command`] with more bind mounts `(source, target)` in its mount namespace
    /// (targets must exist). Commands given the same mounts see the same files.
    pub fn command_with_mounts(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        mounts: &[(&Path, &str)],
    ) -> Command {
        namespace_command(
            &self.name,
            &self.hosts_file,
            &self.resolv_conf,
            mounts,
            program,
        )
    }

    /// Runs a shell snippet inside the host and returns its standard output.
    pub fn sh(&self, script: &str) -> String {
        let out = self
            .command("sh")
            .args(["-c", script])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "`{script}` failed in {}:\n{}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What `up` may change and its teardown or `down` must restore: addresses, routes and
    /// the hosts file, taken now (before `up`).
    pub fn restorable(&self) -> Restorable {
        Restorable {
            addresses: self.addresses(),
            routes: self.routes(),
            hosts: std::fs::read_to_string(&self.hosts_file).unwrap_or_default(),
        }
    }

    /// Asserts routes, addresses and the hosts file are byte-identical to `before`; `when`
    /// names the moment in the failure message.
    pub fn assert_restored(&self, before: &Restorable, when: &str) {
        assert_eq!(self.routes(), before.routes, "{when}: routes not restored");
        assert_eq!(
            self.addresses(),
            before.addresses,
            "{when}: interfaces not restored"
        );
        assert_eq!(
            std::fs::read_to_string(&self.hosts_file).unwrap_or_default(),
            before.hosts,
            "{when}: /etc/hosts not restored byte for byte"
        );
    }

    /// The host's interfaces and addresses, for before/after comparisons.
    pub fn addresses(&self) -> String {
        output(Command::new("ip").args(["-n", &self.name, "-o", "addr", "show"]))
    }

    /// The host's routes (IPv4 and IPv6, all tables).
    pub fn routes(&self) -> String {
        let v4 =
            output(Command::new("ip").args(["-n", &self.name, "route", "show", "table", "all"]));
        let v6 = output(
            Command::new("ip").args(["-n", &self.name, "-6", "route", "show", "table", "all"]),
        );
        format!("{v4}{v6}")
    }

    /// Waits until eth0's IPv6 link-local address has finished duplicate address detection,
    /// so that "before" snapshots of addresses and routes are not taken mid-configuration.
    fn wait_for_ipv6_link_local(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            // The local route of the address appears last, once DAD has completed.
            let out = output(Command::new("ip").args([
                "-n", &self.name, "-6", "route", "show", "table", "local", "dev", "eth0",
            ]));
            if out.contains("local fe80::") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "eth0 in {} got no IPv6 link-local address:\n{out}",
                self.name
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Runs `f` on a thread that has joined this host's network namespace, so that sockets
    /// it opens live there (they stay there when handed back to the caller's thread).
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                    // SAFETY: setns(2) with a namespace descriptor we own; it changes only
                    // this thread's network namespace.
                    let rc = unsafe {
                        libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET)
                    };
                    assert_eq!(
                        rc,
                        0,
                        "setns into {path}: {}",
                        std::io::Error::last_os_error()
                    );
                    f()
                })
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// The scratch directory of this host (state and lock files can go here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        if let Some(peer) = &self.peer {
            let _ = Command::new("ip").args(["netns", "delete", peer]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command that runs `program` in network namespace `ns` and a private mount namespace with
/// `hosts` on `/etc/hosts`, `resolv` on `/etc/resolv.conf` and `mounts` bind-mounted.
fn namespace_command(
    ns: &str,
    hosts: &Path,
    resolv: &Path,
    mounts: &[(&Path, &str)],
    program: impl AsRef<std::ffi::OsStr>,
) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--"])
        .arg("sh")
        .arg("-c")
        .arg(r#"mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/resolv.conf || exit 1; ns="$2"; n="$3"; shift 3; while [ "$n" -gt 0 ]; do mount --bind "$1" "$2" || exit 1; shift 2; n=$((n-1)); done; exec ip netns exec "$ns" "$@""#)
        .arg(hosts)
        .arg(resolv)
        .arg(ns)
        .arg(mounts.len().to_string());
    for (source, target) in mounts {
        cmd.arg(source).arg(target);
    }
    cmd.arg(program);
    cmd
}

/// A "container": a network namespace one routed hop behind a test host, through a veth pair
/// (`c{index}` in the host, `eth0` inside) with link-local addresses 169.254.(80+index).1 (the
/// host's side, its default route) and 169.254.(80+index).2 (its own), the host forwarding
/// (a per-namespace sysctl: the test host's only). Its hosts file names
/// `metadata.google.internal` as GKE's DNS does. Deleted on drop.
pub struct Container {
    pub name: String,
    /// Its own address, the source of its connections.
    pub address: String,
    hosts_file: PathBuf,
    resolv_conf: PathBuf,
}

impl Container {
    /// Container `index` (0..=15) behind `host`.
    pub fn behind(host: &TestHost, index: u8) -> Container {
        assert!(index < 16, "container index {index} out of 0..=15");
        let name = format!("{}-c{index}", host.name);
        let net = 80 + index;
        let hosts_file = host.dir().join(format!("c{index}-hosts"));
        let hosts = format!(
            "{}169.254.169.254\tmetadata.google.internal\n",
            hosts_content()
        );
        std::fs::write(&hosts_file, hosts).unwrap_or_else(|e| panic!("{e}"));
        ip(&["netns", "add", &name]);
        let c = Container {
            name,
            address: format!("169.254.{net}.2"),
            hosts_file,
            resolv_conf: host.resolv_conf.clone(),
        };
        let (n, h, link) = (c.name.as_str(), host.name.as_str(), format!("c{index}"));
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&[
            "-n", h, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", n,
        ]);
        ip(&[
            "-n",
            h,
            "addr",
            "add",
            &format!("169.254.{net}.1/24"),
            "dev",
            &link,
        ]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/24", c.address),
            "dev",
            "eth0",
        ]);
        ip(&["-n", h, "link", "set", &link, "up"]);
        ip(&["-n", n, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            n,
            "route",
            "add",
            "default",
            "via",
            &format!("169.254.{net}.1"),
        ]);
        host.sh("sysctl -q -w net.ipv4.ip_forward=1");
        c
    }

    /// A command that runs `program` in the container, with its hosts file.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        namespace_command(
            &self.name,
            &self.hosts_file,
            &self.resolv_conf,
            &[],
            program,
        )
    }

    /// Runs `program args` in the container with an empty environment but PATH, HOME (`home`),
    /// no AWS configuration files, and `env`; returns the exit code and standard output.
    pub fn run(
        &self,
        home: &Path,
        env: &[(&str, &str)],
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> (Option<i32>, String) {
        let out = self
            .command("env")
            .arg("-i")
            .arg(format!(
                "PATH={}",
                std::env::var("PATH").unwrap_or_default()
            ))
            .arg(format!("HOME={}", home.display()))
            .arg("AWS_CONFIG_FILE=/dev/null")
            .arg("AWS_SHARED_CREDENTIALS_FILE=/dev/null")
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        if !out.stderr.is_empty() && !out.status.success() {
            eprintln!("{}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        }
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
