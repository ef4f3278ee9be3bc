//! The WebSocket frame reader (`crate::ws::reader::Reader`) under hostile
//! input fed in arbitrary splits.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::alloc::peak_during;
use super::{config, hostile, pieces, splits};
use crate::ws::codec::Event;
use crate::ws::reader::Reader;

/// Slack allowed on top of what a read's input accounts for.
const SLACK: usize = 1 << 20;

/// One frame as the model sees it.
#[derive(Debug, Clone)]
struct Frame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: Vec<u8>,
    /// A length field claiming more than the payload sent (last frame only).
    claim: Option<u64>,
    /// Length field width at least: 0 = 7 bits, 1 = 16 bits, 2 = 64 bits.
    wide: u8,
}

impl Frame {
    fn len(&self) -> u64 {
        self.claim.unwrap_or(self.payload.len() as u64)
    }

    fn head_len(&self) -> usize {
        let extra = [0, 2, 8][usize::from(self.width())];
        2 + extra + if self.mask.is_some() { 4 } else { 0 }
    }

    fn width(&self) -> u8 {
        let needed = match self.len() {
            0..=125 => 0,
            126..=65535 => 1,
            _ => 2,
        };
        needed.max(self.wide)
    }

    fn wire(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 15)];
        let m = if self.mask.is_some() { 0x80 } else { 0 };
        match self.width() {
            0 => out.push(m | self.len() as u8),
            1 => {
                out.push(m | 126);
                out.extend_from_slice(&(self.len() as u16).to_be_bytes());
            }
            _ => {
                out.push(m | 127);
                out.extend_from_slice(&self.len().to_be_bytes());
            }
        }
        let mut p = self.payload.clone();
        if let Some(k) = self.mask {
            out.extend_from_slice(&k);
            for (i, b) in p.iter_mut().enumerate() {
                *b ^= k[i & 3];
            }
        }
        out.extend(p);
        out
    }
}

fn mask() -> impl Strategy<Value = Option<[u8; 4]>> {
    prop_oneof![12 => any::<[u8; 4]>().prop_map(Some), 1 => Just(None)]
}

fn frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: Vec<u8>, wide: u8) -> Frame {
    Frame {
        fin,
        rsv: 0,
        opcode,
        mask,
        payload,
        claim: None,
        wide,
    }
}

/// A text or binary message in fragments, with pings and pongs between.
fn message() -> impl Strategy<Value = Vec<Frame>> {
    let data = prop_oneof![
        40 => (Just(true), "\\PC{0,40}".prop_map(String::into_bytes)),
        40 => (Just(false), vec(any::<u8>(), 0..200)),
        10 => (Just(false), vec(any::<u8>(), 126..400)),
        // Past 64 KiB: a 64-bit length field, and past the default limit.
        1 => (Just(true), (65530usize..65540).prop_map(|n| vec![b'a'; n])),
    ];
    let fragments = prop_oneof![8 => 1usize..4, 1 => 120usize..136];
    let control = (
        prop::sample::select(vec![9u8, 10]),
        vec(any::<u8>(), 0..126),
    );
    (
        data,
        fragments,
        mask(),
        0u8..3,
        vec((any::<usize>(), control), 0..3),
    )
        .prop_map(|((text, data), k, key, wide, controls)| {
            // k pieces of the data (some empty), cut where the text may
            // split a character: only the whole message must be UTF-8.
            let mut cuts: Vec<usize> = (1..k).map(|i| i * data.len() / k).collect();
            cuts.push(data.len());
            let mut frames = Vec::new();
            let mut start = 0;
            for (i, end) in cuts.into_iter().enumerate() {
                let op = if i == 0 { 2 - u8::from(text) } else { 0 };
                let part = data[start..end].to_vec();
                frames.push(frame(end == data.len() && i + 1 == k, op, key, part, wide));
                start = end;
            }
            for (at, (op, payload)) in controls {
                let at = at % (frames.len() + 1);
                frames.insert(at, frame(true, op, key, payload, 0));
            }
            frames
        })
}

fn close_payload() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![
        prop::sample::select(vec![1000u16, 1001, 1003, 1007, 1011, 3000, 4999]),
        any::<u16>(),
    ]
    .boxed();
    prop_oneof![
        Just(Vec::new()),
        vec(any::<u8>(), 1..2),
        (code.clone(), "\\PC{0,20}")
            .prop_map(|(c, r)| [&c.to_be_bytes()[..], r.as_bytes()].concat()),
        (code, vec(any::<u8>(), 0..20)).prop_map(|(c, r)| [&c.to_be_bytes()[..], &r].concat()),
    ]
}

/// Any frame at all, biased towards the edges of the rules.
fn raw_frame() -> impl Strategy<Value = Frame> {
    let opcode = prop_oneof![4 => prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]), 1 => 0u8..16];
    let rsv = prop_oneof![6 => Just(0u8), 1 => 1u8..8];
    let payload = prop_oneof![4 => vec(any::<u8>(), 0..130), 1 => close_payload()];
    (any::<bool>(), rsv, opcode, mask(), payload, 0u8..3).prop_map(
        |(fin, rsv, opcode, mask, payload, wide)| Frame {
            rsv,
            ..frame(fin, opcode, mask, payload, wide)
        },
    )
}

/// A last frame whose length field claims more than was sent, up to 2^64-1.
fn claim_frame() -> impl Strategy<Value = Frame> {
    let claim = prop_oneof![
        126u64..400,
        65530u64..65600,
        prop::sample::select(vec![1 << 32, 1 << 40, 1 << 63, u64::MAX - 5, u64::MAX]),
        any::<u64>(),
    ];
    (raw_frame(), claim).prop_map(|(mut f, claim)| {
        let claim = claim.max(1);
        f.payload
            .truncate(usize::try_from(claim - 1).unwrap_or(usize::MAX));
        f.claim = Some(claim);
        f
    })
}

fn frames() -> impl Strategy<Value = Vec<Frame>> {
    let part = prop_oneof![4 => message(), 1 => vec(raw_frame(), 1..3)];
    let last = prop_oneof![3 => Just(None), 1 => claim_frame().prop_map(Some)];
    (vec(part, 0..5), last)
        .prop_map(|(parts, last)| parts.into_iter().flatten().chain(last).collect())
}

fn wire(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(Frame::wire).collect()
}

fn max_frame() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), 1u64..300, Just(65536)]
}

fn max_message() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), 1u64..600, Just(65536), Just(1 << 20)]
}

/// The limits a reader runs with: largest frame, largest message.
type Limits = (u64, u64);

/// An event, or a failure as its close code and the app's reason.
type Got = Result<Event, (u16, &'static str)>;

const PROTOCOL: (u16, &str) = (1002, "protocol_error");
const UTF8: (u16, &str) = (1007, "protocol_error");
const TOO_BIG: (u16, &str) = (1009, "body_too_large");

/// Whether bytes of a text message could still become UTF-8.
fn utf8_prefix(data: &[u8]) -> bool {
    match std::str::from_utf8(data) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

fn message_event(text: bool, data: Vec<u8>) -> Got {
    if text && std::str::from_utf8(&data).is_err() {
        return Err(UTF8);
    }
    Ok(Event::Message {
        text,
        data: Bytes::from(data),
    })
}

fn close_event(p: &[u8]) -> Got {
    match p {
        [] => Ok(Event::Close(None)),
        [_] => Err(PROTOCOL),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
                return Err(PROTOCOL);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(UTF8);
            }
            Ok(Event::Close(Some((code, Bytes::copy_from_slice(reason)))))
        }
    }
}

/// The violation in a frame's header, checked in the reader's order.
fn header_fail(
    f: &Frame,
    partial: Option<&(bool, Vec<u8>)>,
    (max, max_msg): Limits,
) -> Option<(u16, &'static str)> {
    let len = f.len();
    let control = f.opcode >= 8;
    let reserved = matches!(f.opcode, 3..=7 | 11..=15);
    if reserved || f.rsv & 3 != 0 || f.mask.is_none() || len >> 63 != 0 {
        return Some(PROTOCOL);
    }
    let bad_order = match f.opcode {
        0 => partial.is_none() || f.rsv != 0,
        _ if control => f.rsv != 0 || len > 125 || !f.fin,
        // Without permessage-deflate, RSV1 is a violation too.
        _ => f.rsv != 0 || partial.is_some(),
    };
    if bad_order {
        return Some(PROTOCOL);
    }
    let so_far = match (f.opcode, partial) {
        (0, Some((_, data))) => data.len() as u64,
        _ => 0,
    };
    let too_big_message = !control && max_msg > 0 && so_far.saturating_add(len) > max_msg;
    if (max > 0 && len > max) || too_big_message {
        return Some(TOO_BIG);
    }
    None
}

/// What reading `frames` must give: the events up to the first failure,
/// and (without one) the bytes taken: a data frame still arriving gives up
/// its header and what came of its payload, a control frame nothing.
fn model(frames: &[Frame], limits: Limits) -> (Vec<Got>, Option<usize>) {
    let mut out = Vec::new();
    let mut taken = 0;
    // A text message in progress: (text, its bytes so far).
    let mut partial: Option<(bool, Vec<u8>)> = None;
    for f in frames {
        if let Some(fail) = header_fail(f, partial.as_ref(), limits) {
            out.push(Err(fail));
            return (out, None);
        }
        let control = f.opcode >= 8;
        if f.claim.is_some() {
            if control {
                return (out, Some(taken));
            }
            // The payload streams in: its bytes are taken and checked.
            let (text, mut data) = match f.opcode {
                0 => partial.take().unwrap_or_default(),
                op => (op == 1, Vec::new()),
            };
            data.extend_from_slice(&f.payload);
            if text && !utf8_prefix(&data) {
                out.push(Err(UTF8));
                return (out, None);
            }
            return (out, Some(taken + f.head_len() + f.payload.len()));
        }
        taken += f.wire().len();
        let got = match f.opcode {
            9 => Some(Ok(Event::Ping(Bytes::from(f.payload.clone())))),
            10 => Some(Ok(Event::Pong)),
            8 => Some(close_event(&f.payload)),
            op => {
                let (text, mut data) = match op {
                    0 => partial.take().unwrap_or_default(),
                    op => (op == 1, Vec::new()),
                };
                data.extend_from_slice(&f.payload);
                if text && !utf8_prefix(&data) {
                    Some(Err(UTF8))
                } else if f.fin {
                    Some(message_event(text, data))
                } else {
                    partial = Some((text, data));
                    None
                }
            }
        };
        match got {
            Some(Err(fail)) => {
                out.push(Err(fail));
                return (out, None);
            }
            Some(ev) => out.push(ev),
            None => {}
        }
    }
    (out, Some(taken))
}

/// Feeds `input` in pieces of `sizes` (all at once when empty): the events
/// read and the bytes taken (None after a failure). Each call's allocation
/// is checked: a claimed length is never allocated at once.
fn read(
    input: &[u8],
    sizes: &[usize],
    limits: Limits,
) -> Result<(Vec<Got>, Option<usize>), TestCaseError> {
    let mut r = Reader::new(limits.0, limits.1, false);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let all = [input.len().max(1)];
    let sizes = if sizes.is_empty() { &all[..] } else { sizes };
    for piece in pieces(input, sizes) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let (before, cap) = (buf.len(), buf.capacity());
            let (got, peak) = peak_during(|| r.next(&mut buf));
            let bound = 3 * cap + 3 * fed + SLACK;
            prop_assert!(
                peak <= bound,
                "one read allocated {} bytes, bound {}",
                peak,
                bound
            );
            prop_assert!(buf.len() <= before);
            match got {
                Ok(None) => break,
                Ok(Some(ev)) => {
                    check_event(&ev, limits)?;
                    out.push(Ok(ev));
                }
                Err(f) => {
                    let got = (f.code, f.token);
                    prop_assert!([PROTOCOL, UTF8, TOO_BIG].contains(&got), "{:?}", f);
                    out.push(Err(got));
                    return Ok((out, None));
                }
            }
        }
    }
    Ok((out, Some(fed - buf.len())))
}

/// What any event must satisfy, whatever the input.
fn check_event(ev: &Event, (_, max_msg): Limits) -> Result<(), TestCaseError> {
    match ev {
        Event::Message { text, data } => {
            prop_assert!(!text || std::str::from_utf8(data).is_ok());
            prop_assert!(max_msg == 0 || data.len() as u64 <= max_msg);
        }
        Event::Ping(p) => prop_assert!(p.len() <= 125),
        Event::Pong | Event::Close(None) => {}
        Event::Close(Some((code, reason))) => {
            prop_assert!(matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999));
            prop_assert!(std::str::from_utf8(reason).is_ok());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Frame sequences built from the model read as it says, however the
    /// bytes are split: events, the close code of the first violation, and
    /// the bytes taken.
    #[test]
    fn frames_read_as_the_model_says(
        fs in frames(),
        max in max_frame(),
        max_msg in max_message(),
        sizes in splits(),
    ) {
        let input = wire(&fs);
        let (want, taken) = model(&fs, (max, max_msg));
        let (got, n) = read(&input, &sizes, (max, max_msg))?;
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(n, taken);
    }

    /// Random and mutated frames: the same events and failure whatever the
    /// split, never a panic, bounded allocation.
    #[test]
    fn hostile_frames_read_the_same_in_any_split(
        input in hostile(frames().prop_map(|fs| wire(&fs))),
        max in max_frame(),
        max_msg in max_message(),
        sizes in splits(),
    ) {
        let whole = read(&input, &[], (max, max_msg))?;
        let split = read(&input, &sizes, (max, max_msg))?;
        prop_assert_eq!(whole, split);
    }
}
