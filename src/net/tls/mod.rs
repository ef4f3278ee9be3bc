//! TLS on a listener: the settings PAGI::Server's `ssl` option becomes, the
//! rustls server configuration built from them (files read and checked
//! once, each error naming its file), and the handshake a TLS listener's
//! connections go through before a protocol is picked.

mod client_auth;
mod facts;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};

use client_auth::ClientAuth;
pub use facts::TlsFacts;

use super::stream::Split;

/// The lowest TLS version offered (rustls speaks 1.2 and 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

/// What the `ssl` option asks for, as the core's config lines carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `ca_file`.
    pub verify_client: bool,
    pub min_version: MinVersion,
    /// OpenSSL names of the cipher suites allowed, most preferred first (the
    /// `cipher_list` expanded by OpenSSL on the Perl side); None: all.
    pub ciphers: Option<Vec<String>>,
    /// ALPN offers `h2` before `http/1.1` (the `http2` option).
    pub h2: bool,
}

/// The IANA number and OpenSSL name of every suite the provider has.
/// TLS 1.3 suites carry the same name in both worlds.
const SUITE_NAMES: &[(u16, &str)] = &[
    (0x1301, "TLS_AES_128_GCM_SHA256"),
    (0x1302, "TLS_AES_256_GCM_SHA384"),
    (0x1303, "TLS_CHACHA20_POLY1305_SHA256"),
    (0xc02b, "ECDHE-ECDSA-AES128-GCM-SHA256"),
    (0xc02c, "ECDHE-ECDSA-AES256-GCM-SHA384"),
    (0xcca9, "ECDHE-ECDSA-CHACHA20-POLY1305"),
    (0xc02f, "ECDHE-RSA-AES128-GCM-SHA256"),
    (0xc030, "ECDHE-RSA-AES256-GCM-SHA384"),
    (0xcca8, "ECDHE-RSA-CHACHA20-POLY1305"),
];

fn suite_id(s: &SupportedCipherSuite) -> u16 {
    u16::from(s.suite())
}

fn openssl_name(id: u16) -> Option<&'static str> {
    SUITE_NAMES.iter().find(|(n, _)| *n == id).map(|(_, s)| *s)
}

/// A TLS listener's acceptor and the facts every connection on it shares.
pub struct Acceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The leaf certificate as PEM (`extensions.tls.server_cert`).
    server_cert: Arc<str>,
}

impl Acceptor {
    /// Builds the server configuration: reads and checks every file, picks
    /// the versions and suites, and offers ALPN `http/1.1` (after `h2` with `http2` on).
    pub fn new(s: &TlsSettings) -> Result<Acceptor, String> {
        let certs = read_certs(&s.cert_file, "cert_file")?;
        let leaf = certs.first().ok_or_else(|| {
            format!(
                "ssl.cert_file {}: no certificate in the file (expected PEM 'BEGIN CERTIFICATE')",
                s.cert_file.display()
            )
        })?;
        if x509_parser::parse_x509_certificate(leaf.as_ref()).is_err() {
            return Err(format!(
                "ssl.cert_file {}: the first certificate is not valid X.509",
                s.cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&s.key_file).map_err(|e| {
            format!(
                "ssl.key_file {}: no usable private key: {}",
                s.key_file.display(),
                pem_error(&e)
            )
        })?;
        let server_cert: Arc<str> = facts::pem(leaf).into();
        let provider = Arc::new(provider(s));
        // The key is loaded once, checked against the certificate, and
        // served as it is.
        let certified = CertifiedKey::from_der(certs, key, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) | rustls::Error::InvalidCertificate(_) => format!(
                "ssl.key_file {} does not fit ssl.cert_file {}: {e}",
                s.key_file.display(),
                s.cert_file.display()
            ),
            e => format!("ssl.key_file {}: unusable key: {e}", s.key_file.display()),
        })?;
        check_tls12(s, &provider, certified.key.algorithm())?;
        let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version {
            MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            MinVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("ssl: {e}"))?;
        let builder = match (&s.ca_file, s.verify_client) {
            (Some(ca), true) => {
                let cas = read_certs(ca, "ca_file")?;
                let mut roots = RootCertStore::empty();
                for c in &cas {
                    roots.add(c.clone()).map_err(|e| {
                        format!("ssl.ca_file {}: unusable certificate: {e}", ca.display())
                    })?;
                }
                let algs = provider.signature_verification_algorithms;
                let webpki = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("ssl.ca_file {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(Arc::new(ClientAuth::new(webpki, cas, algs)))
            }
            (None, true) => {
                return Err(
                    "ssl.verify_client needs ssl.ca_file (the CA that signs client certificates)"
                        .into(),
                )
            }
            (_, false) => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        config.alpn_protocols = if s.h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        // Stateless session tickets: any number of clients can resume (the
        // default in-memory cache holds 256 sessions; past ~128 clients a
        // reconnect was a full handshake again). The key lives in this
        // process only and rotates every 6 hours.
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| format!("ssl: cannot make a session ticket key: {e}"))?;
        Ok(Acceptor {
            acceptor: Arc::new(config).into(),
            server_cert,
        })
    }

    /// Runs the server side of a handshake on `io`.
    pub fn accept<IO>(&self, io: IO) -> tokio_rustls::Accept<IO>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.acceptor.accept(io)
    }

    /// The facts of a finished handshake (`extensions.tls`).
    pub fn facts(&self, conn: &rustls::ServerConnection) -> TlsFacts {
        TlsFacts::of(conn, self.server_cert.clone())
    }
}

/// A TLS session cannot be split into owned halves: its two directions share
/// one rustls state, so the halves share it through a lock.
impl<S: Split> Split for tokio_rustls::server::TlsStream<S> {
    type R = tokio::io::ReadHalf<Self>;
    type W = tokio::io::WriteHalf<Self>;
    fn halves(self) -> (Self::R, Self::W) {
        tokio::io::split(self)
    }
}

fn is13(s: &SupportedCipherSuite) -> bool {
    matches!(s, SupportedCipherSuite::Tls13(_))
}

/// The aws-lc-rs provider, its TLS 1.2 suites narrowed to `ciphers` (in that
/// order). TLS 1.3 suites stay on unless the list names some of them, as in
/// OpenSSL, where `cipher_list` does not reach TLS 1.3.
fn provider(s: &TlsSettings) -> CryptoProvider {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    let Some(names) = &s.ciphers else {
        return p;
    };
    let all = std::mem::take(&mut p.cipher_suites);
    let wanted: Vec<u16> = names
        .iter()
        .filter_map(|n| SUITE_NAMES.iter().find(|(_, s)| s == n).map(|(id, _)| *id))
        .collect();
    let named13 = all.iter().any(|s| is13(s) && wanted.contains(&suite_id(s)));
    p.cipher_suites = all
        .iter()
        .filter(|s| is13(s) && !named13)
        .chain(
            wanted
                .iter()
                .filter_map(|id| all.iter().find(|s| suite_id(s) == *id)),
        )
        .copied()
        .collect();
    p
}

/// While TLS 1.2 is offered, `cipher_list` must leave a TLS 1.2 suite that
/// the key can sign for (none at all, or only suites for the other key
/// type, would shut every TLS 1.2 client out).
fn check_tls12(
    s: &TlsSettings,
    p: &CryptoProvider,
    sig: rustls::SignatureAlgorithm,
) -> Result<(), String> {
    let fits = |c: &SupportedCipherSuite| !is13(c) && c.usable_for_signature_algorithm(sig);
    if s.min_version == MinVersion::Tls13 || p.cipher_suites.iter().any(fits) {
        return Ok(());
    }
    let has: Vec<&str> = rustls::crypto::aws_lc_rs::default_provider()
        .cipher_suites
        .iter()
        .filter(|c| fits(c))
        .filter_map(|c| openssl_name(suite_id(c)))
        .collect();
    Err(format!(
        "ssl.cipher_list selects no TLS 1.2 cipher suite for the {sig:?} key of ssl.key_file {} \
         (this server has {} for it); widen it, or set ssl.min_version to TLSv1_3",
        s.key_file.display(),
        has.join(":")
    ))
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let fail = |e: &rustls::pki_types::pem::Error| {
        format!("ssl.{key} {}: {}", path.display(), pem_error(e))
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&e))
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM section of the expected kind".into(),
        Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        Error::IllegalSectionStart { .. } => "a malformed PEM BEGIN line".into(),
        Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

#[cfg(test)]
mod tests;
