//! An eventfd: one thread signals, the engine's `poll(2)` wakes.
//!
//! Contract: [`EventFd::signal`] makes the descriptor readable until [`EventFd::drain`];
//! signals coalesce (the counter only grows), so many signals cost one wake-up. It is the
//! engine's stop request ([`super::driver::Stop`]) and its wake-up for parked requests
//! ([`crate::pending::Wake`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> std::io::Result<EventFd> {
        // SAFETY: eventfd returns a new descriptor or -1; we take ownership of it only when
        // it is valid.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(EventFd { fd })
    }

    /// Makes the descriptor readable.
    pub fn signal(&self) {
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

    /// Resets the counter; true when it had been signalled.
    pub fn drain(&self) -> bool {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our own non-blocking eventfd.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut value as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        n == 8 && value > 0
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl crate::pending::Wake for EventFd {
    fn wake(&self) {
        self.signal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_coalesce_until_drained() -> std::io::Result<()> {
        let e = EventFd::new()?;
        assert!(!e.drain());
        e.signal();
        e.signal();
        assert!(e.drain());
        assert!(!e.drain());
        Ok(())
    }
}
