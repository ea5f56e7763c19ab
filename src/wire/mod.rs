//! Wire formats: IPv4, IPv6 and TCP headers, parsed from untrusted bytes and emitted for replies.
//!
//! Contract: nothing in here panics on any input; malformed packets are reported as a unit-like
//! error and dropped by the caller. `etherparse` is used only inside this module.

pub mod checksum;
