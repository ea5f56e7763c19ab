//! HTTP/1.x for a metadata server: incremental, bounded request parsing and response framing.
//!
//! Contract: [`parse::parse_request`] looks at a byte buffer and answers "need more", "here is
//! a complete request (head and body) of N bytes", or an [`HttpError`] that maps to one
//! response status and closes the connection. [`response`] renders complete responses, and
//! [`exchange`] joins the two with a snapshot so that every front door (kernel sockets, our own
//! TCP) runs the same request loop. Nothing here does I/O or reads the clock.
//!
//! Invariants: header count and head size are bounded before anything is buffered past the
//! limit; a static answer is a reference to pre-serialised bytes and allocates nothing.

pub mod exchange;
pub mod parse;
pub mod query;
pub mod request;
pub mod response;

pub use parse::{parse_request, HttpError, Limits, Parsed};
pub use request::{Method, Request};
pub use response::{DropKind, Prebuilt, Reply, Response};
