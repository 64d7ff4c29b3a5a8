//! gRPC handlers. They only translate between proto and domain types and
//! call the [`ControllerHandle`]; no store or runtime call lives here.

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use ao_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::attach::{self, AttachError, ViewerInput};
use crate::cluster::{Cluster, ClusterError};
use crate::config::{self, Config};
use crate::convert;
use crate::error::ControllerError;
use crate::events::{self, EventFilter};
use crate::handle::{ControllerHandle, Tunnel};
use crate::model::{rfc3339, SessionRecord};
use crate::scm::ScmError;
use crate::store::StoreError;

impl From<ControllerError> for Status {
    fn from(e: ControllerError) -> Self {
        // The cause of an event log failure travels too: a status is only a string.
        let msg = ao_proto::error_chain(&e);
        match e {
            ControllerError::UnknownProject { .. }
            | ControllerError::UnknownSession { .. }
            | ControllerError::UnknownAgent { .. }
            | ControllerError::UnknownWorker { .. } => Status::not_found(msg),
            ControllerError::NoConfig
            | ControllerError::WrongState { .. }
            | ControllerError::NotPlaced { .. }
            | ControllerError::EventLog { .. }
            | ControllerError::Store(StoreError::Misconfigured(_)) => {
                Status::failed_precondition(msg)
            }
            ControllerError::SessionExists { .. } => Status::aborted(msg),
            ControllerError::InvalidConfig(_)
            | ControllerError::ProjectNeeded { .. }
            | ControllerError::InvalidBranch(_)
            | ControllerError::ControlBytes(_)
            | ControllerError::TooLarge(_) => Status::invalid_argument(msg),
            ControllerError::WorkerUnavailable { .. }
            | ControllerError::NotDelivered { .. }
            | ControllerError::ShuttingDown
            | ControllerError::Deposed(_) => Status::unavailable(msg),
            ControllerError::Host { source, .. } => match source {
                ScmError::Auth(_) => Status::failed_precondition(msg),
                ScmError::NotFound(_) => Status::not_found(msg),
                ScmError::Throttled { .. } => Status::resource_exhausted(msg),
                ScmError::Other(_) => Status::unavailable(msg),
            },
            ControllerError::Store(StoreError::Unavailable(_)) => Status::unavailable(msg),
            ControllerError::Store(_) => Status::internal(msg),
        }
    }
}

impl From<AttachError> for Status {
    fn from(e: AttachError) -> Self {
        match e {
            AttachError::Controller(e) => e.into(),
            AttachError::Refused(why) => Status::failed_precondition(why),
            AttachError::Unavailable(why) => Status::unavailable(why),
        }
    }
}

impl From<ClusterError> for Status {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Refused(m) => Status::permission_denied(m),
            ClusterError::Invalid(m) => Status::invalid_argument(m),
            ClusterError::Store(e) => ControllerError::Store(e).into(),
        }
    }
}

/// Over TCP, every call but `Join` must come with a certificate of the
/// right role; the caller's identity rides along in the request.
#[derive(Clone)]
pub struct RequireRole {
    pub cluster: std::sync::Arc<Cluster>,
    pub role: ao_proto::pki::Role,
}

impl tonic::service::Interceptor for RequireRole {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let who = self.cluster.authorize(&req, self.role).map_err(|e| {
            tracing::warn!(remote = ?req.remote_addr(), "refused: {e}");
            Status::from(e)
        })?;
        req.extensions_mut().insert(who);
        Ok(req)
    }
}

/// How long `ao admin issue` credentials last unless asked otherwise.
const DEFAULT_ADMIN_TTL: Duration = Duration::from_secs(90 * 86400);

/// Reads are refused while the store is unavailable rather than served stale.
fn fresh(handle: &ControllerHandle) -> Result<std::sync::Arc<crate::handle::Snapshot>, Status> {
    let snap = handle.snapshot();
    match &snap.store_error {
        Some(e) => Err(Status::unavailable(e.clone())),
        None => Ok(snap),
    }
}

/// The first message of a client stream, which must be of one kind:
/// `pick` takes what the handler needs from it, or refuses it.
async fn first_message<T, U>(
    stream: &mut Streaming<T>,
    refusal: &str,
    pick: impl FnOnce(T) -> Option<U>,
) -> Result<U, Status> {
    stream
        .message()
        .await?
        .and_then(pick)
        .ok_or_else(|| Status::invalid_argument(refusal))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The CLI-facing service.
pub struct ControllerService {
    pub handle: ControllerHandle,
    pub home: String,
    pub schedules: crate::schedules::Schedules,
    /// Cancelled by `Shutdown`: the whole process stops.
    pub stop: CancellationToken,
    /// Set when the controller admits workers over TCP.
    pub cluster: Option<std::sync::Arc<Cluster>>,
    /// Owns the attach relays.
    pub tasks: TaskTracker,
}

impl ControllerService {
    /// A credential of role `r.role` made by `by`, with what a credential
    /// file needs to reach this controller over the network (when it listens).
    async fn create_credential(
        &self,
        r: pb::CreateTokenRequest,
        by: &str,
    ) -> Result<pb::CreateTokenResponse, Status> {
        let role = crate::access::Role::parse(&r.role).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown role `{}`: expected admin, operator, spawner or viewer",
                r.role
            ))
        })?;
        let ttl = (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds));
        let name = Some(r.name.as_str()).filter(|n| !n.is_empty());
        let (token, record) = self
            .handle
            .credentials()
            .create(role, name, ttl, by)
            .await?;
        tracing::info!(credential = %record.name, id = %record.id, role = role.as_str(), %by, "credential created");
        let cluster = self.cluster.as_deref();
        Ok(pb::CreateTokenResponse {
            token,
            expires_at: record.expires_at.as_ref().map(rfc3339).unwrap_or_default(),
            ca_hash: cluster.map(|c| c.ca_hash().to_string()).unwrap_or_default(),
            controller_url: cluster.map(|c| c.url().to_string()).unwrap_or_default(),
            credential: Some(convert::credential_to_pb(&record, chrono::Utc::now())),
            ca_pem: cluster.map(|c| c.ca_pem().to_string()).unwrap_or_default(),
        })
    }

    fn cluster(&self) -> Result<&Cluster, Status> {
        self.cluster.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "this controller does not admit workers over the network: run `ao controller init`, then start it with --listen HOST:PORT",
            )
        })
    }
}

#[tonic::async_trait]
impl pb::controller_server::Controller for ControllerService {
    async fn info(
        &self,
        _: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let snap = self.handle.snapshot();
        Ok(Response::new(pb::InfoResponse {
            version: ao_proto::VERSION.into(),
            pid: std::process::id(),
            store: self.handle.store().describe(),
            ao_home: self.home.clone(),
            workers_ready: snap
                .workers
                .values()
                .filter(|w| w.state == crate::model::WorkerState::Ready)
                .count() as u32,
            sessions: snap.sessions.size() as u32,
            projects: snap.projects(),
            controller_url: self
                .cluster
                .as_ref()
                .map(|c| c.url().to_string())
                .unwrap_or_default(),
        }))
    }

    async fn apply_config(
        &self,
        req: Request<pb::ApplyConfigRequest>,
    ) -> Result<Response<pb::ApplyConfigResponse>, Status> {
        let req = req.into_inner();
        let source = match req.source.as_str() {
            "" => "ApplyConfig",
            source => source,
        };
        let invalid = |message: String| ControllerError::InvalidConfig(message);
        if req.config_json.len() > config::MAX_CONFIG_JSON_BYTES {
            return Err(invalid(format!(
                "{source}: the config is {} bytes of JSON, more than the limit of {} bytes",
                req.config_json.len(),
                config::MAX_CONFIG_JSON_BYTES
            ))
            .into());
        }
        let config: Config = serde_json::from_str(&req.config_json)
            .map_err(|e| invalid(format!("{source}: {e}")))?;
        // The same rules as a file: ids reach paths and tmux names whoever sends them.
        config::validate_parsed(&config, Path::new(source)).map_err(|e| invalid(e.to_string()))?;
        let projects = self.handle.apply(config).await?;
        Ok(Response::new(pb::ApplyConfigResponse { projects }))
    }

    async fn spawn(
        &self,
        req: Request<pb::SpawnRequest>,
    ) -> Result<Response<pb::SpawnResponse>, Status> {
        let r = req.into_inner();
        let wait = r.wait;
        let s = self.handle.spawn(convert::spawn_args(r), wait).await?;
        Ok(Response::new(pb::SpawnResponse {
            session: Some(convert::session_to_pb(&s)),
        }))
    }

    async fn start_orchestrator(
        &self,
        req: Request<pb::StartOrchestratorRequest>,
    ) -> Result<Response<pb::StartOrchestratorResponse>, Status> {
        let r = req.into_inner();
        let started = self
            .handle
            .start_orchestrator(convert::non_empty(r.project_id), r.wait)
            .await?;
        Ok(Response::new(pb::StartOrchestratorResponse {
            session: Some(convert::session_to_pb(&started.session)),
            existing: started.existing,
        }))
    }

    async fn batch_spawn(
        &self,
        req: Request<pb::BatchSpawnRequest>,
    ) -> Result<Response<pb::BatchSpawnResponse>, Status> {
        let r = req.into_inner();
        let outcomes = self
            .handle
            .batch_spawn(
                r.project_id,
                r.issue_ids,
                convert::non_empty(r.agent),
                r.wait,
            )
            .await?;
        let results = outcomes.into_iter().map(convert::batch_result).collect();
        Ok(Response::new(pb::BatchSpawnResponse { results }))
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let r = req.into_inner();
        let snap = fresh(&self.handle)?;
        let projects = snap.projects();
        if !r.project_id.is_empty() && !projects.contains(&r.project_id) {
            return Err(Status::not_found(format!(
                "unknown project `{}` (known: {})",
                r.project_id,
                projects.join(", ")
            )));
        }
        let mut sessions: Vec<&SessionRecord> = snap
            .sessions
            .values()
            .map(AsRef::as_ref)
            .filter(|s| r.project_id.is_empty() || s.project_id == r.project_id)
            .filter(|s| r.include_ended || !s.status.is_ended())
            .collect();
        sessions.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(convert::session_to_pb).collect(),
            warnings: self.handle.forges().troubles(),
        }))
    }

    async fn get_session(
        &self,
        req: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let id = req.into_inner().session_id;
        let snap = fresh(&self.handle)?;
        let s = snap
            .sessions
            .get(&id)
            .ok_or(ControllerError::UnknownSession { id })?;
        Ok(Response::new(convert::session_detail_to_pb(s)))
    }

    async fn send(
        &self,
        req: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let r = req.into_inner();
        self.handle.send(r.session_id, r.text, r.raw).await?;
        Ok(Response::new(pb::SendResponse {
            delivered: true,
            detail: String::new(),
        }))
    }

    async fn kill(&self, req: Request<pb::KillRequest>) -> Result<Response<pb::Session>, Status> {
        let s = self.handle.kill(req.into_inner().session_id).await?;
        Ok(Response::new(convert::session_to_pb(&s)))
    }

    async fn cleanup(
        &self,
        req: Request<pb::CleanupRequest>,
    ) -> Result<Response<pb::CleanupResponse>, Status> {
        let r = req.into_inner();
        let project = convert::non_empty(r.project_id);
        let outcomes = self.handle.cleanup(project, r.dry_run).await?;
        Ok(Response::new(pb::CleanupResponse {
            results: outcomes.iter().map(convert::cleanup_to_pb).collect(),
        }))
    }

    async fn test_notifier(
        &self,
        req: Request<pb::TestNotifierRequest>,
    ) -> Result<Response<pb::TestNotifierResponse>, Status> {
        let id = req.into_inner().notifier;
        let config = self.handle.snapshot().config.clone();
        let Some(settings) = config.as_ref().and_then(|c| c.notifiers.get(&id)) else {
            return Err(Status::not_found(format!(
                "no notifier `{id}` in the applied config (notifiers.{id})"
            )));
        };
        let failed = |e: String| Status::failed_precondition(format!("notifier `{id}`: {e}"));
        let notifier = crate::notify::build(&id, settings).map_err(|e| failed(e.to_string()))?;
        let answer = notifier
            .send(&crate::notify::dispatch::test_notification(&id))
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Response::new(pb::TestNotifierResponse { answer }))
    }

    async fn list_schedules(
        &self,
        _: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let schedules = self.schedules.list();
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: schedules.iter().map(convert::schedule_to_pb).collect(),
        }))
    }

    async fn restore(
        &self,
        req: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let s = self.handle.restore(req.into_inner().session_id).await?;
        Ok(Response::new(convert::session_to_pb(&s)))
    }

    type LogsStream = BoxStream<pb::LogChunk>;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let stream = attach::logs(&self.handle, req.into_inner())
            .await?
            .map(|chunk| {
                chunk
                    .map(|data| pb::LogChunk { data })
                    .map_err(Status::unavailable)
            });
        Ok(Response::new(Box::pin(stream)))
    }

    type AttachStream = BoxStream<pb::AttachOutput>;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let who = caller_name(&req);
        let role = req.extensions().get::<crate::access::Caller>().cloned();
        let mut input = req.into_inner();
        let start = first_message(
            &mut input,
            "the first attach message must be `start`",
            |m| match m.msg {
                Some(pb::attach_input::Msg::Start(start)) => Some(start),
                _ => None,
            },
        )
        .await?;
        // The gate let observers in; typing into the agent is acting on it.
        if let (Some(caller), false) = (role, start.read_only) {
            caller
                .require(crate::access::Permission::Operate)
                .map_err(|s| {
                    Status::permission_denied(format!(
                        "{}; `ao attach --read-only` only watches",
                        s.message()
                    ))
                })?;
        }
        let keys = input.map_while(Result::ok).filter_map(|m| match m.msg {
            Some(pb::attach_input::Msg::Data(keys)) => Some(ViewerInput::Keys(keys)),
            Some(pb::attach_input::Msg::Resize(r)) => Some(ViewerInput::Resize {
                cols: r.cols,
                rows: r.rows,
            }),
            _ => None,
        });
        let req = convert::attach_request(start, who);
        let screen = attach::attach(&self.handle, &self.tasks, req, keys).await?;
        let out = ReceiverStream::new(screen).map(|o| {
            Ok(pb::AttachOutput {
                msg: Some(convert::viewer_output(o)),
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    type EventsStream = BoxStream<pb::Event>;

    async fn events(
        &self,
        req: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let r = req.into_inner();
        let filter = EventFilter {
            after_id: r.after_id,
            kind: r.r#type,
            session_id: r.session_id,
            project_id: r.project_id,
            tail: r.tail as usize,
            follow: r.follow,
        };
        let feed = events::feed(self.handle.store().clone(), filter);
        let out = ReceiverStream::new(feed).map(|e| match e {
            Ok(e) => Ok(convert::event_to_pb(&e)),
            Err(e) => Err(Status::from(ControllerError::from(e))),
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let snap = fresh(&self.handle)?;
        let workers = snap
            .workers
            .values()
            .map(|w| convert::worker_to_pb(w))
            .collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn drain_worker(
        &self,
        req: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::Worker>, Status> {
        let r = req.into_inner();
        let view = self.handle.drain(r.worker_id, r.undo).await?;
        Ok(Response::new(convert::worker_to_pb(&view)))
    }

    async fn remove_worker(
        &self,
        req: Request<pb::RemoveWorkerRequest>,
    ) -> Result<Response<pb::RemoveWorkerResponse>, Status> {
        let id = req.into_inner().worker_id;
        let local = self
            .handle
            .snapshot()
            .workers
            .get(&id)
            .is_some_and(|w| w.local);
        if local {
            return Err(Status::failed_precondition(format!(
                "worker `{id}` is connected and has no certificate to revoke (it dials the local socket): stop its process first, then remove it"
            )));
        }
        // Revoke first: once the link closes, a reconnect is refused.
        let revoked = match &self.cluster {
            Some(c) => c.revoke(&id).await?,
            None => 0,
        };
        match self.handle.remove_worker(id).await {
            Err(ControllerError::UnknownWorker { .. }) if revoked > 0 => {}
            other => other?,
        }
        Ok(Response::new(pb::RemoveWorkerResponse {
            revoked_certificates: revoked,
        }))
    }

    async fn list_tokens(
        &self,
        _: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let now = chrono::Utc::now();
        let mut tokens = Vec::new();
        if let Some(cluster) = &self.cluster {
            for (id, created, expires) in cluster.tokens().await? {
                tokens.push(pb::JoinToken {
                    id,
                    created_at: rfc3339(&created),
                    expires_at: rfc3339(&expires),
                    expired: expires <= now,
                });
            }
        }
        let credentials = self
            .handle
            .credentials()
            .list()
            .await
            .map_err(ControllerError::Store)?
            .iter()
            .map(|c| convert::credential_to_pb(c, now))
            .collect();
        Ok(Response::new(pb::ListTokensResponse {
            tokens,
            credentials,
        }))
    }

    async fn delete_token(
        &self,
        req: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<pb::DeleteTokenResponse>, Status> {
        let id = req.into_inner().id;
        let removed = self
            .handle
            .credentials()
            .remove(&id)
            .await
            .map_err(ControllerError::Store)?;
        match (removed, &self.cluster) {
            (Some(c), _) => {
                tracing::info!(credential = %c.name, id = %c.id, role = c.role.as_str(), "credential revoked");
            }
            (None, Some(cluster)) => cluster.delete_token(&id).await?,
            (None, None) => {
                return Err(Status::not_found(format!(
                    "no credential `{id}` (see `ao token ls`)"
                )))
            }
        }
        Ok(Response::new(pb::DeleteTokenResponse {}))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let by = caller_name(&req);
        let r = req.into_inner();
        if !r.role.is_empty() {
            return self.create_credential(r, &by).await.map(Response::new);
        }
        let cluster = self.cluster()?;
        let ttl = match r.ttl_seconds {
            0 => Duration::from_secs(3600),
            s => Duration::from_secs(s),
        };
        let (token, expires) = cluster.create_token(ttl).await?;
        Ok(Response::new(pb::CreateTokenResponse {
            token,
            expires_at: rfc3339(&expires),
            ca_hash: cluster.ca_hash().to_string(),
            controller_url: cluster.url().to_string(),
            credential: None,
            ca_pem: String::new(),
        }))
    }

    async fn issue_admin(
        &self,
        req: Request<pb::IssueAdminRequest>,
    ) -> Result<Response<pb::IssueAdminResponse>, Status> {
        let by = caller_name(&req);
        let cluster = self.cluster()?;
        let r = req.into_inner();
        let ttl = match r.ttl_seconds {
            0 => DEFAULT_ADMIN_TTL,
            s => Duration::from_secs(s),
        };
        let (cert_pem, record) = cluster.issue_admin(&r.name, &r.csr_pem, ttl, &by).await?;
        Ok(Response::new(pb::IssueAdminResponse {
            cert_pem,
            ca_pem: cluster.ca_pem().to_string(),
            serial: record.serial.clone(),
            expires_at: convert::admin_to_pb(&record).expires_at,
        }))
    }

    async fn list_admins(
        &self,
        _: Request<pb::ListAdminsRequest>,
    ) -> Result<Response<pb::ListAdminsResponse>, Status> {
        let admins = self.cluster()?.admins().await?;
        Ok(Response::new(pb::ListAdminsResponse {
            admins: admins.iter().map(convert::admin_to_pb).collect(),
        }))
    }

    async fn revoke_admin(
        &self,
        req: Request<pb::RevokeAdminRequest>,
    ) -> Result<Response<pb::RevokeAdminResponse>, Status> {
        let which = req.into_inner().name_or_serial;
        let revoked = self.cluster()?.revoke_admin(&which).await?;
        Ok(Response::new(pb::RevokeAdminResponse {
            revoked: revoked.iter().map(convert::admin_to_pb).collect(),
        }))
    }

    async fn shutdown(
        &self,
        _: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        self.stop.cancel();
        Ok(Response::new(pb::ShutdownResponse {}))
    }
}

/// The worker-facing service.
pub struct WorkerLinkService {
    pub handle: ControllerHandle,
    pub cluster: Option<std::sync::Arc<Cluster>>,
    /// Owns the link readers.
    pub tasks: TaskTracker,
}

/// The caller's certificate identity, put there by [`RequireRole`] (absent
/// on the local Unix socket, which only its owner can open).
fn caller<T>(req: &Request<T>) -> Option<ao_proto::pki::PeerIdentity> {
    req.extensions()
        .get::<ao_proto::pki::PeerIdentity>()
        .cloned()
}

/// Who is calling, as the gate established it (never what the client
/// says): a certificate's name, `token:<credential>`, or the local socket's
/// user as `local:<user>`.
fn caller_name<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<crate::access::Caller>()
        .map_or_else(|| "local".to_string(), |c| c.name.clone())
}

#[tonic::async_trait]
impl pb::worker_link_server::WorkerLink for WorkerLinkService {
    type LinkStream = BoxStream<pb::ControllerMessage>;

    async fn link(
        &self,
        req: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let who = caller(&req);
        let mut inbound = req.into_inner();
        let hello = first_message(
            &mut inbound,
            "the first message must be a hello",
            |m| match m.msg {
                Some(pb::worker_message::Msg::Hello(h)) => Some(h),
                _ => None,
            },
        )
        .await?;
        if hello.worker_id.is_empty() {
            return Err(Status::invalid_argument("hello without a worker id"));
        }
        if let Some(who) = who.as_ref().filter(|w| w.name != hello.worker_id) {
            tracing::warn!(cert = %who.name, hello = %hello.worker_id, "refused a worker speaking for another");
            return Err(Status::permission_denied(format!(
                "this certificate names worker `{}`, not `{}`",
                who.name, hello.worker_id
            )));
        }
        let (tx, rx) = mpsc::channel(1024);
        let worker = hello.worker_id.clone();
        let heard = crate::liveness::LastHeard::new();
        let admitted = match (&self.cluster, &who) {
            (Some(cluster), Some(who)) => {
                let (cluster, serial) = (cluster.clone(), who.serial.clone());
                Some(Box::new(move || !cluster.is_revoked(&serial)) as Box<_>)
            }
            _ => None,
        };
        let meta = crate::liveness::LinkMeta {
            heard: heard.clone(),
            admitted,
        };
        let conn = self.handle.worker_hello(hello, tx, meta).await;
        let handle = self.handle.clone();
        self.tasks.spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(pb::WorkerMessage { msg: Some(msg) })) => {
                        heard.stamp();
                        handle.worker_message(conn, worker.clone(), msg).await;
                    }
                    Ok(Some(_)) => heard.stamp(),
                    Ok(None) | Err(_) => break,
                }
            }
            handle.worker_gone(conn, worker).await;
        });
        let out = ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(out)))
    }

    type TunnelStream = BoxStream<pb::TunnelDown>;

    async fn tunnel(
        &self,
        req: Request<Streaming<pb::TunnelUp>>,
    ) -> Result<Response<Self::TunnelStream>, Status> {
        let who = caller(&req).map(|w| w.name);
        let mut inbound = req.into_inner();
        let stream_id = first_message(
            &mut inbound,
            "the first tunnel message must name its stream",
            |m| match m.msg {
                Some(pb::tunnel_up::Msg::StreamId(id)) => Some(id),
                _ => None,
            },
        )
        .await?;
        // The response carries the viewer's keys down, and ends when the
        // viewer side drops `down`, which tells the worker to stop.
        let (down, to_worker) = mpsc::channel::<pb::TunnelDown>(64);
        self.handle
            .tunnel_opened(stream_id, who, Tunnel { inbound, down })
            .await;
        Ok(Response::new(Box::pin(
            ReceiverStream::new(to_worker).map(Ok),
        )))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let (Some(cluster), Some(who)) = (&self.cluster, caller(&req)) else {
            return Err(Status::failed_precondition(
                "certificates are renewed only over the controller's TCP port",
            ));
        };
        let cert_pem = cluster.renew(&who, &req.into_inner().csr_pem).await?;
        tracing::info!(worker = %who.name, "renewed a worker certificate");
        Ok(Response::new(pb::RenewResponse { cert_pem }))
    }
}

/// `ao worker join`: a token and a CSR in, a certificate out. The only
/// call served to callers without a certificate.
pub struct JoinService {
    pub cluster: std::sync::Arc<Cluster>,
}

#[tonic::async_trait]
impl pb::join_server::Join for JoinService {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let remote = req.remote_addr();
        let r = req.into_inner();
        match self.cluster.join(&r.token, &r.worker_id, &r.csr_pem).await {
            Ok(cert_pem) => {
                tracing::info!(worker = %r.worker_id, ?remote, "worker joined with a token");
                Ok(Response::new(pb::JoinResponse {
                    worker_id: r.worker_id,
                    cert_pem,
                    ca_pem: self.cluster.ca_pem().to_string(),
                }))
            }
            Err(e) => {
                tracing::warn!(worker = %r.worker_id, ?remote, "join refused: {e}");
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn only_an_outage_is_retryable() {
        let outage = Status::from(ControllerError::Store(StoreError::Unavailable(
            "etcd at h:2379: no connection within 5s".into(),
        )));
        assert_eq!(outage.code(), Code::Unavailable);
        assert_eq!(
            outage.message(),
            "store unavailable: etcd at h:2379: no connection within 5s"
        );
        let settings = Status::from(ControllerError::Store(StoreError::Misconfigured(
            "no etcd endpoint given".into(),
        )));
        assert_eq!(settings.code(), Code::FailedPrecondition);
        let event_log = Status::from(ControllerError::EventLog {
            path: "/home/ao/events.jsonl".into(),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied"),
        });
        assert_eq!(event_log.code(), Code::FailedPrecondition);
        assert_eq!(
            event_log.message(),
            "cannot write the event log /home/ao/events.jsonl: permission denied"
        );
    }
}
