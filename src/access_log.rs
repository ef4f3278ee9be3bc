//! Access-log lines, formatted in Rust and written by Perl to whatever handle
//! the user gave, before the final bytes of the response are released.

use std::time::{Instant, SystemTime};

pub struct LogInfo {
    pub client: String,
    pub method: String,
    /// Raw (undecoded) path and query string, as the reference logs them.
    pub path: String,
    pub query: String,
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
    /// The default `clf` format: `%h - - [%t] "%m %U%q" %s %ds`.
    pub fn format(&self) -> String {
        let q = if self.query.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query)
        };
        let status = if self.status == 0 {
            "-".to_string()
        } else {
            self.status.to_string()
        };
        format!(
            "{} - - [{}] \"{} {}{}\" {} {:.3}s",
            self.client,
            clf_time(SystemTime::now()),
            self.method,
            self.path,
            q,
            status,
            self.start.elapsed().as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn clf_time_is_apache_style() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_218_925);
        assert_eq!(clf_time(t), "20/Nov/2026:23:55:25 +0000");
    }

    #[test]
    fn line_matches_reference_layout() {
        let l = LogInfo {
            client: "127.0.0.1".into(),
            method: "GET".into(),
            path: "/caf%C3%A9".into(),
            query: "a=1".into(),
            start: Instant::now(),
            status: 200,
            bytes: 5,
        };
        let line = l.format();
        let re_ok = line.starts_with("127.0.0.1 - - [")
            && line.contains("] \"GET /caf%C3%A9?a=1\" 200 0.0")
            && line.ends_with('s');
        assert!(re_ok, "{line}");
    }
}
