//! The control socket: a Unix stream socket, mode 0600, on one thread of its own.
//!
//! Contract: [`ControlSocket::bind`] creates the socket under a temporary name, sets its mode
//! to 0600 and renames it into place, so it is never reachable with looser permissions; a
//! leftover socket nobody answers on is replaced, a live one is an error (another instance owns
//! it). Each accepted connection is served on a thread of its own, at most [`MAX_CLIENTS`] at
//! once, so a client that stalls (holding its connection for up to [`IO_TIMEOUT`]) delays
//! nobody else; one more than that is answered at once with an error. The peer must be root
//! or the user the server runs as (`SO_PEERCRED`), sends one request line of at most
//! [`super::protocol::MAX_REQUEST`] bytes within [`IO_TIMEOUT`], and gets one response line.
//! Commands run concurrently; [`Control`] serialises edits and reloads itself. Dropping the
//! [`ControlSocket`] removes the socket file.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::protocol::{parse_request, Response, MAX_REQUEST};
use super::Control;

/// How long a client may take to send its request and read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients served at once; each costs a thread (and at most [`MAX_REQUEST`] bytes) for at
/// most about twice [`IO_TIMEOUT`].
pub const MAX_CLIENTS: usize = 16;

/// A bound control socket; its thread serves until the process ends.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` (0600) and serves `control` on a thread.
    pub fn bind(path: &Path, control: Arc<Control>) -> std::io::Result<ControlSocket> {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{}: another imds-tun answers on this control socket",
                    path.display()
                ),
            ));
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::thread::Builder::new()
            .name("imds-tun-ctl".into())
            .spawn(move || accept_loop(listener, control))?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One client being served: counted in `active` until dropped.
struct Client(Arc<AtomicUsize>);

impl Client {
    fn admit(active: &Arc<AtomicUsize>) -> Option<Client> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CLIENTS).then_some(n + 1)
            })
            .ok()
            .map(|_| Client(Arc::clone(active)))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(listener: UnixListener, control: Arc<Control>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                let Some(client) = Client::admit(&active) else {
                    // Written into an empty socket buffer: it does not block.
                    let busy = Response::error(format!(
                        "busy: {MAX_CLIENTS} control clients are being served; try again"
                    ));
                    let _ = s
                        .set_write_timeout(Some(IO_TIMEOUT))
                        .and_then(|()| respond(&s, &busy));
                    continue;
                };
                let control = Arc::clone(&control);
                let spawned = std::thread::Builder::new()
                    .name("imds-tun-ctl-client".into())
                    .spawn(move || {
                        if let Err(e) = serve_one(s, &control) {
                            tracing::debug!(error = %e, "control connection ended with an error");
                        }
                        drop(client);
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start a thread for a control client");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn serve_one(stream: UnixStream, control: &Control) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let response = match peer_allowed(&stream) {
        Err(who) => Response::error(format!(
            "permission denied: the control socket answers root and the server's user, not uid {who}"
        )),
        Ok(()) => {
            let mut line = String::new();
            let mut reader = BufReader::new((&stream).take(MAX_REQUEST as u64 + 1));
            reader.read_line(&mut line)?;
            if line.len() > MAX_REQUEST {
                Response::error(format!("request longer than {MAX_REQUEST} bytes"))
            } else {
                match parse_request(&line) {
                    Ok(request) => control.handle(request),
                    Err(e) => Response::error(e),
                }
            }
        }
    };
    respond(&stream, &response)
}

/// Writes `response` as one line.
fn respond(stream: &UnixStream, response: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_string(response).map_err(std::io::Error::other)?;
    out.push('\n');
    (&*stream).write_all(out.as_bytes())
}

/// `Ok` when the peer is root or our own user; else its uid.
fn peer_allowed(stream: &UnixStream) -> Result<(), u32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let me = nix::unistd::geteuid().as_raw();
    match getsockopt(stream, PeerCredentials) {
        Ok(cred) if cred.uid() == 0 || cred.uid() == me => Ok(()),
        Ok(cred) => Err(cred.uid()),
        Err(_) => Err(u32::MAX),
    }
}
