//! The cloneable face of the controller: the commands its actor takes and
//! the snapshot it publishes. The actor itself is in [`crate::sessions`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ao_proto::{input, pb};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Streaming;

use crate::access::Credentials;
use crate::cleanup::{Cleaning, Outcome, OutcomeKind};
use crate::config::Config;
use crate::error::ControllerError;
use crate::forge::Forges;
use crate::leader::Fence;
use crate::liveness::{LastHeard, LinkMeta, Worker};
use crate::metrics::Metrics;
use crate::model::{rfc3339, NewEvent, SessionRecord, SessionStatus, WorkerState};
use crate::store::Store;

pub use crate::model::SessionMap;
pub use crate::spawning::SpawnArgs;

/// Every worker's view by id, in id order; like [`SessionMap`], shared with
/// the snapshots, and a write rebuilds only the views of the workers it
/// touched.
pub type WorkerMap = rpds::RedBlackTreeMapSync<String, Arc<WorkerView>>;

/// What readers see without asking the actor.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Set while the store cannot be written or read: what is shown may be stale.
    pub store_error: Option<String>,
    pub sessions: SessionMap,
    pub workers: WorkerMap,
    /// The applied config, if any.
    pub config: Option<Arc<Config>>,
    /// The notifications waiting for delivery.
    pub notifications: crate::notify::Queue,
    /// Each schedule's record, by name.
    pub schedules: crate::schedules::ScheduleRecords,
}

impl Snapshot {
    /// The applied config's project ids, in id order.
    pub fn projects(&self) -> Vec<String> {
        self.config
            .as_ref()
            .map(|c| c.projects.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct WorkerView {
    pub id: String,
    pub hostname: String,
    pub state: WorkerState,
    pub labels: BTreeMap<String, String>,
    pub max_sessions: u32,
    pub sessions: u32,
    pub connected_at: Option<String>,
    /// When it last spoke, read when asked ([`WorkerView::last_seen_at`]):
    /// a view is rebuilt only when the worker changes.
    pub heard: Option<LastHeard>,
    pub tmux_socket: String,
    /// Why it is not ready, when it is not.
    pub reason: Option<String>,
    pub mem_available_bytes: u64,
    pub memory_reserve_bytes: u64,
    pub draining: bool,
    pub version: String,
    /// Linked through the local socket (no certificate).
    pub local: bool,
}

impl WorkerView {
    /// How `w`, with `sessions` live on it, is shown; `grace` is how long
    /// a silent worker has before it is lost.
    pub(crate) fn of(w: &Worker, sessions: u32, grace: Duration) -> Self {
        Self {
            id: w.record.id.clone(),
            hostname: w.record.hostname.clone(),
            state: w.state(),
            labels: w.record.labels.clone(),
            max_sessions: w.record.max_sessions,
            sessions,
            connected_at: w.link.as_ref().map(|l| rfc3339(&l.connected_at)),
            heard: w.heard_from.then(|| w.heard.clone()),
            tmux_socket: w.record.tmux_socket.clone(),
            reason: w.reason(grace),
            mem_available_bytes: w.mem_available,
            memory_reserve_bytes: w.record.memory_reserve_bytes,
            draining: w.record.draining,
            version: w.record.version.clone(),
            local: w.link.as_ref().is_some_and(|l| l.local),
        }
    }

    /// When the worker last said anything; `None` before its first hello
    /// to this controller.
    pub fn last_seen_at(&self) -> Option<String> {
        self.heard.as_ref().map(|heard| {
            let ago = chrono::Duration::from_std(heard.elapsed()).unwrap_or_default();
            rfc3339(&(chrono::Utc::now() - ago))
        })
    }
}

/// The orchestrator session `ao start` asked for.
#[derive(Debug, Clone)]
pub struct OrchestratorStart {
    pub session: SessionRecord,
    /// It was running already: nothing was started.
    pub existing: bool,
}

/// An open tunnel from a worker: its data, and a guard whose drop ends it.
pub struct Tunnel {
    pub inbound: Streaming<pb::TunnelUp>,
    /// Toward the worker (keys, window size); dropping it ends the stream.
    pub down: mpsc::Sender<pb::TunnelDown>,
}

type Reply<T> = oneshot::Sender<Result<T, ControllerError>>;

/// What the actor is asked to do; only handles send them.
pub(crate) enum Command {
    /// A command asked from within a span (a traced call): the actor runs
    /// it in that span, so that its placement and store commit join the
    /// caller's trace.
    InSpan(tracing::Span, Box<Command>),
    Apply(Box<Config>, Reply<Vec<String>>),
    Spawn(SpawnArgs, Reply<SessionRecord>),
    /// The project (`None`: the only one).
    StartOrchestrator(Option<String>, Reply<OrchestratorStart>),
    /// The project, and a spawn per issue (prepared as [`Forges::prepare_spawn`] does).
    BatchSpawn(String, Vec<SpawnArgs>, Reply<Vec<BatchOutcome>>),
    /// Session, text, raw.
    Send(
        String,
        String,
        bool,
        Reply<oneshot::Receiver<Result<(), String>>>,
    ),
    Kill(String, Reply<SessionRecord>),
    Restore(String, Reply<SessionRecord>),
    /// The project (`None`: every one), dry run.
    Cleanup(Option<String>, bool, Reply<Vec<Cleaning>>),
    OpenStream(pb::OpenStream, Reply<oneshot::Receiver<Tunnel>>),
    Record(&'static str, String, String, serde_json::Value),
    TunnelOpened(u64, Option<String>, Tunnel),
    WaitSettled(String, oneshot::Sender<SessionRecord>),
    WorkerHello(
        u64,
        pb::Hello,
        mpsc::Sender<pb::ControllerMessage>,
        LinkMeta,
    ),
    WorkerMessage(u64, String, pb::worker_message::Msg),
    WorkerGone(u64, String),
    Drain(String, bool, Reply<WorkerView>),
    RemoveWorker(String, Reply<()>),
    StoreProbe(Result<(), String>),
    Tick,
    /// A look at a session's PR, with its failing checks' log tails by
    /// name; the reply is the merge (number, head SHA) due, if any.
    PrSeen(
        String,
        Box<crate::scm::PullRequest>,
        Vec<(String, String)>,
        oneshot::Sender<Option<(u32, String)>>,
    ),
    /// How a merge the actor asked for went: session, PR, SHA, outcome.
    MergeDone(String, u32, String, crate::scm::MergeOutcome),
    /// A reaction's message was typed (true) or could not be (false).
    Typed(String, crate::config::ReactionKey, String, bool),
    /// How the delivery of a queued notification (its key) ended.
    Notified(String, crate::notify::Delivery, Reply<()>),
    /// A schedule's record, written if it is still done up to the given tick
    /// (`None`: it has none), with its event; the reply is whether it was.
    ScheduleWrite(
        String,
        Option<jiff::Timestamp>,
        Box<crate::schedules::ScheduleRecord>,
        Option<NewEvent>,
        Reply<bool>,
    ),
}

/// One issue of a batch spawn: a new session, or why none was made.
#[derive(Debug, Clone)]
pub enum BatchOutcome {
    Spawned(Box<SessionRecord>),
    Skipped { issue: String, existing: String },
    Failed { issue: String, error: String },
}

/// The cloneable face of the controller.
#[derive(Clone)]
pub struct ControllerHandle {
    tx: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    store: Arc<dyn Store>,
    next_conn: Arc<std::sync::atomic::AtomicU64>,
    /// Code hosts, reached here rather than in the actor: they may be slow.
    forges: Arc<Forges>,
    /// Credentials for people and automation (read on each use, not by the actor).
    credentials: Arc<Credentials>,
    metrics: Arc<Metrics>,
}

/// How long `ao session cleanup` waits for the workers' answers.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long `spawn --wait` and friends wait for the worker's word.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a waited spawn watches a running agent that has not yet shown
/// it waits for work, so that one exiting at once (bad flags, no
/// credentials) is reported as such rather than as `working`. The worker
/// sees an exit within its poll interval (0.5 s).
pub const EARLY_EXIT_WINDOW: Duration = Duration::from_secs(2);

fn early_exit_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + EARLY_EXIT_WINDOW
}

impl ControllerHandle {
    /// The handle of the actor that reads `tx` and publishes `snapshot`.
    pub(crate) fn new(
        tx: mpsc::Sender<Command>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        store: Arc<dyn Store>,
        fence: Option<Fence>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            metrics,
            tx,
            snapshot,
            credentials: Arc::new(Credentials::new(store.clone(), fence)),
            store,
            next_conn: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            forges: Arc::default(),
        }
    }

    /// The credentials of people and automation.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.clone()
    }

    /// The counts `/metrics` shows beside the snapshot's.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControllerError> {
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let cmd = match span.is_none() {
            true => make(tx),
            false => Command::InSpan(span, Box::new(make(tx))),
        };
        self.tx
            .send(cmd)
            .await
            .map_err(|_| ControllerError::ShuttingDown)?;
        rx.await.map_err(|_| ControllerError::ShuttingDown)?
    }

    /// The code hosts' clients, shared by every caller so that they
    /// share one rate budget per API base.
    pub fn forges(&self) -> Arc<Forges> {
        Arc::clone(&self.forges)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The published snapshots, for a task that follows their changes.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Stores `config`, which was validated by [`crate::config::load_file`] or
    /// [`crate::config::validate_parsed`], and places the sessions that wait. The GitHub
    /// tokens it needs are checked first.
    ///
    /// # Errors
    /// A GitHub of the config takes no token of this process
    /// ([`ControllerError::Host`]), or the store refused the write.
    pub async fn apply(&self, config: Config) -> Result<Vec<String>, ControllerError> {
        self.forges.check_config(&config).await?;
        self.ask(|r| Command::Apply(Box::new(config), r)).await
    }

    /// `args` with what its spawn reads from outside (its issue, the rules file).
    async fn prepared(&self, mut args: SpawnArgs) -> Result<SpawnArgs, ControllerError> {
        args.check()?;
        if let Some(config) = self.snapshot().config.clone() {
            self.forges.prepare_spawn(&config, &mut args).await?;
        }
        Ok(args)
    }

    /// Creates a session, for an issue of the project's tracker read first; with `wait`,
    /// returns once its agent runs or failed.
    ///
    /// # Errors
    /// Unknown project or agent, an issue the tracker does not have, or the store.
    #[tracing::instrument(name = "ao.spawn", skip_all, fields(ao.project.id = %args.project_id, ao.session.id))]
    pub async fn spawn(
        &self,
        args: SpawnArgs,
        wait: bool,
    ) -> Result<SessionRecord, ControllerError> {
        let args = self.prepared(args).await?;
        let s = self.ask(|r| Command::Spawn(args, r)).await?;
        tracing::Span::current().record("ao.session.id", s.id.as_str());
        if !wait {
            return Ok(s);
        }
        let s = self.settled(s).await;
        Ok(self.past_early_exit(s, early_exit_deadline()).await)
    }

    /// Starts the orchestrator session of `project` (`None`: the only one
    /// configured), restores it when it is dead, or finds it when it runs;
    /// with `wait`, a started one is returned once its agent runs or failed.
    ///
    /// # Errors
    /// No such project (or several and none given), an unknown
    /// `orchestrator.agent`, or the store.
    pub async fn start_orchestrator(
        &self,
        project: Option<String>,
        wait: bool,
    ) -> Result<OrchestratorStart, ControllerError> {
        let mut started = self.ask(|r| Command::StartOrchestrator(project, r)).await?;
        if wait && !started.existing {
            let s = self.settled(started.session).await;
            started.session = self.past_early_exit(s, early_exit_deadline()).await;
        }
        Ok(started)
    }

    /// # Errors
    /// Unknown project or agent, or the store.
    pub async fn batch_spawn(
        &self,
        project: String,
        issues: Vec<String>,
        agent: Option<String>,
        wait: bool,
    ) -> Result<Vec<BatchOutcome>, ControllerError> {
        // An issue that cannot be read fails alone; the others are spawned in one command.
        let mut prepared = Vec::with_capacity(issues.len());
        for issue in issues {
            let args = SpawnArgs {
                project_id: project.clone(),
                issue_id: Some(issue.clone()),
                agent: agent.clone(),
                ..SpawnArgs::default()
            };
            prepared.push(self.prepared(args).await.map_err(|e| BatchOutcome::Failed {
                issue,
                error: ao_proto::error_chain(&e),
            }));
        }
        let ready = prepared.iter().filter_map(|p| p.as_ref().ok().cloned());
        let ready = ready.collect();
        let mut spawned = self
            .ask(|r| Command::BatchSpawn(project, ready, r))
            .await?
            .into_iter();
        let outcomes: Vec<BatchOutcome> = prepared
            .into_iter()
            .filter_map(|p| match p {
                Ok(_) => spawned.next(),
                Err(failed) => Some(failed),
            })
            .collect();
        let mut out = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            out.push(match o {
                BatchOutcome::Spawned(s) if wait => {
                    BatchOutcome::Spawned(Box::new(self.settled(*s).await))
                }
                other => other,
            });
        }
        if wait {
            // One window for the whole batch: its agents started together.
            let deadline = early_exit_deadline();
            for o in &mut out {
                if let BatchOutcome::Spawned(s) = o {
                    **s = self
                        .past_early_exit(SessionRecord::clone(s), deadline)
                        .await;
                }
            }
        }
        Ok(out)
    }

    /// Waits until the session leaves `spawning` (or the timeout passes).
    async fn settled(&self, s: SessionRecord) -> SessionRecord {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::WaitSettled(s.id.clone(), tx))
            .await
            .is_err()
        {
            return s;
        }
        match tokio::time::timeout(SETTLE_TIMEOUT, rx).await {
            Ok(Ok(settled)) => settled,
            _ => self
                .snapshot()
                .sessions
                .get(&s.id)
                .map_or(s, |now| SessionRecord::clone(now)),
        }
    }

    /// `s` once its agent has ended, shown that it waits for work (idle,
    /// ready, needs input), or is still working at `deadline`.
    async fn past_early_exit(
        &self,
        mut s: SessionRecord,
        deadline: tokio::time::Instant,
    ) -> SessionRecord {
        let mut snapshots = self.snapshot.clone();
        while s.status == SessionStatus::Working {
            let Ok(Ok(())) = tokio::time::timeout_at(deadline, snapshots.changed()).await else {
                break;
            };
            // The snapshot may lag the record the waiter got: never step back.
            if let Some(now) = snapshots.borrow_and_update().sessions.get(&s.id) {
                if now.status != SessionStatus::Spawning {
                    s = SessionRecord::clone(now);
                }
            }
        }
        s
    }

    /// Types `text` into the session's agent and waits for the worker to
    /// confirm it arrived.
    ///
    /// # Errors
    /// Unknown or ended session, worker not connected, or not delivered.
    pub async fn send(&self, id: String, text: String, raw: bool) -> Result<(), ControllerError> {
        if !raw {
            input::check_text(&text)?;
        }
        let rx = self
            .ask(|r| Command::Send(id.clone(), text, raw, r))
            .await?;
        let outcome = tokio::time::timeout(Duration::from_secs(45), rx).await;
        match outcome {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(ControllerError::NotDelivered { id, reason }),
            Ok(Err(_)) => Err(ControllerError::NotDelivered {
                id,
                reason: "the worker disconnected".into(),
            }),
            Err(_) => Err(ControllerError::NotDelivered {
                id,
                reason: "no confirmation from the worker within 45 s".into(),
            }),
        }
    }

    /// # Errors
    /// Unknown or already killed session.
    pub async fn kill(&self, id: String) -> Result<SessionRecord, ControllerError> {
        let s = self.ask(|r| Command::Kill(id, r)).await?;
        Ok(self.settled(s).await)
    }

    /// # Errors
    /// Unknown or live session, or its worker is gone.
    pub async fn restore(&self, id: String) -> Result<SessionRecord, ControllerError> {
        let s = self.ask(|r| Command::Restore(id, r)).await?;
        let s = self.settled(s).await;
        Ok(self.past_early_exit(s, early_exit_deadline()).await)
    }

    /// Ends the finished sessions (of `project`) and has their workers
    /// remove their worktrees; with `dry_run`, only says what it would do.
    /// A worker that does not answer within [`CLEANUP_TIMEOUT`] leaves its
    /// sessions `failed` (they are cleaned when they are, or by a new run).
    ///
    /// # Errors
    /// An unknown project, or no config.
    pub async fn cleanup(
        &self,
        project: Option<String>,
        dry_run: bool,
    ) -> Result<Vec<Outcome>, ControllerError> {
        let asked = self.ask(|r| Command::Cleanup(project, dry_run, r)).await?;
        let deadline = tokio::time::Instant::now() + CLEANUP_TIMEOUT;
        let mut out = Vec::with_capacity(asked.len());
        for cleaning in asked {
            out.push(match cleaning {
                Cleaning::Done(o) => o,
                Cleaning::Asked(mut o, rx) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(answered)) => answered,
                    Ok(Err(_)) => {
                        o.kind = OutcomeKind::Unreachable;
                        o.detail = format!(
                            "worker {} disconnected before answering; run again",
                            o.worker.as_deref().unwrap_or_default()
                        );
                        o
                    }
                    Err(_) => {
                        o.kind = OutcomeKind::Failed;
                        o.detail = format!(
                            "no answer from worker {} within {} s",
                            o.worker.as_deref().unwrap_or_default(),
                            CLEANUP_TIMEOUT.as_secs()
                        );
                        o
                    }
                },
            });
        }
        Ok(out)
    }

    /// Asks the session's worker to stream its output back through a tunnel.
    ///
    /// # Errors
    /// Unknown session or its worker is not connected.
    pub async fn open_logs(
        &self,
        req: pb::LogsRequest,
    ) -> Result<oneshot::Receiver<Tunnel>, ControllerError> {
        let req = pb::OpenStream {
            stream_id: 0,
            session_id: req.session_id,
            follow: req.follow,
            tail_lines: req.tail_lines,
            attach: None,
            since_unix: req.since_unix,
        };
        self.ask(|r| Command::OpenStream(req, r)).await
    }

    /// Asks the session's worker for an interactive terminal.
    ///
    /// # Errors
    /// Unknown session or its worker is not connected.
    pub async fn open_terminal(
        &self,
        start: pb::AttachStart,
    ) -> Result<oneshot::Receiver<Tunnel>, ControllerError> {
        let req = pb::OpenStream {
            stream_id: 0,
            session_id: start.session_id.clone(),
            follow: true,
            tail_lines: 0,
            attach: Some(start),
            since_unix: 0,
        };
        self.ask(|r| Command::OpenStream(req, r)).await
    }

    /// Records an event about a session (e.g. who attached).
    pub async fn record(
        &self,
        kind: &'static str,
        session: &str,
        message: String,
        data: serde_json::Value,
    ) {
        let _ = self
            .tx
            .send(Command::Record(kind, session.to_string(), message, data))
            .await;
    }

    /// A worker opened the tunnel of `stream_id`; `caller` is the worker its
    /// certificate names (`None` on the local socket).
    pub async fn tunnel_opened(&self, stream_id: u64, caller: Option<String>, tunnel: Tunnel) {
        let _ = self
            .tx
            .send(Command::TunnelOpened(stream_id, caller, tunnel))
            .await;
    }

    /// A new worker link; returns its connection number.
    ///
    /// The caller stamps `meta.heard` whenever the link delivers a message.
    pub async fn worker_hello(
        &self,
        hello: pb::Hello,
        tx: mpsc::Sender<pb::ControllerMessage>,
        meta: LinkMeta,
    ) -> u64 {
        let conn = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self
            .tx
            .send(Command::WorkerHello(conn, hello, tx, meta))
            .await;
        conn
    }

    pub async fn worker_message(&self, conn: u64, worker: String, msg: pb::worker_message::Msg) {
        let _ = self
            .tx
            .send(Command::WorkerMessage(conn, worker, msg))
            .await;
    }

    pub async fn worker_gone(&self, conn: u64, worker: String) {
        let _ = self.tx.send(Command::WorkerGone(conn, worker)).await;
    }

    /// Stops (or, with `undo`, resumes) placing sessions on a worker.
    ///
    /// # Errors
    /// Unknown worker, or the store refused the write.
    pub async fn drain(&self, worker: String, undo: bool) -> Result<WorkerView, ControllerError> {
        self.ask(|r| Command::Drain(worker, undo, r)).await
    }

    /// Forgets a worker: its link is closed and its live sessions are
    /// marked stuck. Certificates are revoked by the caller.
    ///
    /// # Errors
    /// Unknown worker, or the store refused the write.
    /// Applies a look at session `id`'s PR (its status, events and
    /// reactions); returns the merge due (PR number, head SHA), if any.
    pub async fn pr_seen(
        &self,
        id: String,
        pr: crate::scm::PullRequest,
        logs: Vec<(String, String)>,
    ) -> Option<(u32, String)> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::PrSeen(id, Box::new(pr), logs, tx))
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Reports how the merge `pr_seen` asked for went.
    pub async fn merge_done(
        &self,
        id: String,
        number: u32,
        sha: String,
        outcome: crate::scm::MergeOutcome,
    ) {
        let _ = self
            .tx
            .send(Command::MergeDone(id, number, sha, outcome))
            .await;
    }

    /// Reports how the delivery of queued notification `key` ended: the
    /// actor removes it and records the outcome (nothing if it is gone).
    ///
    /// # Errors
    /// The store refused the write: the entry is still queued.
    pub async fn notified(
        &self,
        key: String,
        delivery: crate::notify::Delivery,
    ) -> Result<(), ControllerError> {
        self.ask(|r| Command::Notified(key, delivery, r)).await
    }

    /// Writes schedule `name`'s record, with `event`, if the stored one is
    /// still done up to `expected` (`None`: there is none); whether it was.
    /// The write holds only while this controller leads.
    ///
    /// # Errors
    /// The store refused the write.
    pub async fn schedule_write(
        &self,
        name: String,
        expected: Option<jiff::Timestamp>,
        record: crate::schedules::ScheduleRecord,
        event: Option<NewEvent>,
    ) -> Result<bool, ControllerError> {
        self.ask(|r| Command::ScheduleWrite(name, expected, Box::new(record), event, r))
            .await
    }

    pub async fn remove_worker(&self, worker: String) -> Result<(), ControllerError> {
        self.ask(|r| Command::RemoveWorker(worker, r)).await
    }
}
