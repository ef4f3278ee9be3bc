//! Hostile-input property tests for the three parsers that read client
//! bytes: the request head, the chunked body decoder and the WebSocket frame
//! reader. Each is fed pure random bytes and mutations of valid input (byte
//! flips, insertions, long runs, cuts, huge length fields) in random splits,
//! and must never panic, never allocate beyond what its limits allow, and
//! either parse or refuse with the right status. Valid inputs built from a
//! model must parse to exactly what the model says.
//!
//! `PAGI_FUZZ_CASES` sets the cases per property (a small default keeps
//! `cargo test` fast; `bench/fuzz.sh` runs a million).

pub mod alloc;
mod chunked;
mod head;
mod ws;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per property when `PAGI_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 2000;

/// The proptest settings every property here runs with.
pub fn config() -> Config {
    let cases = std::env::var("PAGI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        // Failures found are kept as unit tests next to the parser instead.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Bytes that matter to the grammars, besides any byte at all.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(&b"\r\n:;, \t0fF9aA/?\x00\x7f\x80\xff"[..]),
    ]
}

/// One change to a valid input.
#[derive(Debug, Clone)]
pub enum Edit {
    /// XOR a byte with one bit.
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    /// A long run of one byte (long lines, many commas, many fields).
    Run(usize, u8, usize),
    Remove(usize, usize),
    Truncate(usize),
    /// Repeat a slice of the input in place (a repeated field or frame).
    Repeat(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let run_len = prop_oneof![4 => 1usize..64, 1 => 64usize..10_000];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, 1 << b)),
        (any::<usize>(), interesting_byte()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), vec(interesting_byte(), 1..16)).prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), interesting_byte(), run_len).prop_map(|(i, b, n)| Edit::Run(i, b, n)),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Edit::Remove(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..64, 1usize..40).prop_map(|(i, n, k)| Edit::Repeat(i, n, k)),
    ]
}

/// Applies `edits` in order; positions wrap around the current length.
pub fn apply(input: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        let at = |i: usize, v: &Vec<u8>| i % (v.len() + 1);
        match *e {
            Edit::Flip(i, bit) if !input.is_empty() => {
                let i = i % input.len();
                input[i] ^= bit;
            }
            Edit::Set(i, b) if !input.is_empty() => {
                let i = i % input.len();
                input[i] = b;
            }
            Edit::Flip(..) | Edit::Set(..) => {}
            Edit::Insert(i, ref bytes) => {
                let i = at(i, input);
                input.splice(i..i, bytes.iter().copied());
            }
            Edit::Run(i, b, n) => {
                let i = at(i, input);
                input.splice(i..i, std::iter::repeat(b).take(n));
            }
            Edit::Remove(i, n) => {
                let i = at(i, input);
                let end = (i + n).min(input.len());
                input.drain(i..end);
            }
            Edit::Truncate(i) => {
                let i = at(i, input);
                input.truncate(i);
            }
            Edit::Repeat(i, n, k) => {
                let i = at(i, input);
                let end = (i + n).min(input.len());
                let piece = input[i..end].to_vec();
                for _ in 0..k {
                    input.splice(end..end, piece.iter().copied());
                }
            }
        }
    }
}

/// Hostile input around `valid`: random bytes, random bytes from the
/// grammar's alphabet, and valid input with a few edits.
pub fn hostile(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (valid, vec(edit(), 0..5)).prop_map(|(mut v, edits)| {
        apply(&mut v, &edits);
        v
    });
    prop_oneof![
        1 => vec(any::<u8>(), 0..600),
        1 => vec(interesting_byte(), 0..600),
        6 => mutated,
    ]
}

/// Piece sizes for feeding input in parts, used in turn; `[1]` is byte by
/// byte.
pub fn splits() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        1 => Just(vec![1]),
        4 => vec(1usize..80, 1..8),
        3 => vec(1usize..5000, 1..4),
    ]
}

/// `input` cut into pieces of the sizes in `sizes`, taken in turn.
pub fn pieces<'a>(input: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = input;
    let mut sizes = sizes.iter().cycle();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes
            .next()
            .copied()
            .unwrap_or(usize::MAX)
            .clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        Some(piece)
    })
}
