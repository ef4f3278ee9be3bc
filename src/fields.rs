//! Response header fields as the app hands them to the core, and the check
//! that keeps unsafe ones off the wire.

use crate::abi::level;
use crate::bridge::queue::Bridge;

/// Header fields as the app gave them (names keep their case).
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// RFC 9110 token characters: what a field name may contain.
fn is_token(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| TOKEN[usize::from(b)])
}

/// Which bytes are token characters, by value.
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// Field values must never carry a line break or NUL onto the wire.
fn is_safe_value(value: &[u8]) -> bool {
    !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

/// Keeps the fields that are safe to write; warns about the others.
pub fn checked_fields(bridge: &Bridge, raw: &[(&[u8], &[u8])], drop_framing: bool) -> Fields {
    let mut out = Vec::with_capacity(raw.len() + 2);
    for &(name, value) in raw {
        if !is_token(name) || !is_safe_value(value) {
            bridge.log(
                level::WARN,
                &format!(
                    "Dropped invalid response header '{}' (names must be tokens; values must not contain CR, LF or NUL)",
                    String::from_utf8_lossy(name)
                ),
            );
            continue;
        }
        // Framing is the server's job.
        if drop_framing && name.eq_ignore_ascii_case(b"transfer-encoding") {
            continue;
        }
        out.push((name.to_vec(), value.to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_rfc_9110_tchar() {
        assert!(is_token(b"Content-Type"));
        assert!(is_token(b"x!#$%&'*+-.^_`|~09az"));
        assert!(!is_token(b""));
        for bad in [
            &b"a b"[..],
            b"a:b",
            b"a\r",
            b"a\x7f",
            b"a\x80",
            b"(a)",
            b"a\"",
            b"a/b",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
        assert!(is_safe_value(b"text/plain; q=\x80"));
        assert!(!is_safe_value(b"a\nb"));
    }
}
