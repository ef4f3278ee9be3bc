//! Access-log lines, formatted in Rust and written by Perl to whatever handle
//! the user gave, before the final bytes of the response are released.
//!
//! Formats use the reference's Apache-style atoms; presets are `clf`
//! (default), `combined`, `common` and `tiny`.

use std::fmt::Write as _;
use std::time::{Instant, SystemTime};

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Lit(String),
    ClientIp,
    Dash,
    Time,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    BytesOrDash,
    Bytes,
    SecsFrac,
    Micros,
    Secs,
    /// Index into `Format::headers`.
    Header(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Format {
    atoms: Vec<Atom>,
    /// Lower-cased request header names the format reads (`%{Name}i`).
    pub headers: Vec<String>,
}

fn preset(name: &str) -> Option<&'static str> {
    Some(match name {
        "clf" => r#"%h - - [%t] "%m %U%q" %s %ds"#,
        "combined" => r#"%h - - [%t] "%r" %s %b "%{Referer}i" "%{User-Agent}i""#,
        "common" => r#"%h - - [%t] "%r" %s %b"#,
        "tiny" => "%m %U%q %s %Dms",
        _ => return None,
    })
}

impl Format {
    /// Compiles a preset name or a format string; errors carry the
    /// reference's messages.
    pub fn compile(spec: &str) -> Result<Format, String> {
        let text = preset(spec).unwrap_or(spec);
        let mut atoms = Vec::new();
        let mut headers: Vec<String> = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            // A lone '%' at the very end is dropped.
            let Some(a) = chars.next() else { break };
            let atom = match a {
                '%' => {
                    lit.push('%');
                    continue;
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => name.push(ch),
                            None => return Err("Unterminated %{...} in access log format\n".into()),
                        }
                    }
                    if chars.next() != Some('i') {
                        return Err(format!(
                            "Expected 'i' after %{{{name}}} in access log format\n"
                        ));
                    }
                    let lower = name.to_ascii_lowercase();
                    let idx = headers.iter().position(|h| *h == lower).unwrap_or_else(|| {
                        headers.push(lower);
                        headers.len() - 1
                    });
                    Atom::Header(idx)
                }
                'h' => Atom::ClientIp,
                'l' | 'u' => Atom::Dash,
                't' => Atom::Time,
                'r' => Atom::RequestLine,
                'm' => Atom::Method,
                'U' => Atom::Path,
                'q' => Atom::Query,
                'H' => Atom::Protocol,
                's' => Atom::Status,
                'b' => Atom::BytesOrDash,
                'B' => Atom::Bytes,
                'd' => Atom::SecsFrac,
                'D' => Atom::Micros,
                'T' => Atom::Secs,
                other => return Err(format!("Unknown access log format atom '%{other}'\n")),
            };
            if !lit.is_empty() {
                atoms.push(Atom::Lit(std::mem::take(&mut lit)));
            }
            atoms.push(atom);
        }
        if !lit.is_empty() {
            atoms.push(Atom::Lit(lit));
        }
        Ok(Format { atoms, headers })
    }
}

pub struct LogInfo {
    pub client: String,
    pub method: String,
    /// Raw (undecoded) path and query string, as the reference logs them.
    pub path: String,
    pub query: String,
    pub version: std::borrow::Cow<'static, str>,
    /// Values of `Format::headers`, in the same order (None when absent).
    pub headers: Vec<Option<String>>,
    pub start: Instant,
    pub status: u16,
    pub bytes: u64,
}

/// `20/Nov/2026:23:35:25 +0000`, derived from the IMF-fixdate that httpdate
/// produces (`Fri, 20 Nov 2026 23:35:25 GMT`).
pub fn clf_time(t: SystemTime) -> String {
    let imf = httpdate::fmt_http_date(t);
    let p: Vec<&str> = imf.split(' ').collect();
    match p.as_slice() {
        [_, day, mon, year, hms, _] => format!("{day}/{mon}/{year}:{hms} +0000"),
        _ => imf,
    }
}

impl LogInfo {
    pub fn format(&self, f: &Format) -> String {
        self.render(
            f,
            &clf_time(SystemTime::now()),
            self.start.elapsed().as_secs_f64(),
        )
    }

    /// Renders with an explicit timestamp and duration (seconds).
    pub fn render(&self, f: &Format, time: &str, secs: f64) -> String {
        let mut out = String::with_capacity(96);
        for a in &f.atoms {
            // Writing to a String cannot fail.
            let _ = match a {
                Atom::Lit(s) => write!(out, "{s}"),
                Atom::ClientIp => write!(out, "{}", self.client),
                Atom::Dash => write!(out, "-"),
                Atom::Time => write!(out, "{time}"),
                Atom::RequestLine => {
                    let q = if self.query.is_empty() { "" } else { "?" };
                    write!(
                        out,
                        "{} {}{q}{} HTTP/{}",
                        self.method, self.path, self.query, self.version
                    )
                }
                Atom::Method => write!(out, "{}", self.method),
                Atom::Path => write!(out, "{}", self.path),
                Atom::Query if self.query.is_empty() => Ok(()),
                Atom::Query => write!(out, "?{}", self.query),
                Atom::Protocol => write!(out, "HTTP/{}", self.version),
                Atom::Status if self.status == 0 => write!(out, "-"),
                Atom::Status => write!(out, "{}", self.status),
                Atom::BytesOrDash if self.bytes == 0 => write!(out, "-"),
                Atom::BytesOrDash | Atom::Bytes => write!(out, "{}", self.bytes),
                Atom::SecsFrac => write!(out, "{secs:.3}"),
                Atom::Micros => write!(out, "{}", (secs * 1_000_000.0) as u64),
                Atom::Secs => write!(out, "{}", secs as u64),
                Atom::Header(i) => match self.headers.get(*i).and_then(Option::as_deref) {
                    Some(v) => write!(out, "{v}"),
                    None => write!(out, "-"),
                },
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn info() -> LogInfo {
        LogInfo {
            client: "127.0.0.1".into(),
            method: "GET".into(),
            path: "/caf%C3%A9".into(),
            query: "a=1".into(),
            version: "1.1".into(),
            headers: vec![Some("http://ref/".into()), None],
            start: Instant::now(),
            status: 200,
            bytes: 0,
        }
    }

    #[test]
    fn clf_time_is_apache_style() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_218_925);
        assert_eq!(clf_time(t), "20/Nov/2026:23:55:25 +0000");
    }

    #[test]
    fn default_line_matches_reference_layout() {
        let f = Format::compile("clf").expect("preset");
        let line = info().format(&f);
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(line.contains("] \"GET /caf%C3%A9?a=1\" 200 0.0"), "{line}");
        assert!(line.ends_with('s'), "{line}");
    }

    #[test]
    fn atoms_and_headers() {
        let f = Format::compile(r#"%r|%H|%b|%B|%{Referer}i|%{X-None}i|%%|%l%u"#).expect("valid");
        assert_eq!(f.headers, vec!["referer".to_string(), "x-none".to_string()]);
        assert_eq!(
            info().format(&f),
            "GET /caf%C3%A9?a=1 HTTP/1.1|HTTP/1.1|-|0|http://ref/|-|%|--"
        );
        let f = Format::compile("%m %U%q %s %Dms %T").expect("tiny-like");
        assert!(info().format(&f).starts_with("GET /caf%C3%A9?a=1 200 "));
    }

    #[test]
    fn errors_carry_reference_messages() {
        assert_eq!(
            Format::compile("%Z").unwrap_err(),
            "Unknown access log format atom '%Z'\n"
        );
        assert_eq!(
            Format::compile("%{X").unwrap_err(),
            "Unterminated %{...} in access log format\n"
        );
        assert_eq!(
            Format::compile("%{X}o").unwrap_err(),
            "Expected 'i' after %{X} in access log format\n"
        );
        assert_eq!(
            Format::compile("ok %").expect("trailing %").atoms,
            vec![Atom::Lit("ok ".into())]
        );
    }
}
