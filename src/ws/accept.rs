//! The app's answer to a WebSocket handshake, as the core receives it from
//! `websocket.accept`. The app says only what to accept (a subprotocol and
//! extra header fields); the protocol that carried the handshake decides
//! the wire form: HTTP/1.1 answers `101 Switching Protocols` with the
//! `Sec-WebSocket-Accept` key derived from the client's key (see
//! `write_h1`); an RFC 8441 stream on HTTP/2 answers `200` with the same
//! fields and no key (see `h2_fields`), then hands its stream to the same
//! session. The server adds `Sec-WebSocket-Extensions` when it agreed to
//! permessage-deflate.

use super::codec::server_owned;
use super::deflate::{negotiate, Agreed};
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
    pub(crate) fn write_h1(&self, out: &mut Vec<u8>, key: &[u8], deflate: Option<&Agreed>) {
        let ext = deflate.map(Agreed::response);
        super::codec::switching_protocols(out, key, &self.fields, ext.as_deref());
    }

    /// The header fields of the HTTP/2 answer (200): the app's, less those
    /// the server owns, and the agreed extension.
    pub(crate) fn h2_fields(&self, deflate: Option<&Agreed>) -> Fields {
        let mut f: Fields = Vec::with_capacity(self.fields.len() + 1);
        if let Some(a) = deflate {
            f.push((
                b"sec-websocket-extensions".to_vec(),
                a.response().into_bytes(),
            ));
        }
        f.extend(
            self.fields
                .iter()
                .filter(|(n, _)| !server_owned(n))
                .cloned(),
        );
        f
    }
}

/// permessage-deflate as the server agrees to it for a handshake whose
/// (lower-cased) header fields are `headers`; None when `enabled` is off
/// (`ws_compression`) or no offer can be honoured.
pub(crate) fn agree(enabled: bool, headers: &[(Vec<u8>, Vec<u8>)]) -> Option<Agreed> {
    if !enabled {
        return None;
    }
    negotiate(
        headers
            .iter()
            .filter(|(n, _)| n.as_slice() == b"sec-websocket-extensions")
            .map(|(_, v)| v.as_slice()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_owns_the_extensions_field() {
        let a = Accept::new(vec![
            (b"X-Extra".to_vec(), b"1".to_vec()),
            (b"Sec-WebSocket-Extensions".to_vec(), b"mine".to_vec()),
        ]);
        let offer = vec![(
            b"sec-websocket-extensions".to_vec(),
            b"permessage-deflate; client_max_window_bits".to_vec(),
        )];
        let agreed = agree(true, &offer);
        assert!(agreed.is_some());
        assert_eq!(agree(false, &offer), None);
        assert_eq!(agree(true, &[]), None);
        let f = a.h2_fields(agreed.as_ref());
        assert_eq!(
            f,
            vec![
                (
                    b"sec-websocket-extensions".to_vec(),
                    b"permessage-deflate".to_vec()
                ),
                (b"X-Extra".to_vec(), b"1".to_vec()),
            ]
        );
        assert_eq!(
            a.h2_fields(None),
            vec![(b"X-Extra".to_vec(), b"1".to_vec())]
        );
    }
}
