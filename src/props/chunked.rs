//! The chunked body decoder (`crate::proto::h1::chunked::Decoder`) under hostile input
//! fed in arbitrary splits.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;

use super::alloc::peak_during;
use super::{config, hostile, pieces, splits};
use crate::proto::h1::chunked::{Decoder, Step, MAX_SIZE_LINE, MAX_TRAILERS};
use crate::proto::h1::parse::Reject;

/// One chunk as the model sees it.
#[derive(Debug, Clone)]
struct Chunk {
    data: Vec<u8>,
    /// A size line claiming this instead of the data's length.
    claim: Option<&'static str>,
    zeros: usize,
    upper: bool,
    ext: String,
    lf_only: bool,
}

/// A whole chunked body: chunks, the last chunk's extension, trailer lines.
#[derive(Debug, Clone)]
struct Body {
    chunks: Vec<Chunk>,
    last_ext: String,
    trailers: Vec<String>,
    lf_only: bool,
}

fn eol(lf_only: bool) -> &'static [u8] {
    if lf_only {
        b"\n"
    } else {
        b"\r\n"
    }
}

impl Chunk {
    fn size_line(&self) -> Vec<u8> {
        let mut line = "0".repeat(self.zeros);
        match self.claim {
            Some(c) => line += c,
            None if self.upper => line += &format!("{:X}", self.data.len()),
            None => line += &format!("{:x}", self.data.len()),
        }
        line += &self.ext;
        line.into_bytes()
    }
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &self.chunks {
            out.extend(c.size_line());
            out.extend(eol(c.lf_only));
            out.extend(&c.data);
            out.extend(eol(c.lf_only));
        }
        out.extend(format!("0{}", self.last_ext).bytes());
        out.extend(eol(self.lf_only));
        for t in &self.trailers {
            out.extend(t.bytes());
            out.extend(eol(self.lf_only));
        }
        out.extend(eol(self.lf_only));
        out
    }
}

/// A chunk extension: none, short ones, or one near the size-line limit.
fn extension() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => Just(String::new()),
        8 => "( ?;[a-z]{1,6}(=[a-z0-9]{0,6})?){1,3}",
        1 => (MAX_SIZE_LINE - 24..MAX_SIZE_LINE + 8).prop_map(|n| format!(";{}", "e".repeat(n))),
    ]
}

fn chunk() -> impl Strategy<Value = Chunk> {
    let claim = prop_oneof![
        12 => Just(None),
        1 => prop::sample::select(vec![
            "ffffffffffffffff", "7fffffffffffffff", "10000000000000000", "fffffffffffffff",
            "a00001",
        ])
        .prop_map(Some),
    ];
    let zeros = prop_oneof![8 => 0usize..3, 1 => 12usize..15];
    let data = prop_oneof![4 => vec(any::<u8>(), 1..64), 1 => vec(any::<u8>(), 64..400)];
    (
        data,
        claim,
        zeros,
        any::<bool>(),
        extension(),
        any::<bool>(),
    )
        .prop_map(|(data, claim, zeros, upper, ext, lf_only)| Chunk {
            data,
            claim,
            zeros,
            upper,
            ext,
            lf_only,
        })
}

fn trailer() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => "[A-Z][a-z-]{0,8}: [ -~]{0,30}",
        1 => (1000usize..4200).prop_map(|n| format!("X-Long: {}", "t".repeat(n))),
        // One line right at the trailer limit.
        4 => (MAX_TRAILERS - 3..MAX_TRAILERS + 2)
            .prop_map(|n| format!("X-Edge: {}", "t".repeat(n - 8))),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    (
        vec(chunk(), 0..6),
        extension(),
        vec(trailer(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(chunks, last_ext, trailers, lf_only)| Body {
            chunks,
            last_ext,
            trailers,
            lf_only,
        })
}

fn max_chunk() -> impl Strategy<Value = u64> {
    prop_oneof![Just(10 * 1024 * 1024), 0u64..300]
}

/// What decoding `b` must give: the body bytes handed out, then the end of
/// the body (with the bytes it took) or the refusal.
fn model(b: &Body, max_chunk: u64) -> (Vec<u8>, Result<usize, u16>) {
    let mut out = Vec::new();
    let size_ok = |line: &[u8], lf_only: bool| -> Result<u64, u16> {
        if line.len() + usize::from(!lf_only) > MAX_SIZE_LINE {
            return Err(400);
        }
        let digits = line
            .split(|&c| c == b';')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        if digits.len() > 15 {
            return Err(413);
        }
        let n = u64::from_str_radix(std::str::from_utf8(digits).unwrap_or("x"), 16)
            .map_err(|_| 400u16)?;
        if n > max_chunk {
            return Err(413);
        }
        Ok(n)
    };
    for c in &b.chunks {
        if let Err(status) = size_ok(&c.size_line(), c.lf_only) {
            return (out, Err(status));
        }
        out.extend(&c.data);
    }
    if let Err(status) = size_ok(format!("0{}", b.last_ext).as_bytes(), b.lf_only) {
        return (out, Err(status));
    }
    let mut seen = 0;
    for t in &b.trailers {
        let line = t.len() + usize::from(!b.lf_only);
        if seen + line > MAX_TRAILERS {
            return (out, Err(431));
        }
        seen += line + 1;
    }
    (out, Ok(b.bytes().len()))
}

/// How decoding ended: the body handed out, and Ok((done, bytes consumed))
/// or the refusal.
type Outcome = (Vec<u8>, Result<(bool, usize), Reject>);

/// Feeds `input` in pieces of `sizes` (all at once when empty), checking
/// each step's allocation and output against the limits.
fn decode(input: &[u8], sizes: &[usize], max_chunk: u64) -> Result<Outcome, TestCaseError> {
    let mut d = Decoder::new(max_chunk);
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    let all = [input.len().max(1)];
    let sizes = if sizes.is_empty() { &all[..] } else { sizes };
    for piece in pieces(input, sizes) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let before = buf.len();
            let (step, peak) = peak_during(|| d.step(&mut buf));
            prop_assert!(peak <= 1024, "one step allocated {} bytes", peak);
            prop_assert!(buf.len() <= before);
            match step {
                Ok(Step::Data(data)) => {
                    prop_assert!(!data.is_empty() && data.len() as u64 <= max_chunk);
                    prop_assert!(before - buf.len() >= data.len());
                    body.extend_from_slice(&data);
                }
                Ok(Step::More) => break,
                Ok(Step::Done) => {
                    let left = buf.len();
                    prop_assert_eq!(d.step(&mut buf), Ok(Step::Done));
                    prop_assert_eq!(buf.len(), left);
                    return Ok((body, Ok((true, fed - left))));
                }
                Err(r) => {
                    prop_assert!(matches!(r.status, 400 | 413 | 431), "{:?}", r);
                    return Ok((body, Err(r)));
                }
            }
        }
    }
    Ok((body, Ok((false, fed - buf.len()))))
}

proptest! {
    #![proptest_config(config())]

    /// Bodies built from the model decode to exactly what it says, however
    /// they are split; what follows the body is left alone.
    #[test]
    fn valid_bodies_decode_as_the_model_says(
        b in body(),
        max in max_chunk(),
        sizes in splits(),
        tail in vec(any::<u8>(), 0..20),
    ) {
        let mut input = b.bytes();
        input.extend_from_slice(&tail);
        let (want_body, want) = model(&b, max);
        let (got_body, got) = decode(&input, &sizes, max)?;
        prop_assert_eq!(&got_body, &want_body);
        match (want, got) {
            (Ok(n), Ok((done, m))) => prop_assert!(done && n == m, "want {}, got {:?}", n, (done, m)),
            (Err(s), Err(r)) => prop_assert_eq!(s, r.status, "{:?}", r),
            (want, got) => prop_assert!(false, "want {:?}, got {:?}", want, got),
        }
    }

    /// Random and mutated bodies: the same outcome whatever the split,
    /// never a panic, and no allocation per step beyond a constant (a huge
    /// chunk size never turns into a buffer).
    #[test]
    fn hostile_bodies_decode_the_same_in_any_split(
        input in hostile(body().prop_map(|b| b.bytes())),
        max in max_chunk(),
        sizes in splits(),
    ) {
        let whole = decode(&input, &[], max)?;
        let split = decode(&input, &sizes, max)?;
        prop_assert_eq!(whole, split);
    }
}
