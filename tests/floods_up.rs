//! A SYN flood against `up` through a real TUN, as root in a test host: a raw-socket injector
//! (IP_HDRINCL, spoofed random link-local sources and ports) sends SYNs to 169.254.169.254
//! while a legitimate client keeps asking for metadata over fresh connections. The legitimate
//! requests must each be answered within 1 s, and `up`'s peak RSS must stay bounded.
//!
//! The count is `IMDS_TUN_FLOOD_SYNS` (default 100,000, the CI variant) and the rate
//! `IMDS_TUN_FLOOD_RATE` SYNs per second (default 15,000: below what a debug build of `up`
//! handles on one queue, about 25,000/s here). A flood faster than `up` can read overflows the
//! TUN queue in the kernel, which then drops packets without looking at them, legitimate SYNs
//! included, and a dropped SYN costs its client the kernel's 1 s SYN retransmission; no TCP
//! of ours can change that, so the bound holds at rates `up` keeps up with.
//! `tests/flood-long COUNT [RATE]` runs it with a release build, a million SYNs or more, and
//! prints the figures the README records.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imds_tun::wire::{self, SegmentHeader, TcpFlags, TcpOptions};
use support::netns::{Shape, TestHost};
use support::scripted_net::Sources;
use support::up::Up;

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80);

/// `VmHWM` (peak) and `VmRSS` of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (kib("VmHWM:"), kib("VmRSS:"))
}

/// Sends `count` spoofed SYNs at `rate` per second through a raw socket of the calling
/// thread's namespace; returns how many the kernel took.
fn inject(count: usize, rate: u64, seed: u64) -> usize {
    // SAFETY: socket(2) with constant arguments; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([169, 254, 169, 254]),
        },
        sin_zero: [0; 8],
    };
    let mut buf = [0u8; 64];
    let mut sent = 0;
    let start = Instant::now();
    for (i, src) in Sources::new(seed).take(count).enumerate() {
        if i % 100 == 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let h = SegmentHeader {
            src,
            dst: SERVER,
            seq: 1,
            ack: 0,
            flags: TcpFlags::SYN,
            window: 65535,
            options: TcpOptions {
                mss: Some(1460),
                ..TcpOptions::default()
            },
            hop_limit: 64,
        };
        let n = wire::emit_segment_with_payload(&h, &[], &mut buf)
            .unwrap_or_else(|e| panic!("emit: {e:?}"));
        // SAFETY: sendto(2) with a valid buffer of `n` bytes and a sockaddr_in of its size.
        let rc = unsafe {
            libc::sendto(
                fd,
                buf.as_ptr().cast(),
                n,
                0,
                (&dst as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc == n as isize {
            sent += 1;
        }
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    sent
}

/// One request on a fresh connection; its latency.
fn legit_request() -> Result<Duration, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&SERVER, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| format!("read: {e}"))?;
    if !body.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {body:?}"));
    }
    Ok(start.elapsed())
}

#[test]
fn syn_flood_through_the_tun_leaves_memory_bounded_and_answers_within_a_second() {
    let count: usize = std::env::var("IMDS_TUN_FLOOD_SYNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rate: u64 = std::env::var("IMDS_TUN_FLOOD_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15_000);
    let host = TestHost::new(Shape::LoopbackOnly);
    let log = host.dir().join("up.log");
    let up = Up::start_logged(&host, ["--threads", "1"], &log);
    let pid = up.child.id();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim(),
        "imds-tun"
    );
    // A few requests first, so the baseline includes what serving costs anyway.
    for _ in 0..20 {
        host.in_netns(legit_request)
            .unwrap_or_else(|e| panic!("before the flood: {e}"));
    }
    let (baseline, _) = memory(pid);

    let flooding = AtomicBool::new(true);
    let started = Instant::now();
    let (sent, latencies) = std::thread::scope(|scope| {
        let injector = scope.spawn(|| {
            let sent = host.in_netns(|| inject(count, rate, 11));
            flooding.store(false, Ordering::SeqCst);
            sent
        });
        let mut latencies = Vec::new();
        // At least a few requests, and one every 50 ms while the flood lasts.
        while flooding.load(Ordering::SeqCst) || latencies.len() < 5 {
            let l = host
                .in_netns(legit_request)
                .unwrap_or_else(|e| panic!("during the flood: {e}"));
            latencies.push(l);
            std::thread::sleep(Duration::from_millis(50));
        }
        let sent = injector
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (sent, latencies)
    });
    let flood_time = started.elapsed();
    let (peak, rss) = memory(pid);
    drop(up);
    let worst = latencies.iter().max().copied().unwrap_or_default();
    let exit = std::fs::read_to_string(&log).unwrap_or_default();
    let counter = |name: &str| -> u64 {
        exit.lines()
            .filter(|l| l.contains("at exit"))
            .filter_map(|l| {
                let rest = &l[l.find(&format!("{name}: "))? + name.len() + 2..];
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let seen = counter("connections_accepted");
    eprintln!(
        "flood: {sent} of {count} SYNs sent at {rate}/s in {flood_time:?}; up accepted {seen} SYNs, recycled \
         {}; legitimate requests: {} answered, worst {worst:?}; RSS baseline {baseline} KiB, \
         peak {peak} KiB, after {rss} KiB",
        counter("half_open_recycled"),
        latencies.len()
    );
    assert!(
        sent * 10 >= count * 9,
        "the injector sent only {sent} of {count}"
    );
    assert!(
        seen as usize * 10 >= sent * 9,
        "up saw only {seen} of {sent} SYNs: the flood did not reach it (or the rate is above what it reads)"
    );
    assert!(
        worst < Duration::from_secs(1),
        "a legitimate request took {worst:?}"
    );
    // The half-open table is bounded (1024 entries of well under 1 KiB); allow the allocator
    // and the TUN's buffers their slack, but nothing that grows with the flood.
    assert!(
        peak < baseline + 32 * 1024,
        "peak RSS {peak} KiB against a baseline of {baseline} KiB"
    );
}
