//! What one engine thread publishes: its TCP counters, packet counters and connection gauges.
//!
//! Contract: the engine owns its [`crate::tcp::Counters`] and [`crate::engine::EngineCounters`]
//! as plain integers (no atomics, no locks on the packet path). Once per loop iteration its
//! driver calls [`EngineSlot::publish`], which copies them into this thread's slot with
//! relaxed stores (about fifty plain stores on x86; no allocation); a scrape sums the slots of
//! every thread. So a scrape sees each thread's counts as of its last loop iteration: exact
//! whenever the engine is idle, at most one batch behind under load.
//!
//! [`samples`] is the one list that names every counter: it destructures both structs without
//! `..`, so a counter added to either does not compile until it is named here.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::exposition::{Exposition, Kind};
use super::Gauge;
use crate::engine::EngineCounters;
use crate::tcp::Counters;
use crate::wire::Malformed;

/// One exported number: its family, help, type and at most one label.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub family: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub label: Option<(&'static str, &'static str)>,
}

/// Connections in the table by class: (half-open, established, TIME-WAIT).
pub type Classes = (usize, usize, usize);

/// One engine thread's published numbers, in the order of [`samples`], and its share of
/// the parked-requests gauge ([`super::fronts::REQUESTS_PARKED`]).
#[derive(Debug)]
pub struct EngineSlot {
    values: Box<[AtomicU64]>,
    parked: Arc<Gauge>,
    /// What this slot has added to `parked` so far.
    parked_published: AtomicU64,
}

impl Default for EngineSlot {
    fn default() -> Self {
        let mut n = 0;
        samples(
            &Counters::default(),
            &EngineCounters::default(),
            (0, 0, 0),
            |_, _| n += 1,
        );
        EngineSlot {
            values: (0..n).map(|_| AtomicU64::new(0)).collect(),
            parked: Arc::default(),
            parked_published: AtomicU64::new(0),
        }
    }
}

impl EngineSlot {
    /// A slot whose parked requests count in `parked` (the registry's gauge).
    pub(super) fn with_parked(parked: Arc<Gauge>) -> EngineSlot {
        EngineSlot {
            parked,
            ..EngineSlot::default()
        }
    }

    /// Copies the engine's counters into the slot, and adds the change in its number of
    /// `parked` requests to the gauge (the owning thread only).
    pub fn publish(&self, tcp: &Counters, engine: &EngineCounters, classes: Classes, parked: u64) {
        let mut values = self.values.iter();
        samples(tcp, engine, classes, |_, v| {
            if let Some(slot) = values.next() {
                slot.store(v, Relaxed);
            }
        });
        super::fronts::publish_change(&self.parked, &self.parked_published, parked);
    }

    /// The connection classes last published (the last three samples).
    pub fn classes(&self) -> Classes {
        let n = self.values.len();
        let at = |i: usize| {
            n.checked_sub(3 - i)
                .and_then(|j| self.values.get(j))
                .map_or(0, |v| {
                    usize::try_from(v.load(Relaxed)).unwrap_or(usize::MAX)
                })
        };
        (at(0), at(1), at(2))
    }
}

/// Writes the sums over `slots` of every sample.
pub fn render(slots: &[Arc<EngineSlot>], e: &mut Exposition) {
    let mut descriptions = Vec::new();
    samples(
        &Counters::default(),
        &EngineCounters::default(),
        (0, 0, 0),
        |s, _| descriptions.push(s),
    );
    for (i, s) in descriptions.iter().enumerate() {
        let total: u64 = slots
            .iter()
            .filter_map(|slot| slot.values.get(i))
            .map(|v| v.load(Relaxed))
            .sum();
        let labels: &[(&str, &str)] = match &s.label {
            Some((name, value)) => &[(name, value)],
            None => &[],
        };
        e.sample(s.family, s.help, s.kind, "", labels, total);
    }
}

/// Calls `f` with every exported number, always in the same order; the connection classes
/// come last ([`EngineSlot::classes`] reads them there).
pub fn samples(
    tcp: &Counters,
    engine: &EngineCounters,
    classes: Classes,
    mut f: impl FnMut(Sample, u64),
) {
    let mut counter = |family: &'static str,
                       help: &'static str,
                       label: Option<(&'static str, &'static str)>,
                       v: u64| {
        f(
            Sample {
                family,
                help,
                kind: Kind::Counter,
                label,
            },
            v,
        )
    };
    let Counters {
        connections_accepted,
        connections_established,
        connections_closed,
        syn_dropped_half_open_full,
        syn_dropped_table_full,
        rst_sent_no_listener,
        rst_sent_no_connection,
        rst_sent_bad_ack,
        rst_sent_abort,
        rst_dropped_queue_full,
        rst_received,
        rst_ignored,
        challenge_acks,
        unacceptable_segments,
        paws_dropped,
        out_of_order_dropped,
        duplicate_segments,
        recv_bytes_dropped,
        bad_acks,
        no_ack_dropped,
        illegal_flags_dropped,
        retransmissions,
        rto_expired,
        retransmit_give_ups,
        synack_give_ups,
        persist_probes,
        idle_timeouts,
        header_timeouts,
        time_wait_skipped,
        time_wait_reused,
        segments_sent,
        segments_copied,
        emit_errors,
    } = tcp;
    const CONN: &str = "imds_tun_tcp_connections_opened_total";
    const CONN_HELP: &str =
        "TCP connections opened: SYNs accepted (half-open), handshakes completed (established).";
    counter(
        CONN,
        CONN_HELP,
        Some(("stage", "accepted")),
        *connections_accepted,
    );
    counter(
        CONN,
        CONN_HELP,
        Some(("stage", "established")),
        *connections_established,
    );
    counter(
        "imds_tun_tcp_connections_closed_total",
        "TCP connections that left the table, for any reason.",
        None,
        *connections_closed,
    );
    const SYN: &str = "imds_tun_tcp_syn_dropped_total";
    const SYN_HELP: &str = "SYNs dropped because a connection table was full.";
    counter(
        SYN,
        SYN_HELP,
        Some(("reason", "half_open_full")),
        *syn_dropped_half_open_full,
    );
    counter(
        SYN,
        SYN_HELP,
        Some(("reason", "table_full")),
        *syn_dropped_table_full,
    );
    const RST: &str = "imds_tun_tcp_resets_sent_total";
    const RST_HELP: &str =
        "TCP resets sent, by reason (queue_full: a reset not sent because its queue was full).";
    counter(
        RST,
        RST_HELP,
        Some(("reason", "no_listener")),
        *rst_sent_no_listener,
    );
    counter(
        RST,
        RST_HELP,
        Some(("reason", "no_connection")),
        *rst_sent_no_connection,
    );
    counter(
        RST,
        RST_HELP,
        Some(("reason", "bad_ack")),
        *rst_sent_bad_ack,
    );
    counter(RST, RST_HELP, Some(("reason", "abort")), *rst_sent_abort);
    counter(
        RST,
        RST_HELP,
        Some(("reason", "queue_full")),
        *rst_dropped_queue_full,
    );
    const RST_IN: &str = "imds_tun_tcp_resets_received_total";
    const RST_IN_HELP: &str =
        "TCP resets received: that closed a connection, or ignored / challenged (RFC 5961).";
    counter(
        RST_IN,
        RST_IN_HELP,
        Some(("outcome", "closed")),
        *rst_received,
    );
    counter(
        RST_IN,
        RST_IN_HELP,
        Some(("outcome", "ignored")),
        *rst_ignored,
    );
    counter(
        "imds_tun_tcp_challenge_acks_total",
        "RFC 5961 challenge ACKs sent.",
        None,
        *challenge_acks,
    );
    const SEG: &str = "imds_tun_tcp_segments_dropped_total";
    const SEG_HELP: &str = "Received TCP segments (or their data) not accepted, by reason.";
    counter(
        SEG,
        SEG_HELP,
        Some(("reason", "unacceptable")),
        *unacceptable_segments,
    );
    counter(SEG, SEG_HELP, Some(("reason", "paws")), *paws_dropped);
    counter(
        SEG,
        SEG_HELP,
        Some(("reason", "out_of_order")),
        *out_of_order_dropped,
    );
    counter(
        SEG,
        SEG_HELP,
        Some(("reason", "duplicate")),
        *duplicate_segments,
    );
    counter(SEG, SEG_HELP, Some(("reason", "bad_ack")), *bad_acks);
    counter(SEG, SEG_HELP, Some(("reason", "no_ack")), *no_ack_dropped);
    counter(
        SEG,
        SEG_HELP,
        Some(("reason", "illegal_flags")),
        *illegal_flags_dropped,
    );
    counter(
        "imds_tun_tcp_receive_bytes_dropped_total",
        "Received bytes dropped because the receive buffer was full.",
        None,
        *recv_bytes_dropped,
    );
    counter(
        "imds_tun_tcp_retransmissions_total",
        "TCP segments retransmitted after a retransmission timeout.",
        None,
        *retransmissions,
    );
    counter(
        "imds_tun_tcp_rto_expirations_total",
        "Retransmission timer expirations.",
        None,
        *rto_expired,
    );
    const ENDED: &str = "imds_tun_tcp_connections_dropped_total";
    const ENDED_HELP: &str = "TCP connections ended by us, by reason.";
    counter(
        ENDED,
        ENDED_HELP,
        Some(("reason", "retransmit_limit")),
        *retransmit_give_ups,
    );
    counter(
        ENDED,
        ENDED_HELP,
        Some(("reason", "synack_limit")),
        *synack_give_ups,
    );
    counter(
        ENDED,
        ENDED_HELP,
        Some(("reason", "idle_timeout")),
        *idle_timeouts,
    );
    counter(
        ENDED,
        ENDED_HELP,
        Some(("reason", "header_timeout")),
        *header_timeouts,
    );
    counter(
        "imds_tun_tcp_zero_window_probes_total",
        "Zero-window probes sent.",
        None,
        *persist_probes,
    );
    const TW: &str = "imds_tun_tcp_time_wait_total";
    const TW_HELP: &str = "TIME-WAIT entries skipped (table full) or reused by a new connection.";
    counter(TW, TW_HELP, Some(("event", "skipped")), *time_wait_skipped);
    counter(TW, TW_HELP, Some(("event", "reused")), *time_wait_reused);
    counter(
        "imds_tun_tcp_segments_sent_total",
        "TCP segments emitted, resets included.",
        None,
        *segments_sent,
    );
    counter(
        "imds_tun_tcp_segments_copied_total",
        "Segments whose payload was copied into a scratch buffer (several chunks).",
        None,
        *segments_copied,
    );
    counter(
        "imds_tun_tcp_emit_errors_total",
        "Segments not emitted because the header did not fit (a bug if ever non-zero).",
        None,
        *emit_errors,
    );

    let EngineCounters {
        packets_in,
        packets_out,
        malformed,
        not_for_us,
        echo_replies,
        requests: _, // imds_tun_requests_total counts them with their labels
        send_errors,
    } = engine;
    const PKT: &str = "imds_tun_packets_total";
    const PKT_HELP: &str = "Packets read from and written to the TUN device.";
    counter(PKT, PKT_HELP, Some(("direction", "in")), *packets_in);
    counter(PKT, PKT_HELP, Some(("direction", "out")), *packets_out);
    const DROP: &str = "imds_tun_packets_dropped_total";
    const DROP_HELP: &str = "Packets read from the TUN device and dropped: malformed (by reason) or for no service of ours.";
    for reason in Malformed::ALL {
        let name = reason.as_str();
        counter(
            DROP,
            DROP_HELP,
            Some(("reason", name)),
            malformed.get(name).copied().unwrap_or(0),
        );
    }
    counter(DROP, DROP_HELP, Some(("reason", "not_for_us")), *not_for_us);
    counter(
        "imds_tun_echo_replies_total",
        "ICMP echo replies sent for the metadata addresses.",
        None,
        *echo_replies,
    );
    counter(
        "imds_tun_packets_send_errors_total",
        "Writes the TUN device refused (the segment is lost; TCP retransmits).",
        None,
        *send_errors,
    );

    let (half_open, established, time_wait) = classes;
    for (state, n) in [
        ("half_open", half_open),
        ("established", established),
        ("time_wait", time_wait),
    ] {
        f(
            Sample {
                family: "imds_tun_tcp_connections",
                help: "TCP connections in the table, by state class.",
                kind: Kind::Gauge,
                label: Some(("state", state)),
            },
            n as u64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_publish_and_sum_every_counter() {
        let a = Arc::new(EngineSlot::default());
        let b = Arc::new(EngineSlot::default());
        let mut tcp = Counters {
            retransmissions: 3,
            rst_sent_abort: 1,
            ..Counters::default()
        };
        let mut eng = EngineCounters {
            packets_in: 10,
            ..EngineCounters::default()
        };
        eng.malformed.insert(Malformed::BadTcpChecksum.as_str(), 2);
        a.publish(&tcp, &eng, (1, 2, 3), 0);
        tcp.retransmissions = 4;
        b.publish(&tcp, &eng, (0, 5, 0), 0);
        assert_eq!(a.classes(), (1, 2, 3));
        let mut e = Exposition::new();
        render(&[a, b], &mut e);
        let text = e.finish();
        for line in [
            "imds_tun_tcp_retransmissions_total 7\n",
            "imds_tun_tcp_resets_sent_total{reason=\"abort\"} 2\n",
            "imds_tun_tcp_resets_sent_total{reason=\"no_listener\"} 0\n",
            "imds_tun_packets_total{direction=\"in\"} 20\n",
            "imds_tun_packets_dropped_total{reason=\"bad_tcp_checksum\"} 4\n",
            "imds_tun_tcp_connections{state=\"established\"} 7\n",
            "# TYPE imds_tun_tcp_connections gauge\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
