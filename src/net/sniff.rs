//! Telling h2c from HTTP/1.x on a cleartext listener with `http2` on: a
//! connection that opens with the 24-byte HTTP/2 client preface speaks
//! h2c; an HTTP/1.x request is served on the same port. The bytes read to
//! decide are handed on to the protocol chosen, never lost. A first line that is neither (no
//! `HTTP/` version in it) is a failed HTTP/2 preface: an HTTP/1.1 `400`
//! would be noise to such a client, so it gets GOAWAY (PROTOCOL_ERROR).

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncRead;

use crate::proto::h2::guard::PREFACE;
use crate::stream_io::fill_lazy;

/// What a cleartext connection with `http2` on opens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    H2c,
    Http1,
    /// Neither: answered with `BAD_PREFACE` and closed.
    Neither,
}

/// GOAWAY (last stream 0, PROTOCOL_ERROR): the answer to a bad preface.
pub const BAD_PREFACE: &[u8] = &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// A first line already read that has no HTTP version in it.
fn not_http1(buf: &[u8]) -> bool {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return false;
    };
    !buf[..end].windows(5).any(|w| w == b"HTTP/")
}

/// Reads until the first bytes either match the preface or cannot. The
/// bytes read are in `buf` either way. A client that sends nothing within
/// `limit` (or closes) is left to HTTP/1.x, which times it out or sees the
/// end.
pub async fn hear<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut, limit: Duration) -> Heard {
    let read = async {
        loop {
            let n = buf.len().min(PREFACE.len());
            if buf[..n] != PREFACE[..n] {
                return if not_http1(buf) {
                    Heard::Neither
                } else {
                    Heard::Http1
                };
            }
            if n == PREFACE.len() {
                return Heard::H2c;
            }
            // No buffer is held while the client is silent.
            match fill_lazy(io, buf).await {
                Ok(0) | Err(_) => return Heard::Http1,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Heard::Http1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn sniff(input: &[u8]) -> (Heard, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(4096);
            tokio::io::AsyncWriteExt::write_all(&mut client, input)
                .await
                .expect("write");
            drop(client);
            let mut buf = BytesMut::new();
            let h2 = hear(&mut server, &mut buf, Duration::from_secs(5)).await;
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.expect("read");
            buf.extend_from_slice(&rest);
            (h2, buf.to_vec())
        })
    }

    #[test]
    fn tells_the_preface_from_http1_and_loses_no_byte() {
        let mut h2 = PREFACE.to_vec();
        h2.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        assert_eq!(sniff(&h2), (Heard::H2c, h2.clone()));
        for http1 in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PRI * HTTP/1.1\r\n\r\n",
            b"P",
            b"",
            b"GET",
        ] {
            assert_eq!(sniff(http1), (Heard::Http1, http1.to_vec()));
        }
        let bad = b"INVALID CONNECTION PREFACE\r\n\r\n";
        assert_eq!(sniff(bad), (Heard::Neither, bad.to_vec()));
    }
}
