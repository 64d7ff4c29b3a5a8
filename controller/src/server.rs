//! Serving the controller's gRPC services on a listener until told to stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ao_proto::pb;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;

use crate::access::{Gate, Guarded};
use crate::cluster::Cluster;
use crate::grpc::{ControllerService, JoinService, RequireRole, WorkerLinkService};
use crate::handle::ControllerHandle;

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

type CliApi = Guarded<pb::controller_server::ControllerServer<ControllerService>>;
type LinkApi = pb::worker_link_server::WorkerLinkServer<WorkerLinkService>;

/// What every listener serves: the sessions actor, the stop token that a
/// client's `Shutdown` cancels, and the tracker that owns the tasks the
/// services spawn (relays, link readers).
#[derive(Clone)]
pub struct Services {
    pub handle: ControllerHandle,
    pub home: PathBuf,
    /// The schedules as `ao schedule ls` shows them.
    pub schedules: crate::schedules::Schedules,
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

impl Services {
    /// The CLI's service behind the gate of its listener (`tcp`: the
    /// cluster's port) and the worker link, with the message limits of
    /// [`ao_proto::limits`].
    fn apis(&self, cluster: Option<Arc<Cluster>>, tcp: bool) -> (CliApi, LinkApi) {
        use ao_proto::limits;
        let controller = ControllerService {
            handle: self.handle.clone(),
            home: self.home.display().to_string(),
            schedules: self.schedules.clone(),
            stop: self.stop.clone(),
            cluster: cluster.clone(),
            tasks: self.tasks.clone(),
        };
        let cli = pb::controller_server::ControllerServer::new(controller)
            .max_decoding_message_size(limits::MAX_REQUEST_BYTES)
            .max_encoding_message_size(limits::MAX_RESPONSE_BYTES);
        let gate = Gate::new(self.handle.credentials(), cluster.clone().filter(|_| tcp));
        let cli = Guarded::new(cli, Arc::new(gate));
        let link = LinkApi::new(WorkerLinkService {
            handle: self.handle.clone(),
            cluster,
            tasks: self.tasks.clone(),
        })
        .max_decoding_message_size(limits::MAX_LINK_MESSAGE_BYTES)
        .max_encoding_message_size(limits::MAX_LINK_MESSAGE_BYTES);
        (cli, link)
    }

    /// Serves the local Unix socket until `stop` is cancelled: only the
    /// socket's owner can connect, so no certificate is asked for. Returns
    /// once in-flight calls are done; the caller bounds that wait.
    /// `cluster` is set when the controller also listens on TCP (then the
    /// local CLI can create tokens).
    ///
    /// # Errors
    /// [`ServeError::Serve`] when the transport fails.
    pub async fn serve(
        &self,
        listener: UnixListener,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<(), ServeError> {
        let (controller, link) = self.apis(cluster, false);
        builder()
            .add_service(controller)
            .add_service(link)
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                self.stop.clone().cancelled_owned(),
            )
            .await
            .map_err(ServeError::Serve)
    }

    /// Serves the TCP port over TLS only: the CLI's API needs an admin
    /// certificate or a credential token (each call checked against its
    /// role), the worker link a worker certificate that is not revoked;
    /// only `Join` takes callers without one. Plain-text connections fail
    /// the handshake.
    ///
    /// # Errors
    /// [`ServeError::Serve`] when the TLS setup or the transport fails.
    pub async fn serve_tls(
        &self,
        listener: tokio::net::TcpListener,
        server: &ao_proto::pki::Credentials,
        cluster: Arc<Cluster>,
    ) -> Result<(), ServeError> {
        use ao_proto::pki::Role;
        let (controller, link) = self.apis(Some(cluster.clone()), true);
        let join = JoinService {
            cluster: cluster.clone(),
        };
        let role = |role| RequireRole {
            cluster: cluster.clone(),
            role,
        };
        builder()
            .tls_config(server.server_tls())
            .map_err(ServeError::Serve)?
            .add_service(controller)
            .add_service(InterceptedService::new(link, role(Role::Worker)))
            .add_service(
                pb::join_server::JoinServer::new(join)
                    .max_decoding_message_size(ao_proto::limits::MAX_JOIN_BYTES)
                    .max_encoding_message_size(ao_proto::limits::MAX_JOIN_BYTES),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                self.stop.clone().cancelled_owned(),
            )
            .await
            .map_err(ServeError::Serve)
    }
}

fn builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .trace_fn(call_span)
}

/// One span per call, a child of the caller's when it sent a
/// `traceparent`. Not for the worker link's streams: they live as long as
/// the worker, and what is sent on them carries its own context.
fn call_span(req: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let path = req.uri().path().trim_start_matches('/');
    let Some((service, method)) = path.split_once('/') else {
        return tracing::Span::none();
    };
    if service == "ao.v1.WorkerLink" {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "ao.rpc",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    );
    ao_proto::trace::follow_headers(&span, req.headers());
    span
}
