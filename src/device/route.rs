//! A minimal rtnetlink client: link settings, addresses and routes of one interface.
//!
//! Speaks `NETLINK_ROUTE` over a raw socket (libc), with hand-built messages, instead of
//! shelling out to `ip` (not installed everywhere, output not an API, one fork per change) or
//! pulling in a netlink crate family whose API changes every few releases. Only the handful of
//! requests `up`/`down` need are here; each waits for the kernel's acknowledgement, so an error
//! is the kernel's own errno for that change.
//!
//! The socket lives in the network namespace of the thread that opened it: tests open it from
//! a thread that has entered a test namespace.
//!
//! Message layouts follow `linux/netlink.h`, `linux/rtnetlink.h`, `linux/if_link.h` and
//! `linux/if_addr.h`; everything is in native byte order except addresses (network order).

use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
// linux/rtnetlink.h
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;
// linux/if_link.h
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_TXQLEN: u16 = 13;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_NUM_QUEUES: u16 = 8;
// linux/if.h (not in libc's c_int IFF_* set)
const IFF_LOWER_UP: u32 = 0x1_0000;
// linux/if_addr.h
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const IFA_F_PERMANENT: u8 = 0x80;

/// What [`Netlink::link_by_name`] reports about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    /// `IFLA_INFO_KIND` (`"tun"`, `"veth"`, ...); `None` for kinds without one (e.g. a NIC).
    pub kind: Option<String>,
    pub up: bool,
    /// For TUN devices: whether the device is persistent (outlives its fds).
    pub tun_persist: Option<bool>,
    /// For multiqueue TUN devices: how many queues (fds) are attached (the kernel reports it
    /// only for multiqueue devices; a single-queue TUN has carrier exactly while attached).
    pub tun_queues: Option<u32>,
    /// `IFF_LOWER_UP`: carrier. A TUN has carrier while a process has it open.
    pub carrier: bool,
}

/// An rtnetlink socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

/// Builds one netlink message: header, fixed family header, then attributes.
struct Msg(Vec<u8>);

impl Msg {
    fn new(ty: u16, flags: u16, family_header: &[u8]) -> Msg {
        let mut b = vec![0u8; NLMSG_HDRLEN];
        b[4..6].copy_from_slice(&ty.to_ne_bytes());
        b[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        b.extend_from_slice(family_header);
        pad(&mut b);
        Msg(b)
    }

    fn attr(mut self, ty: u16, data: &[u8]) -> Msg {
        let len = (4 + data.len()) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        pad(&mut self.0);
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.0
    }
}

fn pad(b: &mut Vec<u8>) {
    while b.len() % 4 != 0 {
        b.push(0);
    }
}

fn family(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

fn ifaddrmsg(addr: IpAddr, prefix: u8, index: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = family(addr);
    h[1] = prefix;
    h[2] = IFA_F_PERMANENT | IFA_F_NODAD;
    // Link scope: the kernel never borrows a link-scope address as the source for traffic
    // leaving through another interface, so the address affects nothing but the TUN.
    h[3] = RT_SCOPE_LINK;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

fn rtmsg(dst: IpAddr, prefix: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = family(dst);
    h[1] = prefix;
    h[4] = RT_TABLE_MAIN;
    h[5] = RTPROT_STATIC;
    // IPv4 host routes to a directly reachable address are link scope (as `ip route add ...
    // dev X` makes them); IPv6 routes are always universe scope.
    h[6] = match dst {
        IpAddr::V4(_) => RT_SCOPE_LINK,
        IpAddr::V6(_) => RT_SCOPE_UNIVERSE,
    };
    h[7] = RTN_UNICAST;
    h
}

/// Iterates over the attributes in `b` as (type, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff; // strip NLA_F_NESTED/BYTEORDER
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, payload))
    })
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a freshly created, owned descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero means "kernel assigns the port id".
        let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sa is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd, seq: 1 })
    }

    /// Sends one request and collects reply messages (type, payload after the header) until
    /// the acknowledgement. A negative acknowledgement becomes that errno.
    fn request(&mut self, msg: Msg) -> io::Result<Vec<(u16, Vec<u8>)>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: sockaddr_nl all-zero except the family addresses the kernel (port 0).
        let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: bytes and sa are valid for the lengths passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut b = &buf[..n as usize];
            while b.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if len < NLMSG_HDRLEN || len > b.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed netlink reply",
                    ));
                }
                let payload = &b[NLMSG_HDRLEN..len];
                b = &b[((len + 3) & !3).min(b.len())..];
                if mseq != seq {
                    continue; // a late reply to an earlier request
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                            .unwrap_or(-libc::EIO);
                        return if code == 0 {
                            Ok(replies)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    NLMSG_DONE => return Ok(replies),
                    _ => replies.push((ty, payload.to_vec())),
                }
            }
        }
    }

    /// Looks an interface up by name; `None` if there is none.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<LinkInfo>> {
        let mut ifname = name.as_bytes().to_vec();
        ifname.push(0);
        let msg = Msg::new(RTM_GETLINK, 0, &ifinfomsg(0, 0, 0)).attr(IFLA_IFNAME, &ifname);
        let replies = match self.request(msg) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        for (ty, payload) in replies {
            if ty != RTM_NEWLINK || payload.len() < 16 {
                continue;
            }
            let index = i32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
            let flags = u32::from_ne_bytes([payload[8], payload[9], payload[10], payload[11]]);
            let mut info = LinkInfo {
                index: index as u32,
                kind: None,
                up: flags & libc::IFF_UP as u32 != 0,
                carrier: flags & IFF_LOWER_UP != 0,
                tun_persist: None,
                tun_queues: None,
            };
            for (aty, data) in attrs(&payload[16..]) {
                if aty != IFLA_LINKINFO {
                    continue;
                }
                for (ity, idata) in attrs(data) {
                    if ity == IFLA_INFO_KIND {
                        let s = idata.split(|&c| c == 0).next().unwrap_or_default();
                        info.kind = Some(String::from_utf8_lossy(s).into_owned());
                    } else if ity == IFLA_INFO_DATA {
                        for (tty, tdata) in attrs(idata) {
                            match (tty, tdata) {
                                (IFLA_TUN_PERSIST, [p, ..]) => info.tun_persist = Some(*p != 0),
                                (IFLA_TUN_NUM_QUEUES, [a, b, c, d, ..]) => {
                                    info.tun_queues = Some(u32::from_ne_bytes([*a, *b, *c, *d]))
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            return Ok(Some(info));
        }
        Ok(None)
    }

    /// Sets MTU and transmit queue length and brings the link up, in one request.
    pub fn configure_link(&mut self, index: u32, mtu: u32, txqueuelen: u32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        let msg = Msg::new(RTM_NEWLINK, 0, &ifinfomsg(index, up, up))
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .attr(IFLA_TXQLEN, &txqueuelen.to_ne_bytes());
        self.request(msg).map(drop)
    }

    /// Deletes an interface.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        self.request(Msg::new(RTM_DELLINK, 0, &ifinfomsg(index, 0, 0)))
            .map(drop)
    }

    /// Adds `addr/prefix` to the interface (permanent, no DAD, link scope).
    pub fn add_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let o = octets(addr);
        let msg = Msg::new(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            &ifaddrmsg(addr, prefix, index),
        )
        .attr(IFA_LOCAL, &o)
        .attr(IFA_ADDRESS, &o);
        self.request(msg).map(drop)
    }

    /// Removes `addr/prefix` from the interface.
    pub fn delete_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let o = octets(addr);
        let msg = Msg::new(RTM_DELADDR, 0, &ifaddrmsg(addr, prefix, index))
            .attr(IFA_LOCAL, &o)
            .attr(IFA_ADDRESS, &o);
        self.request(msg).map(drop)
    }

    /// Adds the route `dst/prefix dev <index> [src <src>]` to the main table. Fails with
    /// `EEXIST` if that destination is already routed in the main table (by anyone).
    pub fn add_route(
        &mut self,
        index: u32,
        dst: IpAddr,
        prefix: u8,
        src: Option<IpAddr>,
    ) -> io::Result<()> {
        let mut msg = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &rtmsg(dst, prefix))
            .attr(RTA_TABLE, &(RT_TABLE_MAIN as u32).to_ne_bytes())
            .attr(RTA_DST, &octets(dst))
            .attr(RTA_OIF, &index.to_ne_bytes());
        if let Some(src) = src {
            msg = msg.attr(RTA_PREFSRC, &octets(src));
        }
        self.request(msg).map(drop)
    }

    /// Deletes the route `dst/prefix dev <index>` from the main table; only a route through
    /// that interface matches, so someone else's route to the same destination is left alone.
    pub fn delete_route(&mut self, index: u32, dst: IpAddr, prefix: u8) -> io::Result<()> {
        let mut h = rtmsg(dst, prefix);
        // Deletion matches on the fields given: leave protocol and scope as wildcards.
        h[5] = 0;
        h[6] = RT_SCOPE_UNIVERSE;
        let msg = Msg::new(RTM_DELROUTE, 0, &h)
            .attr(RTA_TABLE, &(RT_TABLE_MAIN as u32).to_ne_bytes())
            .attr(RTA_DST, &octets(dst))
            .attr(RTA_OIF, &index.to_ne_bytes());
        self.request(msg).map(drop)
    }
}

/// True for errors that mean "already gone": deleting what does not exist is success for an
/// idempotent undo.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODEV) | Some(libc::ESRCH) | Some(libc::ENOENT) | Some(libc::EADDRNOTAVAIL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_matches_the_kernel_headers() {
        let m = Msg::new(
            RTM_NEWROUTE,
            NLM_F_CREATE,
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        )
        .attr(RTA_OIF, &7u32.to_ne_bytes())
        .attr(RTA_DST, &[169, 254, 169, 254])
        .finish(9);
        assert_eq!(m.len(), 16 + 12 + 8 + 8);
        assert_eq!(u32::from_ne_bytes([m[0], m[1], m[2], m[3]]), m.len() as u32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWROUTE);
        assert_eq!(
            u16::from_ne_bytes([m[6], m[7]]),
            NLM_F_CREATE | NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes([m[8], m[9], m[10], m[11]]), 9);
        let parsed: Vec<_> = attrs(&m[28..]).collect();
        assert_eq!(parsed[0], (RTA_OIF, &7u32.to_ne_bytes()[..]));
        assert_eq!(parsed[1], (RTA_DST, &[169u8, 254, 169, 254][..]));
    }

    #[test]
    fn attribute_parser_survives_garbage() {
        assert_eq!(attrs(&[0xff, 0xff, 1, 0, 9]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
        assert_eq!(attrs(&[5, 0, 1, 0, 9]).count(), 1);
    }
}
