//! systemd's service notification protocol (sd_notify(3)), spoken without libsystemd.
//!
//! Contract: [`notify`] sends one datagram of `KEY=VALUE` lines to the `AF_UNIX` socket named
//! by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) and does nothing when
//! the variable is unset, so the same binary runs under systemd (`Type=notify`), under another
//! supervisor or by hand. Failures are returned, never fatal: a lost notification makes
//! systemd time the start out, which says more than a crash would.
//!
//! The messages `up` and `serve` send: `READY=1` once the service answers (for `up`: once a
//! request of its own to the metadata address came back through the TUN device, see
//! [`crate::engine::up`]), `RELOADING=1` with `MONOTONIC_USEC=` before a SIGHUP reload and
//! `READY=1` after it, `STOPPING=1` when a stop signal arrives.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Whether a service manager listens (`$NOTIFY_SOCKET` is set).
pub fn enabled() -> bool {
    std::env::var_os(NOTIFY_SOCKET).is_some_and(|s| !s.is_empty())
}

/// Sends `state` (e.g. `"READY=1"`) to `$NOTIFY_SOCKET`; `Ok(false)` when it is unset.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket` (a path, or `@name`).
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(socket)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor @abstract",
            ))
        }
    };
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::other("notification truncated"));
    }
    Ok(())
}

/// `RELOADING=1` with the monotonic time systemd (≥ 253) pairs reload cycles by.
pub fn reloading_message() -> String {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// Sends `state` if a manager listens, and logs (does not return) a failure.
pub fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("imds-tun-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        notify_to(path.as_os_str(), "READY=1").unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("imds-tun-test-{}", std::process::id());
        let abstract_addr =
            SocketAddr::from_abstract_name(name.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let server = UnixDatagram::bind_addr(&abstract_addr).unwrap_or_else(|e| panic!("{e}"));
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap_or_else(|e| panic!("{e}"));
        let n = server.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(notify_to(OsStr::new("relative"), "READY=1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(reloading_message().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    }
}
