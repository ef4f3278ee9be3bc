//! Unit tests of `reader`: frames, fragments, limits, UTF-8 and inflation.

use super::*;
use crate::ws::deflate::{negotiate, Compressor};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: masked when `mask` is given.
fn client(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n < 65536 => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mut p = payload.to_vec();
    if let Some(k) = mask {
        out.extend_from_slice(&k);
        apply_mask(&mut p, k, 0);
    }
    out.extend_from_slice(&p);
    out
}

fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    client(first, payload, Some(KEY))
}

/// Everything `r` reads from `bytes`, fed `step` bytes at a time (0: at
/// once), up to and with the first failure.
fn feed(r: &mut Reader, bytes: &[u8], step: usize) -> Vec<Result<Event, Fail>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let step = if step == 0 { bytes.len().max(1) } else { step };
    for piece in bytes.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match r.next(&mut buf) {
                Ok(Some(e)) => out.push(Ok(e)),
                Ok(None) => break,
                Err(f) => {
                    out.push(Err(f));
                    return out;
                }
            }
        }
    }
    out
}

fn read_all(bytes: &[u8], max: u64) -> Vec<Result<Event, Fail>> {
    feed(&mut Reader::new(max, 0, false), bytes, 0)
}

fn text(s: &str) -> Result<Event, Fail> {
    Ok(Event::Message {
        text: true,
        data: Bytes::copy_from_slice(s.as_bytes()),
    })
}

fn code(got: Vec<Result<Event, Fail>>) -> Option<Result<Event, (u16, &'static str)>> {
    got.into_iter()
        .last()
        .map(|r| r.map_err(|f| (f.code, f.token)))
}

#[test]
fn masks_at_any_offset() {
    let data: Vec<u8> = (0..37u8).collect();
    let mut whole = data.clone();
    apply_mask(&mut whole, KEY, 0);
    for cut in 0..data.len() {
        let mut parts = data.clone();
        let (a, b) = parts.split_at_mut(cut);
        apply_mask(a, KEY, 0);
        apply_mask(b, KEY, cut);
        assert_eq!(parts, whole, "cut at {cut}");
    }
}

#[test]
fn reads_messages_in_any_split() {
    let mut wire = masked(0x81, "héllo".as_bytes());
    wire.extend(masked(0x82, &[0, 255, 7]));
    wire.extend(masked(0x01, b"ab"));
    wire.extend(masked(0x89, b"p"));
    wire.extend(masked(0x80, b"cd"));
    wire.extend(masked(0x82, &[9; 300]));
    for step in [0, 1, 2, 3, 7, 100] {
        let got = feed(&mut Reader::new(65536, 0, false), &wire, step);
        assert_eq!(got.len(), 5, "step {step}");
        assert_eq!(got[0], text("héllo"));
        assert_eq!(
            got[1],
            Ok(Event::Message {
                text: false,
                data: Bytes::from_static(&[0, 255, 7])
            })
        );
        assert_eq!(got[2], Ok(Event::Ping(Bytes::from_static(b"p"))));
        assert_eq!(got[3], text("abcd"));
        assert_eq!(
            got[4],
            Ok(Event::Message {
                text: false,
                data: Bytes::from(vec![9; 300])
            })
        );
    }
}

#[test]
fn an_unmasked_frame_is_a_protocol_error() {
    let got = read_all(&client(0x81, b"plain", None), 0);
    assert_eq!(code(got), Some(Err((1002, "protocol_error"))));
    // Control frames too.
    let got = read_all(&client(0x89, b"", None), 0);
    assert_eq!(code(got), Some(Err((1002, "protocol_error"))));
}

#[test]
fn refuses_protocol_violations() {
    let c = |wire: Vec<u8>| code(read_all(&wire, 10));
    let protocol = Some(Err((1002, "protocol_error")));
    assert_eq!(c(masked(0x83, b"")), protocol, "reserved opcode");
    assert_eq!(c(masked(0x8b, b"")), protocol, "reserved control opcode");
    assert_eq!(c(masked(0xC1, b"x")), protocol, "RSV1 without deflate");
    assert_eq!(c(masked(0xA1, b"x")), protocol, "RSV2");
    assert_eq!(c(masked(0x89, &[0; 126])), protocol, "ping too long");
    assert_eq!(c(masked(0x09, b"")), protocol, "fragmented ping");
    assert_eq!(c(masked(0x80, b"x")), protocol, "continuation of nothing");
    let mut two = masked(0x01, b"a");
    two.extend(masked(0x81, b"b"));
    assert_eq!(c(two), protocol, "a new message inside a fragmented one");
    assert_eq!(
        c(masked(0x81, &[0xff, 0xfe])),
        Some(Err((1007, "protocol_error")))
    );
    assert_eq!(
        c(masked(0x81, &[b'a'; 11])),
        Some(Err((1009, "body_too_large")))
    );
    assert_eq!(
        c(masked(0x88, b"x")),
        protocol,
        "a close payload of one byte"
    );
}

#[test]
fn a_length_with_the_top_bit_set_is_a_protocol_error() {
    let mut wire = vec![0x82, 0xff];
    wire.extend_from_slice(&(1u64 << 63).to_be_bytes());
    wire.extend_from_slice(&KEY);
    assert_eq!(
        code(read_all(&wire, 0)),
        Some(Err((1002, "protocol_error")))
    );
    // Just below: too big for the limit, and nothing is allocated for it.
    let mut wire = vec![0x82, 0xff];
    wire.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    wire.extend_from_slice(&KEY);
    let mut buf = BytesMut::from(&wire[..]);
    let mut r = Reader::new(65536, 0, false);
    assert_eq!(r.next(&mut buf).map_err(|f| f.code), Err(1009));
}

/// One binary message of `total` bytes in frames of `piece` bytes.
fn fragmented(total: usize, piece: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..total).map(|i| (i * 31 % 256) as u8).collect();
    let chunks: Vec<&[u8]> = data.chunks(piece).collect();
    let mut wire = Vec::with_capacity(total + chunks.len() * 14);
    for (i, c) in chunks.iter().enumerate() {
        let op = if i == 0 { 0x02 } else { 0x00 };
        let fin = if i + 1 == chunks.len() { 0x80 } else { 0 };
        wire.extend(masked(fin | op, c));
    }
    wire
}

#[test]
fn a_message_is_judged_by_its_size_not_its_frames() {
    let four = 4 << 20;
    for piece in [64, 64 << 10] {
        let wire = fragmented(four, piece);
        // Fits a 4 MiB limit exactly, however it is cut.
        let got = feed(&mut Reader::new(65536, four as u64, false), &wire, 1 << 16);
        match got.as_slice() {
            [Ok(Event::Message { text: false, data })] => {
                assert_eq!(data.len(), four, "{piece}-byte pieces")
            }
            other => panic!("{piece}-byte pieces: {:?}", other.last()),
        }
        // One byte less allowed: refused, however it is cut.
        let got = feed(
            &mut Reader::new(65536, four as u64 - 1, false),
            &wire,
            1 << 16,
        );
        assert_eq!(code(got), Some(Err((1009, "body_too_large"))), "{piece}");
    }
    // More than 128 frames is no violation by itself.
    let got = read_all(&fragmented(1000, 1), 0);
    assert!(matches!(got.as_slice(), [Ok(Event::Message { data, .. })] if data.len() == 1000));
}

#[test]
fn invalid_utf8_fails_where_it_starts() {
    // The first bytes of a frame already show it is not UTF-8: refused
    // before the rest of the frame arrives.
    let mut payload = b"ok so far \xf4\x90\x80\x80".to_vec();
    payload.extend_from_slice(&[b'x'; 100]);
    let wire = masked(0x81, &payload);
    let mut r = Reader::new(0, 0, false);
    let mut buf = BytesMut::from(&wire[..2 + 4 + 12]);
    assert_eq!(r.next(&mut buf).map_err(|f| f.code), Err(1007));
    // The same across fragments: the second fragment fails at once.
    let mut r = Reader::new(0, 0, false);
    let mut wire = masked(0x01, "κόσμε".as_bytes());
    wire.extend(masked(0x00, b"\xed\xa0\x80"));
    let got = feed(&mut r, &wire, 0);
    assert_eq!(code(got), Some(Err((1007, "protocol_error"))));
    // A character cut between fragments is fine.
    let e = "é".as_bytes();
    let mut wire = masked(0x01, &e[..1]);
    wire.extend(masked(0x80, &e[1..]));
    assert_eq!(read_all(&wire, 0), vec![text("é")]);
    // A message that ends in the middle of a character is not.
    let wire = masked(0x81, &e[..1]);
    assert_eq!(
        code(read_all(&wire, 0)),
        Some(Err((1007, "protocol_error")))
    );
}

fn deflated(msgs: &[&[u8]]) -> Vec<Vec<u8>> {
    let a = negotiate([&b"permessage-deflate"[..]]).expect("agreed");
    let mut c = Compressor::new(&a);
    msgs.iter()
        .map(|m| c.message(m).expect("compressed"))
        .collect()
}

#[test]
fn inflates_compressed_messages() {
    let long = "all work and no play ".repeat(200);
    let z = deflated(&[long.as_bytes(), b"second, on the same window"]);
    let mut wire = Vec::new();
    // The first in three fragments (RSV1 on the first only), a ping among
    // them; the second in one frame; then an uncompressed one.
    let third = z[0].len() / 3;
    wire.extend(masked(0x41, &z[0][..third]));
    wire.extend(masked(0x89, b"p"));
    wire.extend(masked(0x00, &z[0][third..2 * third]));
    wire.extend(masked(0x80, &z[0][2 * third..]));
    wire.extend(masked(0xC2, &z[1]));
    wire.extend(masked(0x81, b"plain"));
    // An empty message as RFC 7692 writes it (one 0x00), and as a sender
    // whose compressor made nothing of it might.
    wire.extend(masked(0xC1, &[0]));
    wire.extend(masked(0xC1, b""));
    for step in [0, 1, 5] {
        let got = feed(&mut Reader::new(65536, 1 << 20, true), &wire, step);
        assert_eq!(got.len(), 6, "step {step}");
        assert_eq!(got[1], text(&long));
        assert_eq!(
            got[2],
            Ok(Event::Message {
                text: false,
                data: Bytes::from_static(b"second, on the same window")
            })
        );
        assert_eq!(got[3], text("plain"));
        assert_eq!(got[4], text(""));
        assert_eq!(got[5], text(""));
    }
}

#[test]
fn compressed_messages_keep_the_rules() {
    let z = deflated(&[b"abc"]);
    let protocol = Some(Err((1002, "protocol_error")));
    // RSV1 on a continuation frame, and on a control frame.
    let mut wire = masked(0x41, &z[0]);
    wire.extend(masked(0xC0, b""));
    assert_eq!(code(feed(&mut Reader::new(0, 0, true), &wire, 0)), protocol);
    let wire = masked(0xC9, b"");
    assert_eq!(code(feed(&mut Reader::new(0, 0, true), &wire, 0)), protocol);
    // Not DEFLATE data.
    let wire = masked(0xC1, &[0xff; 8]);
    assert_eq!(code(feed(&mut Reader::new(0, 0, true), &wire, 0)), protocol);
    // Inflated text must be UTF-8.
    let z = deflated(&[b"\xff\xfe bad"]);
    let wire = masked(0xC1, &z[0]);
    assert_eq!(
        code(feed(&mut Reader::new(0, 0, true), &wire, 0)),
        Some(Err((1007, "protocol_error")))
    );
}

#[test]
fn inflation_stops_at_the_message_limit() {
    let zeros = vec![0u8; 8 << 20];
    let z = deflated(&[&zeros]);
    let wire = masked(0xC2, &z[0]);
    assert!(wire.len() < 200_000, "{}", wire.len());
    let got = feed(&mut Reader::new(1 << 20, 1 << 20, true), &wire, 0);
    assert_eq!(code(got), Some(Err((1009, "body_too_large"))));
    let got = feed(&mut Reader::new(1 << 20, 8 << 20, true), &wire, 0);
    assert!(matches!(got.as_slice(), [Ok(Event::Message { data, .. })] if data.len() == 8 << 20));
}
