//! Client certificates checked against `ca_file` (`verify_client`).
//!
//! rustls's WebPKI verifier takes X.509 v3 chains only. OpenSSL, which the
//! reference server uses, also takes a version 1 end-entity certificate
//! (what `openssl x509 -req` made without extensions), and such client
//! certificates are still in use. A v1 client certificate is therefore
//! checked here the way OpenSSL checks it: each link's signature verified
//! up to a certificate of `ca_file`, every issuer below the root a CA, and
//! every certificate within its validity period. Everything else goes to
//! the WebPKI verifier.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;
use x509_parser::x509::X509Version;

/// The longest chain followed from a v1 leaf to a root.
const MAX_DEPTH: usize = 6;

#[derive(Debug)]
pub struct ClientAuth {
    webpki: Arc<dyn ClientCertVerifier>,
    /// The certificates of `ca_file`, DER.
    roots: Vec<CertificateDer<'static>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientAuth {
    pub fn new(
        webpki: Arc<dyn ClientCertVerifier>,
        roots: Vec<CertificateDer<'static>>,
        algs: WebPkiSupportedAlgorithms,
    ) -> ClientAuth {
        ClientAuth {
            webpki,
            roots,
            algs,
        }
    }

    /// Follows a v1 leaf's issuers up to a root of `ca_file`.
    fn verify_v1_chain(
        &self,
        leaf: &X509Certificate<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), Error> {
        let at = i64::try_from(now.as_secs())
            .ok()
            .and_then(|s| ASN1Time::from_timestamp(s).ok())
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let roots: Vec<X509Certificate<'_>> = self.roots.iter().filter_map(|r| parse(r)).collect();
        let inters: Vec<X509Certificate<'_>> =
            intermediates.iter().filter_map(|c| parse(c)).collect();
        let signed_by = |cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>| {
            issuer.subject().as_raw() == cert.issuer().as_raw()
                && cert.verify_signature(Some(issuer.public_key())).is_ok()
        };
        let mut cert = leaf;
        for _ in 0..MAX_DEPTH {
            valid_at(cert, at)?;
            if let Some(root) = roots.iter().find(|r| signed_by(cert, r)) {
                return valid_at(root, at);
            }
            cert = inters
                .iter()
                .find(|i| is_ca(i) && signed_by(cert, i))
                .ok_or(Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        }
        Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    }

    /// A handshake signature made with a v1 certificate's key.
    fn verify_v1_signature(
        &self,
        message: &[u8],
        cert: &X509Certificate<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let key = cert.public_key().subject_public_key.data.as_ref();
        let (_, algs) = self
            .algs
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .ok_or(Error::InvalidCertificate(CertificateError::BadSignature))?;
        if algs
            .iter()
            .any(|alg| alg.verify_signature(key, message, dss.signature()).is_ok())
        {
            Ok(HandshakeSignatureValid::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::BadSignature))
        }
    }
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Option<X509Certificate<'a>> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .ok()
        .map(|(_, c)| c)
}

/// The certificate, when it is a version 1 one.
fn v1<'a>(der: &'a CertificateDer<'_>) -> Option<X509Certificate<'a>> {
    parse(der).filter(|c| c.version() == X509Version::V1)
}

fn is_ca(c: &X509Certificate<'_>) -> bool {
    matches!(c.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

fn valid_at(c: &X509Certificate<'_>, at: ASN1Time) -> Result<(), Error> {
    let v = c.validity();
    if at < v.not_before {
        Err(Error::InvalidCertificate(CertificateError::NotValidYet))
    } else if at > v.not_after {
        Err(Error::InvalidCertificate(CertificateError::Expired))
    } else {
        Ok(())
    }
}

impl ClientCertVerifier for ClientAuth {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match v1(end_entity) {
            Some(leaf) => self
                .verify_v1_chain(&leaf, intermediates, now)
                .map(|()| ClientCertVerified::assertion()),
            None => self
                .webpki
                .verify_client_cert(end_entity, intermediates, now),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        match v1(cert) {
            Some(c) => self.verify_v1_signature(message, &c, dss),
            None => self.webpki.verify_tls12_signature(message, cert, dss),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        match v1(cert) {
            // TLS 1.3 takes no PKCS#1 v1.5 signatures in the handshake.
            Some(_) if is_pkcs1(dss.scheme) => Err(Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            )),
            Some(c) => self.verify_v1_signature(message, &c, dss),
            None => self.webpki.verify_tls13_signature(message, cert, dss),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

fn is_pkcs1(s: SignatureScheme) -> bool {
    matches!(
        s,
        SignatureScheme::RSA_PKCS1_SHA1
            | SignatureScheme::RSA_PKCS1_SHA256
            | SignatureScheme::RSA_PKCS1_SHA384
            | SignatureScheme::RSA_PKCS1_SHA512
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{date_time_ymd, CertificateParams, KeyPair};

    #[test]
    fn validity_is_checked_at_the_handshake_time() {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::new()).expect("params");
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
        let cert = p.self_signed(&key).expect("cert");
        let parsed = parse(cert.der()).expect("parses");
        // Mid-year of year `y` (leap days cannot move it across a boundary).
        let at = |y: i64| {
            ASN1Time::from_timestamp((y - 1970) * 365 * 86_400 + 180 * 86_400).expect("time")
        };
        assert!(valid_at(&parsed, at(2020)).is_ok());
        assert!(matches!(
            valid_at(&parsed, at(2019)),
            Err(Error::InvalidCertificate(CertificateError::NotValidYet))
        ));
        assert!(matches!(
            valid_at(&parsed, at(2022)),
            Err(Error::InvalidCertificate(CertificateError::Expired))
        ));
        // rcgen makes v3 certificates: they go to the WebPKI verifier.
        assert!(v1(cert.der()).is_none());
    }
}
