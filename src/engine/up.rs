//! `imds-tun up`: set up the host, run one engine thread per TUN queue, undo on exit.
//!
//! Contract: [`run`] returns after SIGINT or SIGTERM (or an engine failure) with everything
//! it changed on the host undone ([`crate::device::HostGuard::teardown`]); if the process is
//! killed instead, `imds-tun down` or the next `up` undoes it from the record. It prints one
//! line when the metadata address answers. SIGHUP, `imds-tun ctl reload` and any change to
//! the configuration file (watched, [`crate::reload::watch`]) reload it through the one
//! [`Control::reload`]: the new one is validated and rendered in full before it replaces the
//! snapshot, and an invalid one leaves the running snapshot in place. The control socket
//! (`<state-dir>/ctl.sock`, or `--ctl`; [`crate::control`]) is recorded before it is bound and
//! removed on exit.
//!
//! The token doors on kernel sockets (HIMDS, App Service, legacy MSI; [`crate::doors`]) run
//! beside the engine threads on a small runtime; their env lines follow the ready line and what
//! they created (HIMDS key files, directory, group) is removed before the host is restored.
//! ECS container credentials add 169.254.170.2 to the routes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use super::driver::{self, Stop};
use super::Engine;
use crate::config::doors::DoorFlags;
use crate::config::Config;
use crate::control::server::ControlSocket;
use crate::control::{Control, ControlError};
use crate::device::{Device, Fault, FaultConfig, HostError, HostSetup, Paths, Pcap, Plan};
use crate::doors::{DoorError, Doors};
use crate::metrics::{self, Observer};
use crate::notify;
use crate::reload;
use crate::snapshot::{Keys, Snapshot, SnapshotCell};
use crate::tcp::TcpConfig;

/// The metadata address every cloud answers on.
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// How `up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// TUN device name.
    pub device: String,
    /// Engine threads, one TUN queue each.
    pub threads: usize,
    /// Write every packet to this pcap file (forces one queue, so one writer).
    pub pcap: Option<PathBuf>,
    /// Inject faults in both directions (tests and rehearsals).
    pub fault: Option<FaultConfig>,
    /// State directory and hosts file.
    pub paths: Paths,
    /// The configuration file, re-read on SIGHUP and when it changes; `None` for the
    /// embedded default.
    pub config_file: Option<PathBuf>,
    /// The metrics endpoint already listening, named in the record for `imds-tun status`.
    pub metrics: Option<SocketAddr>,
    /// The doors the command line turned on, kept on every reload and live edit.
    pub doors: DoorFlags,
    /// The control socket; `None` for `<state-dir>/ctl.sock`.
    pub ctl: Option<PathBuf>,
}

/// The control socket's file name in the state directory.
pub const CTL_SOCKET: &str = "ctl.sock";

/// Why `up` failed.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write the pcap file {path}: {source}")]
    Pcap {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signal handling: {0}")]
    Signal(#[from] nix::Error),
    #[error("imds-tun up needs root (CAP_NET_ADMIN) to create the TUN device and routes: run it with sudo")]
    NotPrivileged,
    #[error(transparent)]
    Doors(#[from] DoorError),
    #[error("control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control: {0}")]
    ControlState(#[from] ControlError),
    #[error("engine thread {queue} failed: {message}")]
    Engine { queue: usize, message: String },
}

/// Runs `up` until a stop signal. `snapshot` is the validated, rendered configuration.
pub fn run(snapshot: Snapshot, keys: Keys, opts: UpOptions) -> Result<(), UpError> {
    let started = Instant::now();
    require_privileges()?;
    // Block the signals before any thread exists so that every thread inherits the mask and
    // only `sigwait` below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.thread_block()?;

    let plan = plan(&snapshot.config, &opts);
    let tcp = tcp_config(&snapshot.config, &plan.routes);
    let mut guard = HostSetup::apply(&plan)?;
    if let Some(addr) = opts.metrics {
        if let Err(e) = guard.record_metrics(addr) {
            let _ = guard.teardown();
            return Err(e.into());
        }
    }
    let queues = guard.take_queues();
    let config = Arc::clone(&snapshot.config);
    let cell = Arc::new(SnapshotCell::new(snapshot));
    // Moves events along in time (it inherits the blocked signals; it ends with the process).
    if let Err(e) = crate::live::ticker::spawn(&cell) {
        let _ = guard.teardown();
        return Err(e.into());
    }
    // The token doors on kernel sockets (HIMDS, App Service, legacy MSI) run on a small
    // runtime of their own; its threads inherit the blocked signals.
    let himds_journal = if config.azure.enabled && config.azure.himds.enabled {
        match guard.record_himds_journal() {
            Ok(p) => Some(p),
            Err(e) => {
                let _ = guard.teardown();
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let doors = match open_doors(&config, &keys, &cell, himds_journal) {
        Ok(d) => d,
        Err(e) => {
            let _ = guard.teardown();
            return Err(e);
        }
    };
    let control = match Control::new(
        "up",
        Arc::clone(&cell),
        keys.clone(),
        opts.doors,
        opts.config_file.clone(),
    ) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let _ = guard.teardown();
            return Err(e.into());
        }
    };
    let ctl_path = opts
        .ctl
        .clone()
        .unwrap_or_else(|| opts.paths.state_dir.join(CTL_SOCKET));
    let ctl_socket = match guard
        .record_control_socket(&ctl_path)
        .map_err(UpError::from)
        .and_then(|()| {
            ControlSocket::bind(&ctl_path, Arc::clone(&control)).map_err(|source| {
                UpError::Control {
                    path: ctl_path.clone(),
                    source,
                }
            })
        }) {
        Ok(s) => s,
        Err(e) => {
            let _ = guard.teardown();
            return Err(e);
        }
    };
    if let Err(e) = reload::watch(Arc::clone(&control)) {
        tracing::warn!("cannot watch the configuration file (SIGHUP still reloads): {e}");
    }
    let stop = Stop::new()?;
    let isn_key = random_key()?;

    let mut threads: Vec<JoinHandle<Result<(), String>>> = Vec::new();
    for (i, tun) in queues.into_iter().enumerate() {
        let device: Box<dyn Device + Send> = match (&opts.pcap, &opts.fault) {
            (None, None) => Box::new(tun),
            (None, Some(f)) => Box::new(Fault::new(tun, *f)),
            (Some(path), fault) => {
                let file = File::create(path).map_err(|source| UpError::Pcap {
                    path: path.clone(),
                    source,
                })?;
                let writer = BufWriter::new(file);
                // The trace wraps the fault device, so it shows the engine's view: packets it
                // received after the faults, packets it sent before them (tcpdump on the
                // device gives the kernel's view).
                let inner: Box<dyn Device + Send> = match fault {
                    Some(f) => Box::new(Fault::new(tun, *f)),
                    None => Box::new(tun),
                };
                Box::new(Pcap::new(inner, writer, Instant::now()).map_err(|source| {
                    UpError::Pcap {
                        path: path.clone(),
                        source,
                    }
                })?)
            }
        };
        let mut engine = Engine::new(device, tcp.clone(), isn_key, Arc::clone(&cell), started);
        engine.export(Observer::new(), metrics::global().engine_slot());
        let stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(format!("imds-tun-q{i}"))
            .spawn(move || {
                // A panic (a bug) must not leave the host half-served: it is caught here and
                // handled as a failure, so the main thread restores the host (Cargo.toml's
                // release profile says why unwinding).
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    driver::run(&mut engine, &stop)
                }));
                let result = match run {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("panicked (the message is above)".to_string()),
                };
                // What this queue did, for post-mortems of soaks and incidents: the engine's
                // packet counts and every TCP drop/reset/retransmission reason.
                let (half_open, established, time_wait) = engine.tcp().class_counts();
                tracing::info!(
                    "queue {i} at exit: {:?}; tcp {:?}; still in table: {half_open} half-open, \
                     {established} established, {time_wait} TIME-WAIT",
                    engine.counters(),
                    engine.tcp().counters(),
                );
                if result.is_err() {
                    // Wake the main thread so the host is restored instead of left half-served.
                    let _ = nix::sys::signal::raise(Signal::SIGTERM);
                }
                result
            })?;
        threads.push(handle);
    }

    println!(
        "imds-tun: ready: {} at {} via {} ({} queue{}, {} ms)",
        clouds(&cell.load().config),
        plan.routes
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        guard.device(),
        threads.len(),
        if threads.len() == 1 { "" } else { "s" },
        started.elapsed().as_millis()
    );
    if let Some((d, _)) = &doors {
        // Whoever started us may read only the ready line: a closed stdout is no failure.
        let mut out = std::io::stdout();
        for line in d.env_lines() {
            let _ = writeln!(out, "{line}");
        }
    }

    if notify::enabled() {
        // systemd's "started" must mean "answering": ask the metadata address ourselves.
        match answers(METADATA_V4, READINESS_LIMIT) {
            Ok(()) => notify::notify_or_log("READY=1"),
            Err(e) => tracing::error!(
                "{METADATA_V4}:80 does not answer through {} ({e}); not telling systemd we are ready",
                guard.device()
            ),
        }
    }

    while signals.wait()? == Signal::SIGHUP {
        notify::notify_or_log(&notify::reloading_message());
        // Logged by `reload` itself, success or failure.
        let _ = control.reload("SIGHUP");
        notify::notify_or_log("READY=1");
    }
    notify::notify_or_log("STOPPING=1");
    drop(ctl_socket);

    stop.raise();
    crate::fleet::log_counts(&cell.load());
    let mut failure = None;
    for (queue, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => failure = Some(UpError::Engine { queue, message }),
            Err(_) => {
                failure = Some(UpError::Engine {
                    queue,
                    message: "panicked".into(),
                })
            }
        }
    }
    if let Some((d, runtime)) = doors {
        for line in d.close() {
            tracing::info!("undone: {line}");
        }
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
    let report = guard.teardown()?;
    for line in &report.undone {
        tracing::info!("undone: {line}");
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How long `up` waits for its own readiness request to be answered.
const READINESS_LIMIT: Duration = Duration::from_secs(10);

/// Asks `GET /imds-tun/jwks` (answered whatever clouds are on) at `addr`:80 until a 200
/// comes back or `limit` passes: the kernel routes it into the TUN device like any caller's.
fn answers(addr: Ipv4Addr, limit: Duration) -> std::io::Result<()> {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let target = SocketAddr::from((addr, 80));
    loop {
        let attempt = (|| {
            let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(
                b"GET /imds-tun/jwks HTTP/1.1\r\nHost: imds-tun-readiness\r\nConnection: close\r\n\r\n",
            )?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            if &head == b"HTTP/1.1 200" {
                Ok(())
            } else {
                Err(std::io::Error::other("unexpected answer"))
            }
        })();
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Opens the token doors the configuration enables, each on the returned runtime; `None`
/// when there is nothing to open but ECS's routed address (whose env line is printed anyway).
fn open_doors(
    config: &Config,
    keys: &Keys,
    cell: &Arc<SnapshotCell>,
    himds_journal: Option<PathBuf>,
) -> Result<Option<(Doors, tokio::runtime::Runtime)>, UpError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("imds-tun-doors")
        .enable_all()
        .build()?;
    let doors = Doors::open(config, keys, cell, runtime.handle(), himds_journal)?;
    if doors.is_empty() && doors.env_lines().is_empty() {
        runtime.shutdown_background();
        return Ok(None);
    }
    Ok(Some((doors, runtime)))
}

/// What `up` changes on the host for this configuration.
fn plan(config: &Config, opts: &UpOptions) -> Plan {
    let mut plan = Plan::new(&opts.device);
    plan.paths = opts.paths.clone();
    plan.tun.queues = if opts.pcap.is_some() {
        1
    } else {
        opts.threads.max(1)
    };
    plan.routes = vec![IpAddr::V4(METADATA_V4)];
    let ecs = &config.aws.container_credentials;
    let ecs_address = IpAddr::V4(crate::config::doors::ECS_ADDRESS);
    if config.aws.enabled && ecs.enabled {
        plan.routes.push(ecs_address);
    }
    for extra in &config.server.addresses {
        if !plan.routes.contains(extra) {
            plan.routes.push(*extra);
        }
    }
    // Google's clients resolve metadata.google.internal; nobody else needs the hosts file.
    if !config.gce.enabled {
        plan.hosts_lines = None;
    }
    plan
}

/// TCP listens on port 80 of every routed address.
fn tcp_config(config: &Config, routes: &[IpAddr]) -> TcpConfig {
    TcpConfig {
        listen: routes.iter().map(|a| SocketAddr::new(*a, 80)).collect(),
        idle_timeout: Duration::from_secs(config.server.idle_timeout_secs),
        header_timeout: Duration::from_secs(config.server.header_timeout_secs),
        max_established: config.server.max_connections,
        max_per_source: config.server.per_source_limit(),
        max_half_open: config.server.max_half_open,
        max_time_wait: config.server.max_time_wait,
        ..TcpConfig::default()
    }
}

/// Fails with [`UpError::NotPrivileged`] without CAP_NET_ADMIN. Checked first (callers do it
/// before opening keys, too) so that an unprivileged run says the one thing that matters,
/// before any step fails on a detail (the state directory, the device, the key store) and
/// nothing is left behind.
pub fn require_privileges() -> Result<(), UpError> {
    if has_net_admin() {
        Ok(())
    } else {
        Err(UpError::NotPrivileged)
    }
}

/// Whether this process may configure the network: CAP_NET_ADMIN in its effective set
/// (root has it, and so does a service granted only that capability).
fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

fn random_key() -> std::io::Result<[u8; 16]> {
    let mut key = [0u8; 16];
    std::io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut key)?;
    Ok(key)
}

/// "azure, gce, aws" for the ready line.
pub fn clouds(c: &Config) -> String {
    let names: Vec<&str> = [
        (c.azure.enabled, "azure"),
        (c.gce.enabled, "gce"),
        (c.aws.enabled, "aws"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        "no cloud".into()
    } else {
        names.join(", ")
    }
}

/// `--fault` on the command line: `key=value` pairs, rates as probabilities.
///
/// Keys: `drop`, `dup`, `reorder`, `delay` (probabilities 0..1), `max-delay` (`50ms`, `1s`),
/// `seed`. Rates apply in both directions.
#[derive(Debug, Clone)]
pub struct FaultSpec(pub FaultConfig);

impl std::str::FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut rates = crate::device::FaultRates {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: 0.0,
            max_delay: Duration::from_millis(50),
        };
        let mut seed = 1u64;
        for pair in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}`: expected key=value"))?;
            let prob = || -> Result<f64, String> {
                v.parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| format!("`{k}`: expected a probability from 0 to 1, got `{v}`"))
            };
            match k {
                "drop" => rates.drop = prob()?,
                "dup" => rates.duplicate = prob()?,
                "reorder" => rates.reorder = prob()?,
                "delay" => rates.delay = prob()?,
                "max-delay" => rates.max_delay = parse_duration(v)?,
                "seed" => {
                    seed = v
                        .parse()
                        .map_err(|_| format!("`seed`: expected a number, got `{v}`"))?
                }
                _ => {
                    return Err(format!(
                        "unknown fault `{k}` (drop, dup, reorder, delay, max-delay, seed)"
                    ))
                }
            }
        }
        Ok(FaultSpec(FaultConfig::symmetric(seed, rates)))
    }
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like 50ms or 1s, got `{v}`");
    if let Some(ms) = v.strip_suffix("ms") {
        ms.parse().map(Duration::from_millis).map_err(|_| bad())
    } else if let Some(s) = v.strip_suffix('s') {
        s.parse().map(Duration::from_secs).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_spec_parses_and_rejects() {
        let f: Result<FaultSpec, _> =
            "drop=0.05,dup=0.02,reorder=0.05,delay=0.1,max-delay=50ms,seed=7".parse();
        let f = f.map(|f| f.0);
        assert!(
            matches!(f, Ok(ref c) if c.seed == 7 && c.rx.drop == 0.05 && c.tx.duplicate == 0.02 && c.rx.max_delay == Duration::from_millis(50))
        );
        assert!("drop=2".parse::<FaultSpec>().is_err());
        assert!("loss=0.1".parse::<FaultSpec>().is_err());
        assert!("max-delay=5m".parse::<FaultSpec>().is_err());
    }
}
