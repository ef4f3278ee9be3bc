//! Network core of PAGI::Server: listeners, HTTP/1.1 connections, and the
//! bridge that hands requests to Perl and takes responses back.
//!
//! No code here ever calls into Perl; the XS glue in `xs/Server.xs` calls the
//! `extern "C"` functions of `ffi` from the Perl thread.

mod abi;
mod access_log;
mod batch;
mod bridge;
mod config;
mod exchange;
pub mod ffi;
mod fields;
mod file_body;
mod held;
mod memory;
mod net;
mod phase;
#[cfg(test)]
mod props;
mod proto;
mod runtime;
mod server;
mod slow;
mod sse;
mod stream_io;
mod ws;
