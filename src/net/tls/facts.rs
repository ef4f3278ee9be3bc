//! What a finished handshake tells the app (the spec's `extensions.tls`):
//! version and suite as their IANA numbers, the server's certificate and
//! the client's chain as PEM, and the client's subject per RFC 4514.

use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::CertificateDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// The TLS facts of one connection, shared by its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    /// `0x0303` for TLS 1.2, `0x0304` for TLS 1.3.
    pub version: u16,
    /// The negotiated suite's IANA number.
    pub cipher: u16,
    /// The server's leaf certificate, PEM.
    pub server_cert: Arc<str>,
    /// The client's certificates, PEM, leaf first (empty without one).
    pub client_chain: Vec<String>,
    /// The client leaf's subject, RFC 4514.
    pub client_name: Option<String>,
}

impl TlsFacts {
    /// Reads the facts off a connection whose handshake is complete.
    pub fn of(conn: &rustls::ServerConnection, server_cert: Arc<str>) -> TlsFacts {
        let chain = conn.peer_certificates().unwrap_or(&[]);
        TlsFacts {
            version: conn.protocol_version().map_or(0, u16::from),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or(0, |s| u16::from(s.suite())),
            server_cert,
            client_chain: chain.iter().map(pem).collect(),
            client_name: chain.first().and_then(|c| subject_name(c)),
        }
    }
}

/// A DER certificate as PEM text.
pub fn pem(der: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The certificate's subject as an RFC 4514 string (most specific RDN
/// first), or None when the certificate does not parse.
fn subject_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(rfc4514(cert.subject()))
}

fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+"))
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// The short names RFC 4514 lists; other types are given as dotted OIDs.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

fn attribute(a: &AttributeTypeAndValue<'_>) -> String {
    let oid = a.attr_type().to_id_string();
    let short = SHORT_NAMES.iter().find(|(o, _)| *o == oid).map(|(_, s)| *s);
    match (short, a.as_str()) {
        (Some(s), Ok(v)) => format!("{s}={}", escape(v)),
        (None, Ok(v)) => format!("{oid}={}", escape(v)),
        // Not a string type: the value's BER encoding in hex.
        (key, Err(_)) => {
            let value = a.attr_value();
            let mut ber = vec![u8::try_from(value.tag().0).unwrap_or(0)];
            let data = value.data;
            match u8::try_from(data.len()) {
                Ok(n) if n < 0x80 => ber.push(n),
                _ => {
                    let len = (data.len() as u64).to_be_bytes();
                    let skip = len.iter().take_while(|b| **b == 0).count();
                    ber.push(0x80 | (8 - skip) as u8);
                    ber.extend_from_slice(&len[skip..]);
                }
            }
            ber.extend_from_slice(data);
            let hex: String = ber.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}=#{hex}", key.unwrap_or(&oid))
        }
    }
}

/// RFC 4514 section 2.4 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_rfc4514_says() {
        assert_eq!(escape("Test Client"), "Test Client");
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape(" #x "), "\\ #x\\ ");
        assert_eq!(escape("#x"), "\\#x");
        assert_eq!(escape("q\"<>;\\"), "q\\\"\\<\\>\\;\\\\");
    }

    #[test]
    fn pem_wraps_base64_at_64_columns() {
        let der = CertificateDer::from(vec![0u8; 100]);
        let p = pem(&der);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        // 100 bytes are 136 base64 characters: 64 + 64 + 8.
        let widths: Vec<usize> = lines[1..4].iter().map(|l| l.len()).collect();
        assert_eq!(widths, [64, 64, 8]);
        assert_eq!(lines[4], "-----END CERTIFICATE-----");
    }
}
