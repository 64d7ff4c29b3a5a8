//! CA pinning, as `ao worker join` does it: the pin of a CA (`sha256:<hex>` of its DER) and
//! fetching the CA a controller presents, checked against a pin.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::der::{first_cert_der, parse_cert};
use super::error::PkiError;
use super::tls::{FETCH_TIMEOUT, SERVER_NAME};

/// `sha256:<lowercase hex>` of the DER of the first certificate in `ca_pem`.
///
/// # Errors
/// [`PkiError::Invalid`] if `ca_pem` holds no certificate.
pub fn ca_hash(ca_pem: &str) -> Result<String, PkiError> {
    Ok(der_hash(&first_cert_der(ca_pem, "the CA certificate")?))
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

/// Lowercase hex of the SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn der_hash(der: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(der))
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;

    use super::*;
    use crate::pki::ca::tests::{der_of, DAY};
    use crate::pki::ca::Ca;
    use crate::pki::identity::Role;

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
    fn a_pin_without_64_hex_digits_is_refused() {
        assert!(matches!(
            normalize_pin("sha256:abc"),
            Err(PkiError::BadPin(_))
        ));
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
}
