//! The request-head parser (`crate::proto::h1::parse::parse`) under hostile input.

use proptest::collection::vec;
use proptest::prelude::*;

use super::alloc::peak_during;
use super::{config, hostile};
use crate::proto::h1::parse::{parse, Framing, Head, Limits};

/// A request head as the model sees it.
#[derive(Debug, Clone)]
struct Spec {
    method: &'static str,
    target: String,
    version: u8,
    /// Name, leading blanks, value, trailing blanks.
    fields: Vec<(String, &'static str, String, &'static str)>,
    lf_only: bool,
}

impl Spec {
    fn request_line(&self) -> String {
        format!(
            "{} {} HTTP/1.{}",
            self.method,
            self.target,
            self.version - 10
        )
    }

    fn bytes(&self) -> Vec<u8> {
        let eol = if self.lf_only { "\n" } else { "\r\n" };
        let mut s = self.request_line() + eol;
        for (name, lead, value, trail) in &self.fields {
            s += &format!("{name}:{lead}{value}{trail}{eol}");
        }
        s += eol;
        s.into_bytes()
    }
}

/// `name` in one of several spellings.
fn spelled(name: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(name.to_string()),
        Just(name.to_ascii_lowercase()),
        Just(name.to_ascii_uppercase()),
    ]
}

fn content_length() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[0-9]{1,4}",
        1 => "[1-9][0-9]{9,20}",
        1 => prop::sample::select(vec![
            "2147483647", "2147483648", "4294967296", "0000000005", "00000000005",
            "-1", "+5", "0x10", "1 2", "5,5", "",
        ]).prop_map(String::from),
    ]
}

fn transfer_encoding() -> impl Strategy<Value = String> {
    let coding = prop::sample::select(vec![
        "chunked",
        "Chunked",
        "gzip",
        "identity",
        " chunked ",
        "",
        "deflate",
    ]);
    vec(coding, 1..4).prop_map(|c| c.join(","))
}

fn field() -> impl Strategy<Value = (String, &'static str, String, &'static str)> {
    let named = |name, value: BoxedStrategy<String>| (spelled(name).boxed(), value);
    let pair = prop_oneof![
        1 => named("Host", "[a-z0-9.:]{0,20}".boxed()),
        1 => named("Content-Length", content_length().boxed()),
        1 => named("Transfer-Encoding", transfer_encoding().boxed()),
        1 => named("Cookie", "[a-z]=[0-9]{0,3}".boxed()),
        1 => named(
            "Connection",
            prop::sample::select(vec!["close", "keep-alive", "Upgrade", "Keep-Alive, close", "x"])
                .prop_map(String::from)
                .boxed(),
        ),
        1 => named(
            "Expect",
            prop::sample::select(vec!["100-continue", "100-Continue", "200-ok"])
                .prop_map(String::from)
                .boxed(),
        ),
        3 => ("X-[A-Za-z0-9-]{1,10}".boxed(), "[!-~]([ -~]{0,300}[!-~])?".boxed()),
    ];
    let blanks = prop::sample::select(vec!["", "", " ", "  ", "\t"]);
    (pair, blanks.clone(), blanks).prop_map(|((n, v), l, t)| (n, l, v, t))
}

fn spec() -> impl Strategy<Value = Spec> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "HEAD", "OPTIONS", "PATCH"]);
    let target = prop_oneof![
        4 => "/[a-zA-Z0-9/%._-]{0,40}(\\?[a-z0-9=&?]{0,20})?",
        1 => "https?://[a-z.]{1,12}(:[0-9]{2,4})?(/[a-z/]{0,10})?(\\?[a-z=]{0,8})?",
        1 => Just("*".to_string()),
    ];
    (
        method,
        target,
        10u8..=11,
        vec(field(), 0..12),
        any::<bool>(),
    )
        .prop_map(|(method, target, version, fields, lf_only)| Spec {
            method,
            target,
            version,
            fields,
            lf_only,
        })
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (8usize..200, 0usize..14, 16usize..1500).prop_map(|(line, count, size)| Limits {
            max_request_line: line,
            max_header_count: count,
            max_header_size: size,
        }),
    ]
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What the parser must make of `s`: a refusal's status, or the head.
fn model(s: &Spec, lim: &Limits) -> Result<Head, u16> {
    if s.request_line().len() > lim.max_request_line {
        return Err(414);
    }
    let n = s.bytes().len();
    if s.fields.len() > lim.max_header_count || n.saturating_sub(4) > lim.max_header_size {
        return Err(431);
    }
    let mut headers = Vec::new();
    let mut cookies = Vec::new();
    let (mut cl, mut cl_bad, mut cl_huge) = (None::<u64>, false, false);
    let mut codings = Vec::new();
    let (mut hosts, mut expect_continue, mut close, mut keep) = (0, false, false, false);
    for (name, _, value, trail) in &s.fields {
        let name = name.to_ascii_lowercase();
        let value = value.trim_matches([' ', '\t']);
        match name.as_str() {
            "cookie" => {
                cookies.push(value);
                continue;
            }
            "content-length" => {
                if !trail.is_empty()
                    || value.is_empty()
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    cl_bad = true;
                } else if value.len() > 10 {
                    cl_huge = true;
                } else {
                    let v: u64 = value.parse().unwrap_or(u64::MAX);
                    cl_huge |= v > i32::MAX as u64;
                    match cl {
                        Some(prev) if prev != v => cl_bad = true,
                        Some(_) => continue,
                        None => cl = Some(v),
                    }
                }
            }
            "transfer-encoding" => {
                codings.extend(value.split(',').map(|c| c.trim().to_ascii_lowercase()))
            }
            "host" => hosts += 1,
            "expect" => expect_continue |= value.eq_ignore_ascii_case("100-continue"),
            "connection" => {
                close |= has_token(value, "close");
                keep |= has_token(value, "keep-alive");
            }
            _ => {}
        }
        headers.push((name.into_bytes(), value.as_bytes().to_vec()));
    }
    if !cookies.is_empty() {
        headers.push((b"cookie".to_vec(), cookies.join("; ").into_bytes()));
    }
    if cl_bad {
        return Err(400);
    }
    if cl_huge {
        return Err(413);
    }
    let chunked = codings.last().is_some_and(|c| c == "chunked");
    if !codings.is_empty() && !chunked {
        return Err(if codings.iter().any(|c| c == "chunked") {
            400
        } else {
            501
        });
    }
    if (chunked && cl.is_some()) || (s.version == 11 && hosts != 1) || hosts > 1 {
        return Err(400);
    }
    // Absolute form: the path (and query) after the authority.
    let mut target = s.target.as_str();
    if let Some((scheme, rest)) = target.split_once("://") {
        if scheme.bytes().all(|b| b.is_ascii_alphabetic()) {
            target = rest.find(['/', '?']).map_or("/", |i| &rest[i..]);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Head {
        method: s.method.to_string(),
        raw_path: if path.is_empty() { "/" } else { path }.as_bytes().to_vec(),
        query: query.as_bytes().to_vec(),
        version: s.version,
        headers,
        framing: if chunked {
            Framing::Chunked
        } else {
            Framing::Length(cl.unwrap_or(0))
        },
        content_length: cl,
        // RFC 9110 10.1.1: an HTTP/1.0 client's Expect is ignored.
        expect_continue: expect_continue && s.version == 11,
        keep_alive: if s.version == 11 {
            !close
        } else {
            keep && !close
        },
    })
}

/// Most bytes one parse may have live: copies of at most one head's bytes,
/// a few machine words per field, and the field slots past the stack's.
fn alloc_bound(input_len: usize, lim: &Limits) -> usize {
    let head = input_len.min(lim.max_header_size.saturating_add(4));
    let slots = lim.max_header_count.saturating_add(1).min(4096);
    let heap_slots = if slots > 128 { slots * 32 } else { 0 };
    4 * head + 128 * slots + heap_slots + 4096
}

/// Length of the first line, as the parser measures it.
fn first_line(buf: &[u8]) -> usize {
    match buf.iter().position(|&b| b == b'\n') {
        Some(p) => p - usize::from(p > 0 && buf[p - 1] == b'\r'),
        None => buf.len() - usize::from(buf.last() == Some(&b'\r')),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Heads built from the model parse to exactly what it says.
    #[test]
    fn valid_heads_parse_as_the_model_says(s in spec(), lim in limits(), tail in vec(any::<u8>(), 0..40)) {
        let mut input = s.bytes();
        let len = input.len();
        input.extend_from_slice(&tail);
        let got = parse(&input, &lim);
        match (model(&s, &lim), got) {
            (Err(want), Err(r)) => prop_assert_eq!(want, r.status, "{:?}", r),
            (Ok(want), Ok(Some((h, n)))) => {
                prop_assert_eq!(n, len);
                prop_assert_eq!(format!("{want:?}"), format!("{h:?}"));
            }
            (want, got) => prop_assert!(false, "want {:?}, got {:?}", want, got.map(|o| o.map(|(h, n)| (n, format!("{h:?}"))))),
        }
    }

    /// Random and mutated heads: a clean refusal or a head within the
    /// limits, never a panic, and allocation bounded by the limits.
    #[test]
    fn hostile_heads_are_parsed_or_refused(
        input in hostile(spec().prop_map(|s| s.bytes())),
        lim in limits(),
        cut in any::<usize>(),
        tail in vec(any::<u8>(), 0..40),
    ) {
        let (got, peak) = peak_during(|| parse(&input, &lim));
        let bound = alloc_bound(input.len(), &lim);
        prop_assert!(peak <= bound, "allocated {} bytes, bound {}", peak, bound);
        let line_too_long = first_line(&input) > lim.max_request_line;
        match got {
            Err(r) => {
                prop_assert!(matches!(r.status, 400 | 413 | 414 | 431 | 501), "{:?}", r);
                prop_assert!(!line_too_long || r.status == 414, "{:?}", r);
            }
            Ok(None) => {
                prop_assert!(!line_too_long);
                prop_assert!(input.len() <= lim.max_header_size + 4);
            }
            Ok(Some((h, n))) => {
                prop_assert!(!line_too_long);
                prop_assert!(n <= input.len() && n.saturating_sub(4) <= lim.max_header_size);
                prop_assert!(input[..n].ends_with(b"\n\n") || input[..n].ends_with(b"\n\r\n"));
                prop_assert!(h.headers.len() <= lim.max_header_count);
                prop_assert!(h.version == 10 || h.version == 11);
                prop_assert!(!h.raw_path.is_empty());
                let hosts = h.headers.iter().filter(|(k, _)| k == b"host").count();
                prop_assert!(hosts <= 1 && (h.version == 10 || hosts == 1));
                match h.framing {
                    Framing::Chunked => prop_assert!(h.content_length.is_none()),
                    Framing::Length(v) => {
                        prop_assert_eq!(Some(v), h.content_length.or(Some(0)));
                        prop_assert!(v <= i32::MAX as u64);
                    }
                }
                // A head arriving in parts waits for the rest...
                let k = cut % n;
                let part = parse(&input[..k], &lim);
                prop_assert!(matches!(part, Ok(None)), "prefix {}: {:?}", k, part.map(|_| ()));
                // ...and whatever follows it is not its business.
                let mut next = input[..n].to_vec();
                next.extend_from_slice(&tail);
                let again = parse(&next, &lim);
                prop_assert_eq!(
                    format!("{:?}", again.map(|o| o.map(|(h, n)| (n, format!("{h:?}"))))),
                    format!("{:?}", Ok::<_, ()>(Some((n, format!("{h:?}")))))
                );
            }
        }
    }
}
