//! The Linux TUN device: creation, configuration, and one [`Device`] per queue.
//!
//! # Why raw ioctls and not a TUN crate
//!
//! The `tun` crate (0.8) removed multiqueue. `tun-rs` 2.x has it, but this module talks to
//! `/dev/net/tun` directly (about 100 lines of `open` + `TUNSETIFF`) because `up` needs three
//! things a general-purpose crate does not give:
//!
//! 1. **`IFF_TUN_EXCL`** on the first queue: creation fails with `EBUSY` if an interface of
//!    that name exists. Without it, `TUNSETIFF` silently *attaches* to an existing persistent
//!    or multiqueue TUN of the same name, and `down` could later delete a device that is not
//!    ours. With it, "the device exists" is a clean error and everything we record is ours.
//! 2. **The errno of each step**, to turn EPERM/EACCES, ENOENT and EBUSY into one-line
//!    messages that say what is wrong and how to fix it.
//! 3. **No side effects we did not ask for**: addresses, MTU, queue length and routes are set
//!    over rtnetlink by [`super::route`] in the calling thread's network namespace, and
//!    recorded; a crate's own address management would be a second, unrecorded writer.
//!
//! Non-blocking fds, `readv`/`writev` and multiqueue are each one flag or one call away, so
//! the crate would save little code.
//!
//! # Contract
//!
//! - The device is `IFF_TUN | IFF_NO_PI` (raw IP, no packet-information prefix), non-persistent:
//!   the kernel deletes it, with its addresses and routes, when the last queue fd closes, so a
//!   killed process leaves no device behind.
//! - MTU defaults to 65535 (the Linux client then advertises MSS 65495 and any response under
//!   64 KB fits one segment) and `txqueuelen` to 10000 (the default 500 drops bursts).
//! - With `queues > 1` the device is `IFF_MULTI_QUEUE` and [`Tun::create`] returns one [`Tun`]
//!   per queue; the kernel steers a flow to the queue that last wrote it, so one engine thread
//!   per queue owns its connections.
//! - When no IPv6 endpoint is served, IPv6 is disabled on the device before it comes up, so
//!   router solicitations and MLD reports never reach the engine. When IPv6 is served, router
//!   solicitations and address autoconfiguration are turned off instead.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Instant;

use super::route::Netlink;
use super::Device;

// linux/if_tun.h
const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_TUN_EXCL: libc::c_short = -0x8000; // 0x8000 as a c_short

/// The path of the TUN clone device.
const TUN_PATH: &str = "/dev/net/tun";

/// How to create the TUN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name, at most 15 bytes. Default `imds0`.
    pub name: String,
    /// Default 65535, the maximum for TUN.
    pub mtu: u32,
    /// Default 10000 (the kernel default, 500, drops bursts).
    pub txqueuelen: u32,
    /// Number of queues (fds); 1 means a plain single-queue device. Default 1.
    pub queues: usize,
    /// Whether IPv6 endpoints are served through the device. When false, IPv6 is disabled on
    /// it. Default false.
    pub ipv6: bool,
}

impl Default for TunConfig {
    fn default() -> Self {
        TunConfig {
            name: "imds0".into(),
            mtu: 65535,
            txqueuelen: 10000,
            queues: 1,
            ipv6: false,
        }
    }
}

/// Why the TUN device could not be created. Each message says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("creating TUN device {name} needs root or CAP_NET_ADMIN: run it with sudo")]
    NotPermitted { name: String },
    #[error("{TUN_PATH} does not exist: load the TUN driver with `sudo modprobe tun` (in a container, pass the device in, e.g. `--device /dev/net/tun`)")]
    NoTunDriver,
    #[error("network interface {name} already exists ({what}): choose another name with --device, or remove it")]
    NameTaken { name: String, what: String },
    #[error("invalid interface name {name:?}: use 1 to 15 characters, no '/', ':' or whitespace")]
    BadName { name: String },
    #[error("invalid TUN configuration: {0}")]
    BadConfig(&'static str),
    #[error("TUN device {name}: {step}: {source}")]
    Io {
        name: String,
        step: &'static str,
        source: io::Error,
    },
}

/// One queue of a TUN device.
pub struct Tun {
    fd: OwnedFd,
    name: Arc<str>,
    index: u32,
}

impl fmt::Debug for Tun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn valid_name(name: &str) -> bool {
    // The kernel's dev_valid_name, minus what a user would never mean: ':' (aliases).
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// Opens one queue: `/dev/net/tun` + `TUNSETIFF`.
fn open_queue(name: &str, flags: libc::c_short) -> Result<OwnedFd, TunError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) => TunError::NoTunDriver,
            Some(libc::EACCES) | Some(libc::EPERM) => TunError::NotPermitted { name: name.into() },
            _ => TunError::Io {
                name: name.into(),
                step: "opening /dev/net/tun",
                source: e,
            },
        })?;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReqFlags lays out (name,
    // then the union whose first member is ifr_flags, padded to the union's 24 bytes).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => TunError::NotPermitted { name: name.into() },
            Some(libc::EBUSY) | Some(libc::EEXIST) => TunError::NameTaken {
                name: name.into(),
                what: describe_existing(name),
            },
            // Creating (not attaching) and the name exists anyway: it is taken, whatever the
            // errno (EINVAL for some non-TUN kinds on older kernels).
            _ if flags & IFF_TUN_EXCL != 0 && interface_exists(name) => TunError::NameTaken {
                name: name.into(),
                what: describe_existing(name),
            },
            _ => TunError::Io {
                name: name.into(),
                step: "TUNSETIFF",
                source: e,
            },
        });
    }
    Ok(file.into())
}

fn interface_exists(name: &str) -> bool {
    Netlink::open()
        .and_then(|mut nl| nl.link_by_name(name))
        .is_ok_and(|l| l.is_some())
}

/// Says what an existing interface of this name is, for the "name taken" message.
fn describe_existing(name: &str) -> String {
    let info = Netlink::open().and_then(|mut nl| nl.link_by_name(name));
    match info {
        Ok(Some(link)) if link.kind.as_deref() == Some("tun") => {
            let attached = link.tun_queues.map_or(link.carrier, |q| q > 0);
            if link.tun_persist == Some(true) && !attached {
                return format!(
                    "a persistent TUN device no process holds; delete it with `ip link delete {name}`"
                );
            }
            match tun_holders(name).first() {
                Some((pid, comm)) => format!("a TUN device held by pid {pid} ({comm})"),
                None => "a TUN device held by another process".into(),
            }
        }
        Ok(Some(link)) => match link.kind {
            Some(kind) => format!("a {kind} interface, not ours"),
            None => "a network interface that is not a TUN device".into(),
        },
        Ok(None) => "it vanished while we looked; try again".into(),
        Err(_) => "could not query it over netlink".into(),
    }
}

/// The network namespace identity (inode) of a `/proc/.../ns/net` link.
fn netns_inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.ino())
}

/// Processes with a thread in the caller's network namespace and a TUN fd attached to an interface of
/// this name, from `/proc/*/fdinfo` (`iff:` lines). Best effort, for error messages only: a
/// process that holds a TUN of another namespace than its own is not found; unreadable
/// entries are skipped.
fn tun_holders(name: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Some(ours) = netns_inode("/proc/thread-self/ns/net") else {
        return out;
    };
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // Any thread of it in our namespace (a thread may have entered one with setns).
        let in_ours = fs::read_dir(p.path().join("task")).is_ok_and(|tasks| {
            tasks
                .flatten()
                .any(|t| netns_inode(&format!("{}/ns/net", t.path().display())) == Some(ours))
        });
        if !in_ours {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        let held = fds.flatten().any(|fd| {
            fs::read_to_string(fd.path()).is_ok_and(|s| {
                s.lines()
                    .any(|l| l.strip_prefix("iff:").map(str::trim) == Some(name))
            })
        });
        if held {
            let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push((pid, comm.trim().to_string()));
        }
    }
    out
}

/// Writes a per-device IPv6 sysctl. A missing file means IPv6 is not available at all, which
/// is as good as disabled.
fn ipv6_sysctl(name: &str, key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
    match fs::write(&path, value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

impl Tun {
    /// Creates the device in the calling thread's network namespace and returns one [`Tun`]
    /// per queue, the device configured (MTU, txqueuelen, IPv6 policy) and up. Fails if an
    /// interface of that name already exists.
    pub fn create(config: &TunConfig) -> Result<Vec<Tun>, TunError> {
        let name = config.name.as_str();
        if !valid_name(name) {
            return Err(TunError::BadName { name: name.into() });
        }
        if config.queues == 0 {
            return Err(TunError::BadConfig("queues must be at least 1"));
        }
        if config.mtu < 68 || config.mtu > 65535 {
            return Err(TunError::BadConfig("MTU must be between 68 and 65535"));
        }
        let io_err = |step: &'static str| {
            move |source: io::Error| TunError::Io {
                name: name.into(),
                step,
                source,
            }
        };
        let mq = if config.queues > 1 {
            IFF_MULTI_QUEUE
        } else {
            0
        };
        let base = IFF_TUN | IFF_NO_PI | mq;
        // The first queue creates the device, exclusively; the others attach to it. Once the
        // first fd is open the device is ours, and it disappears if we fail below and drop it.
        let mut fds = vec![open_queue(name, base | IFF_TUN_EXCL)?];
        for _ in 1..config.queues {
            fds.push(open_queue(name, base)?);
        }
        let mut nl = Netlink::open().map_err(io_err("opening rtnetlink"))?;
        let index = nl
            .link_by_name(name)
            .map_err(io_err("looking up the new device"))?
            .map(|l| l.index)
            .ok_or_else(|| {
                io_err("looking up the new device")(io::Error::from_raw_os_error(libc::ENODEV))
            })?;
        // IPv6 policy must be in place before the link comes up: that is when the kernel sends
        // router solicitations and MLD reports.
        if config.ipv6 {
            ipv6_sysctl(name, "disable_ipv6", "0").map_err(io_err("enabling IPv6"))?;
            ipv6_sysctl(name, "accept_ra", "0").map_err(io_err("setting accept_ra"))?;
            ipv6_sysctl(name, "router_solicitations", "0")
                .map_err(io_err("setting router_solicitations"))?;
            // 1 = none: no automatic link-local address, ours is added explicitly.
            ipv6_sysctl(name, "addr_gen_mode", "1").map_err(io_err("setting addr_gen_mode"))?;
        } else {
            ipv6_sysctl(name, "disable_ipv6", "1").map_err(io_err("disabling IPv6"))?;
        }
        nl.configure_link(index, config.mtu, config.txqueuelen)
            .map_err(io_err("setting MTU, txqueuelen and up"))?;
        let name: Arc<str> = Arc::from(name);
        Ok(fds
            .into_iter()
            .map(|fd| Tun {
                fd,
                name: name.clone(),
                index,
            })
            .collect())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index (stable for the device's life; never reused while it exists).
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Device for Tun {
    fn recv(&mut self, _now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: buf is valid for writes of buf.len() bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    fn send(&mut self, _now: Instant, packet: &[IoSlice<'_>]) -> io::Result<()> {
        loop {
            // SAFETY: IoSlice is guaranteed ABI-compatible with struct iovec on Unix; the
            // slices outlive the call.
            let n = unsafe {
                libc::writev(
                    self.fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len().min(libc::c_int::MAX as usize) as libc::c_int,
                )
            };
            if n >= 0 {
                // A TUN write takes the whole packet or fails: it is one skb.
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn readable_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }

    fn poll_at(&self) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_like_the_kernel() {
        assert!(valid_name("imds0"));
        assert!(valid_name("a23456789012345"));
        assert!(!valid_name("a234567890123456"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("eth0:1"));
        assert!(!valid_name(".."));
    }

    #[test]
    fn ifreq_has_the_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        assert_eq!(IFF_TUN_EXCL as u16, 0x8000);
    }
}
