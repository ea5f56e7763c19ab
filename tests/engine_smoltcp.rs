//! Property test of the whole packet path without a TUN: a real TCP client (smoltcp's socket
//! on an smoltcp `Interface`) sends real metadata requests through the project's in-memory
//! device wrapped in the fault-injecting device (seeded loss, duplication, reordering and
//! delay in both directions) to the [`Engine`] — wire, TCP, HTTP and the snapshot of the
//! default configuration — on a simulated clock. Every response must arrive byte-exact (the
//! expected bytes come from the same snapshot), and no connection may be left in the engine
//! once everyone has closed and the timers have run.
//!
//! (`tests/tcp_smoltcp.rs` tests the TCP table alone with arbitrary payload sizes and MTUs;
//! this one tests the engine as `up` runs it.)

mod support;

use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use imds_tun::cloud::RequestContext;
use imds_tun::config;
use imds_tun::device::{Device as _, Fault, FaultConfig, FaultRates, Memory, MAX_PACKET};
use imds_tun::engine::Engine;
use imds_tun::http::exchange::{respond_all, Outgoing};
use imds_tun::snapshot::{Keys, Snapshot, SnapshotCell};
use imds_tun::tcp::TcpConfig;
use proptest::prelude::*;
use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::IpAddress;
use support::smoltcp_phy::{client_interface, set_clock_ms, tsval, ClientPhy};

const SERVER_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// The wall-clock time every request is answered at.
const WALL_SECS: u64 = 1_767_225_600;

/// Real requests of the three clouds (static and per-request answers alike).
const REQUESTS: [&str; 8] = [
    "GET /metadata/instance?api-version=2021-02-01 HTTP/1.1\r\nMetadata: true\r\n",
    "GET /metadata/instance/compute/vmId?api-version=2021-02-01&format=text HTTP/1.1\r\nMetadata: true\r\n",
    "GET /metadata/instance/compute HTTP/1.1\r\nMetadata: true\r\n",
    "GET /computeMetadata/v1/instance/?recursive=true HTTP/1.1\r\nMetadata-Flavor: Google\r\n",
    "GET /computeMetadata/v1/instance/nothing-here HTTP/1.1\r\nMetadata-Flavor: Google\r\n",
    "GET /latest/meta-data/ HTTP/1.1\r\n",
    "GET /latest/dynamic/instance-identity/document HTTP/1.1\r\n",
    "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n",
];

#[derive(Clone, Debug)]
struct ConnPlan {
    v6: bool,
    requests: Vec<usize>,
    pipelined: bool,
    /// The last request carries `Connection: close` (the server closes first).
    close_last: bool,
}

#[derive(Clone, Debug)]
struct Plan {
    seed: u64,
    loss: f64,
    dup: f64,
    reorder: f64,
    conns: Vec<ConnPlan>,
}

fn request_text(i: usize, close: bool) -> String {
    let close = if close { "Connection: close\r\n" } else { "" };
    format!("{}{close}\r\n", REQUESTS[i])
}

fn run(plan: &Plan) -> Result<(), String> {
    let no_env = |_: &str| None;
    let cfg = config::default_config(&no_env).map_err(|e| e.to_string())?;
    let keys = Keys::fixed(3);
    let snapshot = Snapshot::build(cfg, &keys, "test").map_err(|e| e.to_string())?;
    let cell = Arc::new(SnapshotCell::new(snapshot));
    let snapshot = cell.load();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_SECS);

    // The bytes each connection must receive, answered by the same snapshot.
    let expected_for = |peer: SocketAddr, local: SocketAddr, text: &str| {
        let ctx = RequestContext {
            now: wall,
            peer,
            local,
            door: Default::default(),
            wait_over: false,
        };
        let mut out: Vec<Outgoing> = Vec::new();
        respond_all(
            text.as_bytes(),
            &snapshot,
            &ctx,
            &snapshot.config.server.limits(),
            &mut out,
        );
        out.iter()
            .flat_map(|o| o.bytes.iter().copied())
            .collect::<Vec<u8>>()
    };

    let origin = std::time::Instant::now();
    let at = |ms: u64| origin + Duration::from_millis(ms);
    let (client_end, engine_end) = Memory::pair(4096);
    let mut client_end = client_end;
    let rates = FaultRates {
        drop: plan.loss,
        duplicate: plan.dup,
        reorder: plan.reorder,
        delay: plan.reorder,
        max_delay: Duration::from_millis(30),
    };
    let device = Fault::new(engine_end, FaultConfig::symmetric(plan.seed, rates));
    let mut tcp_cfg = TcpConfig::default();
    tcp_cfg
        .listen
        .insert(SocketAddr::new(IpAddr::V4(SERVER_V4), 80));
    tcp_cfg
        .listen
        .insert(SocketAddr::new(IpAddr::V6(SERVER_V6), 80));
    tcp_cfg.time_wait = Duration::from_secs(2);
    tcp_cfg.max_retransmits = 15;
    // smoltcp's minimum RTO is 1 s and it backs off from SYN retransmissions, so a first
    // request can take many seconds on a lossy link; the timeouts themselves are tested in
    // the TCP module's scripted tests.
    tcp_cfg.header_timeout = Duration::from_secs(300);
    tcp_cfg.idle_timeout = Duration::from_secs(600);
    let mut engine = Engine::new(device, tcp_cfg, [7; 16], Arc::clone(&cell), origin);

    let mut phy = ClientPhy::new(65535);
    let mut iface = client_interface(&mut phy)?;

    struct Client {
        handle: smoltcp::iface::SocketHandle,
        plan: ConnPlan,
        sent: usize,
        pending: Vec<u8>,
        received: Vec<u8>,
        /// Expected length after each response.
        boundaries: Vec<usize>,
        expected: Vec<u8>,
        closed: bool,
    }
    let mut sockets = SocketSet::new(vec![]);
    let mut clients = Vec::new();
    for (i, cp) in plan.conns.iter().enumerate() {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
        );
        s.set_nagle_enabled(false);
        s.set_tsval_generator(Some(tsval));
        let port = 40000 + i as u16;
        let (remote, peer, local) = if cp.v6 {
            (
                IpAddress::Ipv6(SERVER_V6),
                SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 2)),
                    port,
                ),
                SocketAddr::new(IpAddr::V6(SERVER_V6), 80),
            )
        } else {
            (
                IpAddress::Ipv4(SERVER_V4),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 0, 2)), port),
                SocketAddr::new(IpAddr::V4(SERVER_V4), 80),
            )
        };
        s.connect(iface.context(), (remote, 80), port)
            .map_err(|e| format!("{e:?}"))?;
        let mut expected = Vec::new();
        let mut boundaries = Vec::new();
        for (n, &r) in cp.requests.iter().enumerate() {
            let close = cp.close_last && n + 1 == cp.requests.len();
            expected.extend(expected_for(peer, local, &request_text(r, close)));
            boundaries.push(expected.len());
        }
        clients.push(Client {
            handle: sockets.add(s),
            plan: cp.clone(),
            sent: 0,
            pending: Vec::new(),
            received: Vec::new(),
            boundaries,
            expected,
            closed: false,
        });
    }

    let mut rx_buf = vec![0u8; MAX_PACKET];
    let mut now: u64 = 0;
    loop {
        set_clock_ms(now as u32 + 1);
        let snow = SInstant::from_millis(now as i64);
        while let Ok(Some(n)) = client_end.recv(at(now), &mut rx_buf) {
            phy.rx.push_back(rx_buf[..n].to_vec());
        }
        iface.poll(snow, &mut phy, &mut sockets);
        for (idx, c) in clients.iter_mut().enumerate() {
            let s = sockets.get_mut::<tcp::Socket>(c.handle);
            if s.can_recv() {
                let _ = s.recv(|buf| {
                    c.received.extend_from_slice(buf);
                    (buf.len(), ())
                });
            }
            if c.received.len() > c.expected.len()
                || c.expected[..c.received.len()] != c.received[..]
            {
                return Err(format!(
                    "conn {idx}: response bytes differ at {}:\n{}",
                    c.received.len(),
                    String::from_utf8_lossy(&c.received)
                ));
            }
            if s.may_send() {
                let total = c.plan.requests.len();
                while c.sent < total
                    && (c.plan.pipelined
                        || c.sent == 0
                        || c.received.len() >= c.boundaries[c.sent - 1])
                {
                    let close = c.plan.close_last && c.sent + 1 == total;
                    c.pending
                        .extend(request_text(c.plan.requests[c.sent], close).into_bytes());
                    c.sent += 1;
                }
                if !c.pending.is_empty() {
                    let sent = s.send_slice(&c.pending).unwrap_or(0);
                    c.pending.drain(..sent);
                }
            }
            let done = c.received.len() == c.expected.len() && c.pending.is_empty();
            if done && !c.closed && (!c.plan.close_last || !s.may_recv()) {
                s.close();
                c.closed = true;
            }
        }
        iface.poll(snow, &mut phy, &mut sockets);
        for p in phy.tx.drain(..) {
            let _ = client_end.send(at(now), &[IoSlice::new(&p)]);
        }

        engine
            .handle_ready(at(now), wall)
            .map_err(|e| e.to_string())?;
        engine.handle_timeout(at(now));
        engine.flush(at(now));

        let all_closed = clients.iter().all(|c| {
            let s = sockets.get::<tcp::Socket>(c.handle);
            c.closed && matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait)
        });
        if all_closed && engine.tcp().is_empty() {
            break;
        }
        if now > 3_000_000 {
            let states: Vec<_> = clients
                .iter()
                .map(|c| {
                    let s = sockets.get::<tcp::Socket>(c.handle);
                    (s.state(), c.received.len(), c.expected.len())
                })
                .collect();
            return Err(format!(
                "no completion by {now} ms: clients {states:?}, engine table {} ({:?}), tcp {:?}, engine {:?}",
                engine.tcp().len(),
                engine.tcp().class_counts(),
                engine.tcp().counters(),
                engine.counters()
            ));
        }
        let next = [
            (!phy.rx.is_empty() || client_end.pending() > 0).then_some(now + 1),
            engine
                .poll_at()
                .map(|t| t.saturating_duration_since(origin).as_millis() as u64),
            iface
                .poll_at(snow, &sockets)
                .map(|t| t.total_millis() as u64),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + 1000);
        now = next.max(now + 1);
    }
    for (i, c) in clients.iter().enumerate() {
        if c.received != c.expected {
            return Err(format!(
                "conn {i}: got {} bytes, expected {}",
                c.received.len(),
                c.expected.len()
            ));
        }
    }
    Ok(())
}

fn arb_conn() -> impl Strategy<Value = ConnPlan> {
    (
        any::<bool>(),
        prop::collection::vec(0..REQUESTS.len(), 1..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(v6, requests, pipelined, close_last)| ConnPlan {
            v6,
            requests,
            pipelined,
            close_last,
        })
}

fn arb_plan() -> impl Strategy<Value = Plan> {
    (
        any::<u64>(),
        0u32..=10,
        0u32..=5,
        0u32..=5,
        prop::collection::vec(arb_conn(), 1..5),
    )
        .prop_map(|(seed, loss, dup, reorder, conns)| Plan {
            seed,
            loss: f64::from(loss) / 100.0,
            dup: f64::from(dup) / 100.0,
            reorder: f64::from(reorder) / 100.0,
            conns,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_response_byte_exact_through_faults(plan in arb_plan()) {
        run(&plan).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn lossless_all_requests_on_every_connection_kind() {
    let conns = (0..4)
        .map(|k| ConnPlan {
            v6: k % 2 == 1,
            requests: (0..REQUESTS.len()).collect(),
            pipelined: k >= 2,
            close_last: k == 3,
        })
        .collect();
    let plan = Plan {
        seed: 1,
        loss: 0.0,
        dup: 0.0,
        reorder: 0.0,
        conns,
    };
    run(&plan).unwrap_or_else(|e| panic!("{e}"));
}
