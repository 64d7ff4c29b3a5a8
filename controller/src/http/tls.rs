//! HTTPS for the listener when it is bound off loopback: the dashboard's
//! login cookies and the API's bearer tokens must not cross a network in
//! plain text. The certificate is one given with `--http-cert/--http-key`,
//! else one issued from the cluster CA. A plain-text request gets a short
//! HTTP answer saying to use https, and nothing else.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// The first byte of a TLS record that carries a handshake.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Handshaken connections waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// A certificate chain and its key, PEM.
#[derive(Debug, Clone)]
pub struct HttpCert {
    pub chain_pem: String,
    pub key_pem: String,
}

impl HttpCert {
    /// Reads a certificate chain and a private key given by the user.
    ///
    /// # Errors
    /// A file that cannot be read, or holds no certificate / no key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))
        };
        let loaded = Self {
            chain_pem: read(cert)?,
            key_pem: read(key)?,
        };
        loaded
            .server_config()
            .map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()))?;
        Ok(loaded)
    }

    /// The rustls configuration that presents this certificate.
    ///
    /// # Errors
    /// No certificate in the chain, no key, or a key that does not match.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
        if chain.is_empty() {
            return Err("no certificate in the chain file".into());
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| format!("no PEM private key: {e}"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A TCP listener whose connections are TLS: handshakes run beside each
/// other (a slow client holds up no one) and only finished ones are
/// handed to the server.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp`; the accepting task ends when the
    /// listener is dropped.
    ///
    /// # Errors
    /// The socket's own address cannot be read.
    pub fn new(tcp: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment.
                        tracing::warn!("HTTPS accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Some(tls) = handshake(&acceptor, stream, peer).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(Self { local, ready })
    }
}

/// The TLS stream of `stream`, or None: plain text (answered with a hint),
/// a failed or too slow handshake.
async fn handshake(
    acceptor: &TlsAcceptor,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE, stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        tracing::debug!(%peer, "plain-text request on the HTTPS listener refused");
        let body = "this listener serves HTTPS only: use https://\n";
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        return None;
    }
    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => None,
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task never ends while `self` lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ao_proto::pki::Ca;

    fn issued() -> HttpCert {
        let ca = Ca::generate("test").unwrap();
        let c = ca.issue_server(&[], Duration::from_secs(3600)).unwrap();
        HttpCert {
            chain_pem: c.cert_pem,
            key_pem: c.key_pem,
        }
    }

    #[test]
    fn a_given_certificate_loads_and_a_wrong_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let good = issued();
        std::fs::write(&cert, &good.chain_pem).unwrap();
        std::fs::write(&key, &good.key_pem).unwrap();
        assert!(HttpCert::load(&cert, &key).is_ok());

        // Another certificate's key does not fit.
        std::fs::write(&key, issued().key_pem).unwrap();
        let e = HttpCert::load(&cert, &key).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        assert!(e.contains("tls.crt") && e.contains("tls.key"), "{e}");

        std::fs::write(&cert, "not a certificate").unwrap();
        let e = HttpCert::load(&cert, &key).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");

        let e = HttpCert::load(&dir.path().join("missing.crt"), &key).unwrap_err();
        assert!(e.contains("missing.crt: cannot read"), "{e}");
    }
}
