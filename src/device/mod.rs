//! Devices that carry raw IP packets, and everything `up` changes on the host.
//!
//! # Devices (design principle 5)
//!
//! A [`Device`] moves one raw IPv4/IPv6 packet at a time, with no link-layer header: the
//! engine reads a packet into its own buffer and writes a reply as a list of slices (header +
//! pre-serialised payload, gathered by `writev` without a copy). Implementations:
//!
//! - [`Tun`]: one queue of a Linux TUN device (`IFF_TUN | IFF_NO_PI`, optionally
//!   `IFF_MULTI_QUEUE` with one fd per engine thread), non-blocking.
//! - [`Memory`]: an in-memory pair of queues, for tests.
//! - [`Fault`]: middleware over any device that drops, duplicates, reorders and delays packets in
//!   both directions, seeded and deterministic (`tc netem` is not available on the target
//!   kernel, so this is how loss is tested).
//! - [`Pcap`]: middleware that writes every packet in both directions to a pcap file.
//!
//! Middleware is stacked like smoltcp's `phy` wrappers: `Pcap<Fault<Tun>>` traces what the
//! engine saw after fault injection; `Fault<Pcap<Tun>>` traces what the kernel saw.
//!
//! # The driver contract
//!
//! Time is passed in (`now`) and never read inside a device, so the fault wrapper is
//! reproducible under a simulated clock. A driver loops:
//!
//! 1. call [`Device::recv`] until it returns `Ok(None)`;
//! 2. send replies with [`Device::send`];
//! 3. sleep until [`Device::readable_fd`] is readable (poll/epoll) or until the earliest of its
//!    own timers and [`Device::poll_at`], whichever comes first, then go to 1.
//!
//! `recv` and `send` also release packets a wrapper is holding back whose time has come, so a
//! driver that honours `poll_at` never strands a delayed packet.
//!
//! # Host changes (design principle 7)
//!
//! [`HostSetup::apply`] creates the device, its source address, the routes and the
//! `/etc/hosts` block, recording each change in a state file *before* making it and holding a
//! lock for the device name; the returned [`HostGuard`] undoes everything on
//! [`HostGuard::teardown`] or drop. [`down`] undoes what a killed `up` left behind. Nothing is
//! ever added to any interface other than the TUN device itself.

use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::time::Instant;

mod fault;
mod host;
mod hosts;
mod memory;
mod pcap;
mod route;
mod state;
mod tun;

pub use fault::{DirectionStats, Fault, FaultConfig, FaultRates, FaultStats};
pub use host::{
    down, DownReport, HostError, HostGuard, HostSetup, Paths, Plan, TeardownReport,
    DEFAULT_SOURCE_V4, DEFAULT_SOURCE_V6,
};
pub use hosts::{HostsBlock, HostsError, HostsFile, WriteMode};
pub use memory::Memory;
pub use pcap::{Pcap, LINKTYPE_RAW};
pub use route::{LinkInfo, Netlink};
pub use state::write_atomic;
pub use state::{Lock, LockError, Prefix, Record};
pub use tun::{Tun, TunConfig, TunError};

/// The largest IP packet a device carries: the maximum TUN MTU. A receive buffer of this size
/// never truncates a packet.
pub const MAX_PACKET: usize = 65535;

/// One raw IP packet at a time, in both directions. See the module documentation for the
/// driver contract.
pub trait Device {
    /// Receives one packet into `buf` and returns its length, or `None` when no packet is ready
    /// now. Never blocks. `buf` should be at least [`MAX_PACKET`] bytes long: a longer packet is
    /// truncated to `buf.len()` (the returned length is what was copied).
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>>;

    /// Sends one packet, gathered from `packet` (e.g. a header slice and a payload slice).
    /// Never blocks: if the device cannot take the packet now it returns an error of kind
    /// `WouldBlock` and the packet is lost (TCP retransmits), as a full NIC queue would.
    fn send(&mut self, now: Instant, packet: &[IoSlice<'_>]) -> io::Result<()>;

    /// The file descriptor to wait on for readability, for devices backed by one.
    fn readable_fd(&self) -> Option<BorrowedFd<'_>>;

    /// The earliest time at which `recv`/`send` would release a packet being held back (a delay
    /// or reorder in [`Fault`]); `None` when nothing is held.
    fn poll_at(&self) -> Option<Instant>;
}

impl<D: Device + ?Sized> Device for Box<D> {
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        (**self).recv(now, buf)
    }
    fn send(&mut self, now: Instant, packet: &[IoSlice<'_>]) -> io::Result<()> {
        (**self).send(now, packet)
    }
    fn readable_fd(&self) -> Option<BorrowedFd<'_>> {
        (**self).readable_fd()
    }
    fn poll_at(&self) -> Option<Instant> {
        (**self).poll_at()
    }
}

/// Concatenates gathered slices into one buffer: for devices that must own a copy of the
/// packet (memory queues, fault delays, pcap records).
pub(crate) fn gather(packet: &[IoSlice<'_>]) -> Vec<u8> {
    let len = packet.iter().map(|s| s.len()).sum();
    let mut out = Vec::with_capacity(len);
    for s in packet {
        out.extend_from_slice(s);
    }
    out
}
