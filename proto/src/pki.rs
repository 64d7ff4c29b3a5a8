//! Cluster PKI: the CA, certificates for controller/admin/workers, CSRs, CA pinning, tonic TLS configs.
//!
//! The model is kubeadm's: the controller creates a cluster CA ([`Ca::generate`]) and its
//! serving certificate ([`Ca::issue_server`]); the CLI gets an admin client certificate
//! ([`Ca::issue_client`]); a worker joins with a single-use token and a pinned CA hash
//! (`sha256:<hex>`, see [`ca_hash`]): it learns the CA from the controller itself
//! ([`fetch_pinned_ca`]), makes its key locally ([`new_csr`]) and gets back a short-lived
//! certificate naming it as a worker ([`Ca::sign_csr`]).
//!
//! Every certificate the CA issues names its holder in its subject: CN is the name,
//! O is `ao-<role>` ([`Role`]); [`peer_identity`] reads them back. Clients always verify
//! the controller against the DNS name [`SERVER_NAME`], so the address the user typed
//! need not be in the certificate.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The DNS name every client verifies the controller's certificate against.
pub const SERVER_NAME: &str = "ao-controller";

/// How long [`fetch_pinned_ca`] waits for the connection and the TLS handshake.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Validity of the cluster CA: ten years.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start being valid this long before they are made, for clock skew.
const BACKDATE: Duration = Duration::from_secs(60);
/// The longest common name X.509 allows (ub-common-name).
const MAX_NAME_LEN: usize = 64;

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
/// The key of the certificate before the last renewal, until the new one is in place.
const TLS_KEY_PREV: &str = "tls.key.prev";

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
    fn organization(self) -> String {
        format!("ao-{}", self.as_str())
    }
}

/// Everything that can go wrong with certificates, keys and their files.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file that should be there is not.
    #[error("{} does not exist", .path.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// Reading or writing a file or directory failed.
    #[error("cannot {action} {}", .path.display())]
    Io {
        /// What was being done: "read", "write", "create directory", …
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A certificate or key does not parse.
    #[error("{what} is not valid: {reason}")]
    Invalid {
        /// What was being read, e.g. "the certificate in /etc/ao/tls.crt".
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// Making a key or a certificate failed.
    #[error("could not create {what}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate signing request was refused.
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(String),
    /// A name cannot go into a certificate.
    #[error("{name:?} cannot be a certificate name: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A peer certificate does not name an `ao` role.
    #[error("the peer certificate is not an ao certificate: {0}")]
    NotAoCertificate(String),
    /// A CA pin is not of the form `sha256:<64 hex digits>`.
    #[error("--ca-hash must look like sha256:<64 hex digits>, not {0:?}")]
    BadPin(String),
    /// No connection could be opened to the controller.
    #[error("cannot reach the controller at {addr}")]
    Unreachable {
        /// The address as given.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake with the controller failed.
    #[error("the TLS handshake with the controller at {addr} failed")]
    Handshake {
        /// The address as given.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The controller did not answer in time.
    #[error("the controller at {addr} did not complete a TLS handshake within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout {
        /// The address as given.
        addr: String,
    },
    /// No certificate the controller presented has the pinned hash.
    #[error("the controller's CA does not match --ca-hash: expected {expected}, got {}", list_or_none(.seen))]
    PinMismatch {
        /// The pin given.
        expected: String,
        /// Hashes of the CA certificates the controller presented (of all its certificates if
        /// none is a CA).
        seen: Vec<String>,
    },
    /// The controller presented the pinned CA but its own certificate is not valid under it.
    #[error("the controller at {addr} presented the pinned CA, but its own certificate is not valid for {SERVER_NAME} under that CA: {reason}")]
    NotSignedByPin {
        /// The address as given.
        addr: String,
        /// What the verifier said.
        reason: String,
    },
    /// Building a TLS configuration failed.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "no certificate at all".to_string()
    } else {
        items.join(", ")
    }
}

/// Files of one credential: `ca.crt`, `tls.crt`, `tls.key` in a directory.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The cluster CA certificate (PEM): the trust root.
    pub ca_pem: String,
    /// This holder's certificate (PEM).
    pub cert_pem: String,
    /// This holder's private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl Credentials {
    /// Reads `ca.crt`, `tls.crt` and `tls.key` from `dir` and checks that they parse.
    ///
    /// # Errors
    /// [`PkiError::Missing`] naming the first missing file; [`PkiError::Invalid`] naming a
    /// file that does not hold what it should.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let ca_path = dir.join(CA_CRT);
        let cert_path = dir.join(TLS_CRT);
        let key_path = dir.join(TLS_KEY);
        let ca_pem = read_file(&ca_path)?;
        let cert_pem = read_file(&cert_path)?;
        let key_pem = read_file(&key_path)?;
        first_cert_der(
            &ca_pem,
            &format!("the certificate in {}", ca_path.display()),
        )?;
        first_cert_der(
            &cert_pem,
            &format!("the certificate in {}", cert_path.display()),
        )?;
        // A renewal interrupted between its two renames leaves the new key
        // beside the old certificate: the old key, kept aside, still fits.
        let prev_path = dir.join(TLS_KEY_PREV);
        let key_pem = if key_fits(&key_pem, &cert_pem, &key_path)? {
            key_pem
        } else {
            match read_file(&prev_path) {
                Ok(prev) if key_fits(&prev, &cert_pem, &prev_path)? => prev,
                _ => {
                    return Err(PkiError::Invalid {
                        what: format!("the key in {}", key_path.display()),
                        reason: format!("it does not belong to {}", cert_path.display()),
                    })
                }
            }
        };
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
        })
    }

    /// Writes the three files into `dir` (created with mode 0700; `tls.key` 0600). Each file is
    /// written to a temporary file and renamed into place, so a renewal never leaves half a file.
    ///
    /// # Errors
    /// [`PkiError::Io`] naming the file or directory.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        prepare_dir(dir)?;
        write_atomic(&dir.join(CA_CRT), self.ca_pem.as_bytes(), 0o644)?;
        // The key the current certificate needs, until the new one is in
        // place (after an interrupted renewal, the one that fits).
        if let Ok(current) = Self::load(dir) {
            if current.key_pem != self.key_pem {
                write_atomic(&dir.join(TLS_KEY_PREV), current.key_pem.as_bytes(), 0o600)?;
            }
        }
        write_atomic(&dir.join(TLS_KEY), self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(TLS_CRT), self.cert_pem.as_bytes(), 0o644)?;
        sync_dir(dir);
        Ok(())
    }

    /// Whether `dir` holds all three files.
    pub fn exists(dir: &Path) -> bool {
        [CA_CRT, TLS_CRT, TLS_KEY]
            .iter()
            .all(|f| dir.join(f).is_file())
    }

    /// Who tls.crt names, and until when.
    ///
    /// # Errors
    /// As [`peer_identity`].
    pub fn identity(&self) -> Result<PeerIdentity, PkiError> {
        peer_identity_pem(&self.cert_pem)
    }

    /// Validity of tls.crt, unix seconds.
    ///
    /// # Errors
    /// [`PkiError::Invalid`] if the certificate does not parse.
    pub fn validity(&self) -> Result<(i64, i64), PkiError> {
        let der = first_cert_der(&self.cert_pem, "the certificate")?;
        let cert = parse_cert(&der, "the certificate")?;
        let v = cert.validity();
        Ok((v.not_before.timestamp(), v.not_after.timestamp()))
    }

    /// TLS for the controller's gRPC server: presents the certificate followed by the CA (so a
    /// joining worker can see and pin the CA), verifies client certificates against the CA but
    /// does not require one (the Join RPC is called without; every other RPC checks the peer's
    /// role itself with [`peer_identity`]).
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(self.chain_pem(), &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
    }

    /// TLS for a client holding this credential: trusts only the CA, presents the certificate,
    /// verifies the server as [`SERVER_NAME`].
    pub fn client_tls(&self) -> ClientTlsConfig {
        anonymous_client_tls(&self.ca_pem)
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// `tls.crt` followed by the CA certificate, unless `tls.crt` already ends with it.
    fn chain_pem(&self) -> String {
        if self.cert_pem.contains(self.ca_pem.trim()) {
            return self.cert_pem.clone();
        }
        let mut chain = self.cert_pem.clone();
        if !chain.ends_with('\n') {
            chain.push('\n');
        }
        chain.push_str(&self.ca_pem);
        chain
    }
}

/// TLS for a client with no certificate yet (the join call): trusts `ca_pem`, verifies SERVER_NAME.
pub fn anonymous_client_tls(ca_pem: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(SERVER_NAME)
}

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

/// `sha256:<lowercase hex>` of the DER of the first certificate in `ca_pem`.
///
/// # Errors
/// [`PkiError::Invalid`] if `ca_pem` holds no certificate.
pub fn ca_hash(ca_pem: &str) -> Result<String, PkiError> {
    Ok(der_hash(&first_cert_der(ca_pem, "the CA certificate")?))
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

/// Bootstrap of `ao worker join`: opens a TLS connection to `host_port` (e.g. "10.0.0.2:7070") accepting any certificate, takes the chain the server presents, finds the certificate whose `ca_hash` equals `pin`, then checks that the server's leaf certificate is validly signed by that CA for SERVER_NAME (rustls WebPkiServerVerifier with that CA as the only root). Returns the CA PEM.
///
/// The handshake still proves that the server holds the key of the leaf it presents (its
/// handshake signature is verified), so a replayed chain is refused. Nothing is sent over
/// the connection.
///
/// # Errors
/// [`PkiError::BadPin`]; [`PkiError::Unreachable`] naming the address;
/// [`PkiError::Handshake`]; [`PkiError::Timeout`] after 10 s; [`PkiError::PinMismatch`]
/// with the expected and the seen hashes; [`PkiError::NotSignedByPin`].
pub async fn fetch_pinned_ca(host_port: &str, pin: &str) -> Result<String, PkiError> {
    let pin = normalize_pin(pin)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = tokio::time::timeout(FETCH_TIMEOUT, presented_chain(host_port, provider.clone()))
        .await
        .map_err(|_| PkiError::Timeout {
            addr: host_port.to_string(),
        })??;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(PkiError::PinMismatch {
            expected: pin,
            seen: Vec::new(),
        });
    };
    let Some(ca) = chain.iter().find(|c| der_hash(c) == pin) else {
        let cas: Vec<String> = chain
            .iter()
            .filter(|c| parse_cert(c, "").is_ok_and(|c| c.is_ca()))
            .map(|c| der_hash(c))
            .collect();
        let seen = if cas.is_empty() {
            chain.iter().map(|c| der_hash(c)).collect()
        } else {
            cas
        };
        return Err(PkiError::PinMismatch {
            expected: pin,
            seen,
        });
    };
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| PkiError::NotSignedByPin {
            addr: host_port.to_string(),
            reason: format!("the pinned CA cannot be a trust root: {e}"),
        })?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    let server_name =
        ServerName::try_from(SERVER_NAME).map_err(|e| PkiError::Tls(e.to_string()))?;
    verifier
        .verify_server_cert(leaf, intermediates, &server_name, &[], UnixTime::now())
        .map_err(|e| PkiError::NotSignedByPin {
            addr: host_port.to_string(),
            reason: e.to_string(),
        })?;
    Ok(pem::encode_config(
        &pem::Pem::new("CERTIFICATE", ca.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ))
}

/// Connects, completes a TLS handshake accepting any chain, and returns the chain (leaf first).
async fn presented_chain(
    host_port: &str,
    provider: Arc<CryptoProvider>,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let capture = Arc::new(CaptureChain {
        algorithms: provider.signature_verification_algorithms,
        chain: Mutex::new(Vec::new()),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let server_name =
        ServerName::try_from(SERVER_NAME).map_err(|e| PkiError::Tls(e.to_string()))?;
    let tcp = tokio::net::TcpStream::connect(host_port)
        .await
        .map_err(|source| PkiError::Unreachable {
            addr: host_port.to_string(),
            source,
        })?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|source| PkiError::Handshake {
            addr: host_port.to_string(),
            source,
        })?;
    drop(tls);
    let chain = std::mem::take(&mut *capture.chain.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(chain)
}

/// A server verifier that accepts any chain and keeps it for inspection after the handshake,
/// while still checking the handshake signatures against the presented leaf.
#[derive(Debug)]
struct CaptureChain {
    algorithms: WebPkiSupportedAlgorithms,
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for CaptureChain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self.chain.lock().unwrap_or_else(|e| e.into_inner()) = chain;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks the form of a pin and lowercases its hex.
fn normalize_pin(pin: &str) -> Result<String, PkiError> {
    let hex = pin
        .trim()
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| PkiError::BadPin(pin.to_string()))?;
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// A fresh key pair; `what` names it in the error.
fn new_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate().map_err(|source| PkiError::Generate { what, source })
}

/// Lowercase hex of the SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn der_hash(der: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(der))
}

/// Whether the key in `key_pem` (read from `path`) is the one `cert_pem` certifies.
fn key_fits(key_pem: &str, cert_pem: &str, path: &Path) -> Result<bool, PkiError> {
    use rcgen::PublicKeyData;
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Invalid {
        what: format!("the key in {}", path.display()),
        reason: e.to_string(),
    })?;
    let der = first_cert_der(cert_pem, "the certificate")?;
    let cert = parse_cert(&der, "the certificate")?;
    Ok(cert.public_key().raw == key.subject_public_key_info().as_slice())
}

/// The DER of the first CERTIFICATE block in `pem_text`.
fn first_cert_der(pem_text: &str, what: &str) -> Result<CertificateDer<'static>, PkiError> {
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

fn parse_cert<'a>(
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

fn read_file(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            PkiError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            PkiError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Creates `dir` if needed and sets its mode to 0700.
fn prepare_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })?;
    fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(|source| PkiError::Io {
        action: "set the permissions of",
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `data` to a temporary file beside `path` with `mode`, syncs it, renames it over `path`.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| PkiError::Io {
            action,
            path: p,
            source,
        }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("write", &tmp))?;
    // An old temporary file keeps its mode through `open`; set it again.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_err("set the permissions of", &tmp))?;
    file.write_all(data).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("write", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("write", path))
}

/// Best effort: makes the renames in `dir` durable.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn an_error_prints_its_cause_once_as_its_source() {
        let err = PkiError::Io {
            action: "read",
            path: PathBuf::from("/pki/tls.key"),
            source: io::Error::new(io::ErrorKind::PermissionDenied, "permission denied"),
        };
        assert_eq!(err.to_string(), "cannot read /pki/tls.key");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("permission denied"));
        // Where it must travel as a string, the cause follows once.
        assert_eq!(
            crate::error_chain(&err),
            "cannot read /pki/tls.key: permission denied"
        );
    }

    fn der_of(pem_text: &str) -> Vec<CertificateDer<'static>> {
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
        assert!(matches!(
            normalize_pin("sha256:abc"),
            Err(PkiError::BadPin(_))
        ));
        assert_eq!(Role::parse("worker"), Some(Role::Worker));
        assert_eq!(
            Role::parse(Role::Controller.as_str()),
            Some(Role::Controller)
        );
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn ca_hash_is_sha256_of_der() {
        let ca = Ca::generate("test").unwrap();
        let der = der_of(ca.cert_pem()).remove(0);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(der.as_ref())));
        assert_eq!(ca_hash(ca.cert_pem()).unwrap(), expected);
        assert_eq!(ca_hash(ca.cert_pem()).unwrap(), expected);
        // Only the first certificate counts.
        let other = Ca::generate("other").unwrap();
        let both = format!("{}{}", ca.cert_pem(), other.cert_pem());
        assert_eq!(ca_hash(&both).unwrap(), expected);
        assert!(matches!(ca_hash("nothing"), Err(PkiError::Invalid { .. })));
    }

    #[test]
    fn save_and_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("creds");
        let ca = Ca::generate("test").unwrap();
        let admin = ca.issue_client(Role::Admin, "alice", DAY).unwrap();
        assert!(!Credentials::exists(&dir));
        match Credentials::load(&dir) {
            Err(e @ PkiError::Missing { .. }) => assert!(e.to_string().contains("ca.crt"), "{e}"),
            other => panic!("{other:?}"),
        }
        admin.save(&dir).unwrap();
        admin.save(&dir).unwrap(); // overwriting (a renewal) works too
        assert!(Credentials::exists(&dir));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("tls.key")), 0o600);
        let back = Credentials::load(&dir).unwrap();
        assert_eq!(back.ca_pem, admin.ca_pem);
        assert_eq!(back.cert_pem, admin.cert_pem);
        assert_eq!(back.key_pem, admin.key_pem);
        assert!(
            fs::read_dir(&dir).unwrap().count() == 3,
            "no temporary file is left"
        );

        // A renewal cut short between its renames (new key, old
        // certificate) still loads: with the key kept aside.
        let renewed = ca.issue_client(Role::Admin, "alice", DAY).unwrap();
        renewed.save(&dir).unwrap();
        fs::write(dir.join("tls.crt"), &admin.cert_pem).unwrap();
        let torn = Credentials::load(&dir).unwrap();
        assert_eq!(torn.key_pem, admin.key_pem);
        // And a second one cut short the same way, right after.
        let again = ca.issue_client(Role::Admin, "alice", DAY).unwrap();
        again.save(&dir).unwrap();
        fs::write(dir.join("tls.crt"), &admin.cert_pem).unwrap();
        assert_eq!(Credentials::load(&dir).unwrap().key_pem, admin.key_pem);
        // A key that fits neither is refused, naming the files.
        let stranger = ca.issue_client(Role::Admin, "bob", DAY).unwrap();
        fs::write(dir.join("tls.key"), &stranger.key_pem).unwrap();
        fs::write(dir.join("tls.key.prev"), &stranger.key_pem).unwrap();
        let err = Credentials::load(&dir).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");

        fs::remove_file(dir.join("tls.key")).unwrap();
        let err = Credentials::load(&dir).unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");

        let ca_dir = tmp.path().join("ca");
        ca.save(&ca_dir).unwrap();
        assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
        let ca2 = Ca::load(&ca_dir).unwrap();
        assert_eq!(ca2.cert_pem(), ca.cert_pem());
        // The loaded CA signs certificates that chain to the original.
        let cert = ca2.issue_client(Role::Worker, "w2", DAY).unwrap();
        verify_chain(ca.cert_pem(), &cert.cert_pem).unwrap();
    }

    /// Checks `cert_pem` against `ca_pem` as a client certificate, with rustls.
    fn verify_chain(ca_pem: &str, cert_pem: &str) -> Result<(), rustls::Error> {
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

    /// A TLS server on 127.0.0.1 presenting `chain_pem` with `key_pem`; accepts connections
    /// until the test ends.
    async fn tls_server(chain_pem: String, key_pem: String) -> String {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            der_of(&chain_pem),
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn fetch_pinned_ca_checks_pin_and_signature() {
        let ca = Ca::generate("test").unwrap();
        let server = ca.issue_server(&[], DAY).unwrap();
        let addr = tls_server(server.chain_pem(), server.key_pem.clone()).await;
        let pin = ca_hash(ca.cert_pem()).unwrap();

        let fetched = fetch_pinned_ca(&addr, &pin).await.unwrap();
        assert_eq!(der_of(&fetched), der_of(ca.cert_pem()));
        // Upper-case hex is the same pin.
        let upper = format!("sha256:{}", pin["sha256:".len()..].to_uppercase());
        assert_eq!(fetch_pinned_ca(&addr, &upper).await.unwrap(), fetched);

        // Wrong pin.
        let other = Ca::generate("other").unwrap();
        let wrong = ca_hash(other.cert_pem()).unwrap();
        let err = fetch_pinned_ca(&addr, &wrong).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PkiError::PinMismatch { .. }), "{msg}");
        assert!(msg.contains(&wrong) && msg.contains(&pin), "{msg}");

        // A server whose leaf comes from another CA but which sends the pinned CA along.
        let impostor = other.issue_server(&[], DAY).unwrap();
        let chain = format!("{}{}", impostor.cert_pem, ca.cert_pem());
        let bad_addr = tls_server(chain, impostor.key_pem.clone()).await;
        let err = fetch_pinned_ca(&bad_addr, &pin).await.unwrap_err();
        assert!(matches!(err, PkiError::NotSignedByPin { .. }), "{err}");

        // A leaf of the right CA that is not for SERVER_NAME.
        let client = ca.issue_client(Role::Admin, "alice", DAY).unwrap();
        let odd_addr = tls_server(client.chain_pem(), client.key_pem.clone()).await;
        let err = fetch_pinned_ca(&odd_addr, &pin).await.unwrap_err();
        assert!(matches!(err, PkiError::NotSignedByPin { .. }), "{err}");
    }

    #[tokio::test]
    async fn fetch_pinned_ca_names_an_unreachable_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let pin = format!("sha256:{}", "ab".repeat(32));
        let err = fetch_pinned_ca(&addr, &pin).await.unwrap_err();
        assert!(matches!(err, PkiError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&addr), "{err}");
    }

    /// A WorkerLink service whose Link answers, in the `x-peer` response header, who the
    /// client certificate names (`anonymous` without one).
    struct WhoAmI;

    type Empty<T> = tonic::codegen::tokio_stream::Empty<Result<T, tonic::Status>>;

    #[tonic::async_trait]
    impl crate::pb::worker_link_server::WorkerLink for WhoAmI {
        type LinkStream = Empty<crate::pb::ControllerMessage>;
        type TunnelStream = Empty<crate::pb::TunnelDown>;

        async fn link(
            &self,
            request: tonic::Request<tonic::Streaming<crate::pb::WorkerMessage>>,
        ) -> Result<tonic::Response<Self::LinkStream>, tonic::Status> {
            let who = match request.peer_certs() {
                Some(certs) if !certs.is_empty() => {
                    let id = peer_identity(&certs[0])
                        .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
                    format!("{}/{}", id.role.as_str(), id.name)
                }
                _ => "anonymous".to_string(),
            };
            let mut response = tonic::Response::new(tonic::codegen::tokio_stream::empty());
            response
                .metadata_mut()
                .insert("x-peer", who.parse().unwrap());
            Ok(response)
        }

        async fn tunnel(
            &self,
            _request: tonic::Request<tonic::Streaming<crate::pb::TunnelUp>>,
        ) -> Result<tonic::Response<Self::TunnelStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }

        async fn renew(
            &self,
            _request: tonic::Request<crate::pb::RenewRequest>,
        ) -> Result<tonic::Response<crate::pb::RenewResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
    }

    /// Connects with `tls` and calls Link; returns the `x-peer` header.
    async fn who_am_i(addr: &str, tls: ClientTlsConfig) -> Result<String, String> {
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| format!("{e:?}"))?
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let mut client = crate::pb::worker_link_client::WorkerLinkClient::new(channel);
        let response = client
            .link(tonic::codegen::tokio_stream::empty())
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(response
            .metadata()
            .get("x-peer")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string())
    }

    #[tokio::test]
    async fn tonic_mtls_round_trip() {
        let ca = Ca::generate("test").unwrap();
        let server = ca.issue_server(&[], DAY).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serve = tonic::transport::Server::builder()
            .tls_config(server.server_tls())
            .unwrap()
            .add_service(crate::pb::worker_link_server::WorkerLinkServer::new(WhoAmI))
            .serve_with_incoming(
                tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener),
            );
        let serve = tokio::spawn(serve);

        // The address typed (127.0.0.1) is irrelevant: clients verify SERVER_NAME.
        let admin = ca.issue_client(Role::Admin, "alice", DAY).unwrap();
        assert_eq!(
            who_am_i(&addr, admin.client_tls()).await.unwrap(),
            "admin/alice"
        );

        let (csr, key_pem) = new_csr("w1").unwrap();
        let worker = Credentials {
            ca_pem: ca.cert_pem().to_string(),
            cert_pem: ca.sign_csr(&csr, Role::Worker, "w1", DAY).unwrap(),
            key_pem,
        };
        assert_eq!(
            who_am_i(&addr, worker.client_tls()).await.unwrap(),
            "worker/w1"
        );

        // The join call: no client certificate, the CA learned by pinning.
        let fetched = fetch_pinned_ca(&addr, &ca_hash(ca.cert_pem()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            who_am_i(&addr, anonymous_client_tls(&fetched))
                .await
                .unwrap(),
            "anonymous"
        );

        // A certificate from another CA is refused by the server; a client trusting another
        // CA refuses the server.
        let other = Ca::generate("other").unwrap();
        let stranger = other.issue_client(Role::Admin, "mallory", DAY).unwrap();
        let stranger = Credentials {
            ca_pem: ca.cert_pem().to_string(),
            ..stranger
        };
        assert!(who_am_i(&addr, stranger.client_tls()).await.is_err());
        assert!(who_am_i(&addr, anonymous_client_tls(other.cert_pem()))
            .await
            .is_err());

        serve.abort();
    }
}
