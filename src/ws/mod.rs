//! WebSocket: the handshake's checks and answer (`handshake`, `accept`),
//! permessage-deflate (`deflate`), the wire format (`codec`, `reader`),
//! the session's clocks (`timers`), and the session (`session`), which
//! runs over any byte stream once the carrying protocol has accepted the
//! handshake (an HTTP/1.1 upgrade or an RFC 8441 stream on HTTP/2).

pub(crate) mod accept;
pub(crate) mod codec;
pub(crate) mod deflate;
pub(crate) mod handshake;
pub(crate) mod reader;
pub(crate) mod session;
mod timers;
