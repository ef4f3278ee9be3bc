//! Server configuration handed over from Perl as `key=value` lines.
//!
//! PAGI::Server validates options with the reference's messages before they
//! get here; this parser still rejects what it cannot use, naming the key.

use std::path::PathBuf;
use std::time::Duration;

use crate::access_log::Format;
use crate::net::tls::{MinVersion, TlsSettings};
use crate::proto::h1::parse::Limits;
use crate::proto::h2::settings::H2Settings;

#[derive(Debug, Clone, PartialEq)]
pub enum ListenSpec {
    Tcp {
        host: String,
        port: u16,
    },
    Unix {
        path: PathBuf,
    },
    /// A listening socket inherited from the process that bound it (a
    /// multi-worker parent); TCP or Unix is read from the socket itself.
    Fd(i32),
}

/// A listener and whether its TCP connections speak TLS first (a Unix
/// socket stays plaintext, as in the reference).
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    pub spec: ListenSpec,
    pub tls: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Listen>,
    pub backlog: i32,
    /// SO_REUSEPORT on the TCP sockets bound (a worker of a `reuseport` server).
    pub reuseport: bool,
    pub server_header: String,
    pub access_log: bool,
    pub log_format: Format,
    pub high_watermark: usize,
    pub low_watermark: usize,
    pub limits: Limits,
    /// 0 = unlimited.
    pub max_body_size: u64,
    pub max_connections: usize,
    /// Keep-alive idle limit between requests (`timeout`); None = off.
    pub idle_timeout: Option<Duration>,
    /// Longest stall without I/O during a request (`request_timeout`).
    pub request_timeout: Option<Duration>,
    /// Bytes/s a request body must keep up, after `request_timeout` of
    /// grace (`min_body_rate`); 0 = off.
    pub min_body_rate: u64,
    /// WebSocket messages waiting for the app before the connection is
    /// closed with 1008; 0 = no limit.
    pub max_receive_queue: usize,
    /// Largest WebSocket frame payload a client may send; 0 = unlimited.
    pub max_ws_frame_size: u64,
    /// Largest WebSocket message a client may send, however many frames
    /// carry it, and inflated when compressed; 0 = unlimited.
    pub max_ws_message_size: u64,
    /// permessage-deflate (RFC 7692) is agreed to when a client offers it.
    pub ws_compression: bool,
    /// WebSocket connection closed after this long with no frame either way.
    pub ws_idle_timeout: Option<Duration>,
    /// SSE stream closed after this long without progress (see `sse.rs`).
    pub sse_idle_timeout: Option<Duration>,
    /// Test hook: a request for exactly this path panics inside Rust.
    pub panic_path: Option<String>,
    /// The `ssl` option, for listeners marked `tls+`.
    pub tls: Option<TlsSettings>,
    /// HTTP/2 (`http2`): h2 by ALPN on TLS listeners, h2c by its preface
    /// on the others. Off: HTTP/1.x only.
    pub http2: bool,
    /// The `h2_*` options.
    pub h2: H2Settings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            backlog: 2048,
            reuseport: false,
            server_header: format!("PAGI::Server/{}", env!("CARGO_PKG_VERSION")),
            access_log: true,
            log_format: Format::compile("clf").unwrap_or_else(|e| unreachable!("{e}")),
            high_watermark: 65536,
            low_watermark: 16384,
            limits: Limits::default(),
            max_body_size: 10_000_000,
            max_connections: 1000,
            idle_timeout: Some(Duration::from_secs(60)),
            request_timeout: None,
            min_body_rate: 500,
            max_receive_queue: 1000,
            max_ws_frame_size: 65536,
            max_ws_message_size: 16 << 20,
            ws_compression: true,
            ws_idle_timeout: None,
            sse_idle_timeout: None,
            panic_path: None,
            tls: None,
            http2: false,
            h2: H2Settings::default(),
        }
    }
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse::<T>()
        .map_err(|_| format!("{key}: expected a non-negative integer, got '{v}'"))
}

/// Seconds (fractions allowed); 0 turns the timeout off.
fn seconds(key: &str, v: &str) -> Result<Option<Duration>, String> {
    let s: f64 = v
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("{key}: expected a non-negative number of seconds, got '{v}'"))?;
    Ok((s > 0.0).then(|| Duration::from_secs_f64(s.min(1e9))))
}

/// Parses `tcp:HOST:PORT` (HOST may be a bracketed IPv6 literal), `unix:PATH`
/// or `fd:N`, each optionally prefixed with `tls+`.
fn listen(v: &str) -> Result<Listen, String> {
    let (tls, spec) = match v.strip_prefix("tls+") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let spec = listen_spec(spec)?;
    if tls && matches!(spec, ListenSpec::Unix { .. }) {
        return Err(format!(
            "listen: TLS on a Unix socket is not offered ('{v}')"
        ));
    }
    Ok(Listen { spec, tls })
}

fn listen_spec(v: &str) -> Result<ListenSpec, String> {
    if let Some(fd) = v.strip_prefix("fd:") {
        return fd
            .parse::<i32>()
            .ok()
            .filter(|fd| *fd >= 0)
            .map(ListenSpec::Fd)
            .ok_or_else(|| format!("listen: invalid fd '{fd}'"));
    }
    if let Some(path) = v.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("listen: empty unix socket path".into());
        }
        return Ok(ListenSpec::Unix { path: path.into() });
    }
    let rest = v
        .strip_prefix("tcp:")
        .ok_or_else(|| format!("listen: unknown listener '{v}'"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("listen: expected HOST:PORT, got '{rest}'"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("listen: invalid port '{port}'"))?;
    Ok(ListenSpec::Tcp {
        host: host.to_string(),
        port,
    })
}

/// Applies one `key=value` line to the config.
type Setter = fn(&mut Config, &str, &str) -> Result<(), String>;

/// Every key the core accepts and what it sets. PAGI::Server emits exactly
/// these (its option table, lib/PAGI/Server/Options.pm, names the option
/// behind each; t/18-option-table.t checks that the two sets are equal).
const KEYS: &[(&str, Setter)] = &[
    ("listen", |c, _, v| {
        c.listen.push(listen(v)?);
        Ok(())
    }),
    ("tls_cert_file", |c, _, v| {
        tls(c).cert_file = v.into();
        Ok(())
    }),
    ("tls_key_file", |c, _, v| {
        tls(c).key_file = v.into();
        Ok(())
    }),
    ("tls_ca_file", |c, _, v| {
        tls(c).ca_file = Some(v.into());
        Ok(())
    }),
    ("tls_verify_client", |c, _, v| {
        tls(c).verify_client = v != "0";
        Ok(())
    }),
    ("tls_min_version", |c, k, v| {
        tls(c).min_version = match v {
            "1.2" => MinVersion::Tls12,
            "1.3" => MinVersion::Tls13,
            _ => return Err(format!("{k}: expected 1.2 or 1.3, got '{v}'")),
        };
        Ok(())
    }),
    ("tls_ciphers", |c, _, v| {
        tls(c).ciphers = Some(
            v.split(':')
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect(),
        );
        Ok(())
    }),
    ("backlog", |c, k, v| {
        c.backlog = i32::try_from(number::<u32>(k, v)?).unwrap_or(i32::MAX);
        Ok(())
    }),
    ("reuseport", |c, _, v| {
        c.reuseport = v != "0";
        Ok(())
    }),
    ("server_header", |c, _, v| {
        c.server_header = v.to_string();
        Ok(())
    }),
    ("access_log", |c, _, v| {
        c.access_log = v != "0";
        Ok(())
    }),
    ("access_log_format", |c, k, v| {
        c.log_format = Format::compile(v).map_err(|e| format!("{k}: {}", e.trim_end()))?;
        Ok(())
    }),
    ("write_high_watermark", |c, k, v| {
        c.high_watermark = number(k, v)?;
        Ok(())
    }),
    ("write_low_watermark", |c, k, v| {
        c.low_watermark = number(k, v)?;
        Ok(())
    }),
    ("max_header_size", |c, k, v| {
        c.limits.max_header_size = number(k, v)?;
        Ok(())
    }),
    ("max_header_count", |c, k, v| {
        c.limits.max_header_count = number(k, v)?;
        Ok(())
    }),
    ("max_body_size", |c, k, v| {
        c.max_body_size = number(k, v)?;
        Ok(())
    }),
    ("max_connections", |c, k, v| {
        c.max_connections = number(k, v)?;
        Ok(())
    }),
    ("timeout", |c, k, v| {
        c.idle_timeout = seconds(k, v)?;
        Ok(())
    }),
    ("request_timeout", |c, k, v| {
        c.request_timeout = seconds(k, v)?;
        Ok(())
    }),
    ("min_body_rate", |c, k, v| {
        c.min_body_rate = number(k, v)?;
        Ok(())
    }),
    ("max_receive_queue", |c, k, v| {
        c.max_receive_queue = number(k, v)?;
        Ok(())
    }),
    ("max_ws_frame_size", |c, k, v| {
        c.max_ws_frame_size = number(k, v)?;
        Ok(())
    }),
    ("max_ws_message_size", |c, k, v| {
        c.max_ws_message_size = number(k, v)?;
        Ok(())
    }),
    ("ws_compression", |c, _, v| {
        c.ws_compression = v != "0";
        Ok(())
    }),
    ("ws_idle_timeout", |c, k, v| {
        c.ws_idle_timeout = seconds(k, v)?;
        Ok(())
    }),
    ("sse_idle_timeout", |c, k, v| {
        c.sse_idle_timeout = seconds(k, v)?;
        Ok(())
    }),
    ("http2", |c, _, v| {
        c.http2 = v != "0";
        Ok(())
    }),
    ("h2_max_concurrent_streams", |c, k, v| {
        c.h2.max_concurrent_streams = number(k, v)?;
        Ok(())
    }),
    ("h2_initial_window_size", |c, k, v| {
        c.h2.initial_window_size = number(k, v)?;
        Ok(())
    }),
    ("h2_max_frame_size", |c, k, v| {
        c.h2.max_frame_size = number(k, v)?;
        Ok(())
    }),
    ("h2_enable_connect_protocol", |c, _, v| {
        c.h2.enable_connect_protocol = v != "0";
        Ok(())
    }),
    ("h2_max_header_list_size", |c, k, v| {
        c.h2.max_header_list_size = number(k, v)?;
        Ok(())
    }),
    ("h2_rst_rate_limit", |c, k, v| {
        let (burst, rate) = v
            .split_once('/')
            .ok_or_else(|| format!("{k}: expected BURST/RATE, got '{v}'"))?;
        c.h2.rst_burst = number(k, burst)?;
        c.h2.rst_rate = number(k, rate)?;
        Ok(())
    }),
    ("panic_path", |c, _, v| {
        c.panic_path = Some(v.to_string());
        Ok(())
    }),
];

/// The TLS settings, begun on the first `tls_*` line.
fn tls(c: &mut Config) -> &mut TlsSettings {
    c.tls.get_or_insert_with(|| TlsSettings {
        cert_file: PathBuf::new(),
        key_file: PathBuf::new(),
        ca_file: None,
        verify_client: false,
        min_version: MinVersion::Tls12,
        ciphers: None,
        h2: false,
    })
}

/// How long a connection may take to open when `timeout` is off.
const OPENING_LIMIT: Duration = Duration::from_secs(60);

impl Config {
    /// How long a connection may take to open (a TLS handshake, telling
    /// h2c from HTTP/1.x, the HTTP/2 preface): `timeout`, or 60 s when off.
    pub fn opening_limit(&self) -> Duration {
        self.idle_timeout.unwrap_or(OPENING_LIMIT)
    }

    /// Parses the lines PAGI::Server sends; an unknown key or a bad value is
    /// an error naming the key (an unknown one with the list of known keys).
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut c = Config::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("config line without '=': '{line}'"))?;
            let (_, set) = KEYS.iter().find(|(name, _)| *name == k).ok_or_else(|| {
                let known: Vec<&str> = KEYS.iter().map(|(name, _)| *name).collect();
                format!("unknown config key '{k}' (known: {})", known.join(", "))
            })?;
            set(&mut c, k, v)?;
        }
        if c.listen.is_empty() {
            return Err("no listener configured".into());
        }
        if let Some(t) = &mut c.tls {
            t.h2 = c.http2;
            if t.cert_file.as_os_str().is_empty() || t.key_file.as_os_str().is_empty() {
                return Err("ssl: both cert_file and key_file are needed".into());
            }
        } else if c.listen.iter().any(|l| l.tls) {
            return Err("listen: a tls+ listener needs the tls_* settings".into());
        }
        c.h2.check()?;
        if c.low_watermark > c.high_watermark {
            c.low_watermark = c.high_watermark;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listeners_and_numbers() {
        let c = Config::parse(
            "listen=tcp:127.0.0.1:0\nlisten=tcp:[::1]:8080\nlisten=unix:/tmp/s\nbacklog=16\naccess_log=0\n",
        )
        .expect("valid config");
        let specs: Vec<ListenSpec> = c.listen.iter().map(|l| l.spec.clone()).collect();
        assert!(c.listen.iter().all(|l| !l.tls));
        assert_eq!(
            specs,
            vec![
                ListenSpec::Tcp {
                    host: "127.0.0.1".into(),
                    port: 0
                },
                ListenSpec::Tcp {
                    host: "::1".into(),
                    port: 8080
                },
                ListenSpec::Unix {
                    path: "/tmp/s".into()
                },
            ]
        );
        assert_eq!(c.backlog, 16);
        assert!(!c.access_log);
        let c = Config::parse("listen=unix:/s\ntimeout=0\nrequest_timeout=1.5\nmax_body_size=0")
            .expect("valid config");
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.request_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(c.sse_idle_timeout, None);
        assert_eq!(c.max_body_size, 0);
        let c = Config::parse("listen=unix:/s\nsse_idle_timeout=2.5").expect("valid");
        assert_eq!(c.sse_idle_timeout, Some(Duration::from_millis(2500)));
        assert!(Config::parse("listen=unix:/s\ntimeout=-1").is_err());
    }

    #[test]
    fn rejects_bad_input_naming_the_key() {
        let e = Config::parse("listen=tcp:h:99999").unwrap_err();
        assert!(e.contains("invalid port"), "{e}");
        let e = Config::parse("listen=tcp:h:1\nbacklog=-3").unwrap_err();
        assert!(e.starts_with("backlog"), "{e}");
        let e = Config::parse("bogus=1").unwrap_err();
        assert!(
            e.starts_with("unknown config key 'bogus' (known: listen, "),
            "{e}"
        );
        assert!(Config::parse("").is_err());
    }

    #[test]
    fn tls_listeners_need_the_tls_settings() {
        let e = Config::parse("listen=tls+tcp:h:1").unwrap_err();
        assert!(e.contains("tls_"), "{e}");
        let e = Config::parse("listen=tls+tcp:h:1\ntls_cert_file=/c").unwrap_err();
        assert!(e.contains("key_file"), "{e}");
        let e = Config::parse("listen=tls+unix:/s\ntls_cert_file=/c\ntls_key_file=/k").unwrap_err();
        assert!(e.contains("Unix"), "{e}");
        let e = Config::parse("listen=tcp:h:1\ntls_min_version=1.1").unwrap_err();
        assert!(e.starts_with("tls_min_version"), "{e}");
        let c = Config::parse(
            "listen=tls+tcp:h:1\nlisten=tls+fd:4\nlisten=unix:/s\ntls_cert_file=/c\ntls_key_file=/k\n\
             tls_min_version=1.3\ntls_ciphers=A:B\ntls_verify_client=1\ntls_ca_file=/ca",
        )
        .expect("valid config");
        let tls: Vec<bool> = c.listen.iter().map(|l| l.tls).collect();
        assert_eq!(tls, [true, true, false]);
        let t = c.tls.expect("tls settings");
        assert_eq!(t.min_version, MinVersion::Tls13);
        assert_eq!(t.ciphers, Some(vec!["A".to_string(), "B".to_string()]));
        assert!(t.verify_client);
        assert_eq!(t.ca_file, Some("/ca".into()));
    }

    #[test]
    fn h2_settings() {
        let c = Config::parse(
            "listen=tcp:h:1\nh2_max_concurrent_streams=7\nhttp2=1\nh2_rst_rate_limit=50/5\n\
             h2_enable_connect_protocol=0\nh2_max_frame_size=32768",
        )
        .expect("valid config");
        assert!(c.http2);
        assert_eq!(c.h2.max_concurrent_streams, 7);
        assert_eq!((c.h2.rst_burst, c.h2.rst_rate), (50, 5));
        assert!(!c.h2.enable_connect_protocol);
        assert_eq!(c.h2.max_frame_size, 32768);
        assert!(!Config::parse("listen=tcp:h:1").expect("valid").http2);
        let e = Config::parse("listen=tcp:h:1\nh2_max_frame_size=100").unwrap_err();
        assert!(e.starts_with("h2_max_frame_size: must be between"), "{e}");
        let e = Config::parse("listen=tcp:h:1\nh2_rst_rate_limit=5").unwrap_err();
        assert!(e.starts_with("h2_rst_rate_limit"), "{e}");
        let e = Config::parse("listen=tcp:h:1\nh2_initial_window_size=2147483648").unwrap_err();
        assert!(e.starts_with("h2_initial_window_size"), "{e}");
    }
}
