//! permessage-deflate (RFC 7692): choosing what to agree to from the
//! client's offers, and the compressor and decompressor of one session.
//!
//! The compressor is zlib's (flate2 on its zlib-rs backend), which can
//! bound its window to 2^9..2^15 bytes but not to 2^8: an offer asking for
//! `server_max_window_bits=8` is declined, as RFC 7692 section 7.1.2.1
//! allows, and the next offer is considered. The decompressor always keeps
//! a 32 KiB window, which inflates whatever window the client used, so the
//! client's window is never limited.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";
/// The compression level of the server's messages: zlib's level 1 costs a
/// fraction of the default level's time for most of its gain on text.
const LEVEL: u32 = 1;
/// What every compressed message ends with before the sender strips it
/// (RFC 7692 section 7.2.1), given back to the decompressor at the end.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
/// How much output room the decompressor is given at a time.
const STEP: usize = 64 * 1024;

/// What the server agreed to for one WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// Every server message is compressed on an empty window.
    pub(crate) server_no_context_takeover: bool,
    /// The window of the server's compressor, in bits (9..=15); announced
    /// when the client asked for a limit.
    pub(crate) server_max_window_bits: u8,
    /// The client asked for the limit: the answer repeats it.
    server_bits_asked: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value that accepts the offer.
    pub(crate) fn response(&self) -> String {
        let mut s = String::from(NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.server_bits_asked {
            s.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        s
    }
}

/// Chooses the first permessage-deflate offer in the client's
/// `Sec-WebSocket-Extensions` values that the server can honour; None when
/// there is none (the WebSocket then runs without compression).
pub(crate) fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreed> {
    for value in values {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in split_outside_quotes(text, ',') {
            let mut parts = split_outside_quotes(offer, ';').into_iter();
            let name = parts.next().unwrap_or("").trim();
            if !name.eq_ignore_ascii_case(NAME) {
                continue;
            }
            if let Some(a) = accept(parts) {
                return Some(a);
            }
        }
    }
    None
}

/// The agreement for one offer's parameters, or None to decline it.
fn accept<'a>(params: impl Iterator<Item = &'a str>) -> Option<Agreed> {
    let mut a = Agreed {
        server_no_context_takeover: false,
        server_max_window_bits: 15,
        server_bits_asked: false,
    };
    let mut seen: Vec<String> = Vec::new();
    for p in params {
        let (key, value) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (p.trim(), None),
        };
        let key = key.to_ascii_lowercase();
        // RFC 7692 section 7: a parameter given twice declines the offer.
        if seen.contains(&key) {
            return None;
        }
        match (key.as_str(), value) {
            ("server_no_context_takeover", None) => a.server_no_context_takeover = true,
            // A hint the server may ignore: its decompressor keeps its window
            // whether or not the client empties its own.
            ("client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => {
                let bits = window_bits(v)?;
                // zlib's deflate has no 256-byte window.
                if bits < 9 {
                    return None;
                }
                a.server_max_window_bits = bits;
                a.server_bits_asked = true;
            }
            // The client may limit its window; a 32 KiB one inflates any.
            ("client_max_window_bits", v) => {
                if let Some(v) = v {
                    window_bits(v)?;
                }
            }
            _ => return None,
        }
        seen.push(key);
    }
    Some(a)
}

/// A window size as RFC 7692 spells it: 8 to 15, no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// A parameter value: a token, or a quoted string holding one.
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            (!inner.contains(['"', '\\'])).then_some(inner)
        }
        None => Some(v),
    }
}

/// Splits at `sep` except inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The server's side: compresses each message the app sends.
pub(crate) struct Compressor {
    c: Compress,
    fresh_each: bool,
}

impl Compressor {
    /// A compressor with the window and context rule agreed to.
    pub(crate) fn new(a: &Agreed) -> Compressor {
        Compressor {
            c: Compress::new_with_window_bits(
                Compression::new(LEVEL),
                false,
                a.server_max_window_bits.clamp(9, 15),
            ),
            fresh_each: a.server_no_context_takeover,
        }
    }

    /// One message's payload, compressed and without the final
    /// `00 00 ff ff`; None if the compressor failed (the message then goes
    /// out uncompressed, which RFC 7692 allows at any time).
    pub(crate) fn message(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        // zlib makes nothing of nothing (no second flush in a row), so an
        // empty message is the one byte RFC 7692 section 7.2.3.6 gives.
        if data.is_empty() {
            return Some(vec![0]);
        }
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = data;
        loop {
            let before = self.c.total_in();
            self.c
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .ok()?;
            let used = usize::try_from(self.c.total_in() - before).ok()?;
            input = input.get(used..)?;
            // Room left over: the flush is complete.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(1024));
        }
        // Without the flush's empty block the client could not inflate it;
        // the caller then stops compressing altogether.
        if !out.ends_with(&TAIL) {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        if self.fresh_each {
            self.c.reset();
        }
        Some(out)
    }
}

/// Why inflating a message stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// The message grew past the limit.
    TooBig,
    /// Not DEFLATE data.
    Corrupt,
}

/// The client's side: inflates its compressed messages, never past a limit.
pub(crate) struct Decompressor {
    d: Decompress,
    /// A block with BFINAL set ended the stream: the next message starts a
    /// new one.
    ended: bool,
}

impl Decompressor {
    /// A decompressor with a 32 KiB window (it takes any client window).
    pub(crate) fn new() -> Decompressor {
        Decompressor {
            d: Decompress::new(false),
            ended: false,
        }
    }

    /// Inflates `input` onto `out`; `out` never grows past `limit` bytes.
    pub(crate) fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        // Nothing is ever left pending inside: a call ends only once the
        // output had room to spare.
        if input.is_empty() {
            return Ok(());
        }
        while !self.ended {
            if out.len() == out.capacity() {
                // One byte more than allowed tells "too big" from "just fits".
                let room = limit.saturating_add(1).saturating_sub(out.len());
                if room == 0 {
                    return Err(InflateError::TooBig);
                }
                out.reserve_exact(room.min(STEP.max(out.len() / 2)));
            }
            let (in_before, out_before) = (self.d.total_in(), out.len());
            let status = self
                .d
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            let used = usize::try_from(self.d.total_in() - in_before).unwrap_or(usize::MAX);
            input = input.get(used..).ok_or(InflateError::Corrupt)?;
            if status == Status::StreamEnd {
                self.ended = true;
            } else if out.len() < out.capacity() {
                // Room left over: everything given was inflated.
                if input.is_empty() {
                    break;
                }
                // Input left and room for output, yet no progress.
                if used == 0 && out.len() == out_before {
                    return Err(InflateError::Corrupt);
                }
            }
        }
        Ok(())
    }

    /// Ends a message: inflates the stripped `00 00 ff ff` and what it
    /// flushes out.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
        self.inflate(&TAIL, out, limit)?;
        if self.ended {
            self.d.reset(false);
            self.ended = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(v: &str) -> Option<String> {
        negotiate([v.as_bytes()]).map(|a| a.response())
    }

    #[test]
    fn negotiates_the_first_offer_it_can_honour() {
        assert_eq!(
            neg("permessage-deflate").as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            neg("permessage-deflate; client_max_window_bits").as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            neg("x-webkit-deflate-frame, permessage-deflate; server_no_context_takeover; client_no_context_takeover").as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
        assert_eq!(
            neg("permessage-deflate; server_max_window_bits=\"10\"; client_max_window_bits=9")
                .as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
        // 8 bits is declined; the next offer is taken.
        assert_eq!(
            neg("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_no_context_takeover").as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
        assert_eq!(neg("permessage-deflate; server_max_window_bits=8"), None);
        // Offers that are not valid are declined.
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "deflate-frame",
            "",
        ] {
            assert_eq!(neg(bad), None, "{bad}");
        }
        // Several header lines are one list.
        let a = negotiate([
            &b"foo"[..],
            b"PerMessage-Deflate; Server_Max_Window_Bits=12",
        ]);
        assert_eq!(a.map(|a| a.server_max_window_bits), Some(12));
    }

    fn round_trip(a: &Agreed, msgs: &[&[u8]]) {
        let mut c = Compressor::new(a);
        let mut d = Decompressor::new();
        for (i, m) in msgs.iter().enumerate() {
            let z = c.message(m).expect("compressed");
            let mut out = Vec::new();
            d.inflate(&z, &mut out, 1 << 20)
                .unwrap_or_else(|e| panic!("{a:?} message {i} ({z:02x?}): {e:?}"));
            d.finish(&mut out, 1 << 20)
                .unwrap_or_else(|e| panic!("{a:?} message {i} ({z:02x?}) end: {e:?}"));
            assert_eq!(&out, m);
        }
    }

    #[test]
    fn compresses_and_inflates_with_every_setting() {
        let a = negotiate([&b"permessage-deflate"[..]]).expect("agreed");
        assert_eq!(Compressor::new(&a).message(b""), Some(vec![0]));
        let text = "a rose is a rose is a rose ".repeat(400);
        let msgs: [&[u8]; 4] = [text.as_bytes(), b"", b"x", text.as_bytes()];
        for bits in 9..=15 {
            for fresh in [false, true] {
                let a = Agreed {
                    server_no_context_takeover: fresh,
                    server_max_window_bits: bits,
                    server_bits_asked: true,
                };
                round_trip(&a, &msgs);
            }
        }
    }

    #[test]
    fn a_small_window_is_honoured() {
        // With a 512-byte window, no match may reach back further: a
        // 512-byte window inflater (Python's zlib, wbits=-9) would fail.
        let a = negotiate([&b"permessage-deflate; server_max_window_bits=9"[..]]).expect("agreed");
        let mut c = Compressor::new(&a);
        let block: Vec<u8> = (0..1000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let data = [block.clone(), block].concat();
        let z = c.message(&data).expect("compressed");
        let mut d = Decompress::new_with_window_bits(false, 9);
        let mut out = Vec::with_capacity(4096);
        let z = [z, TAIL.to_vec()].concat();
        d.decompress_vec(&z, &mut out, FlushDecompress::Sync)
            .expect("a 512-byte window suffices");
        assert_eq!(out, data);
    }

    #[test]
    fn context_takeover_carries_the_window_over() {
        let a = negotiate([&b"permessage-deflate"[..]]).expect("agreed");
        let mut c = Compressor::new(&a);
        let m = "the same words again and again".repeat(4);
        let first = c.message(m.as_bytes()).expect("first");
        let second = c.message(m.as_bytes()).expect("second");
        assert!(
            second.len() < first.len(),
            "{} < {}",
            second.len(),
            first.len()
        );
        let a =
            negotiate([&b"permessage-deflate; server_no_context_takeover"[..]]).expect("agreed");
        let mut c = Compressor::new(&a);
        let first = c.message(m.as_bytes()).expect("first");
        assert_eq!(c.message(m.as_bytes()).expect("second"), first);
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        let a = negotiate([&b"permessage-deflate"[..]]).expect("agreed");
        let mut c = Compressor::new(&a);
        let zeros = vec![0u8; 10 << 20];
        let bomb = c.message(&zeros).expect("compressed");
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        let r = d
            .inflate(&bomb, &mut out, 1 << 20)
            .and_then(|()| d.finish(&mut out, 1 << 20));
        assert_eq!(r, Err(InflateError::TooBig));
        assert!(out.capacity() <= (1 << 20) + 1, "{}", out.capacity());
        // Exactly at the limit is allowed.
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        d.inflate(&bomb, &mut out, 10 << 20).expect("fits");
        d.finish(&mut out, 10 << 20).expect("fits");
        assert_eq!(out.len(), 10 << 20);
    }

    #[test]
    fn inflates_piece_by_piece_and_refuses_garbage() {
        let a = negotiate([&b"permessage-deflate"[..]]).expect("agreed");
        let mut c = Compressor::new(&a);
        let text = "piece by piece, one byte at a time".repeat(50);
        let z = c.message(text.as_bytes()).expect("compressed");
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        for b in &z {
            d.inflate(std::slice::from_ref(b), &mut out, 1 << 20)
                .expect("a byte");
        }
        d.finish(&mut out, 1 << 20).expect("finished");
        assert_eq!(out, text.as_bytes());
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        assert_eq!(
            d.inflate(&[0xff; 16], &mut out, 1 << 20),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn a_final_block_starts_a_new_stream() {
        // A message compressed as a complete stream (BFINAL set), then one
        // that starts afresh.
        let mut d = Decompressor::new();
        for word in [&b"first"[..], b"second"] {
            let mut c = Compress::new(Compression::default(), false);
            let mut z = Vec::with_capacity(64);
            c.compress_vec(word, &mut z, FlushCompress::Finish)
                .expect("compressed");
            let mut out = Vec::new();
            d.inflate(&z, &mut out, 100).expect("inflated");
            d.finish(&mut out, 100).expect("finished");
            assert_eq!(out, word);
        }
    }
}
