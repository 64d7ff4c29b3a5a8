//! The worker's side of the link: dial the controller, say hello with the
//! inventory, then carry reports and heartbeats up and commands down until
//! the stream breaks; reconnect with capped exponential backoff and jitter.
//!
//! Over TCP the worker presents the certificate it got from `ao worker
//! join` (read again at every dial, so a renewal takes effect on the next
//! connection) and renews it at two thirds of its life without touching
//! the open link or any session.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ao_proto::backoff::Backoff;
use ao_proto::dial::{self, ControllerAddr};
use ao_proto::pb;
use ao_proto::pki::{self, Credentials};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::assignment::Assignment;
use crate::link_types::{
    Downstream, OpenStream, RemoveWorkspace, Request, Stop, ToController, TunnelDown, TunnelUp,
    Tunnels, WorkspaceRemoved,
};
use crate::sessions::{errored, WorkerHandle, WorkerSettings};

const HEARTBEAT: Duration = Duration::from_secs(5);
/// A link up this long counts as healthy when it breaks.
const STABLE_LINK: Duration = Duration::from_secs(30);

/// Where the controller is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub addrs: Vec<ControllerAddr>,
    /// `ca.crt`, `tls.crt`, `tls.key` from `ao worker join`; needed for https.
    pub credentials: Option<PathBuf>,
}

/// Why the worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The controller refused us (revoked, wrong role or name): retrying
    /// cannot help; an admin must act.
    #[error("the controller refused this worker: {0}")]
    Refused(String),
}

/// Tunnels dialled on the connection of the link.
struct LinkTunnels(Channel);

#[async_trait::async_trait]
impl Tunnels for LinkTunnels {
    async fn open(
        &self,
        stream_id: u64,
        up: mpsc::Receiver<TunnelUp>,
    ) -> Result<Downstream, String> {
        let first = pb::TunnelUp {
            msg: Some(pb::tunnel_up::Msg::StreamId(stream_id)),
        };
        let up = tokio_stream::once(first).chain(ReceiverStream::new(up).map(pb::TunnelUp::from));
        let mut client = dial::worker_link_client(self.0.clone());
        let down = client
            .tunnel(up)
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        // An error ends it as the controller's end does.
        let down = down
            .map_while(Result::ok)
            .filter_map(|m| m.msg.map(TunnelDown::from));
        Ok(Box::pin(down))
    }
}

/// Hands a message of the controller to the actor, in the worker's terms.
/// One refused here is answered at once: the answer is returned.
async fn dispatch(
    handle: &WorkerHandle,
    msg: pb::controller_message::Msg,
    tunnels: &Arc<dyn Tunnels>,
) -> Option<pb::WorkerMessage> {
    use pb::controller_message::Msg;
    let request = match msg {
        Msg::Welcome(w) => {
            tracing::info!(controller = %w.controller_version, "linked to the controller");
            return None;
        }
        Msg::Assign(wire) => {
            let (id, epoch) = (wire.spec.as_ref().map(|s| s.session_id.clone()), wire.epoch);
            match Assignment::try_from(wire) {
                Ok(a) => Request::Assign(Box::new(a)),
                Err(e) => {
                    tracing::warn!("refusing an assignment: {e}");
                    // Without a spec there is no session to report on.
                    return id.map(|id| errored(id, epoch, e.to_string()).into());
                }
            }
        }
        Msg::Stop(s) => match Stop::try_from(s) {
            Ok(s) => Request::Stop(s),
            Err(e) => {
                tracing::warn!("refusing a stop: {e}");
                return None;
            }
        },
        Msg::Input(i) => Request::Input(i.into()),
        Msg::OpenStream(o) => match OpenStream::try_from(o) {
            Ok(o) => Request::OpenStream(o, tunnels.clone()),
            Err(e) => {
                tracing::warn!("refusing a stream: {e}");
                return None;
            }
        },
        Msg::Resync(_) => Request::Resync,
        Msg::RemoveWorkspace(wire) => {
            let (request_id, epoch) = (wire.request_id, wire.epoch);
            let session_id = wire.session_id.clone();
            match RemoveWorkspace::try_from(wire) {
                Ok(r) => Request::RemoveWorkspace(r),
                Err(e) => {
                    tracing::warn!("refusing a workspace removal: {e}");
                    let refused = WorkspaceRemoved {
                        request_id,
                        session_id,
                        epoch,
                        worktree: PathBuf::new(),
                        result: Err(e.to_string()),
                    };
                    return Some(ToController::WorkspaceRemoved(refused).into());
                }
            }
        }
    };
    handle.from_controller(request).await;
    None
}

/// Unix seconds now.
fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The TLS config of this worker, checked for expiry. Read at every dial:
/// a renewal, or a new `ao worker join` after an expiry, takes effect
/// without a restart.
fn tls(dir: Option<&Path>) -> Result<Option<ClientTlsConfig>, String> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let creds = Credentials::load(dir).map_err(|e| ao_proto::error_chain(&e))?;
    let (_, not_after) = creds.validity().map_err(|e| ao_proto::error_chain(&e))?;
    if not_after <= now_unix() {
        return Err(format!(
            "the worker certificate in {} expired at {}; join again with a new token (ao token create, ao worker join)",
            dir.display(),
            chrono::DateTime::from_timestamp(not_after, 0).unwrap_or_default()
        ));
    }
    Ok(Some(creds.client_tls()))
}

/// MemAvailable of this machine, in bytes (0 when unknown).
pub fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Runs until `shutdown` resolves, or the controller refuses us.
///
/// # Errors
/// [`LinkError`] when going on cannot help.
pub async fn run(
    config: LinkConfig,
    settings: Arc<WorkerSettings>,
    tmux_socket: String,
    handle: WorkerHandle,
    mut reports: mpsc::Receiver<ToController>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), LinkError> {
    tokio::pin!(shutdown);
    // Renewal lasts as long as the link: it stops when this returns.
    let _renewing = config
        .credentials
        .clone()
        .map(|dir| AbortOnDropHandle::new(tokio::spawn(renew_forever(config.addrs.clone(), dir))));
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let mut linked_at = None;
        let session = async {
            let tls = tls(config.credentials.as_deref()).map_err(Down::Retry)?;
            let (channel, addr) = dial::connect_any(&config.addrs, tls.as_ref())
                .await
                .map_err(|e| Down::Retry(ao_proto::error_chain(&e)))?;
            tracing::debug!(controller = %addr, "dialed");
            // What was queued while disconnected is superseded by the inventory.
            while reports.try_recv().is_ok() {}
            let hello = pb::Hello {
                worker_id: settings.id.clone(),
                hostname: settings.hostname.clone(),
                labels: settings.labels.clone().into_iter().collect(),
                max_sessions: settings.max_sessions,
                inventory: handle
                    .inventory()
                    .await
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                tmux_socket: tmux_socket.clone(),
                version: ao_proto::VERSION.into(),
                mem_available_bytes: mem_available(),
                memory_reserve_bytes: settings.memory_reserve,
            };
            let (tx, rx) = mpsc::channel(1024);
            tx.send(pb::WorkerMessage {
                msg: Some(pb::worker_message::Msg::Hello(hello)),
            })
            .await
            .map_err(|e| Down::Retry(e.to_string()))?;
            let mut client = ao_proto::dial::worker_link_client(channel.clone());
            let mut inbound = client
                .link(ReceiverStream::new(rx))
                .await
                .map_err(Down::from_status)?
                .into_inner();
            tracing::info!(controller = %addr, "linked");
            let tunnels: Arc<dyn Tunnels> = Arc::new(LinkTunnels(channel));
            linked_at = Some(tokio::time::Instant::now());
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            let mut seq = 0;
            loop {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(pb::ControllerMessage { msg: Some(m) })) => {
                            if let pb::controller_message::Msg::Welcome(w) = &m {
                                note_linked(&settings.home.worker_linked(), w);
                            }
                            if let Some(answer) = dispatch(&handle, m, &tunnels).await {
                                if tx.send(answer).await.is_err() {
                                    return Err(Down::Retry("link closed".into()));
                                }
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return Err(Down::Retry("the controller closed the link".into())),
                        Err(e) => return Err(Down::from_status(e)),
                    },
                    Some(out) = reports.recv() => {
                        if tx.send(out.into()).await.is_err() {
                            return Err(Down::Retry("link closed".into()));
                        }
                    }
                    _ = heartbeat.tick() => {
                        seq += 1;
                        let beat = pb::Heartbeat { seq, mem_available_bytes: mem_available() };
                        let beat = pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Heartbeat(beat)) };
                        if tx.send(beat).await.is_err() {
                            return Err(Down::Retry("link closed".into()));
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            result = session => {
                let e = match result {
                    Err(Down::Fatal(e)) => return Err(e),
                    Err(Down::Retry(e)) => e,
                    Ok::<std::convert::Infallible, Down>(never) => match never {},
                };
                // Only a link that held for a while starts the backoff over: one
                // that breaks right after the hello each time must not turn
                // into a reconnect storm.
                if linked_at.is_some_and(|t| t.elapsed() >= STABLE_LINK) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(controllers = ?config.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(), "link down: {e}; retrying in {delay:?}");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Records that a controller welcomed this worker, for `ao worker install`
/// to wait on: the controller sends Welcome once it counts the worker
/// connected. A failure to write only loses that signal.
fn note_linked(path: &Path, welcome: &pb::Welcome) {
    let text = format!(
        "pid {}\ncontroller {}\nat {}\n",
        std::process::id(),
        welcome.controller_version,
        chrono::Utc::now().to_rfc3339()
    );
    if let Err(e) = ao_proto::home::write_private(path, text.as_bytes()) {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

/// How one connection ended.
enum Down {
    Retry(String),
    Fatal(LinkError),
}

impl Down {
    fn from_status(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                Self::Fatal(LinkError::Refused(s.message().to_string()))
            }
            _ => Self::Retry(s.message().to_string()),
        }
    }
}

/// When to renew a certificate received at `received` and valid until
/// `not_after`: at two thirds of what was left of its life then. (Its
/// `notBefore` is backdated for clock skew, so it does not say.)
fn renew_at(received: i64, not_after: i64) -> i64 {
    received + (not_after - received) * 2 / 3
}

/// When the credential in `dir` was written (renewals rewrite it).
fn received(dir: &Path) -> i64 {
    std::fs::metadata(dir.join("tls.crt"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(now_unix, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// Renews the certificate in `dir` at two thirds of its life, forever.
/// A failed renewal is retried every 30 s (or sooner, near expiry); the
/// link and the sessions are not touched either way.
async fn renew_forever(addrs: Vec<ControllerAddr>, dir: PathBuf) {
    loop {
        let wait = match Credentials::load(&dir).and_then(|c| c.validity()) {
            Ok((_, not_after)) => {
                let left = renew_at(received(&dir), not_after) - now_unix();
                // Never in a tight loop, whatever the clock says.
                Duration::from_secs(u64::try_from(left).unwrap_or(0).max(1))
            }
            Err(e) => {
                tracing::error!("cannot read the worker certificate: {e}");
                Duration::from_secs(30)
            }
        };
        tokio::time::sleep(wait).await;
        match renew_once(&addrs, &dir).await {
            Ok(not_after) => tracing::info!(
                valid_until = %chrono::DateTime::from_timestamp(not_after, 0).unwrap_or_default(),
                "worker certificate renewed"
            ),
            Err(e) => {
                tracing::warn!("certificate renewal failed: {e}; retrying in 30 s");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}

/// One renewal: a new key and CSR made here, signed by the controller,
/// written atomically beside the CA. Returns the new expiry.
async fn renew_once(addrs: &[ControllerAddr], dir: &Path) -> Result<i64, String> {
    let current = Credentials::load(dir).map_err(|e| ao_proto::error_chain(&e))?;
    let tls = current.client_tls();
    let (channel, _) = dial::connect_any(addrs, Some(&tls))
        .await
        .map_err(|e| ao_proto::error_chain(&e))?;
    let name = current
        .identity()
        .map_err(|e| ao_proto::error_chain(&e))?
        .name;
    let (csr_pem, key_pem) = pki::new_csr(&name).map_err(|e| ao_proto::error_chain(&e))?;
    let cert_pem = ao_proto::dial::worker_link_client(channel)
        .renew(pb::RenewRequest { csr_pem })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .cert_pem;
    let renewed = Credentials {
        ca_pem: current.ca_pem,
        cert_pem,
        key_pem,
    };
    let (_, not_after) = renewed.validity().map_err(|e| ao_proto::error_chain(&e))?;
    renewed.save(dir).map_err(|e| ao_proto::error_chain(&e))?;
    Ok(not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds() {
        assert_eq!(renew_at(0, 90), 60);
        assert_eq!(renew_at(1000, 1000 + 86_400), 1000 + 57_600);
    }

    #[test]
    fn available_memory_is_read() {
        assert!(mem_available() > 0);
    }

    #[tokio::test]
    async fn ids_that_would_name_paths_or_tmux_targets_never_run() {
        use std::collections::BTreeMap;

        use ao_proto::home::Home;
        use ao_proto::pb::session_report::State;
        use tokio_util::task::TaskTracker;

        use crate::runtime::{Runtime, TmuxRuntime};

        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let runtime = Arc::new(TmuxRuntime::new(dir.path().join("tmux.sock")));
        let settings = Arc::new(WorkerSettings {
            id: "w".into(),
            hostname: "h".into(),
            home: Home::new(&home),
            labels: BTreeMap::new(),
            max_sessions: 10,
            memory_reserve: 0,
            poll_interval: Duration::from_secs(3600),
            controller: None,
        });
        let (reports, _rx) = mpsc::channel(16);
        let (worker, _task) =
            crate::sessions::start(settings, runtime.clone(), reports, TaskTracker::new()).await;
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let tunnels: Arc<dyn Tunnels> = Arc::new(LinkTunnels(channel));
        let assign = |session: &str, project: &str| {
            pb::controller_message::Msg::Assign(pb::Assign {
                spec: Some(pb::SessionSpec {
                    session_id: session.into(),
                    project_id: project.into(),
                    repo_path: dir.path().display().to_string(),
                    branch: "b".into(),
                    ..Default::default()
                }),
                epoch: 1,
                ..Default::default()
            })
        };
        for (session, project, rule) in [
            ("../escape", "app", "invalid session id \"../escape\""),
            ("lib.core-1", "app", "tmux target characters"),
            ("app-1", "../lib", "invalid project id \"../lib\""),
            ("#{pane_pid}", "app", "invalid session id"),
        ] {
            let answer = dispatch(&worker, assign(session, project), &tunnels).await;
            let Some(pb::WorkerMessage {
                msg: Some(pb::worker_message::Msg::Report(report)),
            }) = answer
            else {
                panic!("no report for {session}");
            };
            assert_eq!(report.session_id, session);
            assert_eq!(report.state(), State::Errored);
            assert!(report.reason.contains(rule), "{}", report.reason);
        }
        // A stop of such an id deletes nothing outside the worker's files.
        let outside = home.join("victim.json");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(&outside, "keep").unwrap();
        let stop = pb::controller_message::Msg::Stop(pb::Stop {
            session_id: "../../victim".into(),
            epoch: 1,
        });
        assert_eq!(dispatch(&worker, stop, &tunnels).await, None);
        assert!(worker.inventory().await.is_empty());
        assert!(outside.exists());
        assert!(!home.join("worktrees").exists());
        assert_eq!(runtime.list().await.unwrap(), []);
    }
}
