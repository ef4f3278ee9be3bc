//! The checks of a client's WebSocket handshake (RFC 6455 section 4.2.1,
//! RFC 8441 section 5), shared by HTTP/1.1 and HTTP/2: a handshake that
//! fails them is answered by the server and never reaches the app.

use base64::Engine as _;

/// What a handshake is refused with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The answer's status.
    pub(crate) status: u16,
    /// Its plain-text body.
    pub(crate) message: &'static str,
    /// A header field the answer carries (name, value).
    pub(crate) field: Option<(&'static str, &'static str)>,
}

/// Any version but 13 (RFC 6455 section 4.4): `426 Upgrade Required`,
/// naming the version served.
pub(crate) const WRONG_VERSION: Refused = Refused {
    status: 426,
    message: "Upgrade Required: this server speaks WebSocket version 13",
    field: Some(("Sec-WebSocket-Version", "13")),
};

/// A missing or malformed `Sec-WebSocket-Key`.
pub(crate) const BAD_KEY: Refused = Refused {
    status: 400,
    message: "Bad Request: Sec-WebSocket-Key must be the base64 of 16 bytes",
    field: None,
};

/// Whether the `Sec-WebSocket-Version` values (lower-cased names) say
/// version 13, once.
pub(crate) fn version_ok(headers: &[(Vec<u8>, Vec<u8>)]) -> bool {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.as_slice() == b"sec-websocket-version")
        .map(|(_, v)| v.trim_ascii());
    matches!((values.next(), values.next()), (Some(b"13"), None))
}

/// Whether a `Sec-WebSocket-Key` is the base64 of 16 bytes (RFC 6455
/// section 4.1, item 7).
pub(crate) fn key_ok(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// Checks an HTTP/1.1 handshake: its version, then its key.
pub(crate) fn check_h1(headers: &[(Vec<u8>, Vec<u8>)]) -> Result<(), Refused> {
    if !version_ok(headers) {
        return Err(WRONG_VERSION);
    }
    let mut keys = headers
        .iter()
        .filter(|(n, _)| n.as_slice() == b"sec-websocket-key")
        .map(|(_, v)| v.trim_ascii());
    match (keys.next(), keys.next()) {
        (Some(k), None) if key_ok(k) => Ok(()),
        _ => Err(BAD_KEY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn keys_are_16_bytes_of_base64() {
        assert!(key_ok(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(key_ok(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            &b""[..],
            b"k",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZQ===",
            b"dGhlIHNhbXBsZSBub25jZR==",
            b"dGhlIHNhbXBsZSBub25j!Q==",
            b"dGhlIHNhbXBsZSBub25jZWFi",
        ] {
            assert!(!key_ok(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn checks_version_then_key() {
        let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        let v13 = ("sec-websocket-version", " 13 ");
        assert_eq!(check_h1(&h(&[key, v13])), Ok(()));
        assert_eq!(check_h1(&h(&[key])), Err(WRONG_VERSION));
        assert_eq!(
            check_h1(&h(&[key, ("sec-websocket-version", "8")])),
            Err(WRONG_VERSION)
        );
        assert_eq!(check_h1(&h(&[key, v13, v13])), Err(WRONG_VERSION));
        assert_eq!(
            check_h1(&h(&[
                ("sec-websocket-key", "x"),
                ("sec-websocket-version", "7")
            ])),
            Err(WRONG_VERSION),
            "the version is judged first"
        );
        assert_eq!(check_h1(&h(&[v13])), Err(BAD_KEY));
        assert_eq!(
            check_h1(&h(&[("sec-websocket-key", "abc"), v13])),
            Err(BAD_KEY)
        );
        assert_eq!(check_h1(&h(&[key, key, v13])), Err(BAD_KEY));
        assert!(version_ok(&h(&[v13])));
    }
}
