//! The network layer: binding listeners, accepting on them, and the one
//! path (`conn`) that takes every accepted connection to its protocol.

pub mod accept;
pub mod conn;
pub mod listener;
pub mod peer;
pub mod sniff;
pub mod stream;
pub mod tls;
