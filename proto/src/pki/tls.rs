//! What a client expects of the controller's TLS: the name it verifies, how long the join's
//! handshake may take, and the configuration of a client that holds no certificate yet.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig};

/// The DNS name every client verifies the controller's certificate against.
pub const SERVER_NAME: &str = "ao-controller";

/// How long [`fetch_pinned_ca`] waits for the connection and the TLS handshake.
///
/// [`fetch_pinned_ca`]: super::pin::fetch_pinned_ca
pub(super) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for a client with no certificate yet (the join call): trusts `ca_pem`, verifies SERVER_NAME.
pub fn anonymous_client_tls(ca_pem: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(SERVER_NAME)
}
