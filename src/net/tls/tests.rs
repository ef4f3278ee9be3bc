//! The acceptor built from files, and real handshakes against a rustls
//! client over an in-memory stream.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A CA, and certificates it signs, written to a directory of their own.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("pagi-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca_key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, "Test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).expect("ca");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        Pki { dir, ca, ca_key }
    }

    /// A certificate for `names` with subject CN=`cn`, signed by the CA;
    /// returns the paths of its cert and key files. (The order of several
    /// RDNs is checked by t/ against certificates made by OpenSSL.)
    fn issue(&self, file: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).expect("sign");
        let (c, k) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn settings(&self) -> TlsSettings {
        let (cert_file, key_file) = self.issue("server", "localhost", &["localhost"]);
        TlsSettings {
            cert_file,
            key_file,
            ca_file: None,
            verify_client: false,
            min_version: MinVersion::Tls12,
            ciphers: None,
            h2: false,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn load(path: &std::path::Path) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let certs = read_certs(path, "test").expect("certs");
    let key = PrivateKeyDer::from_pem_file(path.with_extension("key")).expect("key");
    (certs, key)
}

/// The client's side: TLS 1.3 and 1.2 or 1.2 only, optionally with a
/// client certificate.
struct Client {
    tls12_only: bool,
    cert: Option<PathBuf>,
}

/// A client offering TLS 1.3 and 1.2, or 1.2 only, with no certificate.
fn client(tls12_only: bool) -> Client {
    Client {
        tls12_only,
        cert: None,
    }
}

/// The same, presenting the certificate at `cert` (its key beside it).
fn client_with(tls12_only: bool, cert: &std::path::Path) -> Client {
    Client {
        tls12_only,
        cert: Some(cert.to_path_buf()),
    }
}

/// Handshakes a client with the acceptor over an in-memory stream and
/// sends one byte each way; the server's facts, or the error of either side.
fn handshake(a: &Acceptor, pki: &Pki, client: Client) -> Result<TlsFacts, String> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).expect("root");
    let versions: &[&rustls::SupportedProtocolVersion] = if client.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots);
    let config = match &client.cert {
        Some(c) => {
            let (chain, key) = load(c);
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let server = async {
            let mut tls = a.accept(s).await.map_err(|e| format!("server: {e}"))?;
            let facts = a.facts(tls.get_ref().1);
            let mut b = [0u8; 1];
            tls.read_exact(&mut b)
                .await
                .map_err(|e| format!("server read: {e}"))?;
            tls.write_all(b"y")
                .await
                .map_err(|e| format!("server write: {e}"))?;
            tls.flush()
                .await
                .map_err(|e| format!("server flush: {e}"))?;
            Ok::<_, String>(facts)
        };
        let client = async {
            let name = ServerName::try_from("localhost").expect("name");
            let mut tls = connector
                .connect(name, c)
                .await
                .map_err(|e| format!("client: {e}"))?;
            tls.write_all(b"x")
                .await
                .map_err(|e| format!("client write: {e}"))?;
            tls.flush()
                .await
                .map_err(|e| format!("client flush: {e}"))?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b)
                .await
                .map_err(|e| format!("client read: {e}"))?;
            Ok::<_, String>(())
        };
        let (s, c) = tokio::join!(server, client);
        c.and(s)
    })
}

#[test]
fn a_handshake_yields_the_spec_facts() {
    let pki = Pki::new("facts");
    let s = pki.settings();
    let a = Acceptor::new(&s).expect("acceptor");
    let f = handshake(&a, &pki, client(false)).expect("handshake");
    assert_eq!(f.version, 0x0304);
    assert!((0x1301..=0x1303).contains(&f.cipher), "{:#x}", f.cipher);
    assert!(f.client_chain.is_empty());
    assert_eq!(f.client_name, None);
    let want = std::fs::read_to_string(&s.cert_file).expect("cert");
    let strip = |t: &str| t.split_whitespace().collect::<String>();
    assert_eq!(strip(&f.server_cert), strip(&want));

    let f = handshake(&a, &pki, client(true)).expect("tls 1.2");
    assert_eq!(f.version, 0x0303);
    assert!(openssl_name(f.cipher).is_some_and(|n| n.starts_with("ECDHE-ECDSA")));
}

#[test]
fn cipher_list_narrows_tls12_and_min_version_is_a_floor() {
    let pki = Pki::new("ciphers");
    let mut s = pki.settings();
    s.ciphers = Some(vec!["ECDHE-ECDSA-CHACHA20-POLY1305".into()]);
    let a = Acceptor::new(&s).expect("acceptor");
    let f = handshake(&a, &pki, client(true)).expect("tls 1.2");
    assert_eq!(f.cipher, 0xcca9);

    // The key is ECDSA: RSA-only suites leave TLS 1.2 clients nothing.
    s.ciphers = Some(vec!["ECDHE-RSA-AES128-GCM-SHA256".into()]);
    let e = Acceptor::new(&s)
        .err()
        .expect("no TLS 1.2 suite for the key");
    assert!(e.contains("ssl.cipher_list") && e.contains("ECDSA"), "{e}");

    s.ciphers = Some(vec!["DHE-RSA-AES128-GCM-SHA256".into()]);
    let e = Acceptor::new(&s).err().expect("no TLS 1.2 suite left");
    assert!(e.contains("ssl.cipher_list"), "{e}");
    s.min_version = MinVersion::Tls13;
    let a = Acceptor::new(&s).expect("TLS 1.3 only needs no TLS 1.2 suite");
    let e = handshake(&a, &pki, client(true)).unwrap_err();
    assert!(e.contains("ProtocolVersion"), "{e}");
    let f = handshake(&a, &pki, client(false)).expect("tls 1.3");
    assert_eq!(f.version, 0x0304);
}

#[test]
fn client_certificates_are_required_and_named() {
    let pki = Pki::new("clients");
    let mut s = pki.settings();
    s.ca_file = Some(pki.ca_file());
    s.verify_client = true;
    let a = Acceptor::new(&s).expect("acceptor");
    let (client_cert, _) = pki.issue("client", "Test Client", &[]);
    let f = handshake(&a, &pki, client_with(false, &client_cert))
        .expect("handshake with a client certificate");
    assert_eq!(f.client_name.as_deref(), Some("CN=Test Client"));
    assert_eq!(f.client_chain.len(), 1);
    let f = handshake(&a, &pki, client_with(true, &client_cert))
        .expect("TLS 1.2 with a client certificate");
    assert_eq!(f.client_chain.len(), 1);

    assert!(handshake(&a, &pki, client(false)).is_err());
    let other = Pki::new("clients-other");
    let (stranger, _) = other.issue("client", "Stranger", &[]);
    assert!(handshake(&a, &pki, client_with(false, &stranger)).is_err());
}

#[test]
fn bad_files_are_named() {
    let pki = Pki::new("files");
    let good = pki.settings();
    let mut s = good.clone();
    s.cert_file = pki.dir.join("missing.crt");
    let e = Acceptor::new(&s).err().expect("missing cert");
    assert!(
        e.starts_with("ssl.cert_file") && e.contains("missing.crt"),
        "{e}"
    );

    let junk = pki.dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    s.cert_file = junk.clone();
    let e = Acceptor::new(&s).err().expect("no certificate");
    assert!(
        e.contains("junk.pem") && e.contains("no certificate"),
        "{e}"
    );

    let fake = pki.dir.join("fake.pem");
    std::fs::write(
        &fake,
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let mut s = good.clone();
    s.cert_file = fake;
    let e = Acceptor::new(&s).err().expect("not X.509");
    assert!(
        e.contains("fake.pem") && e.contains("not valid X.509"),
        "{e}"
    );

    let mut s = good.clone();
    s.key_file = junk;
    let e = Acceptor::new(&s).err().expect("no key");
    assert!(
        e.starts_with("ssl.key_file") && e.contains("junk.pem"),
        "{e}"
    );

    let (_, other_key) = pki.issue("other", "other", &["localhost"]);
    let mut s = good.clone();
    s.key_file = other_key;
    let e = Acceptor::new(&s).err().expect("mismatched key");
    assert!(e.contains("does not fit"), "{e}");

    let mut s = good;
    s.verify_client = true;
    let e = Acceptor::new(&s)
        .err()
        .expect("verify_client without ca_file");
    assert!(e.contains("ssl.ca_file"), "{e}");
}
