//! Privileged: `up`'s host changes (device, source address, routes, hosts block, record,
//! lock) and their undo, each test in its own network namespace with temporary state and hosts
//! files. Fails (never skips) without root or /dev/net/tun; see `device_support`.

mod device_support;

use std::io::{BufRead, BufReader, IoSlice};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use device_support::{ipv4_checksum, Netns, TempDir};
use imds_tun::device::{
    down, Device, HostError, HostSetup, LockError, Paths, Plan, Record, Tun, DEFAULT_SOURCE_V4,
};

const HOSTS: &[u8] = b"127.0.0.1 localhost\r\n::1 localhost\r\n# no final newline";

fn plan(paths: &Paths) -> Plan {
    let mut plan = Plan::new("imds0");
    plan.paths = paths.clone();
    plan
}

/// Waits up to `ms` for the queue to become readable.
fn readable(q: &Tun, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: q.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

/// Reads packets until one matches, for up to 2 s.
fn read_until(q: &mut Tun, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 65535];
    while Instant::now() < deadline {
        if !readable(q, 100) {
            continue;
        }
        while let Some(n) = q.recv(Instant::now(), &mut buf).unwrap() {
            if pred(&buf[..n]) {
                return buf[..n].to_vec();
            }
        }
    }
    panic!("no matching packet on the TUN within 2 s");
}

#[test]
fn up_routes_metadata_through_the_tun_with_its_source_and_teardown_restores_all() {
    let ns = Netns::new();
    let tmp = TempDir::new();
    let paths = tmp.paths(HOSTS);
    ns.run(|| {
        let mut guard = HostSetup::apply(&plan(&paths)).expect("up");
        // The route, as the kernel resolves it from inside the namespace.
        let (ok, route) = ns.ip(&["route", "get", "169.254.169.254"]);
        assert!(ok, "{route}");
        assert!(route.contains("dev imds0"), "{route}");
        assert!(route.contains("src 169.254.255.1"), "{route}");
        // Nothing but lo and imds0, and the address only on imds0.
        let (_, addrs) = ns.ip(&["-o", "addr", "show"]);
        let with_src: Vec<_> = addrs
            .lines()
            .filter(|l| l.contains("169.254.255.1"))
            .collect();
        assert_eq!(with_src.len(), 1, "{addrs}");
        assert!(with_src[0].contains("imds0"), "{addrs}");
        // The hosts block is in place, first.
        let hosts = std::fs::read_to_string(&paths.hosts_file).unwrap();
        assert!(
            hosts.starts_with("# BEGIN imds-tun device=imds0 pid="),
            "{hosts}"
        );
        assert!(hosts.contains("\n169.254.169.254 metadata.google.internal metadata\n"));
        // The record lists what was done.
        let rec = Record::load(&paths.state_dir, "imds0").unwrap().unwrap();
        assert_eq!(rec.pid, std::process::id());
        assert_eq!(rec.ifindex, guard.ifindex());
        assert_eq!(rec.routes.len(), 1);
        assert_eq!(rec.addresses.len(), 1);

        // A datagram to the metadata address arrives on the TUN, from the chosen source.
        let mut queues = guard.take_queues();
        let q = &mut queues[0];
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sock.send_to(b"ping", "169.254.169.254:80").unwrap();
        let pkt = read_until(q, |p| p.len() >= 28 && p[0] >> 4 == 4 && p[9] == 17);
        assert_eq!(&pkt[12..16], &DEFAULT_SOURCE_V4.octets());
        assert_eq!(&pkt[16..20], &[169, 254, 169, 254]);
        assert_eq!(&pkt[22..24], &80u16.to_be_bytes());
        assert_eq!(&pkt[28..], b"ping");

        // A reply written to the TUN as header + payload slices reaches the socket
        // (rp_filter accepts it: the reverse route points at the TUN).
        let client_port = [pkt[20], pkt[21]];
        let payload = b"pong";
        let total = (20 + 8 + payload.len()) as u16;
        let mut hdr = vec![0x45, 0];
        hdr.extend_from_slice(&total.to_be_bytes());
        hdr.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        hdr.extend_from_slice(&[169, 254, 169, 254]);
        hdr.extend_from_slice(&DEFAULT_SOURCE_V4.octets());
        let c = ipv4_checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        hdr.extend_from_slice(&80u16.to_be_bytes());
        hdr.extend_from_slice(&client_port);
        hdr.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        hdr.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
        q.send(Instant::now(), &[IoSlice::new(&hdr), IoSlice::new(payload)])
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = sock.recv_from(&mut buf).expect("reply through the TUN");
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)));

        // Teardown while the "engine" still holds the queue: everything goes anyway.
        let report = guard.teardown().expect("teardown");
        assert!(
            report.undone.iter().any(|u| u.starts_with("device imds0")),
            "{report:?}"
        );
        let (ok, _) = ns.ip(&["link", "show", "imds0"]);
        assert!(!ok, "device must be gone");
        let (ok, route) = ns.ip(&["route", "get", "169.254.169.254"]);
        assert!(!ok || !route.contains("imds0"), "{route}");
        assert_eq!(std::fs::read(&paths.hosts_file).unwrap(), HOSTS);
        assert!(Record::load(&paths.state_dir, "imds0").unwrap().is_none());
        drop(queues);
        // And `down` on the clean host has nothing to do.
        let report = down("imds0", &paths).unwrap();
        assert!(report.nothing_to_do(), "{report}");
        assert_eq!(report.to_string(), "nothing to do");
    });
}

#[test]
fn ipv6_and_extra_addresses_are_routed_with_their_own_sources() {
    let ns = Netns::new();
    let tmp = TempDir::new();
    let paths = tmp.paths(b"");
    ns.run(|| {
        let mut p = plan(&paths);
        p.routes.push("169.254.170.2".parse().unwrap());
        p.routes.push("fd00:ec2::254".parse().unwrap());
        p.hosts_lines = None;
        let guard = HostSetup::apply(&p).expect("up with IPv6");
        let (_, r) = ns.ip(&["route", "get", "169.254.170.2"]);
        assert!(
            r.contains("dev imds0") && r.contains("src 169.254.255.1"),
            "{r}"
        );
        let (ok, r) = ns.ip(&["-6", "route", "get", "fd00:ec2::254"]);
        assert!(ok, "{r}");
        assert!(
            r.contains("dev imds0") && r.contains("src fe80::a9fe:ff01"),
            "{r}"
        );
        // The hosts file was left alone.
        assert!(std::fs::read(&paths.hosts_file).unwrap().is_empty());
        guard.teardown().unwrap();
        let (ok, _) = ns.ip(&["link", "show", "imds0"]);
        assert!(!ok);
    });
}

#[test]
fn second_up_fails_naming_the_running_pid() {
    let ns = Netns::new();
    let tmp = TempDir::new();
    let paths = tmp.paths(HOSTS);
    ns.run(|| {
        let guard = HostSetup::apply(&plan(&paths)).unwrap();
        let err = HostSetup::apply(&plan(&paths)).unwrap_err();
        let me = std::process::id();
        assert!(
            matches!(&err, HostError::Locked(LockError::Held { pid: Some(p), .. }) if *p == me),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("pid {me}")), "{err}");
        // The failed attempt changed nothing: still exactly one block, device still up.
        let hosts = std::fs::read_to_string(&paths.hosts_file).unwrap();
        assert_eq!(hosts.matches("# BEGIN imds-tun").count(), 1);
        let (ok, _) = ns.ip(&["link", "show", "imds0"]);
        assert!(ok);
        // `down` refuses to signal its own process.
        assert!(matches!(
            down("imds0", &paths),
            Err(HostError::Running { .. })
        ));
        drop(guard);
        assert_eq!(std::fs::read(&paths.hosts_file).unwrap(), HOSTS);
    });
}

/// Not a test on its own: the body of the child process the crash tests start and kill.
#[test]
fn helper_child_up() {
    let (Ok(state), Ok(hosts)) = (
        std::env::var("IMDSTUN_CHILD_STATE"),
        std::env::var("IMDSTUN_CHILD_HOSTS"),
    ) else {
        return;
    };
    let paths = Paths {
        state_dir: state.into(),
        hosts_file: hosts.into(),
    };
    let guard = HostSetup::apply(&plan(&paths)).expect("child up");
    println!("READY {}", guard.ifindex().unwrap_or(0));
    std::thread::sleep(Duration::from_secs(60));
    drop(guard);
}

/// Starts `up` in a child process (inheriting this thread's namespace) and waits until it is
/// ready.
fn spawn_up(paths: &Paths) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_child_up",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("IMDSTUN_CHILD_STATE", &paths.state_dir)
        .env("IMDSTUN_CHILD_HOSTS", &paths.hosts_file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let ready = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("READY"));
    assert!(ready, "child up never became ready");
    child
}

#[test]
fn killed_up_is_cleaned_by_down_and_a_new_up_starts_anyway() {
    let ns = Netns::new();
    let tmp = TempDir::new();
    let paths = tmp.paths(HOSTS);
    ns.run(|| {
        // SIGKILL: no destructor runs.
        let mut child = spawn_up(&paths);
        child.kill().unwrap();
        child.wait().unwrap();
        // The kernel removed the device (and with it routes and address) ...
        let (ok, _) = ns.ip(&["link", "show", "imds0"]);
        assert!(!ok);
        // ... but the hosts block and the record are left.
        assert_ne!(std::fs::read(&paths.hosts_file).unwrap(), HOSTS);
        assert!(Record::load(&paths.state_dir, "imds0").unwrap().is_some());

        let report = down("imds0", &paths).expect("down after a crash");
        assert!(!report.nothing_to_do());
        assert!(
            report
                .teardown
                .undone
                .iter()
                .any(|u| u.starts_with("hosts block")),
            "{report}"
        );
        assert_eq!(std::fs::read(&paths.hosts_file).unwrap(), HOSTS);
        assert!(Record::load(&paths.state_dir, "imds0").unwrap().is_none());
        assert!(down("imds0", &paths).unwrap().nothing_to_do());

        // Crash again; this time the next `up` cleans up by itself and starts.
        let mut child = spawn_up(&paths);
        child.kill().unwrap();
        child.wait().unwrap();
        let guard = HostSetup::apply(&plan(&paths)).expect("up after a crash");
        let stale = guard.stale_cleanup().unwrap();
        assert!(
            stale.undone.iter().any(|u| u.starts_with("hosts block")),
            "{stale:?}"
        );
        let hosts = std::fs::read_to_string(&paths.hosts_file).unwrap();
        assert_eq!(hosts.matches("# BEGIN imds-tun").count(), 1, "{hosts}");
        assert!(hosts.contains(&format!("pid={} ", std::process::id())));
        drop(guard);
        assert_eq!(std::fs::read(&paths.hosts_file).unwrap(), HOSTS);
    });
}

#[test]
fn down_stops_a_running_up_and_cleans_after_it() {
    let ns = Netns::new();
    let tmp = TempDir::new();
    let paths = tmp.paths(HOSTS);
    ns.run(|| {
        let mut child = spawn_up(&paths);
        let pid = child.id();
        // The helper dies of SIGTERM without cleaning up (default action): `down` must still
        // leave the host clean.
        let reaper = std::thread::spawn(move || child.wait());
        let report = down("imds0", &paths).expect("down with up running");
        assert_eq!(report.stopped_pid, Some(pid));
        let _ = reaper.join();
        assert_eq!(std::fs::read(&paths.hosts_file).unwrap(), HOSTS);
        let (ok, _) = ns.ip(&["link", "show", "imds0"]);
        assert!(!ok);
        assert!(down("imds0", &paths).unwrap().nothing_to_do());
    });
}

#[test]
fn down_leaves_an_unrecorded_interface_of_that_name_alone() {
    let ns = Netns::new();
    let tmp = TempDir::new();
    let paths = tmp.paths(HOSTS);
    ns.run(|| {
        let (ok, out) = ns.ip(&["tuntap", "add", "dev", "imds0", "mode", "tun"]);
        assert!(ok, "{out}");
        let report = down("imds0", &paths).unwrap();
        assert!(
            report
                .teardown
                .notes
                .iter()
                .any(|n| n.contains("left alone")),
            "{report}"
        );
        let (ok, _) = ns.ip(&["link", "show", "imds0"]);
        assert!(ok, "someone else's interface must survive `down`");
        // And `up` refuses the taken name without touching anything.
        let err = HostSetup::apply(&plan(&paths)).unwrap_err();
        assert!(err.to_string().contains("persistent TUN"), "{err}");
        assert_eq!(std::fs::read(&paths.hosts_file).unwrap(), HOSTS);
        assert!(Record::load(&paths.state_dir, "imds0").unwrap().is_none());
    });
}
