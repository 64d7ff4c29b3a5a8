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
//!
//! Modules (their public items are re-exported here):
//! - `ca`: the [`Ca`], what it issues, and [`new_csr`] for a key made elsewhere.
//! - `credentials`: [`Credentials`] on disk and as tonic TLS configurations.
//! - `identity`: [`Role`] and [`PeerIdentity`], read back from a certificate.
//! - `pin`: [`ca_hash`] and [`fetch_pinned_ca`], the join's CA pinning.
//! - `tls`: [`SERVER_NAME`] and [`anonymous_client_tls`].
//! - `files`: where a CA and a credential live in a directory, written atomically.
//! - `der`: a certificate's DER in a PEM text, and its parsed form.
//! - `error`: [`PkiError`].

mod ca;
mod credentials;
mod der;
mod error;
mod files;
mod identity;
mod pin;
mod tls;
mod token_file;

pub use ca::{new_csr, Ca};
pub use credentials::Credentials;
pub use error::PkiError;
pub use identity::{peer_identity, peer_identity_pem, PeerIdentity, Role};
pub use pin::{ca_hash, fetch_pinned_ca, sha256_hex};
pub use tls::{anonymous_client_tls, SERVER_NAME};
pub use token_file::TokenCredential;

/// Tests of the parts together: a CA and credentials on disk, and tonic mTLS with what the CA
/// issues.
#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use tonic::transport::ClientTlsConfig;

    use super::*;
    use crate::pki::ca::tests::{verify_chain, DAY};

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
