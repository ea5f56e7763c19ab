//! Property test: a real TCP client (smoltcp's socket on an smoltcp `Interface` with a
//! medium-ip in-memory device) talks HTTP-like requests to our `ConnTable` through a lossy,
//! duplicating, reordering in-memory link, on a simulated clock. Every response must arrive
//! byte-exact, and the table must be empty once everyone has closed and timers have run.
//!
//! The engine as a whole, through the project's in-memory and fault-injecting devices, is
//! tested in `tests/engine_smoltcp.rs`; this test uses its own small seeded lossy link (`Link`)
//! so that it depends only on `wire` and `tcp`.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use imds_tun::tcp::{ConnId, ConnTable, Instant, TcpConfig, Transmit};
use imds_tun::wire::{parse, Packet, PartialSum};
use proptest::prelude::*;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::IpAddress;
use support::smoltcp_phy::{client_interface, set_clock_ms, tsval, ClientPhy};

const SERVER_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, percent: u32) -> bool {
        (self.next() % 100) < u64::from(percent)
    }
}

/// One direction of the link: loss, duplication and reordering (random extra delay).
struct Link {
    queue: Vec<(u64, u64, Vec<u8>)>, // (deliver at ms, tiebreak, packet)
    loss: u32,
    dup: u32,
    reorder: u32,
    counter: u64,
}

impl Link {
    fn new(loss: u32, dup: u32, reorder: u32) -> Link {
        Link {
            queue: Vec::new(),
            loss,
            dup,
            reorder,
            counter: 0,
        }
    }
    fn push(&mut self, now: u64, pkt: Vec<u8>, rng: &mut Rng) {
        let copies = if rng.chance(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            if rng.chance(self.loss) {
                continue;
            }
            let delay = 1 + if rng.chance(self.reorder) {
                rng.next() % 30
            } else {
                0
            };
            self.counter += 1;
            self.queue.push((now + delay, self.counter, pkt.clone()));
        }
    }
    fn pop_due(&mut self, now: u64) -> Vec<Vec<u8>> {
        self.queue.sort_by_key(|(at, c, _)| (*at, *c));
        let n = self
            .queue
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .count();
        self.queue.drain(..n).map(|(_, _, p)| p).collect()
    }
    fn next_at(&self) -> Option<u64> {
        self.queue.iter().map(|(at, _, _)| *at).min()
    }
}

/// The deterministic response to request `n` of `len` body bytes.
fn response(conn: usize, n: usize, len: usize, close: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    r.extend((0..len).map(|i| (i * 31 + n * 7 + conn * 13) as u8));
    r
}

fn request(conn: usize, n: usize, len: usize, close: bool) -> Vec<u8> {
    format!(
        "GET /c{conn}/r{n}/len{len} HTTP/1.1\r\nHost: 169.254.169.254\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

/// The test app on the server: parses complete requests, answers each, closes when asked or
/// when the client has closed.
#[derive(Default)]
struct App {
    closed: bool,
}

fn serve(t: &mut ConnTable<App>, id: ConnId) {
    loop {
        let data = t.recv_data(id);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            break;
        };
        let text = String::from_utf8_lossy(&data[..end]).into_owned();
        let close = text.contains("Connection: close");
        let first = text.split(' ').nth(1).unwrap_or("");
        let parts: Vec<&str> = first.trim_start_matches('/').split('/').collect();
        let num =
            |p: &str, prefix: &str| p.trim_start_matches(prefix).parse::<usize>().unwrap_or(0);
        let (c, n, len) = (num(parts[0], "c"), num(parts[1], "r"), num(parts[2], "len"));
        t.consume(id, end + 4);
        if t.app(id).is_some_and(|a| a.closed) {
            continue;
        }
        let resp = response(c, n, len, close);
        // Alternate shapes: one chunk with a precomputed sum (the zero-copy path), or header
        // and body as separate chunks (the scratch-copy path when they share a segment).
        if n % 2 == 0 {
            let sum = PartialSum::of(&resp);
            let _ = t.send(id, Bytes::from(resp), Some(sum), None);
        } else {
            let split = resp.len() - len;
            let b = Bytes::from(resp);
            let _ = t.send(id, b.slice(..split), None, None);
            let _ = t.send(id, b.slice(split..), None, None);
        }
        if close {
            t.close(id);
            if let Some(a) = t.app_mut(id) {
                a.closed = true;
            }
        }
    }
    if t.recv_closed(id) && !t.app(id).is_some_and(|a| a.closed) {
        t.close(id);
        if let Some(a) = t.app_mut(id) {
            a.closed = true;
        }
    }
}

#[derive(Clone, Debug)]
struct ConnPlan {
    v6: bool,
    /// Body lengths of the requests.
    sizes: Vec<usize>,
    /// Send all requests at once rather than one after the other's response.
    pipelined: bool,
    /// The last request carries `Connection: close` (server closes first); otherwise the
    /// client closes after the last response.
    server_closes: bool,
}

#[derive(Clone, Debug)]
struct Plan {
    seed: u64,
    loss: u32,
    dup: u32,
    reorder: u32,
    mtu: usize,
    timestamps: bool,
    conns: Vec<ConnPlan>,
}

struct Client {
    handle: SocketHandle,
    plan: ConnPlan,
    sent_requests: usize,
    pending: Vec<u8>,
    received: Vec<u8>,
    expected: Vec<u8>,
    closed: bool,
}

impl Client {
    fn expected_len_after(&self, n: usize, idx: usize) -> usize {
        (0..n)
            .map(|i| response(idx, i, self.plan.sizes[i], self.is_close(i)).len())
            .sum()
    }
    fn is_close(&self, i: usize) -> bool {
        self.plan.server_closes && i + 1 == self.plan.sizes.len()
    }
}

fn run(plan: &Plan) -> Result<(), String> {
    let mut rng = Rng(plan.seed | 1);
    let mut c2s = Link::new(plan.loss, plan.dup, plan.reorder);
    let mut s2c = Link::new(plan.loss, plan.dup, plan.reorder);
    let mut dev = ClientPhy::new(plan.mtu);

    let mut cfg = TcpConfig::default();
    cfg.listen
        .insert(SocketAddr::new(IpAddr::V4(SERVER_V4), 80));
    cfg.listen
        .insert(SocketAddr::new(IpAddr::V6(SERVER_V6), 80));
    cfg.time_wait = Duration::from_secs(2);
    cfg.max_retransmits = 15;
    // smoltcp's minimum RTO is 1 s and it backs off from SYN retransmissions, so on a link
    // losing up to 25% a first request can legitimately take tens of seconds: timeouts are
    // generous here (their behaviour is covered by the scripted tests).
    cfg.header_timeout = Duration::from_secs(300);
    cfg.idle_timeout = Duration::from_secs(600);
    let mut server: ConnTable<App> = ConnTable::new(
        cfg,
        plan.seed
            .to_le_bytes()
            .repeat(2)
            .try_into()
            .unwrap_or([0; 16]),
    );

    let mut now: u64 = 0;
    set_clock_ms(1);
    let mut iface = client_interface(&mut dev)?;
    let mut sockets = SocketSet::new(vec![]);
    let mut clients = Vec::new();
    for (i, cp) in plan.conns.iter().enumerate() {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 128 * 1024]),
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
        );
        s.set_nagle_enabled(false);
        if plan.timestamps {
            s.set_tsval_generator(Some(tsval));
        }
        let remote: (IpAddress, u16) = if cp.v6 {
            (IpAddress::Ipv6(SERVER_V6), 80)
        } else {
            (IpAddress::Ipv4(SERVER_V4), 80)
        };
        s.connect(iface.context(), remote, 40000 + i as u16)
            .map_err(|e| format!("{e:?}"))?;
        let handle = sockets.add(s);
        let mut c = Client {
            handle,
            plan: cp.clone(),
            sent_requests: 0,
            pending: Vec::new(),
            received: Vec::new(),
            expected: Vec::new(),
            closed: false,
        };
        for (n, &len) in cp.sizes.iter().enumerate() {
            c.expected.extend(response(i, n, len, c.is_close(n)));
        }
        clients.push(c);
    }

    let deadline_ms = 3_000_000;
    loop {
        set_clock_ms(now as u32 + 1);
        let snow = SInstant::from_millis(now as i64);
        for p in s2c.pop_due(now) {
            dev.rx.push_back(p);
        }
        iface.poll(snow, &mut dev, &mut sockets);
        // Client apps.
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
                    "conn {idx}: response bytes differ at {}",
                    c.received.len()
                ));
            }
            if s.may_send() {
                // Queue the next request(s).
                let total = c.plan.sizes.len();
                while c.sent_requests < total
                    && (c.plan.pipelined
                        || c.received.len() >= c.expected_len_after(c.sent_requests, idx))
                {
                    let n = c.sent_requests;
                    c.pending
                        .extend(request(idx, n, c.plan.sizes[n], c.is_close(n)));
                    c.sent_requests += 1;
                }
                if !c.pending.is_empty() {
                    let sent = s.send_slice(&c.pending).unwrap_or(0);
                    c.pending.drain(..sent);
                }
            }
            let done = c.received.len() == c.expected.len() && c.pending.is_empty();
            if done && !c.closed && (!c.plan.server_closes || !s.may_recv()) {
                s.close();
                c.closed = true;
            }
        }
        iface.poll(snow, &mut dev, &mut sockets);
        for p in dev.tx.drain(..) {
            trace(now, "c>s", &p);
            c2s.push(now, p, &mut rng);
        }
        // Server: segments in, app, timers, segments out.
        for p in c2s.pop_due(now) {
            let pkt = parse(&p).map_err(|e| format!("server got malformed packet: {e:?}"))?;
            let Packet::Tcp(seg) = pkt else { continue };
            if let Some(id) = server.handle_segment(Instant::from_millis(now), &seg) {
                serve(&mut server, id);
            }
        }
        let snow_ours = Instant::from_millis(now);
        if server.poll_at().is_some_and(|t| t <= snow_ours) {
            server.handle_timeout(snow_ours);
        }
        let mut out = Vec::new();
        server.poll_transmit(snow_ours, &mut |tx: Transmit<'_>| {
            let mut b = tx.header.to_vec();
            b.extend_from_slice(tx.payload);
            out.push(b);
        });
        for p in out {
            trace(now, "s>c", &p);
            s2c.push(now, p, &mut rng);
        }

        let all_closed = clients.iter().all(|c| {
            let s = sockets.get::<tcp::Socket>(c.handle);
            c.closed && matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait)
        });
        if all_closed && server.is_empty() && c2s.queue.is_empty() && s2c.queue.is_empty() {
            break;
        }
        if now > deadline_ms {
            let states: Vec<_> = clients
                .iter()
                .map(|c| {
                    (
                        sockets.get::<tcp::Socket>(c.handle).state(),
                        c.received.len(),
                        c.expected.len(),
                    )
                })
                .collect();
            return Err(format!(
                "no completion by {now} ms: clients {states:?}, server table {} ({:?}), counters {:?}",
                server.len(),
                server.class_counts(),
                server.counters()
            ));
        }
        // Advance the clock to the next event (at least 1 ms).
        let next = [
            (!dev.rx.is_empty() || !dev.tx.is_empty()).then_some(now + 1),
            c2s.next_at(),
            s2c.next_at(),
            server.poll_at().map(|t| t.as_millis()),
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
    if server.timer_entries() > 1000 {
        return Err(format!("timer queue grew to {}", server.timer_entries()));
    }
    Ok(())
}

/// With IMDS_TCP_TRACE set, prints every segment (debugging aid for a failing seed).
fn trace(now: u64, dir: &str, p: &[u8]) {
    if std::env::var_os("IMDS_TCP_TRACE").is_none() {
        return;
    }
    if let Ok(Packet::Tcp(s)) = parse(p) {
        let h = s.header;
        eprintln!(
            "{now:>7} {dir} {}>{} {:?} seq={} ack={} win={} len={}",
            h.src.port(),
            h.dst.port(),
            h.flags,
            h.seq,
            h.ack,
            h.window,
            s.payload.len()
        );
    }
}

fn arb_conn() -> impl Strategy<Value = ConnPlan> {
    (
        any::<bool>(),
        proptest::collection::vec(
            prop_oneof![0usize..200, 200usize..5000, 20_000usize..70_000],
            1..5,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(v6, sizes, pipelined, server_closes)| ConnPlan {
            v6,
            sizes,
            pipelined,
            server_closes,
        })
}

fn arb_plan() -> impl Strategy<Value = Plan> {
    (
        any::<u64>(),
        prop_oneof![Just(0u32), 0u32..25],
        0u32..10,
        prop_oneof![Just(0u32), 0u32..40],
        prop_oneof![Just(1500usize), Just(9000), Just(65535)],
        any::<bool>(),
        proptest::collection::vec(arb_conn(), 1..4),
    )
        .prop_map(|(seed, loss, dup, reorder, mtu, timestamps, conns)| Plan {
            seed,
            loss,
            dup,
            reorder,
            mtu,
            timestamps,
            conns,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn smoltcp_client_gets_every_byte(plan in arb_plan()) {
        if let Err(e) = run(&plan) {
            return Err(TestCaseError::fail(format!("{e}\nplan: {plan:?}")));
        }
    }
}

#[test]
fn regression_header_timeout() {
    let plan = Plan {
        seed: 11599429808198003142,
        loss: 10,
        dup: 0,
        reorder: 38,
        mtu: 9000,
        timestamps: false,
        conns: vec![
            ConnPlan {
                v6: false,
                sizes: vec![0],
                pipelined: false,
                server_closes: false,
            },
            ConnPlan {
                v6: false,
                sizes: vec![0],
                pipelined: false,
                server_closes: false,
            },
        ],
    };
    run(&plan).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn regression_last_byte() {
    let plan = Plan {
        seed: 0,
        loss: 2,
        dup: 0,
        reorder: 0,
        mtu: 1500,
        timestamps: false,
        conns: vec![
            ConnPlan {
                v6: false,
                sizes: vec![1401],
                pipelined: false,
                server_closes: true,
            },
            ConnPlan {
                v6: false,
                sizes: vec![63573, 61133],
                pipelined: true,
                server_closes: true,
            },
            ConnPlan {
                v6: false,
                sizes: vec![1401],
                pipelined: false,
                server_closes: true,
            },
        ],
    };
    run(&plan).unwrap_or_else(|e| panic!("{e}"));
}

/// A clean link, one connection of each kind: a quick smoke test with a readable failure.
#[test]
fn lossless_smoke() {
    for server_closes in [false, true] {
        for v6 in [false, true] {
            let plan = Plan {
                seed: 1,
                loss: 0,
                dup: 0,
                reorder: 0,
                mtu: 65535,
                timestamps: true,
                conns: vec![ConnPlan {
                    v6,
                    sizes: vec![10, 3000, 70_000],
                    pipelined: true,
                    server_closes,
                }],
            };
            run(&plan).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
