//! imds-tun: a cloud instance-metadata service for machines that are not in a cloud.
//!
//! `sudo imds-tun up` routes 169.254.169.254 (and the other metadata addresses) into a TUN
//! device owned by this process, which speaks TCP itself and answers as Azure IMDS, the Google
//! Compute Engine metadata server and AWS EC2 IMDS. `imds-tun serve --listen ADDR` feeds the
//! same HTTP and cloud layers from kernel sockets instead.
//!
//! # Map
//!
//! ```text
//! config/    JSON schema (serde), loading, validation with JSON-path errors, embedded default
//! cloud/     azure, gce, aws: configuration -> pre-serialised routes and per-request rules
//! http/      incremental, bounded request parsing; response framing; the exchange loop
//! identity/  signing keys and their store, JWKS, CA and PKCS#7; minted, static, upstream and
//!            command token and credential sources behind one trait, with caching and the audit
//!            log
//! snapshot   the immutable, pre-serialised response store all front doors answer from
//! fleet      instances told apart by caller address: a snapshot per profile, longest prefix
//!            wins, unknown callers get the base or a reset
//! live/      what changes while running: scheduled, spot and maintenance events, injected
//!            faults; shared by every snapshot of a cell
//! wire/      IPv4/IPv6/TCP parse and emit, checksums (etherparse stays in here)
//! tcp/       server-side TCP: connection table, state machine, timers (pure, no I/O)
//! device/    TUN, in-memory, fault-injecting and pcap devices; routes; hosts file; host state
//! engine/    the packet loop that joins device, wire, tcp, http and the snapshot
//! listen     the kernel-socket front door (`serve --listen`)
//! pending    parked requests: tickets on work off the packet path or on a change (GCE's
//!            hanging GETs), and waking the front door
//! control/   the control socket of a running instance (`imds-tun ctl`): live edits mapped onto
//!            the configuration, reload, status counters
//! doors/     the token doors on kernel sockets: Azure Arc HIMDS (key-file challenge),
//!            App Service, legacy VM extension
//! notify     sd_notify(3) for systemd's Type=notify (READY, RELOADING, STOPPING)
//! status     `imds-tun status`: the state directory and a scrape, summarised
//! metrics/   the Prometheus registry (requests, tokens, TCP, latency), its text format and
//!            the opt-in loopback endpoint; every feature exports its counters through it
//! ```
//!
//! # Principles
//!
//! Protocol cores (`wire`, `tcp`, `http`, `cloud`) do no I/O and never read the clock: time
//! is passed in. Only `engine`, `listen` and `device` touch file descriptors and clocks.
//! Everything that can be rendered ahead of time is rendered into the [`snapshot::Snapshot`]
//! once per configuration load; answering a static request is a lookup and a reference.

pub mod access_log;
pub mod cloud;
pub mod config;
pub mod control;
pub mod device;
pub mod doors;
pub mod engine;
pub mod fleet;
pub mod http;
pub mod identity;
pub mod listen;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod pending;
pub mod snapshot;
pub mod status;
pub mod tcp;
pub mod wire;
