//! Who is on the other end of a connection: its addresses and, over TLS,
//! what the handshake settled. The protocol modules carry it into every
//! request they hand to Perl.

use std::net::SocketAddr;
use std::sync::Arc;

use super::tls::TlsFacts;
use crate::exchange::Scheme;

/// The addresses of an accepted connection.
#[derive(Clone)]
pub enum Peer {
    /// A TCP connection: the client's address, our local one, and the TLS
    /// facts when the listener speaks TLS.
    Tcp {
        client: SocketAddr,
        server: Option<SocketAddr>,
        tls: Option<Arc<TlsFacts>>,
    },
    /// A Unix-socket connection, with the path it was accepted on.
    Unix { path: Arc<str> },
}

impl Peer {
    /// The same peer, over a TLS session with these facts.
    pub fn over_tls(self, facts: TlsFacts) -> Peer {
        match self {
            Peer::Tcp { client, server, .. } => Peer::Tcp {
                client,
                server,
                tls: Some(Arc::new(facts)),
            },
            unix => unix,
        }
    }

    /// The TLS facts of the connection, if it is over TLS.
    pub fn tls(&self) -> Option<&TlsFacts> {
        match self {
            Peer::Tcp { tls, .. } => tls.as_deref(),
            Peer::Unix { .. } => None,
        }
    }

    /// The scheme of requests on this connection.
    pub fn scheme(&self) -> Scheme {
        if self.tls().is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    /// The client as the access log names it.
    pub fn log_host(&self) -> String {
        match self {
            Peer::Tcp { client, .. } => client.ip().to_string(),
            Peer::Unix { .. } => "unix".to_string(),
        }
    }
}
