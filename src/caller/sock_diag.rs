//! The owner of a TCP socket from its 4-tuple: NETLINK_SOCK_DIAG (`inet_diag`, sock_diag(7)),
//! with `/proc/net/tcp{,6}` as the fallback.
//!
//! Contract: [`owner`] finds the socket whose own (local) address is `client` and whose
//! remote address is `server` (the client's end of a connection we accepted, whether it
//! reached us through the TUN or over loopback) in the calling thread's network namespace, and
//! returns its uid and inode. Blocking; run it off the packet path.
//!
//! An exact lookup (no `NLM_F_DUMP`) names the socket by `inet_diag_sockid`: `idiag_src` /
//! `idiag_sport` are the socket's local end, `idiag_dst` / `idiag_dport` its remote end
//! (the kernel's `inet_diag_find_one_icsk` looks the pair up as a received segment would);
//! the cookie must be `INET_DIAG_NOCOOKIE`. An IPv4 peer is also looked for as an IPv4-mapped
//! IPv6 socket (a dual-stack client).

use std::io;
use std::net::{IpAddr, SocketAddr};

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// uid and inode of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOwner {
    pub uid: u32,
    pub inode: u64,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const INET_DIAG_NOCOOKIE: u32 = !0;
/// Offsets in `inet_diag_msg` (after the netlink header): family, state, timer, retrans (4),
/// the 48-byte id, expires, rqueue, wqueue, then uid and inode.
const MSG_UID: usize = 4 + 48 + 12;
const MSG_INODE: usize = MSG_UID + 4;

/// The owner of the client socket `client` → `server`.
pub fn owner(client: SocketAddr, server: SocketAddr) -> io::Result<SocketOwner> {
    match diag(client, server) {
        Ok(Some(o)) => return Ok(o),
        Ok(None) => {}
        Err(e) => tracing::debug!("sock_diag failed ({e}); trying /proc/net/tcp"),
    }
    if let (IpAddr::V4(c), IpAddr::V4(s)) = (client.ip(), server.ip()) {
        let mapped =
            |ip: std::net::Ipv4Addr, port| SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), port);
        if let Ok(Some(o)) = diag(mapped(c, client.port()), mapped(s, server.port())) {
            return Ok(o);
        }
    }
    proc_net_tcp(client, server)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such socket in this namespace"))
}

fn addr_words(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut w = [0u8; 16];
            w[..4].copy_from_slice(&a.octets());
            w
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// One exact `inet_diag` lookup; `None` when the kernel has no such socket.
fn diag(client: SocketAddr, server: SocketAddr) -> io::Result<Option<SocketOwner>> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let family = if client.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + 56);
    msg.extend_from_slice(&((NLMSG_HDRLEN + 56) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
                                                // inet_diag_req_v2
    msg.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    msg.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    msg.extend_from_slice(&client.port().to_be_bytes());
    msg.extend_from_slice(&server.port().to_be_bytes());
    msg.extend_from_slice(&addr_words(client.ip()));
    msg.extend_from_slice(&addr_words(server.ip()));
    msg.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    msg.extend_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    msg.extend_from_slice(&INET_DIAG_NOCOOKIE.to_ne_bytes());
    sendto(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 1024];
    let n = recv(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &mut buf,
        MsgFlags::empty(),
    )?;
    let reply = &buf[..n];
    let u16_at = |i: usize| {
        reply
            .get(i..i + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
    };
    let u32_at = |i: usize| {
        reply
            .get(i..i + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    match u16_at(4) {
        Some(SOCK_DIAG_BY_FAMILY) => {
            let uid = u32_at(NLMSG_HDRLEN + MSG_UID);
            let inode = u32_at(NLMSG_HDRLEN + MSG_INODE);
            match (uid, inode) {
                (Some(uid), Some(inode)) => Ok(Some(SocketOwner {
                    uid,
                    inode: inode.into(),
                })),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "short inet_diag reply",
                )),
            }
        }
        Some(NLMSG_ERROR) => {
            let errno = u32_at(NLMSG_HDRLEN).map_or(0, |e| (e as i32).saturating_neg());
            if errno == libc::ENOENT {
                Ok(None)
            } else {
                Err(io::Error::from_raw_os_error(errno))
            }
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected netlink reply",
        )),
    }
}

/// The same lookup by reading `/proc/net/tcp` (IPv4) or `/proc/net/tcp6`.
fn proc_net_tcp(client: SocketAddr, server: SocketAddr) -> io::Result<Option<SocketOwner>> {
    let file = if client.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(file)?;
    let (want_local, want_remote) = (proc_addr(client), proc_addr(server));
    Ok(find_in_table(&text, &want_local, &want_remote))
}

/// `/proc/net/tcp` prints an address as the bytes of the (network-order) address read as
/// 32-bit host-order words, each in hex, then `:` and the port in hex.
fn proc_addr(a: SocketAddr) -> String {
    let words: Vec<String> = addr_words(a.ip())
        .chunks(4)
        .take(if a.is_ipv4() { 1 } else { 4 })
        .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    format!("{}:{:04X}", words.concat(), a.port())
}

/// The uid and inode of the row with these local and remote addresses.
fn find_in_table(text: &str, local: &str, remote: &str) -> Option<SocketOwner> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        if f.get(1)? == &local && f.get(2)? == &remote {
            Some(SocketOwner {
                uid: f.get(7)?.parse().ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn proc_address_format() {
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}"));
        if cfg!(target_endian = "little") {
            assert_eq!(proc_addr(a), "0100007F:1F90");
        }
    }

    /// Our own loopback connection: both lookups find the client socket, owned by our uid.
    #[test]
    fn finds_our_own_client_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let server = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let stream = TcpStream::connect(server).unwrap_or_else(|e| panic!("{e}"));
        let client = stream.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let _accepted = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let by_diag = diag(client, server).unwrap_or_else(|e| panic!("{e}"));
        let by_proc = proc_net_tcp(client, server).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(by_diag.map(|o| o.uid), Some(uid));
        assert_eq!(by_diag, by_proc);
        // The inode is the one /proc/self/fd shows for the stream.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let link =
            std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            link.to_string_lossy(),
            format!("socket:[{}]", by_diag.map_or(0, |o| o.inode))
        );
        // The server's end is another socket; the reverse tuple names it, not the client.
        let reverse = diag(server, client).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(reverse.map(|o| o.inode), by_diag.map(|o| o.inode));
        let missing: SocketAddr = "127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            diag(missing, server).unwrap_or_else(|e| panic!("{e}")),
            None
        );
    }
}
