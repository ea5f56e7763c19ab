//! The `imds-tun ctl` side of the control socket: one request, one response.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::protocol::{Request, Response};
use super::server::IO_TIMEOUT;

/// Why a command got no response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source} (is imds-tun up, or serve --ctl, running? ctl needs root)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("control socket: unreadable response: {0}")]
    Response(#[from] serde_json::Error),
}

/// Sends `request` to the socket at `path` and returns the response.
pub fn call(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.display().to_string(),
        source,
    })?;
    // An edit renders a whole snapshot: allow it a little more than the server's timeout.
    stream.set_read_timeout(Some(IO_TIMEOUT * 6))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    let sent = (&stream).write_all(line.as_bytes());
    // A server with no place for us answers `busy` and closes before reading: its answer is
    // still there to read when our write failed.
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    match (sent, read) {
        (_, Ok(n)) if n > 0 => Ok(serde_json::from_str(&answer)?),
        (Err(e), _) | (Ok(()), Err(e)) => Err(e.into()),
        (Ok(()), Ok(_)) => Ok(serde_json::from_str(&answer)?),
    }
}
