//! Serving the controller's gRPC services on a listener until told to stop.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use ao_proto::pb;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::interceptor::InterceptedService;

use crate::cluster::Cluster;
use crate::grpc::{ControllerService, JoinService, RequireRole, WorkerLinkService};
use crate::sessions::ControllerHandle;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {path}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// Binds the controller's Unix socket so that only its owner can connect:
/// the socket lives in an owner-only directory and is itself mode 0600.
///
/// # Errors
/// [`ServeError::Bind`] when the path cannot be bound.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| ServeError::Bind {
        path: path.display().to_string(),
        source,
    };
    // A socket left by a crashed process; the caller holds the home lock.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// The stack's stop switch: set once, seen by every part.
pub type Stop = Arc<watch::Sender<bool>>;

pub fn stop_switch() -> Stop {
    Arc::new(watch::channel(false).0)
}

/// Resolves once `stop` is set.
pub fn stopped(stop: &Stop) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stop.subscribe();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

type CliApi = pb::controller_server::ControllerServer<ControllerService>;
type LinkApi = pb::worker_link_server::WorkerLinkServer<WorkerLinkService>;

/// The CLI's service and the worker link, as every listener serves them,
/// with the message limits of [`ao_proto::limits`].
fn services(
    handle: ControllerHandle,
    home: &Path,
    cluster: Option<Arc<Cluster>>,
    stop: &Stop,
) -> (CliApi, LinkApi) {
    use ao_proto::limits;
    let controller = ControllerService {
        handle: handle.clone(),
        home: home.display().to_string(),
        stop: stop.clone(),
        cluster: cluster.clone(),
    };
    let cli = CliApi::new(controller)
        .max_decoding_message_size(limits::MAX_REQUEST_BYTES)
        .max_encoding_message_size(limits::MAX_RESPONSE_BYTES);
    let link = LinkApi::new(WorkerLinkService { handle, cluster })
        .max_decoding_message_size(limits::MAX_LINK_MESSAGE_BYTES)
        .max_encoding_message_size(limits::MAX_LINK_MESSAGE_BYTES);
    (cli, link)
}

fn builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
}

/// Serves the local Unix socket until `stop` is set (a client's `Shutdown`
/// sets it too): only the socket's owner can connect, so no certificate is
/// asked for. Returns once in-flight calls are done; the caller bounds
/// that wait. `cluster` is set when the controller also listens on TCP
/// (then the local CLI can create tokens).
///
/// # Errors
/// [`ServeError::Serve`] when the transport fails.
pub async fn serve(
    handle: ControllerHandle,
    home: &Path,
    listener: UnixListener,
    cluster: Option<Arc<Cluster>>,
    stop: Stop,
) -> Result<(), ServeError> {
    let (controller, link) = services(handle, home, cluster, &stop);
    let stop = stopped(&stop);
    builder()
        .add_service(controller)
        .add_service(link)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop)
        .await
        .map_err(ServeError::Serve)
}

/// Serves the TCP port with mutual TLS only: the CLI's API needs an admin
/// certificate, the worker link a worker certificate that is not revoked;
/// only `Join` takes callers without one. Plain-text connections fail the
/// handshake.
///
/// # Errors
/// [`ServeError::Serve`] when the TLS setup or the transport fails.
pub async fn serve_tls(
    handle: ControllerHandle,
    home: &Path,
    listener: tokio::net::TcpListener,
    server: &ao_proto::pki::Credentials,
    cluster: Arc<Cluster>,
    stop: Stop,
) -> Result<(), ServeError> {
    use ao_proto::pki::Role;
    let (controller, link) = services(handle, home, Some(cluster.clone()), &stop);
    let join = JoinService {
        cluster: cluster.clone(),
    };
    let role = |role| RequireRole {
        cluster: cluster.clone(),
        role,
    };
    let stop = stopped(&stop);
    builder()
        .tls_config(server.server_tls())
        .map_err(ServeError::Serve)?
        .add_service(InterceptedService::new(controller, role(Role::Admin)))
        .add_service(InterceptedService::new(link, role(Role::Worker)))
        .add_service(
            pb::join_server::JoinServer::new(join)
                .max_decoding_message_size(ao_proto::limits::MAX_JOIN_BYTES)
                .max_encoding_message_size(ao_proto::limits::MAX_JOIN_BYTES),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop,
        )
        .await
        .map_err(ServeError::Serve)
}
