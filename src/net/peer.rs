//! Who is on the other end of a connection: its addresses and scheme. The
//! protocol modules carry it into every request they hand to Perl.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::exchange::Scheme;

/// The addresses of an accepted connection.
#[derive(Clone)]
pub enum Peer {
    /// A TCP connection: the client's address and our local one.
    Tcp {
        client: SocketAddr,
        server: Option<SocketAddr>,
    },
    /// A Unix-socket connection, with the path it was accepted on.
    Unix { path: Arc<str> },
}

impl Peer {
    /// The scheme of requests on this connection (no TLS yet: plain HTTP).
    pub fn scheme(&self) -> Scheme {
        Scheme::Http
    }

    /// The client as the access log names it.
    pub fn log_host(&self) -> String {
        match self {
            Peer::Tcp { client, .. } => client.ip().to_string(),
            Peer::Unix { .. } => "unix".to_string(),
        }
    }
}
