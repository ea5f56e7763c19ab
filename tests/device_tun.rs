//! Privileged: the TUN device itself, in a throw-away network namespace.
//!
//! Fails (never skips) without root or /dev/net/tun; see `device_support`.

mod device_support;

use std::io::IoSlice;
use std::process::Command;
use std::time::Instant;

use device_support::Netns;
use imds_tun::device::{Device, Tun, TunConfig, TunError};

fn cat_in(ns: &Netns, path: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "cat", path])
        .output()
        .expect("ip netns exec cat");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tun_is_created_with_mtu_txqueuelen_up_and_ipv6_off() {
    let ns = Netns::new();
    ns.run(|| {
        let queues = Tun::create(&TunConfig::default()).expect("creating imds0");
        assert_eq!(queues.len(), 1);
        let (ok, link) = ns.ip(&["-d", "link", "show", "imds0"]);
        assert!(ok, "{link}");
        assert!(link.contains("mtu 65535"), "{link}");
        assert!(link.contains("qlen 10000"), "{link}");
        assert!(link.contains(",UP"), "{link}");
        assert!(link.contains("tun type tun pi off"), "{link}");
        // Not persistent: the kernel deletes it with our last fd.
        assert!(link.contains("persist off"), "{link}");
        assert_eq!(
            cat_in(&ns, "/proc/sys/net/ipv6/conf/imds0/disable_ipv6"),
            "1"
        );
        // IPv6 off: no router solicitation or MLD noise at link-up.
        let mut q = queues;
        let mut buf = vec![0u8; 65535];
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(q[0].recv(Instant::now(), &mut buf).unwrap(), None);
        drop(q);
        let (ok, _) = ns.ip(&["link", "show", "imds0"]);
        assert!(!ok, "device must vanish when its last fd closes");
    });
}

#[test]
fn multiqueue_gives_one_fd_per_queue_on_one_device() {
    let ns = Netns::new();
    ns.run(|| {
        let config = TunConfig {
            queues: 3,
            ..TunConfig::default()
        };
        let queues = Tun::create(&config).expect("creating a 3-queue device");
        assert_eq!(queues.len(), 3);
        assert!(queues.iter().all(|q| q.index() == queues[0].index()));
        let (_, link) = ns.ip(&["-d", "link", "show", "imds0"]);
        assert!(link.contains("multi_queue"), "{link}");
        assert!(
            link.contains("numtxqueues 3") || link.contains("numrxqueues"),
            "{link}"
        );
        // Writes work from any queue: an IPv4 packet the kernel will drop is still accepted.
        let mut q = queues;
        let hdr = [
            0x45u8, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0, 169, 254, 169, 254, 169, 254, 255, 1,
        ];
        for dev in &mut q {
            dev.send(Instant::now(), &[IoSlice::new(&hdr)]).unwrap();
        }
    });
}

#[test]
fn taken_names_get_one_line_errors_that_say_what_to_do() {
    let ns = Netns::new();
    ns.run(|| {
        // A TUN someone holds (here: ourselves).
        let held = Tun::create(&TunConfig::default()).unwrap();
        let err = Tun::create(&TunConfig::default()).unwrap_err();
        let me = std::process::id();
        assert!(matches!(err, TunError::NameTaken { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("held by pid {me}")), "{msg}");
        assert!(msg.contains("--device"), "{msg}");
        assert!(!msg.contains('\n'));
        drop(held);

        // A persistent TUN nobody holds.
        let (ok, out) = ns.ip(&["tuntap", "add", "dev", "imds0", "mode", "tun"]);
        assert!(ok, "{out}");
        let msg = Tun::create(&TunConfig::default()).unwrap_err().to_string();
        assert!(msg.contains("persistent TUN"), "{msg}");
        assert!(msg.contains("ip link delete imds0"), "{msg}");
        let (ok, out) = ns.ip(&["link", "delete", "imds0"]);
        assert!(ok, "{out}");

        // Not a TUN at all.
        let (ok, out) = ns.ip(&[
            "link", "add", "imds0", "type", "veth", "peer", "name", "imds0p",
        ]);
        assert!(ok, "{out}");
        let msg = Tun::create(&TunConfig::default()).unwrap_err().to_string();
        assert!(msg.contains("a veth interface"), "{msg}");
        // And the veth was not touched.
        let (ok, _) = ns.ip(&["link", "show", "imds0"]);
        assert!(ok);

        let bad = TunConfig {
            name: "a/b".into(),
            ..TunConfig::default()
        };
        assert!(matches!(Tun::create(&bad), Err(TunError::BadName { .. })));
    });
}
