//! Who a certificate names: its [`Role`] (O = `ao-<role>`) and its name (CN), read back from a
//! peer's certificate as a [`PeerIdentity`].

use super::der::{first_cert_der, parse_cert};
use super::error::PkiError;

/// What a certificate entitles its holder to; written as O = `ao-<role>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A person at the CLI: may do everything.
    Admin,
    /// A worker host.
    Worker,
    /// A controller (its serving certificate).
    Controller,
}

impl Role {
    /// `"admin"`, `"worker"` or `"controller"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Worker => "worker",
            Role::Controller => "controller",
        }
    }

    /// The inverse of [`Role::as_str`].
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "worker" => Some(Role::Worker),
            "controller" => Some(Role::Controller),
            _ => None,
        }
    }

    /// The organization written in certificates of this role, e.g. `ao-worker`.
    pub(super) fn organization(self) -> String {
        format!("ao-{}", self.as_str())
    }
}

/// Who a peer certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// From O = `ao-<role>`.
    pub role: Role,
    /// From CN.
    pub name: String,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
}

/// Parses a DER certificate presented by a peer (tonic gives `request.peer_certs()`, leaf first).
///
/// It does not verify the certificate: the TLS layer did that against the cluster CA.
///
/// # Errors
/// [`PkiError::Invalid`] if it does not parse; [`PkiError::NotAoCertificate`] if it has no
/// common name or no `ao-<role>` organization.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let cert = parse_cert(der, "the peer certificate")?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| PkiError::NotAoCertificate("it has no common name".into()))?
        .to_string();
    let org = subject
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| PkiError::NotAoCertificate("it has no organization".into()))?;
    let role = org
        .strip_prefix("ao-")
        .and_then(Role::parse)
        .ok_or_else(|| {
            PkiError::NotAoCertificate(format!("its organization {org:?} is not ao-<role>"))
        })?;
    let validity = cert.validity();
    Ok(PeerIdentity {
        role,
        name,
        serial: hex::encode(cert.raw_serial()),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// [`peer_identity`] of the first certificate of a PEM text (a credential's `tls.crt`).
///
/// # Errors
/// As [`peer_identity`], or [`PkiError::Invalid`] if there is no certificate.
pub fn peer_identity_pem(cert_pem: &str) -> Result<PeerIdentity, PkiError> {
    peer_identity(&first_cert_der(cert_pem, "the certificate")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_back() {
        assert_eq!(Role::parse("worker"), Some(Role::Worker));
        assert_eq!(
            Role::parse(Role::Controller.as_str()),
            Some(Role::Controller)
        );
        assert_eq!(Role::parse("root"), None);
    }
}
