//! [`Credentials`]: a holder's certificate and key with the cluster CA, on disk and as tonic TLS
//! configurations.

use std::path::Path;

use rcgen::KeyPair;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::der::{first_cert_der, parse_cert};
use super::error::PkiError;
use super::files::{
    prepare_dir, read_file, sync_dir, write_atomic, CA_CRT, TLS_CRT, TLS_KEY, TLS_KEY_PREV,
};
use super::identity::{peer_identity_pem, PeerIdentity};
use super::tls::anonymous_client_tls;

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
    ///
    /// [`peer_identity`]: super::identity::peer_identity
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
    ///
    /// [`peer_identity`]: super::identity::peer_identity
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(self.chain_pem(), &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
    }

    /// TLS for a client holding this credential: trusts only the CA, presents the certificate,
    /// verifies the server as [`SERVER_NAME`].
    ///
    /// [`SERVER_NAME`]: super::tls::SERVER_NAME
    pub fn client_tls(&self) -> ClientTlsConfig {
        anonymous_client_tls(&self.ca_pem)
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// `tls.crt` followed by the CA certificate, unless `tls.crt` already ends with it.
    pub(super) fn chain_pem(&self) -> String {
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
