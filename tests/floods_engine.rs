//! Floods and exhaustion through the engine, deterministic and fast: the in-memory device, a
//! simulated clock, scripted clients (`support::scripted_net`). Each test pushes one kind of
//! abuse through the whole packet path (wire, TCP table, HTTP, snapshot) and checks that
//! memory stays bounded, that a legitimate client is still answered, and that the shedding
//! is counted. `tests/floods_up.rs` repeats the SYN flood against `up` through a real TUN.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use imds_tun::tcp::TcpConfig;
use support::scripted_net::{Net, Sources};

const REQUEST: &[u8] =
    b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The client has one whole 200 response: the status line, and as many body bytes after the
/// head as its Content-Length says.
fn answered(net: &Net, src: SocketAddr) -> bool {
    let r = &net.client(src).received;
    let text = String::from_utf8_lossy(r);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse::<usize>().ok());
    head.starts_with("HTTP/1.1 200 OK\r\n") && length == Some(body.len()) && body.starts_with("i-")
}

/// 100,000 SYNs from random link-local addresses and ports, with a legitimate client
/// connecting in the middle: the table never holds more than the half-open bound, and the
/// client's request is answered in the same round trip as without the flood.
#[test]
fn syn_flood_keeps_memory_bounded_and_answers() {
    const FLOOD: usize = 100_000;
    const CHUNK: usize = 500;
    let tcp = TcpConfig::default();
    let max_half_open = tcp.max_half_open;
    let mut net = Net::new(tcp);
    let legit = addr("169.254.1.1:40000");
    let mut sources = Sources::new(7);
    let started = Instant::now();
    let mut peak = 0;
    let mut legit_answered_at = None;
    for chunk in 0..FLOOD / CHUNK {
        for src in sources.by_ref().take(CHUNK) {
            net.flood_syn(src);
        }
        if chunk == FLOOD / CHUNK / 2 {
            net.connect(legit);
        }
        if net.clients.get(&legit).is_some_and(|c| c.established)
            && net.client(legit).snd_nxt == 1001
        {
            net.send(legit, REQUEST);
        }
        net.step(Duration::from_millis(chunk as u64));
        peak = peak.max(net.engine.tcp().len());
        if legit_answered_at.is_none() && net.clients.contains_key(&legit) && answered(&net, legit)
        {
            legit_answered_at = Some(chunk);
        }
    }
    let took = started.elapsed();
    let counters = net.engine.tcp().counters().clone();
    eprintln!(
        "{FLOOD} SYNs in {took:?}; peak table {peak}; recycled {}; legit answered at chunk {:?}",
        counters.half_open_recycled, legit_answered_at
    );
    assert!(
        peak <= max_half_open + 1,
        "the table grew past the half-open bound: {peak}"
    );
    // Every SYN got an entry; all but the bound's worth (and the legitimate one) were
    // recycled.
    let (half_open, established, _) = net.engine.tcp().class_counts();
    assert_eq!(half_open, max_half_open);
    assert_eq!(
        counters.half_open_recycled,
        counters.connections_accepted - (half_open + established) as u64,
        "{counters:?}"
    );
    // Connected at chunk 100, request sent the chunk after its handshake, answered at once.
    assert!(
        legit_answered_at.is_some_and(|c| c <= FLOOD / CHUNK / 2 + 2),
        "the legitimate request was not answered during the flood: {:?} {:?}",
        legit_answered_at,
        net.client(legit)
    );
    assert!(!net.client(legit).reset);
    assert!(
        net.unclaimed >= FLOOD as u64,
        "every flood SYN got its SYN-ACK"
    );
}

/// Hundreds of connections trickling a request a byte a second: the header timeout closes
/// each of them 10 s after its first byte, the per-source bound keeps one address from taking
/// more than its share, and a client from elsewhere is answered meanwhile.
#[test]
fn slowloris_is_cut_off_and_others_are_served() {
    const SLOW: u16 = 500;
    let tcp = TcpConfig {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_per_source: 200,
        ..TcpConfig::default()
    };
    let mut net = Net::new(tcp);
    let slow: Vec<SocketAddr> = (0..SLOW)
        .map(|p| SocketAddr::new(addr("169.254.7.7:1").ip(), 20_000 + p))
        .collect();
    for &s in &slow {
        net.connect(s);
    }
    net.step(Duration::ZERO);
    let accepted: Vec<SocketAddr> = slow
        .iter()
        .copied()
        .filter(|s| net.client(*s).established)
        .collect();
    assert_eq!(accepted.len(), 200, "the per-source bound");
    assert_eq!(net.engine.tcp().counters().syn_dropped_per_source, 300);
    // One byte a second for 12 s (the request is longer than that).
    let legit = addr("169.254.8.8:40000");
    for second in 0..12u64 {
        for &s in &accepted {
            if !net.client(s).fin && !net.client(s).reset {
                net.send(s, &REQUEST[second as usize..second as usize + 1]);
            }
        }
        if second == 5 {
            net.connect(legit);
            net.step(Duration::from_secs(second));
            net.send(legit, REQUEST);
        }
        net.step(Duration::from_secs(second));
        if second == 5 {
            assert!(answered(&net, legit), "{:?}", net.client(legit));
        }
    }
    net.step(Duration::from_secs(13));
    let c = net.engine.tcp().counters().clone();
    assert_eq!(c.header_timeouts, 200, "{c:?}");
    for &s in &accepted {
        let cl = net.client(s);
        assert!(cl.fin || cl.reset, "still open: {s}");
        assert!(cl.received.is_empty(), "a trickled request was answered");
    }
    // Only the legitimate keep-alive connection is still synchronized.
    assert_eq!(net.engine.tcp().class_counts().1, 1);
}

/// 10,000 keep-alive clients, each after one request, idle: all are held; the next client at
/// a bound of 10,000 evicts the one idle longest (reset, counted) and is served; the idle
/// timeout then closes every one of them.
#[test]
fn ten_thousand_idle_connections_are_held_then_shed_by_policy() {
    const IDLE: usize = 10_000;
    let tcp = TcpConfig {
        max_established: IDLE,
        max_per_source: IDLE,
        idle_timeout: Duration::from_secs(60),
        ..TcpConfig::default()
    };
    let mut net = Net::new(tcp);
    let clients: Vec<SocketAddr> = (0..IDLE)
        .map(|i| {
            let ip = std::net::Ipv4Addr::new(169, 254, 20 + (i / 1000) as u8, 1);
            SocketAddr::new(ip.into(), 10_000 + (i % 1000) as u16)
        })
        .collect();
    for (i, &c) in clients.iter().enumerate() {
        // Each second a thousand clients connect and ask once: the first thousand are oldest.
        let at = Duration::from_secs(1 + (i / 1000) as u64);
        net.connect(c);
        net.step(at);
        net.send(c, REQUEST);
    }
    net.step(Duration::from_secs(12));
    assert!(clients.iter().all(|&c| answered(&net, c)));
    assert_eq!(net.engine.tcp().class_counts(), (0, IDLE, 0), "all held");
    assert_eq!(net.engine.tcp().counters().idle_evicted, 0);

    let late = addr("169.254.99.1:40000");
    net.connect(late);
    net.step(Duration::from_secs(13));
    net.send(late, REQUEST);
    net.step(Duration::from_secs(13));
    assert!(answered(&net, late), "{:?}", net.client(late));
    assert_eq!(net.engine.tcp().counters().idle_evicted, 1);
    let evicted: Vec<_> = clients.iter().filter(|&&c| net.client(c).reset).collect();
    assert_eq!(evicted.len(), 1);
    assert!(
        clients[..1000].contains(evicted[0]),
        "the evicted one was not among the oldest: {:?}",
        evicted[0]
    );
    assert_eq!(net.engine.tcp().class_counts().1, IDLE);

    // Past the idle timeout of the youngest, everybody has been closed with a FIN.
    net.step(Duration::from_secs(13 + 61));
    let c = net.engine.tcp().counters().clone();
    assert_eq!(c.idle_timeouts, IDLE as u64, "{c:?}");
    assert_eq!(net.engine.tcp().class_counts().1, 0);
}
