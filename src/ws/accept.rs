//! The app's answer to a WebSocket handshake, as the core receives it from
//! `websocket.accept`. The app says only what to accept (a subprotocol and
//! extra header fields); the protocol that carried the handshake decides
//! the wire form: HTTP/1.1 answers `101 Switching Protocols` with the
//! `Sec-WebSocket-Accept` key derived from the client's key (see
//! `write_h1`); an RFC 8441 stream on HTTP/2 would answer `200` with the
//! same `fields` and no key, then hand its stream to the same session.

use crate::fields::Fields;

/// An accepted WebSocket handshake.
pub struct Accept {
    /// The app's extra fields, checked, with `Sec-WebSocket-Protocol` last
    /// when the app chose a subprotocol.
    pub fields: Fields,
}

impl Accept {
    /// `fields` are already checked (see `fields::checked_fields`).
    pub fn new(fields: Fields) -> Accept {
        Accept { fields }
    }

    /// The HTTP/1.1 answer: a 101 carrying the accept key for `key` (the
    /// client's `Sec-WebSocket-Key`), appended to `out`.
    pub fn write_h1(&self, out: &mut Vec<u8>, key: &[u8]) {
        super::codec::switching_protocols(out, key, &self.fields);
    }
}
