//! Incremental decoder for `Transfer-Encoding: chunked` request bodies.
//! Chunk extensions and trailer fields are read and dropped (PAGI has no
//! request trailers).

use bytes::{Bytes, BytesMut};

use crate::proto::h1::parse::{reject_with, Reject, BAD_REQUEST, HEADERS_TOO_LARGE};

/// Longest chunk-size line (size plus extensions) accepted.
pub(crate) const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section accepted.
pub(crate) const MAX_TRAILERS: usize = 8192;

const CHUNK_TOO_LARGE: Reject = reject_with(413, "Chunk Too Large");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// More input is needed.
    More,
    Done,
}

#[derive(Debug)]
pub struct Decoder {
    state: State,
    max_chunk: u64,
}

impl Decoder {
    pub fn new(max_chunk: u64) -> Decoder {
        Decoder {
            state: State::Size,
            max_chunk,
        }
    }

    /// Consumes what it can from `buf`; returns body bytes one piece at a time.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Reject> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Size => {
                    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_SIZE_LINE {
                            return Err(BAD_REQUEST);
                        }
                        return Ok(Step::More);
                    };
                    // The same limit whether the line's end came in this read
                    // or a later one.
                    if nl > MAX_SIZE_LINE {
                        return Err(BAD_REQUEST);
                    }
                    let line = &buf[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let size = line
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(&[])
                        .trim_ascii();
                    if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
                        return Err(reject_with(400, "Invalid chunk size"));
                    }
                    if size.len() > 15 {
                        return Err(CHUNK_TOO_LARGE);
                    }
                    let n = size
                        .iter()
                        .fold(0u64, |acc, &d| acc << 4 | u64::from(hex(d)));
                    if n > self.max_chunk {
                        return Err(CHUNK_TOO_LARGE);
                    }
                    let _ = buf.split_to(nl + 1);
                    self.state = if n == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(n)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Step::Data(data));
                }
                State::DataEnd => {
                    if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                    } else if buf.starts_with(b"\n") {
                        let _ = buf.split_to(1);
                    } else if buf.is_empty() || buf.as_ref() == b"\r" {
                        return Ok(Step::More);
                    } else {
                        return Err(BAD_REQUEST);
                    }
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                        // Only a line that cannot turn out blank counts yet,
                        // so the end of the trailers is never refused.
                        let may_be_blank = buf.is_empty() || buf.as_ref() == b"\r";
                        if !may_be_blank && seen + buf.len() > MAX_TRAILERS {
                            return Err(HEADERS_TOO_LARGE);
                        }
                        return Ok(Step::More);
                    };
                    let blank = nl == 0 || (nl == 1 && buf[0] == b'\r');
                    let _ = buf.split_to(nl + 1);
                    self.state = if blank {
                        State::Done
                    } else if seen + nl > MAX_TRAILERS {
                        return Err(HEADERS_TOO_LARGE);
                    } else {
                        State::Trailers(seen + nl + 1)
                    };
                }
            }
        }
    }
}

fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], max: u64) -> Result<(Vec<u8>, bool), Reject> {
        let mut d = Decoder::new(max);
        let mut out = Vec::new();
        let mut buf = BytesMut::new();
        // Byte by byte: every split point must work.
        for &b in input {
            buf.extend_from_slice(&[b]);
            loop {
                match d.step(&mut buf)? {
                    Step::Data(x) => out.extend_from_slice(&x),
                    Step::More => break,
                    Step::Done => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let (body, done) = decode_all(
            b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
            100,
        )
        .expect("valid");
        assert!(done);
        assert_eq!(body, b"hello0123456789");
        let (body, done) = decode_all(b"3\r\nabc\r\n", 100).expect("valid");
        assert!(!done);
        assert_eq!(body, b"abc");
    }

    /// Feeds `input` whole, then byte by byte: both must end the same.
    fn decode_both(input: &[u8]) -> Result<(Vec<u8>, bool), Reject> {
        let mut d = Decoder::new(100);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        let whole = loop {
            match d.step(&mut buf) {
                Ok(Step::Data(x)) => out.extend_from_slice(&x),
                Ok(Step::More) => break Ok((out, false)),
                Ok(Step::Done) => break Ok((out, true)),
                Err(r) => break Err(r),
            }
        };
        assert_eq!(whole, decode_all(input, 100));
        whole
    }

    #[test]
    fn limits_hold_whether_a_line_ends_in_the_same_read_or_not() {
        let ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_SIZE_LINE));
        assert_eq!(decode_both(ext.as_bytes()), Err(BAD_REQUEST));
        let ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_SIZE_LINE - 4));
        assert_eq!(decode_both(ext.as_bytes()), Ok((b"x".to_vec(), true)));
        // Trailer fields up to the allowed size, then the blank line.
        let trailer = |n: usize| format!("0\r\nX: {}\r\n\r\n", "t".repeat(n));
        for n in [MAX_TRAILERS - 5, MAX_TRAILERS - 4] {
            assert_eq!(decode_both(trailer(n).as_bytes()), Ok((Vec::new(), true)));
        }
        let too_big = trailer(MAX_TRAILERS - 3);
        assert_eq!(decode_both(too_big.as_bytes()), Err(HEADERS_TOO_LARGE));
    }

    #[test]
    fn rejects_bad_and_oversized_chunks() {
        assert_eq!(
            decode_all(b"zz\r\n", 100).map(|_| ()),
            Err(reject_with(400, "Invalid chunk size"))
        );
        assert_eq!(decode_all(b"65\r\n", 100).map(|_| ()), Err(CHUNK_TOO_LARGE));
        assert_eq!(
            decode_all(b"3\r\nabcX\r\n", 100).map(|_| ()),
            Err(BAD_REQUEST)
        );
    }
}
