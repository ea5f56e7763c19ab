//! Everything `up` changes on the host, recorded and undone (design principle 7).
//!
//! # What `up` changes, in order
//!
//! 1. Takes the per-device lock (`<state_dir>/<device>.lock`); a second `up` fails naming the
//!    pid. If a record of a killed run exists, undoes it first (and removes a stale hosts
//!    block of this device even without a record).
//! 2. Creates the TUN device (see [`super::tun`]): MTU, txqueuelen, IPv6 policy, up.
//! 3. Adds the source address(es) **to the TUN device only**: [`DEFAULT_SOURCE_V4`]
//!    (`169.254.255.1/32`) when an IPv4 route is served, [`DEFAULT_SOURCE_V6`]
//!    (`fe80::a9fe:ff01/128`) when an IPv6 one is; link scope, no DAD.
//! 4. Adds a host route per metadata address (`169.254.169.254/32` by default; optionally
//!    `169.254.170.2/32`, `fd00:ec2::254/128`, ...) through the TUN with that source
//!    (`src`/`RTA_PREFSRC`), in the main table.
//! 5. Adds the hosts-file block (`169.254.169.254 metadata.google.internal metadata`).
//!
//! Each change is added to the [`Record`] and the record saved *before* the change is made.
//!
//! # Why the source address
//!
//! In a namespace whose only other interface is `lo`, a connection to an address routed
//! through an unnumbered TUN leaves from `0.0.0.0` (spec/tun-tcp.md), which no TCP can answer.
//! So the TUN gets an address and every route names it as `src`, which also makes the source
//! the same on every host instead of "whatever address eth0 has". The address:
//!
//! - is in 169.254.255.0/24, which RFC 3927 §2.1 reserves: link-local autoconfiguration
//!   (avahi, Windows APIPA) must never pick it, so it cannot clash with an autoconfigured
//!   address; nor is it one of the well-known service addresses (169.254.169.254, .169.123,
//!   .169.253, .170.2, .170.23) or Calico's 169.254.1.1;
//! - has link scope, so the kernel never borrows it as the source for traffic leaving through
//!   another interface;
//! - lives on the TUN, so it disappears with the device: nothing is ever added to another
//!   interface.
//!
//! The IPv6 source `fe80::a9fe:ff01` embeds the IPv4 one (169.254.255.1 = a9fe:ff01); Linux
//! accepts a link-local `src` for a route to a ULA such as `fd00:ec2::254`.
//!
//! # Undo
//!
//! [`HostGuard::teardown`] (or drop) undoes in reverse: hosts block, routes, addresses,
//! device, record, lock. Every step treats "already gone" as done (routes and addresses vanish
//! with the device; the device vanishes when the last queue fd closes). After a SIGKILL only
//! the hosts block and the record remain; [`down`] or the next `up` removes them. The record is
//! meaningful in the network namespace where `up` ran; run `down` there too (the device is
//! deleted only if its index matches the record, so a wrong namespace deletes nothing).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::hosts::{HostsBlock, HostsError, HostsFile};
use super::route::{is_gone, Netlink};
use super::state::{Lock, LockError, Prefix, Record};
use super::tun::{Tun, TunConfig, TunError};

/// Source address given to the TUN device for IPv4 routes (RFC 3927 reserved range; see the
/// module documentation).
pub const DEFAULT_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 255, 1);
/// Source address given to the TUN device for IPv6 routes.
pub const DEFAULT_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xa9fe, 0xff01);

/// Where state and the hosts file live. Configurable so tests never touch the real ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Default `/run/imds-tun`.
    pub state_dir: PathBuf,
    /// Default `/etc/hosts`.
    pub hosts_file: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            state_dir: "/run/imds-tun".into(),
            hosts_file: "/etc/hosts".into(),
        }
    }
}

/// What `up` should set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The device. `tun.ipv6` is set from `routes` by [`HostSetup::apply`].
    pub tun: TunConfig,
    /// Addresses routed (as /32 or /128) through the device.
    pub routes: Vec<IpAddr>,
    pub source_v4: Ipv4Addr,
    pub source_v6: Ipv6Addr,
    /// Lines of the hosts-file block; `None` leaves the hosts file alone.
    pub hosts_lines: Option<Vec<String>>,
    pub paths: Paths,
}

impl Plan {
    /// The default plan for `device`: route 169.254.169.254, add the GCE names to the hosts
    /// file, default paths.
    pub fn new(device: &str) -> Plan {
        Plan {
            tun: TunConfig {
                name: device.into(),
                ..TunConfig::default()
            },
            routes: vec![IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))],
            source_v4: DEFAULT_SOURCE_V4,
            source_v6: DEFAULT_SOURCE_V6,
            hosts_lines: Some(HostsBlock::metadata(device, 0).lines),
            paths: Paths::default(),
        }
    }
}

/// Why `up` or `down` failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error(transparent)]
    Tun(#[from] TunError),
    #[error(transparent)]
    Hosts(#[from] HostsError),
    #[error("{0} is already routed by something else (see `ip route show {addr}`): remove that route, or do not serve this address", addr = .0.addr)]
    RouteExists(Prefix),
    #[error("{what}: {source}")]
    Net { what: String, source: io::Error },
    #[error("state record in {dir}: {source}")]
    State { dir: PathBuf, source: io::Error },
    #[error("imds-tun up for device {device} (pid {pid}) {why}")]
    Running {
        device: String,
        pid: u32,
        why: &'static str,
    },
    #[error("undo incomplete (run `imds-tun down` again): {}", .0.join("; "))]
    Incomplete(Vec<String>),
    #[error("invalid plan: {0}")]
    BadPlan(String),
}

/// What an undo did. `undone` lists changes that were reverted; `notes` things seen but left
/// alone; `failed` what could not be undone (the record is kept for another try).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownReport {
    pub undone: Vec<String>,
    pub notes: Vec<String>,
    pub failed: Vec<String>,
}

/// What [`down`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownReport {
    /// The running `up` that was asked to stop (SIGTERM) and did.
    pub stopped_pid: Option<u32>,
    pub teardown: TeardownReport,
}

impl DownReport {
    /// True when the host was already clean.
    pub fn nothing_to_do(&self) -> bool {
        self.stopped_pid.is_none()
            && self.teardown.undone.is_empty()
            && self.teardown.failed.is_empty()
    }
}

impl fmt::Display for DownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nothing_to_do() {
            write!(f, "nothing to do")?;
        }
        if let Some(pid) = self.stopped_pid {
            writeln!(f, "stopped imds-tun up (pid {pid})")?;
        }
        for u in &self.teardown.undone {
            writeln!(f, "removed {u}")?;
        }
        for n in &self.teardown.notes {
            writeln!(f, "note: {n}")?;
        }
        for e in &self.teardown.failed {
            writeln!(f, "FAILED: {e}")?;
        }
        Ok(())
    }
}

/// Applies a [`Plan`].
#[derive(Debug)]
pub struct HostSetup;

impl HostSetup {
    /// Sets the host up as the module documentation describes and returns the guard that
    /// undoes it. Call from the thread (network namespace) that should own the device. On
    /// error everything done so far has been undone.
    pub fn apply(plan: &Plan) -> Result<HostGuard, HostError> {
        let device = plan.tun.name.clone();
        if plan.routes.is_empty() {
            return Err(HostError::BadPlan("no addresses to route".into()));
        }
        let lock = Lock::acquire(&plan.paths.state_dir, &device)?;
        let nl = Netlink::open().map_err(|source| HostError::Net {
            what: "opening rtnetlink".into(),
            source,
        })?;
        let mut guard = HostGuard {
            lock: Some(lock),
            nl,
            record: Record::new(&device),
            paths: plan.paths.clone(),
            queues: Vec::new(),
            done: false,
            stale: None,
        };

        // Leftovers of a killed run: we hold the lock, so no live `up` owns them.
        let stale = cleanup(&mut guard.nl, &plan.paths, &device)?;
        if !stale.undone.is_empty() {
            tracing::warn!(device, undone = ?stale.undone, "cleaned up after a previous run that did not exit cleanly");
        }
        guard.stale = Some(stale);

        guard.save()?;
        let mut tun = plan.tun.clone();
        tun.ipv6 = plan.routes.iter().any(IpAddr::is_ipv6);
        guard.queues = Tun::create(&tun)?;
        let index = guard.queues[0].index();
        guard.record.ifindex = Some(index);
        guard.save()?;

        let sources: Vec<IpAddr> = [
            plan.routes
                .iter()
                .any(IpAddr::is_ipv4)
                .then_some(IpAddr::V4(plan.source_v4)),
            tun.ipv6.then_some(IpAddr::V6(plan.source_v6)),
        ]
        .into_iter()
        .flatten()
        .collect();
        for src in &sources {
            let p = Prefix::host(*src);
            guard.record.addresses.push(p);
            guard.save()?;
            guard
                .nl
                .add_address(index, p.addr, p.len)
                .map_err(|source| HostError::Net {
                    what: format!("adding source address {p} to {device}"),
                    source,
                })?;
        }
        for dst in &plan.routes {
            let p = Prefix::host(*dst);
            let src = sources
                .iter()
                .find(|s| s.is_ipv4() == dst.is_ipv4())
                .copied();
            guard.record.routes.push(p);
            guard.save()?;
            guard
                .nl
                .add_route(index, p.addr, p.len, src)
                .map_err(|source| {
                    if source.raw_os_error() == Some(libc::EEXIST) {
                        HostError::RouteExists(p)
                    } else {
                        HostError::Net {
                            what: format!("adding route {p} via {device}"),
                            source,
                        }
                    }
                })?;
        }
        if let Some(lines) = &plan.hosts_lines {
            guard.record.hosts_file = Some(plan.paths.hosts_file.clone());
            guard.save()?;
            let block = HostsBlock {
                device: device.clone(),
                pid: std::process::id(),
                lines: lines.clone(),
            };
            HostsFile::new(&plan.paths.hosts_file).add(&block)?;
        }
        Ok(guard)
    }
}

/// The applied host setup. Undoes everything on [`HostGuard::teardown`] or drop.
#[derive(Debug)]
pub struct HostGuard {
    lock: Option<Lock>,
    nl: Netlink,
    record: Record,
    paths: Paths,
    queues: Vec<Tun>,
    done: bool,
    stale: Option<TeardownReport>,
}

impl HostGuard {
    /// Takes the device queues (one per engine thread). The device lives while any queue fd
    /// is open; teardown deletes it even if the engine still holds them.
    pub fn take_queues(&mut self) -> Vec<Tun> {
        std::mem::take(&mut self.queues)
    }

    /// The device name.
    pub fn device(&self) -> &str {
        &self.record.device
    }

    /// The device's interface index.
    pub fn ifindex(&self) -> Option<u32> {
        self.record.ifindex
    }

    /// What this `up` changed, as recorded.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// What was cleaned up from a previous, killed run before applying.
    pub fn stale_cleanup(&self) -> Option<&TeardownReport> {
        self.stale.as_ref()
    }

    /// Names the HIMDS door's journal in the record (saved) before the door opens, so that
    /// `down` undoes what the door changes even after a crash; the journal's path.
    pub fn record_himds_journal(&mut self) -> Result<PathBuf, HostError> {
        let path = super::state::himds_journal_path(&self.paths.state_dir, &self.record.device);
        self.record.himds_journal = Some(path.clone());
        self.save()?;
        Ok(path)
    }

    /// Names the metrics endpoint in the record (saved), so `imds-tun status` finds it.
    pub fn record_metrics(&mut self, addr: std::net::SocketAddr) -> Result<(), HostError> {
        self.record.metrics = Some(addr);
        self.save()
    }

    /// Names the control socket in the record (saved) before it is bound, so that teardown
    /// and `down` remove it.
    pub fn record_control_socket(&mut self, path: &Path) -> Result<(), HostError> {
        self.record.control_socket = Some(path.to_path_buf());
        self.save()
    }

    fn save(&self) -> Result<(), HostError> {
        self.record
            .save(&self.paths.state_dir)
            .map_err(|source| HostError::State {
                dir: self.paths.state_dir.clone(),
                source,
            })
    }

    /// Undoes everything and releases the lock. With `Err`, the record is kept so `down` can
    /// finish the job.
    pub fn teardown(mut self) -> Result<TeardownReport, HostError> {
        self.undo()
    }

    fn undo(&mut self) -> Result<TeardownReport, HostError> {
        self.done = true;
        let queues = std::mem::take(&mut self.queues);
        let report = undo_record(&mut self.nl, &self.record, &self.paths, queues);
        self.lock = None;
        if report.failed.is_empty() {
            Ok(report)
        } else {
            Err(HostError::Incomplete(report.failed))
        }
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.undo() {
            Ok(r) => tracing::debug!(undone = ?r.undone, "host setup undone"),
            Err(e) => tracing::error!(error = %e, "host setup not fully undone"),
        }
    }
}

/// Undoes a record: hosts block, routes, addresses, device (only if the interface of that
/// name still has the recorded index), then removes the record if everything succeeded.
/// `queues` (this process's own fds, if any) are closed before the device is deleted.
fn undo_record(
    nl: &mut Netlink,
    record: &Record,
    paths: &Paths,
    queues: Vec<Tun>,
) -> TeardownReport {
    let mut r = TeardownReport::default();
    let dev = &record.device;
    if let Some(socket) = &record.control_socket {
        match std::fs::remove_file(socket) {
            Ok(()) => r
                .undone
                .push(format!("control socket {}", socket.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => r
                .failed
                .push(format!("control socket {}: {e}", socket.display())),
        }
    }
    if let Some(journal) = &record.himds_journal {
        match crate::doors::journal::undo(journal) {
            Ok(lines) => r.undone.extend(lines),
            Err(e) => r
                .failed
                .push(format!("HIMDS changes in {}: {e}", journal.display())),
        }
    }
    if let Some(path) = &record.hosts_file {
        match HostsFile::new(path).remove(dev) {
            Ok(true) => r
                .undone
                .push(format!("hosts block for {dev} from {}", path.display())),
            Ok(false) => {}
            Err(e) => r.failed.push(e.to_string()),
        }
    }
    // The interface by that name, if it is still the one we created.
    let ours = |nl: &mut Netlink| -> Result<Option<u32>, io::Error> {
        let Some(index) = record.ifindex else {
            return Ok(None);
        };
        Ok(nl
            .link_by_name(dev)?
            .filter(|l| l.index == index && l.kind.as_deref() == Some("tun"))
            .map(|l| l.index))
    };
    match ours(nl) {
        Ok(Some(index)) => {
            for p in record.routes.iter().rev() {
                match nl.delete_route(index, p.addr, p.len) {
                    Ok(()) => r.undone.push(format!("route {p} via {dev}")),
                    Err(e) if is_gone(&e) => {}
                    Err(e) => r.failed.push(format!("deleting route {p} via {dev}: {e}")),
                }
            }
            for p in record.addresses.iter().rev() {
                match nl.delete_address(index, p.addr, p.len) {
                    Ok(()) => r.undone.push(format!("address {p} on {dev}")),
                    Err(e) if is_gone(&e) => {}
                    Err(e) => r.failed.push(format!("deleting address {p} on {dev}: {e}")),
                }
            }
            let own_fds = !queues.is_empty();
            drop(queues);
            // Closing our fds deletes a non-persistent device; delete explicitly in case the
            // engine (or anyone) still holds a queue.
            match nl.delete_link(index) {
                Ok(()) => r.undone.push(format!("device {dev}")),
                Err(e) if is_gone(&e) => {
                    if own_fds {
                        r.undone.push(format!("device {dev}"));
                    }
                }
                Err(e) => r.failed.push(format!("deleting device {dev}: {e}")),
            }
        }
        Ok(None) => {
            drop(queues);
            if record.ifindex.is_some() {
                if let Ok(Some(_)) = nl.link_by_name(dev) {
                    r.notes.push(format!(
                        "an interface named {dev} exists but is not the one imds-tun created; left alone"
                    ));
                }
            }
        }
        Err(e) => r.failed.push(format!("looking up device {dev}: {e}")),
    }
    if r.failed.is_empty() {
        if let Err(e) = Record::remove(&paths.state_dir, dev) {
            r.failed.push(format!("removing the state record: {e}"));
        }
    }
    r
}

/// Cleans leftovers of `device` while holding its lock: the record's changes, or without a
/// record, a hosts block of this device.
fn cleanup(nl: &mut Netlink, paths: &Paths, device: &str) -> Result<TeardownReport, HostError> {
    let record = Record::load(&paths.state_dir, device).map_err(|source| HostError::State {
        dir: paths.state_dir.clone(),
        source,
    })?;
    let mut report = match record {
        Some(rec) => {
            let mut r = undo_record(nl, &rec, paths, Vec::new());
            r.undone.push(format!("state record of pid {}", rec.pid));
            r
        }
        None => TeardownReport::default(),
    };
    // A block may outlive its record (record deleted by hand, or a different hosts path).
    match HostsFile::new(&paths.hosts_file).remove(device) {
        Ok(true) => report.undone.push(format!(
            "hosts block for {device} from {}",
            paths.hosts_file.display()
        )),
        Ok(false) => {}
        Err(e) => report.failed.push(e.to_string()),
    }
    if report.failed.is_empty() {
        Ok(report)
    } else {
        Err(HostError::Incomplete(report.failed))
    }
}

/// `imds-tun down`: stops a running `up` for `device` (SIGTERM, then waits up to 5 s for it
/// to release the lock) and undoes whatever is left: the recorded changes, or with no record,
/// a hosts block of this device. An interface of that name that no record says is ours is
/// reported in `notes` and left alone. Idempotent: on a clean host it does nothing and
/// [`DownReport::nothing_to_do`] is true.
pub fn down(device: &str, paths: &Paths) -> Result<DownReport, HostError> {
    let mut report = DownReport::default();
    let lock = match Lock::acquire(&paths.state_dir, device) {
        Ok(l) => l,
        Err(LockError::Held { pid: Some(pid), .. }) => {
            if pid == std::process::id() {
                return Err(HostError::Running {
                    device: device.into(),
                    pid,
                    why: "is this process; tear it down through its guard",
                });
            }
            stop(pid, device, paths)?;
            report.stopped_pid = Some(pid);
            Lock::acquire(&paths.state_dir, device)?
        }
        Err(e) => return Err(e.into()),
    };
    let mut nl = Netlink::open().map_err(|source| HostError::Net {
        what: "opening rtnetlink".into(),
        source,
    })?;
    let had_record = Record::load(&paths.state_dir, device)
        .ok()
        .flatten()
        .is_some();
    report.teardown = match cleanup(&mut nl, paths, device) {
        Ok(r) => r,
        Err(HostError::Incomplete(failed)) => TeardownReport {
            failed,
            ..TeardownReport::default()
        },
        Err(e) => return Err(e),
    };
    if !had_record {
        if let Ok(Some(link)) = nl.link_by_name(device) {
            report.teardown.notes.push(format!(
                "interface {device} (index {}, kind {}) exists but no imds-tun record says it is ours; left alone",
                link.index,
                link.kind.as_deref().unwrap_or("none")
            ));
        }
    }
    drop(lock);
    if report.teardown.failed.is_empty() {
        Ok(report)
    } else {
        Err(HostError::Incomplete(report.teardown.failed))
    }
}

/// Sends SIGTERM to the running `up` and waits for it to release the lock.
fn stop(pid: u32, device: &str, paths: &Paths) -> Result<(), HostError> {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return Err(HostError::Running {
            device: device.into(),
            pid,
            why: "has an impossible pid",
        });
    };
    // SAFETY: kill(2) with a specific positive pid and a standard signal.
    if unsafe { libc::kill(raw, libc::SIGTERM) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(HostError::Running {
                device: device.into(),
                pid,
                why: "holds the lock and cannot be signalled",
            });
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if Lock::holder(&paths.state_dir, device).is_none() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(HostError::Running {
        device: device.into(),
        pid,
        why: "did not exit within 5 s of SIGTERM",
    })
}
