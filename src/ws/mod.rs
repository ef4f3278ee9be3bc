//! WebSocket: the wire format (`codec`), the session's clocks (`timers`),
//! and the session (`session`), which runs over any byte stream once the
//! carrying protocol has accepted the handshake (an HTTP/1.1 upgrade today,
//! an RFC 8441 stream later).

pub(crate) mod accept;
pub(crate) mod codec;
pub(crate) mod handshake;
pub(crate) mod session;
mod timers;
