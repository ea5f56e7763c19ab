//! The fleet: which instance answers a caller, by the caller's source address.
//!
//! Contract: a [`Fleet`] is built with its base [`Snapshot`] from `$.fleet`
//! ([`crate::config::fleet`]): one snapshot per profile, rendered from the profile's own
//! configuration, so everything derived from an instance (vmId in the instance document, the
//! attested document, token claims; GCE's identity-token claims; the AWS identity document)
//! agrees within a profile and differs between profiles. Signing keys and session keys are
//! shared, as within one tenant. [`Snapshot::for_peer`] asks [`Fleet::lookup`] once per batch
//! of requests of a connection: longest prefix wins, in a few comparisons per prefix length
//! in use, without allocating.
//!
//! Callers that match no profile get the base snapshot, or, with `"unknownSources":
//! "refuse"`, nothing: the front door resets the connection (RST) before answering anything.
//! The same for every cloud, because that is what a real one does for a machine that is not
//! its instance: nothing of one VM's metadata service is reachable from another machine, so no
//! cloud has an HTTP answer for it. A reset (rather than silence) lets every client's "am I on
//! this cloud?" probe fail at once instead of after its timeout — google-auth's `is_on_gce`,
//! azure-identity's IMDS probe and botocore's fetcher all treat a connection error as "no
//! metadata service here" and move on to their next credential source.
//!
//! Metrics: each profile's snapshot (and the base's, when there is a fleet, as
//! [`DEFAULT_PROFILE`]) counts the requests it answered in
//! `imds_tun_fleet_requests_total{profile="NAME"}` ([`Tally`]), and the fleet the connections
//! it refused in `imds_tun_fleet_refused_total`; the counters are the registry's
//! ([`crate::metrics`]), so they outlive reloads. [`Snapshot::fleet_counts`] reads them.

use std::net::IpAddr;
use std::sync::Arc;

pub use crate::config::fleet::DEFAULT_PROFILE;
use crate::config::fleet::{bits, mask, width, Cidr, UnknownSources};
use crate::config::FleetConfig;
use crate::metrics::{self, Counter};
use crate::snapshot::Snapshot;

/// One instance of a fleet: its name and what it answers.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub snapshot: Snapshot,
}

/// Prometheus family of the requests each instance of a fleet answered.
pub const REQUESTS_FAMILY: &str = "imds_tun_fleet_requests_total";
/// Prometheus family of the callers a fleet refused.
pub const REFUSED_FAMILY: &str = "imds_tun_fleet_refused_total";

/// The requests one instance answered: its profile name (a bounded metrics label: names come
/// from the configuration) and its counter in the registry, which outlives reloads.
#[derive(Debug)]
pub struct Tally {
    pub name: String,
    answered: Arc<Counter>,
}

impl Tally {
    /// `imds_tun_fleet_requests_total{profile="NAME"}` of the process's registry.
    pub fn registered(name: &str) -> Tally {
        let answered = metrics::global().counter(
            REQUESTS_FAMILY,
            "Requests answered, by fleet profile (\"default\": the base configuration's instance).",
            &[("profile", name)],
        );
        Tally {
            name: name.to_string(),
            answered,
        }
    }

    pub fn add(&self, n: usize) {
        self.answered.add(n as u64);
    }

    pub fn get(&self) -> u64 {
        self.answered.get()
    }
}

/// The networks of one prefix length, sorted, each with the member it belongs to.
#[derive(Debug)]
struct Level {
    prefix: u8,
    networks: Vec<(u128, usize)>,
}

/// The profiles of one configuration and the table that finds them.
#[derive(Debug, Default)]
pub struct Fleet {
    members: Vec<Member>,
    /// IPv4 and IPv6 networks by prefix length, longest first.
    v4: Vec<Level>,
    v6: Vec<Level>,
    unknown: UnknownSources,
    refused: Arc<Counter>,
}

/// What the fleet does with a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The member at this index answers.
    Member(usize),
    /// The base configuration answers.
    Default,
    /// Nobody: reset the connection.
    Refuse,
}

impl Fleet {
    /// A fleet of `members`, each with its sources (validated: no two equal networks),
    /// counting refused callers in the registry's [`REFUSED_FAMILY`].
    pub fn new(members: Vec<(Member, Vec<Cidr>)>, unknown: UnknownSources) -> Fleet {
        let refused = metrics::global().counter(
            REFUSED_FAMILY,
            "Connections reset because their source matches no fleet profile.",
            &[],
        );
        Fleet::counting(members, unknown, refused)
    }

    /// [`Fleet::new`] counting refused callers in `refused`.
    pub fn counting(
        members: Vec<(Member, Vec<Cidr>)>,
        unknown: UnknownSources,
        refused: Arc<Counter>,
    ) -> Fleet {
        let mut fleet = Fleet {
            unknown,
            refused,
            ..Fleet::default()
        };
        for (i, (member, sources)) in members.into_iter().enumerate() {
            for cidr in sources {
                let levels = match cidr.network() {
                    IpAddr::V4(_) => &mut fleet.v4,
                    IpAddr::V6(_) => &mut fleet.v6,
                };
                let network = bits(cidr.network());
                match levels.iter_mut().find(|l| l.prefix == cidr.prefix()) {
                    Some(level) => level.networks.push((network, i)),
                    None => levels.push(Level {
                        prefix: cidr.prefix(),
                        networks: vec![(network, i)],
                    }),
                }
            }
            fleet.members.push(member);
        }
        for levels in [&mut fleet.v4, &mut fleet.v6] {
            levels.sort_by_key(|l| std::cmp::Reverse(l.prefix));
            for level in levels.iter_mut() {
                level.networks.sort_unstable();
            }
        }
        fleet
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn members_mut(&mut self) -> &mut [Member] {
        &mut self.members
    }

    /// Who answers `peer` (IPv4-mapped IPv6 is looked up as IPv4).
    pub fn lookup(&self, peer: IpAddr) -> Choice {
        let peer = peer.to_canonical();
        let levels = match peer {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        };
        let (value, width) = (bits(peer), width(peer));
        for level in levels {
            let key = value & mask(level.prefix, width);
            if let Ok(at) = level.networks.binary_search_by_key(&key, |(n, _)| *n) {
                return Choice::Member(level.networks[at].1);
            }
        }
        match self.unknown {
            UnknownSources::Default => Choice::Default,
            UnknownSources::Refuse => {
                self.refused.inc();
                Choice::Refuse
            }
        }
    }

    /// Callers refused so far (one per connection), by every fleet counting in the same
    /// counter.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }
}

/// One line per profile (`web-1: 169.254.20.0/24, fe80::1234/128`) and what unknown callers
/// get, for `imds-tun check`; nothing without a fleet.
pub fn describe(config: &FleetConfig) -> Vec<String> {
    if config.profiles.is_empty() {
        return Vec::new();
    }
    let mut lines: Vec<String> = config
        .profiles
        .iter()
        .map(|p| {
            let sources: Vec<String> = p.sources.iter().map(Cidr::to_string).collect();
            format!("fleet profile {}: {}", p.name, sources.join(", "))
        })
        .collect();
    lines.push(match config.unknown_sources {
        UnknownSources::Default => "other callers: the base configuration".into(),
        UnknownSources::Refuse => "other callers: refused (connection reset)".into(),
    });
    lines
}

/// Logs what each instance of `snapshot`'s fleet answered (at exit, for those without a
/// metrics scrape). Nothing without a fleet.
pub fn log_counts(snapshot: &Snapshot) {
    let counts = snapshot.fleet_counts();
    if counts.answered.is_empty() {
        return;
    }
    let answered: Vec<String> = counts
        .answered
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    tracing::info!(
        "fleet: requests answered by profile: {}; callers refused: {}",
        answered.join(", "),
        counts.refused
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Config};
    use crate::snapshot::Keys;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            snapshot: Snapshot::build(Config::default(), &Keys::fixed(1), name)
                .unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter()
            .map(|c| Cidr::parse(c).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn longest_prefix_wins_in_both_families() {
        let f = Fleet::counting(
            vec![
                (member("wide"), cidrs(&["169.254.0.0/16", "fe80::/10"])),
                (
                    member("net"),
                    cidrs(&["169.254.20.0/24", "169.254.22.0/24"]),
                ),
                (member("host"), cidrs(&["169.254.20.7", "fe80::1234"])),
                (member("all"), cidrs(&["0.0.0.0/0"])),
            ],
            UnknownSources::Refuse,
            Arc::default(),
        );
        for (peer, want) in [
            ("169.254.20.7", Choice::Member(2)),
            ("::ffff:169.254.20.7", Choice::Member(2)),
            ("169.254.20.8", Choice::Member(1)),
            ("169.254.22.255", Choice::Member(1)),
            ("169.254.21.1", Choice::Member(0)),
            ("127.0.0.2", Choice::Member(3)),
            ("fe80::1234", Choice::Member(2)),
            ("fe80::1235", Choice::Member(0)),
            ("::1", Choice::Refuse),
            ("2001:db8::1", Choice::Refuse),
        ] {
            assert_eq!(f.lookup(ip(peer)), want, "{peer}");
        }
        assert_eq!(f.refused(), 2);
    }

    #[test]
    fn unknown_callers_get_the_default_or_nothing() {
        for (unknown, want) in [
            (UnknownSources::Default, Choice::Default),
            (UnknownSources::Refuse, Choice::Refuse),
        ] {
            let f = Fleet::counting(
                vec![(member("a"), cidrs(&["127.0.0.2"]))],
                unknown,
                Arc::default(),
            );
            assert_eq!(f.lookup(ip("127.0.0.2")), Choice::Member(0));
            assert_eq!(f.lookup(ip("127.0.0.3")), want);
        }
    }

    #[test]
    fn the_snapshot_answers_each_caller_from_its_profile() {
        let text = r#"{"aws": {"enabled": true}, "fleet": {"unknownSources": "refuse", "profiles": [
            {"name": "a", "sources": ["127.0.0.2"],
             "patch": {"aws": {"metaData": {"instance-id": "i-0000000000000000a"}}}},
            {"name": "b", "sources": ["127.0.0.3"],
             "patch": {"aws": {"metaData": {"instance-id": "i-0000000000000000b"}}}}]}}"#;
        let cfg = config::load_str(text, "x.json", &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let s = Snapshot::build(cfg, &Keys::fixed(1), "x.json").unwrap_or_else(|e| panic!("{e}"));
        let id = |peer: &str| {
            s.for_peer(ip(peer))
                .map(|p| p.config.aws.meta_data["instance-id"].to_string())
        };
        assert_eq!(id("127.0.0.2").as_deref(), Some("\"i-0000000000000000a\""));
        assert_eq!(id("127.0.0.3").as_deref(), Some("\"i-0000000000000000b\""));
        assert_eq!(id("127.0.0.4"), None);
        let counts = s.fleet_counts();
        assert_eq!(counts.refused, 1);
        assert_eq!(
            describe(&s.config.fleet),
            [
                "fleet profile a: 127.0.0.2/32",
                "fleet profile b: 127.0.0.3/32",
                "other callers: refused (connection reset)"
            ]
        );
        assert_eq!(
            counts.answered,
            [("default", 0), ("a", 0), ("b", 0)].map(|(n, c)| (n.to_string(), c))
        );
    }

    /// Guest attributes are each instance's own, and survive a rebuild from the same keys.
    #[test]
    fn each_instance_keeps_its_own_guest_attributes() {
        let text = r#"{"gce": {"enabled": true,
                "instance": {"attributes": {"enable-guest-attributes": "TRUE"}}},
            "fleet": {"profiles": [
                {"name": "a", "sources": ["127.0.0.2"]}, {"name": "b", "sources": ["127.0.0.3"]}]}}"#;
        let keys = Keys::fixed(1);
        let build = || {
            let cfg = config::load_str(text, "x.json", &|_| None).unwrap_or_else(|e| panic!("{e}"));
            Snapshot::build(cfg, &keys, "x.json").unwrap_or_else(|e| panic!("{e}"))
        };
        let ask = |s: &Snapshot, peer: &str, request: &str| {
            let ctx = crate::cloud::RequestContext {
                now: std::time::SystemTime::UNIX_EPOCH,
                peer: std::net::SocketAddr::new(ip(peer), 40000),
                local: std::net::SocketAddr::from(([169, 254, 169, 254], 80)),
                door: Default::default(),
                wait_over: false,
            };
            let instance = s
                .for_peer(ctx.peer.ip())
                .unwrap_or_else(|| panic!("refused"));
            let limits = instance.config.server.limits();
            let mut out = Vec::new();
            crate::http::exchange::respond_all(
                request.as_bytes(),
                instance,
                &ctx,
                &limits,
                &mut out,
            );
            let bytes: Vec<u8> = out.iter().flat_map(|o| o.bytes.to_vec()).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        const PATH: &str = "/computeMetadata/v1/instance/guest-attributes/testing/key";
        let put = format!(
            "PUT {PATH} HTTP/1.1\r\nMetadata-Flavor: Google\r\nContent-Length: 5\r\n\r\nvalue"
        );
        let get = format!("GET {PATH} HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n");
        let s = build();
        let stored = ask(&s, "127.0.0.2", &put);
        assert!(stored.starts_with("HTTP/1.1 200"), "{stored}");
        assert!(ask(&s, "127.0.0.2", &get).ends_with("\r\n\r\nvalue"));
        for other in ["127.0.0.3", "127.0.0.4"] {
            let answer = ask(&s, other, &get);
            assert!(answer.starts_with("HTTP/1.1 404"), "{other}: {answer}");
        }
        let reloaded = build();
        assert!(ask(&reloaded, "127.0.0.2", &get).ends_with("\r\n\r\nvalue"));
    }

    /// Live state (events, faults) is the host's: after a replace, every instance of the fleet
    /// answers with the cell's.
    #[test]
    fn every_instance_answers_with_the_cells_live_state() {
        let text = r#"{"azure": {"enabled": true}, "fleet": {"profiles": [
            {"name": "a", "sources": ["127.0.0.2"]}]}}"#;
        let build = || {
            let cfg = config::load_str(text, "x.json", &|_| None).unwrap_or_else(|e| panic!("{e}"));
            Snapshot::build(cfg, &Keys::fixed(1), "x.json").unwrap_or_else(|e| panic!("{e}"))
        };
        let cell = crate::snapshot::SnapshotCell::new(build());
        cell.replace(build());
        let current = cell.load();
        for peer in ["127.0.0.2", "127.0.0.3"] {
            let instance = current
                .for_peer(ip(peer))
                .unwrap_or_else(|| panic!("refused"));
            assert!(Arc::ptr_eq(instance.live(), cell.live()), "{peer}");
        }
    }
}
