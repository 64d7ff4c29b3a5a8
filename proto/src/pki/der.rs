//! Certificates as bytes: the DER in a PEM text, and its parsed form.

use rustls::pki_types::CertificateDer;

use super::error::PkiError;

/// The DER of the first CERTIFICATE block in `pem_text`.
pub(super) fn first_cert_der(
    pem_text: &str,
    what: &str,
) -> Result<CertificateDer<'static>, PkiError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| PkiError::Invalid {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .ok_or_else(|| PkiError::Invalid {
            what: what.to_string(),
            reason: "it holds no PEM certificate".into(),
        })
}

pub(super) fn parse_cert<'a>(
    der: &'a [u8],
    what: &str,
) -> Result<x509_parser::certificate::X509Certificate<'a>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::Invalid {
            what: what.to_string(),
            reason: e.to_string(),
        })
}
