//! The cluster CA ([`Ca`]) and what it issues: the controller's serving certificate, client
//! certificates, certificates for CSRs made elsewhere ([`new_csr`]).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::credentials::Credentials;
use super::error::PkiError;
use super::files::{prepare_dir, read_file, sync_dir, write_atomic, CA_CRT, CA_KEY};
use super::identity::Role;
use super::tls::SERVER_NAME;

/// Validity of the cluster CA: ten years.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start being valid this long before they are made, for clock skew.
const BACKDATE: Duration = Duration::from_secs(60);
/// The longest common name X.509 allows (ub-common-name).
const MAX_NAME_LEN: usize = 64;

/// The cluster CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA, CN "ao cluster CA (<cluster>)", valid ten years, that may sign
    /// end-entity certificates only (path length 0).
    ///
    /// # Errors
    /// [`PkiError::BadName`] for an unusable cluster name; [`PkiError::Generate`].
    pub fn generate(cluster: &str) -> Result<Ca, PkiError> {
        check_name(cluster)?;
        let key = new_key("the CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("ao cluster CA ({cluster})"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "ao");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY)?;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "the CA certificate",
                source,
            })?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Whether `dir` holds a CA key (`ca.key`).
    pub fn exists(dir: &Path) -> bool {
        dir.join(CA_KEY).is_file()
    }

    /// Reads `ca.crt` and `ca.key` from `dir`.
    ///
    /// # Errors
    /// [`PkiError::Missing`] naming a missing file; [`PkiError::Invalid`] naming a file that
    /// does not parse.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = dir.join(CA_CRT);
        let key_path = dir.join(CA_KEY);
        let cert_pem = read_file(&cert_path)?;
        let key_pem = read_file(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Invalid {
            what: format!("the key in {}", key_path.display()),
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::Invalid {
            what: format!("the CA certificate in {}", cert_path.display()),
            reason: e.to_string(),
        })?;
        Ok(Ca { cert_pem, issuer })
    }

    /// Writes `ca.crt` and `ca.key` (0600) into `dir` (0700), each atomically.
    ///
    /// # Errors
    /// [`PkiError::Io`] naming the file or directory.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        prepare_dir(dir)?;
        write_atomic(
            &dir.join(CA_KEY),
            self.issuer.key().serialize_pem().as_bytes(),
            0o600,
        )?;
        write_atomic(&dir.join(CA_CRT), self.cert_pem.as_bytes(), 0o644)?;
        sync_dir(dir);
        Ok(())
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The controller's serving certificate: SANs DNS SERVER_NAME, DNS localhost, IP 127.0.0.1, plus `extra` (each parsed as IP if it is one, else DNS).
    ///
    /// Its subject is CN [`SERVER_NAME`], O `ao-controller`; it may serve and also act as a
    /// client (controller to controller).
    ///
    /// # Errors
    /// [`PkiError::BadName`] for an `extra` that is neither an IP nor a DNS name;
    /// [`PkiError::Generate`].
    pub fn issue_server(&self, extra: &[String], ttl: Duration) -> Result<Credentials, PkiError> {
        let mut sans = vec![
            SanType::DnsName(dns_name(SERVER_NAME)?),
            SanType::DnsName(dns_name("localhost")?),
            SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        ];
        for name in extra {
            let name = name.trim();
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(dns_name(name)?),
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        let key = new_key("the controller key")?;
        let mut params = leaf_params(Role::Controller, SERVER_NAME, ttl)?;
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.credentials(params, &key, "the controller certificate")
    }

    /// Signs `params` for `key` and bundles the result with the CA.
    fn credentials(
        &self,
        params: CertificateParams,
        key: &KeyPair,
        what: &'static str,
    ) -> Result<Credentials, PkiError> {
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(|source| PkiError::Generate { what, source })?;
        Ok(Credentials {
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client credential with a key made here (the admin's).
    ///
    /// # Errors
    /// [`PkiError::BadName`]; [`PkiError::Generate`].
    pub fn issue_client(
        &self,
        role: Role,
        name: &str,
        ttl: Duration,
    ) -> Result<Credentials, PkiError> {
        let params = leaf_params(role, name, ttl)?;
        let key = new_key("the client key")?;
        self.credentials(params, &key, "the client certificate")
    }

    /// Signs a CSR's public key; the subject is NOT taken from the CSR: CN = name, O = "ao-<role>" (e.g. "ao-worker"), client-auth EKU, validity now-1min .. now+ttl, random serial. Returns the certificate PEM.
    ///
    /// The CSR's own signature is checked (its sender holds the key).
    ///
    /// # Errors
    /// [`PkiError::BadCsr`]; [`PkiError::BadName`]; [`PkiError::Generate`].
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        role: Role,
        name: &str,
        ttl: Duration,
    ) -> Result<String, PkiError> {
        let params = leaf_params(role, name, ttl)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| PkiError::Generate {
                what: "the certificate",
                source,
            })?;
        Ok(cert.pem())
    }
}

/// A key pair and a CSR for it, made where the key stays: (csr_pem, key_pem).
///
/// The CSR's subject is CN = `name`; the CA ignores it and writes its own.
///
/// # Errors
/// [`PkiError::BadName`]; [`PkiError::Generate`].
pub fn new_csr(name: &str) -> Result<(String, String), PkiError> {
    check_name(name)?;
    let key = new_key("a key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|source| PkiError::Generate {
            what: "the certificate signing request",
            source,
        })?;
    Ok((csr_pem, key.serialize_pem()))
}

/// A fresh key pair; `what` names it in the error.
fn new_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate().map_err(|source| PkiError::Generate { what, source })
}

/// Subject, usages, validity and serial of an end-entity certificate for `role`/`name`.
fn leaf_params(role: Role, name: &str, ttl: Duration) -> Result<CertificateParams, PkiError> {
    check_name(name)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, role.organization());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, ttl)?;
    Ok(params)
}

/// Validity now - 1 min .. now + `ttl`, whole seconds.
fn set_validity(params: &mut CertificateParams, ttl: Duration) -> Result<(), PkiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let secs = |d: Duration| i64::try_from(d.as_secs()).ok();
    let range = secs(BACKDATE)
        .zip(secs(ttl))
        .and_then(|(back, ttl)| Some((now.checked_sub(back)?, now.checked_add(ttl)?)))
        .and_then(|(from, to)| {
            Some((
                OffsetDateTime::from_unix_timestamp(from).ok()?,
                OffsetDateTime::from_unix_timestamp(to).ok()?,
            ))
        });
    let Some((not_before, not_after)) = range else {
        return Err(PkiError::Invalid {
            what: format!("a validity of {} s", ttl.as_secs()),
            reason: "it is out of range".into(),
        });
    };
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(())
}

/// 16 random bytes, positive and without a leading zero byte (so its hex is always 32 digits).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than 64 bytes"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(PkiError::BadName {
        name: name.to_string(),
        reason,
    })
}

/// A syntactically valid DNS name (checked by rustls, which will match it later).
fn dns_name(name: &str) -> Result<rcgen::string::Ia5String, PkiError> {
    rustls::pki_types::DnsName::try_from(name)
        .ok()
        .and_then(|_| rcgen::string::Ia5String::try_from(name).ok())
        .ok_or_else(|| PkiError::BadName {
            name: name.to_string(),
            reason: "it is neither an IP address nor a DNS name",
        })
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::RootCertStore;

    use super::*;
    use crate::pki::der::parse_cert;
    use crate::pki::identity::{peer_identity, PeerIdentity};

    pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

    pub(crate) fn der_of(pem_text: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem_text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn identity_of(cert_pem: &str) -> PeerIdentity {
        peer_identity(&der_of(cert_pem)[0]).unwrap()
    }

    #[test]
    fn issue_and_identify() {
        let ca = Ca::generate("test").unwrap();
        let server = ca
            .issue_server(&["10.0.0.2".into(), "ctl.example".into()], DAY)
            .unwrap();
        let id = identity_of(&server.cert_pem);
        assert_eq!(id.role, Role::Controller);
        assert_eq!(id.name, SERVER_NAME);

        let admin = ca.issue_client(Role::Admin, "alice", DAY).unwrap();
        let id = identity_of(&admin.cert_pem);
        assert_eq!((id.role, id.name.as_str()), (Role::Admin, "alice"));
        assert_eq!(id.serial.len(), 32);
        let (nb, na) = admin.validity().unwrap();
        assert_eq!((id.not_before, id.not_after), (nb, na));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!(
            nb <= now - 59 && nb >= now - 120,
            "not_before {nb}, now {now}"
        );
        assert!((na - (now + DAY.as_secs() as i64)).abs() < 5);

        // The CSR says "evil"; the certificate says what the CA decided.
        let (csr, key) = new_csr("evil").unwrap();
        let cert = ca.sign_csr(&csr, Role::Worker, "w1", DAY).unwrap();
        let id = identity_of(&cert);
        assert_eq!((id.role, id.name.as_str()), (Role::Worker, "w1"));
        let x = der_of(&cert);
        let parsed = parse_cert(&x[0], "").unwrap();
        let org: Vec<_> = parsed
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(org, ["ao-worker"]);
        assert!(!parsed.subject().to_string().contains("evil"));
        // The certificate carries the CSR's key.
        let kp = KeyPair::from_pem(&key).unwrap();
        assert_eq!(
            parsed.public_key().subject_public_key.data.as_ref(),
            kp.public_key_raw()
        );

        // Serials differ.
        let other = ca.issue_client(Role::Admin, "alice", DAY).unwrap();
        assert_ne!(
            identity_of(&other.cert_pem).serial,
            identity_of(&admin.cert_pem).serial
        );

        // A CA certificate is not an ao identity.
        assert!(matches!(
            peer_identity(&der_of(ca.cert_pem())[0]),
            Err(PkiError::NotAoCertificate(_))
        ));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let ca = Ca::generate("test").unwrap();
        assert!(matches!(
            ca.sign_csr("garbage", Role::Worker, "w1", DAY),
            Err(PkiError::BadCsr(_))
        ));
        let (csr, _) = new_csr("w1").unwrap();
        assert!(matches!(
            ca.sign_csr(&csr, Role::Worker, "", DAY),
            Err(PkiError::BadName { .. })
        ));
        assert!(matches!(
            ca.issue_server(&["not a name".into()], DAY),
            Err(PkiError::BadName { .. })
        ));
    }

    /// Checks `cert_pem` against `ca_pem` as a client certificate, with rustls.
    pub(crate) fn verify_chain(ca_pem: &str, cert_pem: &str) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(der_of(ca_pem).remove(0)).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&der_of(cert_pem)[0], &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn client_certificates_chain_to_their_ca_only() {
        let ca = Ca::generate("test").unwrap();
        let other = Ca::generate("other").unwrap();
        let (csr, _) = new_csr("w1").unwrap();
        let cert = ca.sign_csr(&csr, Role::Worker, "w1", DAY).unwrap();
        verify_chain(ca.cert_pem(), &cert).unwrap();
        assert!(verify_chain(other.cert_pem(), &cert).is_err());
    }
}
