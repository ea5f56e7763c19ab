//! The blocking loop around an [`Engine`]: the only place that reads the clock and sleeps.
//!
//! Contract: [`run`] loops read batch → timers → write until [`Stop`] is raised, sleeping in
//! `poll(2)` on the device fd and the stop fd until one is readable or the engine's next
//! deadline. It returns only on stop or on a device error that makes going on pointless.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Engine;
use crate::device::Device;

/// A stop request every engine thread can wait on: a flag and an eventfd to wake `poll`.
#[derive(Debug)]
pub struct Stop {
    raised: AtomicBool,
    fd: OwnedFd,
}

impl Stop {
    pub fn new() -> std::io::Result<Arc<Stop>> {
        // SAFETY: eventfd returns a new descriptor or -1; we take ownership of it only when
        // it is valid.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Arc::new(Stop {
            raised: AtomicBool::new(false),
            fd,
        }))
    }

    /// Asks every loop to return; safe to call more than once.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd. A full counter
        // (EAGAIN) still leaves it readable, which is all we need.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Runs `engine` until `stop` is raised.
pub fn run<D: Device>(engine: &mut Engine<D>, stop: &Stop) -> std::io::Result<()> {
    while !stop.is_raised() {
        let now = Instant::now();
        let read = engine.handle_ready(now, SystemTime::now())?;
        engine.handle_timeout(now);
        engine.flush(now);
        if read == super::BATCH {
            continue; // more may be waiting: no sleep
        }
        let timeout = engine
            .poll_at()
            .map(|at| at.saturating_duration_since(Instant::now()));
        wait(engine.device().readable_fd(), stop.fd(), timeout)?;
    }
    Ok(())
}

/// Sleeps until the device or the stop fd is readable, or `timeout` passes.
fn wait(
    device: Option<BorrowedFd<'_>>,
    stop: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> std::io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: device.map_or(-1, |d| d.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // Round up so a deadline 0.3 ms away does not turn into a busy loop of 0 ms polls.
    let ms = timeout.map_or(-1, |t| {
        let ms = t.as_micros().div_ceil(1000);
        i32::try_from(ms).unwrap_or(i32::MAX)
    });
    // SAFETY: `fds` is a valid array of two pollfd; a negative fd is ignored by poll(2).
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
