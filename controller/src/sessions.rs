//! The sessions service: one actor owns projects, sessions, workers and the
//! event log, and is the store's single writer. Everyone else holds a
//! [`ControllerHandle`]: commands go through a channel, reads come from a
//! published [`Snapshot`] (a read-only cache split from its writer).
//!
//! Worker links feed the same actor: a hello with the worker's inventory is
//! reconciled against the store (adopt what runs, re-send what was never
//! started, stop what was killed meanwhile), reports become coalesced status
//! changes and events.
//!
//! Here: its state, its commands and the write path. Its link-facing
//! methods are in `workers`, its background chores in `upkeep`, `ao
//! start`'s orchestrator session in `orchestrator`, the records of
//! schedules in `scheduling`; the pure steps it takes
//! are beside it ([`crate::commit`], [`crate::spawning`],
//! [`crate::orchestrator`], [`crate::reconcile`], [`crate::liveness`],
//! [`crate::pending`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ao_proto::{limits, pb};
use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};

use crate::commit::{Commit, Seen};
use crate::config::Config;
use crate::convert;
use crate::error::ControllerError;
use crate::events::{EventFile, EVENTS_KEPT};
use crate::handle::{
    BatchOutcome, Command, ControllerHandle, SessionMap, Snapshot, SpawnArgs, Tunnel, WorkerMap,
    WorkerView,
};
use crate::keys;
use crate::leader::Fence;
use crate::liveness::Worker;
use crate::loads::Loads;
use crate::model::{
    Activity, EventRecord, NewEvent, Priority, SessionRecord, SessionRole, SessionStatus,
    SCHEMA_VERSION,
};
use crate::notify::{self, dispatch::Queue};
use crate::pending::{Delivery, Pending};
use crate::spawning;
use crate::store::{decode, encode, Store, StoreError};
use crate::stored::{Loaded, StoredConfig};
use tracing::Instrument;

mod cleanup;
mod notifying;
mod orchestrator;
mod reacting;
mod scheduling;
mod upkeep;
mod workers;

/// How the controller judges workers, and how much history it keeps.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// A worker silent this long is `disconnected` (shown, no action).
    pub silent_after: Duration,
    /// A worker silent this long is `lost`: its sessions are marked stuck.
    pub worker_grace: Duration,
    /// The newest events the store keeps ([`EVENTS_KEPT`]).
    pub events_kept: u64,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            silent_after: Duration::from_secs(20),
            worker_grace: Duration::from_secs(120),
            events_kept: EVENTS_KEPT,
        }
    }
}

struct Actor {
    store: Arc<dyn Store>,
    config: Option<Arc<Config>>,
    sessions: SessionMap,
    /// Live sessions per worker, project and issue.
    loads: Loads,
    /// Last revision we wrote or read per key, for compare-and-swap.
    revs: HashMap<String, u64>,
    counters: HashMap<String, u64>,
    event_seq: u64,
    event_file: EventFile,
    /// An append failed: the file is caught up from the store before the next one.
    event_file_behind: bool,
    workers: BTreeMap<String, Worker>,
    /// Why a session waits for placement.
    unplaced: HashMap<String, String>,
    /// Assignments sent again because a reconnecting worker lacked them:
    /// the session's epoch and how many times.
    resent: HashMap<String, (u64, u32)>,
    settle_waiters: HashMap<String, Vec<oneshot::Sender<SessionRecord>>>,
    /// Inputs and tunnels asked of workers, until they answer.
    pending: Pending,
    publish: watch::Sender<Arc<Snapshot>>,
    /// The published workers' views, and the workers whose view is to be
    /// rebuilt at the next publish (changed, or their load did).
    worker_views: WorkerMap,
    stale_views: HashSet<String>,
    store_error: Option<String>,
    /// With several controllers: every write holds only while we lead.
    fence: Option<Fence>,
    /// Told of every committed write (`/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
    settings: ControllerSettings,
    /// Sessions with a reaction's message waiting to be typed, and the
    /// messages on their way to a worker now.
    outboxes: BTreeSet<String>,
    in_flight: HashSet<(String, crate::config::ReactionKey)>,
    /// Each project's own reaction states (`all-complete`), and the
    /// projects whose sessions changed since they were last judged.
    project_reactions: HashMap<String, crate::model::ReactionStates>,
    projects_changed: BTreeSet<String>,
    /// The notifications written and not yet delivered ([`crate::notify::dispatch`]).
    notifications: Queue,
    /// Each schedule's record ([`crate::schedules`]).
    schedules: crate::schedules::ScheduleRecords,
    /// Its own channel, for tasks that report back (a message typed).
    me: mpsc::WeakSender<Command>,
    /// Its background tasks (periodic commands to itself, the trim of old
    /// events); they stop when it is dropped.
    tickers: tokio::task::JoinSet<()>,
}

/// Loads the controller's state from `store`, repairs `events.jsonl` in
/// `home`, and starts the actor. It runs until every handle is dropped;
/// the caller owns its task.
///
/// # Errors
/// The store cannot be read, or the event file cannot be opened.
pub async fn start(
    store: Arc<dyn Store>,
    home: &Path,
    fence: Option<Fence>,
    settings: ControllerSettings,
) -> Result<(ControllerHandle, tokio::task::JoinHandle<()>), ControllerError> {
    let loaded = Loaded::read(store.as_ref()).await?;
    let events_path = ao_proto::home::Home::new(home).events();
    let event_file = EventFile::open(&events_path).map_err(|source| ControllerError::EventLog {
        path: events_path.clone(),
        source,
    })?;
    let (tx, rx) = mpsc::channel(1024);
    let (publish, snapshot) = watch::channel(Arc::new(Snapshot::default()));
    let metrics = Arc::new(crate::metrics::Metrics::new(fence.clone()));
    let mut actor = Actor {
        store: store.clone(),
        config: None,
        sessions: SessionMap::new_sync(),
        loads: Loads::default(),
        revs: HashMap::new(),
        counters: HashMap::new(),
        event_seq: 0,
        event_file,
        event_file_behind: false,
        workers: BTreeMap::new(),
        unplaced: HashMap::new(),
        resent: HashMap::new(),
        settle_waiters: HashMap::new(),
        pending: Pending::default(),
        publish,
        worker_views: WorkerMap::new_sync(),
        stale_views: HashSet::new(),
        store_error: None,
        fence,
        metrics: metrics.clone(),
        settings,
        outboxes: BTreeSet::new(),
        in_flight: HashSet::new(),
        project_reactions: HashMap::new(),
        projects_changed: BTreeSet::new(),
        notifications: Queue::new_sync(),
        schedules: Default::default(),
        me: tx.downgrade(),
        tickers: tokio::task::JoinSet::new(),
    };
    actor.adopt(loaded).await?;
    // Written by an older version, a stored config may break today's rules
    // (a shared session prefix, say): said until a fixed one is applied.
    if let Some(Err(e)) = actor
        .config
        .as_ref()
        .map(|c| crate::config::validate_parsed(c, Path::new("the stored config")))
    {
        tracing::warn!("{e}; apply a fixed config (ao apply -f)");
    }
    // A restarted controller judges no session before its worker reports.
    actor.publish();
    let trim_to = actor.event_seq.checked_sub(actor.settings.events_kept);
    let fence = actor.fence.clone();
    upkeep::start(
        &mut actor.tickers,
        &tx,
        store.clone(),
        fence.clone(),
        trim_to,
    );
    let task = tokio::spawn(actor.run(rx));
    let handle = ControllerHandle::new(tx, snapshot, store, fence, metrics);
    Ok((handle, task))
}

impl Actor {
    /// Takes what the store holds as the truth, keeping live worker links,
    /// and catches `events.jsonl` up with it.
    async fn adopt(&mut self, loaded: Loaded) -> Result<(), ControllerError> {
        self.config = loaded.config.map(Arc::new);
        self.sessions = loaded.sessions;
        self.loads = Loads::of(self.sessions.values().map(AsRef::as_ref));
        self.outboxes = reacting::with_outbox(self.sessions.values().map(AsRef::as_ref));
        self.project_reactions = loaded.project_reactions;
        self.notifications = loaded.notifications;
        self.schedules = Arc::new(loaded.schedules);
        self.projects_changed
            .extend(self.sessions.values().map(|s| s.project_id.clone()));
        self.revs = loaded.revs;
        self.counters = loaded.counters;
        self.event_seq = loaded.event_seq;
        let mut known = std::mem::take(&mut self.workers);
        for mut record in loaded.workers {
            // Keep what only memory knows: the link and the liveness. A
            // worker that said hello is not lost, whatever a write that
            // failed left in the store.
            let worker = match known.remove(&record.id) {
                Some(w) => {
                    let stale = record.lost && w.link.is_some();
                    record.lost &= !stale;
                    Worker {
                        record,
                        record_stale: stale,
                        ..w
                    }
                }
                None => Worker::new(record),
            };
            self.workers.insert(worker.record.id.clone(), worker);
        }
        // Linked workers whose record never reached the store stay linked.
        self.workers
            .extend(known.into_iter().filter(|(_, w)| w.link.is_some()));
        // Records and loads may all have changed; views of workers gone are dropped.
        let views = self.worker_views.keys().chain(self.workers.keys());
        self.stale_views.extend(views.cloned());
        // Sessions that wait for a worker wait again after a restart.
        for s in self.sessions.values() {
            if s.status == SessionStatus::Spawning && s.worker.is_none() {
                self.unplaced
                    .entry(s.id.clone())
                    .or_insert_with(|| "waiting for placement".into());
            }
        }
        self.catch_up_event_file().await
    }

    /// Appends to `events.jsonl` what the store has and the file lacks.
    async fn catch_up_event_file(&mut self) -> Result<(), ControllerError> {
        if self.event_file.last_id() >= self.event_seq {
            self.event_file_behind = false;
            return Ok(());
        }
        let path = self.event_file.path().to_path_buf();
        let io = |source| ControllerError::EventLog {
            path: path.clone(),
            source,
        };
        // Reopen: a failed append may have left a torn line.
        self.event_file = EventFile::open(&path).map_err(io)?;
        for v in self.store.list(keys::EVENTS).await?.items {
            let ev: EventRecord = decode(&v)?;
            self.event_file.append(&ev).map_err(io)?;
        }
        self.event_file_behind = false;
        Ok(())
    }

    /// After a write whose outcome is unknown (or refused), the store is
    /// read again: our revisions, sequence and sessions may be behind it.
    async fn reload(&mut self) {
        match Loaded::read(self.store.as_ref()).await {
            Ok(loaded) => {
                if let Err(e) = self.adopt(loaded).await {
                    tracing::error!(
                        "cannot catch up with the store: {}",
                        ao_proto::error_chain(&e)
                    );
                }
                self.publish();
            }
            Err(e) => tracing::warn!("cannot re-read the store yet: {e}"),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd).await;
        }
        tracing::debug!("sessions actor stopped");
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::InSpan(span, cmd) => {
                Box::pin(self.handle(*cmd)).instrument(span).await;
            }
            Command::Apply(config, reply) => {
                let _ = reply.send(self.apply(*config).await);
            }
            Command::Spawn(args, reply) => {
                let _ = reply.send(self.spawn(args).await);
            }
            Command::StartOrchestrator(project, reply) => {
                let _ = reply.send(self.start_orchestrator(project).await);
            }
            Command::BatchSpawn(project, spawns, reply) => {
                let _ = reply.send(self.batch_spawn(project, spawns).await);
            }
            Command::Send(id, text, raw, reply) => {
                let _ = reply.send(self.send_input(&id, text, raw, None));
            }
            Command::Kill(id, reply) => {
                let _ = reply.send(self.kill(&id).await);
            }
            Command::Restore(id, reply) => {
                let _ = reply.send(self.restore(&id).await);
            }
            Command::Cleanup(project, dry_run, reply) => {
                let _ = reply.send(self.cleanup(project, dry_run).await);
            }
            Command::Record(kind, id, message, data) => {
                if let Some(s) = self.session_copy(&id) {
                    let mut event = NewEvent::session(kind, Priority::Info, &s).message(message);
                    event.data = Some(data);
                    self.write_or_log(&[], vec![event]).await;
                }
            }
            Command::OpenStream(req, reply) => {
                let _ = reply.send(self.open_stream(req));
            }
            Command::TunnelOpened(stream_id, caller, tunnel) => {
                self.pending.tunnel_opened(stream_id, caller, tunnel);
            }
            Command::WaitSettled(id, waiter) => match self.sessions.get(&id) {
                // Settled, or waiting for a worker (which may take long):
                // answer now, with the reason in the summary.
                Some(s)
                    if (s.status != SessionStatus::Spawning && !self.stopping(s))
                        || self.unplaced.contains_key(&s.id) =>
                {
                    let _ = waiter.send(SessionRecord::clone(s));
                }
                Some(_) => self.settle_waiters.entry(id).or_default().push(waiter),
                None => {}
            },
            Command::WorkerHello(conn, hello, tx, meta) => {
                self.worker_hello(conn, hello, tx, meta).await
            }
            Command::WorkerMessage(conn, worker, msg) => {
                self.worker_message(conn, &worker, msg).await
            }
            Command::WorkerGone(conn, worker) => self.worker_gone(conn, &worker).await,
            Command::Drain(worker, undo, reply) => {
                let _ = reply.send(self.drain(&worker, undo).await);
            }
            Command::RemoveWorker(worker, reply) => {
                let _ = reply.send(self.remove_worker(&worker).await);
            }
            Command::StoreProbe(result) => self.store_probe(result).await,
            Command::Tick => {
                self.judge_workers().await;
                self.flush_outboxes();
                self.judge_projects().await;
            }
            Command::PrSeen(id, pr, logs, reply) => {
                let _ = reply.send(self.pr_seen(&id, &pr, &logs).await);
            }
            Command::MergeDone(id, number, sha, outcome) => {
                self.merge_done(&id, number, &sha, outcome).await;
            }
            Command::Typed(id, key, text, ok) => self.typed(&id, key, &text, ok).await,
            Command::Notified(key, delivery, reply) => {
                let _ = reply.send(self.notified(key, delivery).await);
            }
            Command::ScheduleWrite(name, expected, record, event, reply) => {
                let written = self.schedule_write(name, expected, *record, event).await;
                let _ = reply.send(written);
            }
        }
    }

    /// A copy of a session to change and write.
    fn session_copy(&self, id: &str) -> Option<SessionRecord> {
        self.sessions.get(id).map(|s| SessionRecord::clone(s))
    }

    /// A killed session whose worker has not yet confirmed the stop.
    fn stopping(&self, s: &SessionRecord) -> bool {
        s.status == SessionStatus::Killed && s.activity != Some(Activity::Exited)
    }

    /// A worker whose view the next publish rebuilds, found to change it.
    fn worker_mut(&mut self, id: &str) -> Option<&mut Worker> {
        self.stale_views.insert(id.to_string());
        self.workers.get_mut(id)
    }

    /// Publishes a snapshot: the sessions are shared, and only the workers'
    /// views marked stale are rebuilt, so a write costs the same with 10 or
    /// 1,000 workers.
    fn publish(&mut self) {
        for id in std::mem::take(&mut self.stale_views) {
            match self.workers.get(&id).map(|w| self.worker_view(w)) {
                Some(view) => self.worker_views.insert_mut(id, Arc::new(view)),
                None => {
                    self.worker_views.remove_mut(&id);
                }
            }
        }
        self.publish.send_replace(Arc::new(Snapshot {
            store_error: self.store_error.clone(),
            sessions: self.sessions.clone(),
            workers: self.worker_views.clone(),
            config: self.config.clone(),
            notifications: self.notifications.clone(),
            schedules: self.schedules.clone(),
        }));
    }

    fn worker_view(&self, w: &Worker) -> WorkerView {
        let sessions = self.loads.on_worker(&w.record.id);
        WorkerView::of(w, sessions, self.settings.worker_grace)
    }

    /// Writes sessions and events in one transaction guarded by the
    /// revisions we last saw, then updates memory, the event file and
    /// subscribers. Nothing changes in memory if the store refuses.
    async fn write(
        &mut self,
        sessions: &[&SessionRecord],
        extra: Vec<(String, Option<Vec<u8>>)>,
        events: Vec<NewEvent>,
    ) -> Result<(), ControllerError> {
        let mut commit = Commit::new(
            &Seen {
                fence: self.fence.as_ref(),
                revs: &self.revs,
                event_seq: self.event_seq,
                events_kept: self.settings.events_kept,
            },
            sessions,
            extra,
            events,
            Utc::now(),
        );
        let queued = match &self.config {
            Some(config) => notify::dispatch::enqueue(config, &commit.records),
            None => Vec::new(),
        };
        commit.create(queued.iter().map(|(k, e)| (k.clone(), encode(e))).collect());
        let began = tokio::time::Instant::now();
        let committed = self.store.commit(std::mem::take(&mut commit.txn)).await;
        self.metrics.store_write(began.elapsed());
        let rev = match committed {
            Ok(rev) => rev,
            Err(StoreError::Conflict { key })
                if self.fence.as_ref().is_some_and(|f| f.key == key) =>
            {
                let why = "another controller took the lead; this one refuses to write".to_string();
                tracing::error!("{why}");
                if let Some(f) = &self.fence {
                    f.deposed(why.clone());
                }
                return Err(ControllerError::Deposed(why));
            }
            Err(e) => {
                if matches!(e, StoreError::Unavailable(_)) && self.store_error.is_none() {
                    tracing::error!("{e}");
                    self.store_error = Some(e.to_string());
                    self.publish();
                }
                // A refused write means our view is behind the store; an
                // unanswered one may have applied. Either way, read again
                // (if the store answers) before the next write.
                self.reload().await;
                return Err(e.into());
            }
        };
        commit.note_revisions(&mut self.revs, rev);
        self.event_seq = commit.event_seq;
        for (key, event) in queued {
            self.notifications.insert_mut(key, Arc::new(event));
        }
        let merged = crate::cleanup::newly_merged(sessions, &self.sessions);
        self.metrics.committed(
            sessions
                .iter()
                .map(|s| (self.sessions.get(&s.id).map(AsRef::as_ref), *s)),
            &commit.records,
        );
        for s in sessions {
            if s.status.is_ended() {
                self.resent.remove(&s.id);
            }
            let before = self.sessions.get(&s.id);
            // Its load changes on the worker it leaves and the one it is on.
            let on = [before.and_then(|b| b.worker.clone()), s.worker.clone()];
            self.stale_views.extend(on.into_iter().flatten());
            self.loads.update(before.map(AsRef::as_ref), s);
            self.projects_changed.insert(s.project_id.clone());
            if s.reactions.values().any(|r| r.outbox.is_some()) {
                self.outboxes.insert(s.id.clone());
            } else {
                self.outboxes.remove(&s.id);
            }
            self.sessions
                .insert_mut(s.id.clone(), Arc::new((*s).clone()));
        }
        if self.event_file_behind {
            if let Err(e) = self.catch_up_event_file().await {
                tracing::error!(
                    "event log still behind the store: {}",
                    ao_proto::error_chain(&e)
                );
            }
        }
        for r in &commit.records {
            if self.event_file_behind {
                break;
            }
            if let Err(e) = self.event_file.append(r) {
                // The store has it; the file is caught up before the next append.
                tracing::error!(file = %self.event_file.path().display(), "event log append failed: {e}");
                self.event_file_behind = true;
            }
        }
        for r in &commit.records {
            tracing::info!(event = %r.kind, session = ?r.session_id, "{}", r.message.as_deref().unwrap_or(""));
        }
        for s in sessions {
            self.wake_waiters(s);
        }
        self.publish();
        for id in merged {
            self.cleanup_after_merge(&id);
        }
        Ok(())
    }

    fn wake_waiters(&mut self, s: &SessionRecord) {
        if s.status == SessionStatus::Spawning || self.stopping(s) {
            return;
        }
        if let Some(waiters) = self.settle_waiters.remove(&s.id) {
            for w in waiters {
                let _ = w.send(s.clone());
            }
        }
    }

    async fn apply(&mut self, config: Config) -> Result<Vec<String>, ControllerError> {
        let stored = StoredConfig {
            schema_version: SCHEMA_VERSION,
            config,
        };
        self.write(
            &[],
            vec![(keys::CONFIG.to_string(), Some(encode(&stored)))],
            vec![],
        )
        .await?;
        let projects = stored.config.projects.keys().cloned().collect();
        self.config = Some(Arc::new(stored.config));
        self.place_waiting().await;
        self.publish();
        Ok(projects)
    }

    fn config(&self) -> Result<&Config, ControllerError> {
        self.config.as_deref().ok_or(ControllerError::NoConfig)
    }

    fn check_project(&self, project: &str) -> Result<(), ControllerError> {
        spawning::project(self.config()?, project).map(drop)
    }

    fn session(&self, id: &str) -> Result<&SessionRecord, ControllerError> {
        self.sessions
            .get(id)
            .map(AsRef::as_ref)
            .ok_or_else(|| ControllerError::UnknownSession { id: id.to_string() })
    }

    async fn spawn(&mut self, args: SpawnArgs) -> Result<SessionRecord, ControllerError> {
        args.check()?;
        let last = self.counters.get(&args.project_id).copied().unwrap_or(0);
        // `write` checks a session key it holds no revision of as absent, so
        // a record this controller has not seen is refused, never overwritten.
        let taken = |id: &str| self.revs.contains_key(&keys::session(id));
        let (n, s) = spawning::new_session(self.config()?, &args, last, taken, Utc::now())?;
        let counter = (keys::counter(&args.project_id), Some(encode(&n)));
        let s = self.create(s, vec![counter]).await?;
        self.counters.insert(args.project_id, n);
        Ok(s)
    }

    /// Places, writes (with `extra` keys) and assigns a new session.
    ///
    /// # Errors
    /// Its assignment is over the link's limit, or the store refused (an id
    /// already taken there is [`ControllerError::SessionExists`]).
    async fn create(
        &mut self,
        mut s: SessionRecord,
        extra: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<SessionRecord, ControllerError> {
        let id = s.id.clone();
        // What the worker will be sent must fit its link: an assignment it
        // cannot read would break the link of every session on it.
        // Built once: measured here, sent after the write.
        let assignment = self.assignment(&s);
        if let Some(msg) = &assignment {
            limits::check(
                format!("the assignment of {id} (prompt, agent settings and env)"),
                convert::link_size(msg),
                limits::MAX_LINK_MESSAGE_BYTES,
            )?;
        }
        let placing = tracing::info_span!("ao.place", ao.session.id = %id, ao.worker.id = tracing::field::Empty);
        match placing.in_scope(|| self.place(&s)) {
            Ok(worker) => {
                placing.record("ao.worker.id", worker.as_str());
                s.worker = Some(worker);
            }
            Err(reason) => {
                s.summary = Some(format!("waiting for a worker: {reason}"));
                self.unplaced.insert(id.clone(), reason);
            }
        }
        drop(placing);
        let event = NewEvent::session("session.spawned", Priority::Info, &s);
        let commit = tracing::info_span!("ao.store.commit", ao.session.id = %id);
        match self
            .write(&[&s], extra, vec![event])
            .instrument(commit)
            .await
        {
            Err(ControllerError::Store(StoreError::Conflict { key }))
                if key == keys::session(&id) =>
            {
                return Err(ControllerError::SessionExists { id });
            }
            written => written?,
        }
        if let Some(msg) = assignment {
            self.to_worker(s.worker.as_deref(), msg);
        }
        Ok(s)
    }

    /// Spawns each of `spawns` (one per issue of `project`) but those whose issue has a live
    /// session already.
    async fn batch_spawn(
        &mut self,
        project: String,
        spawns: Vec<SpawnArgs>,
    ) -> Result<Vec<BatchOutcome>, ControllerError> {
        self.check_project(&project)?;
        let mut out = Vec::new();
        for args in spawns {
            let issue = args.issue_id.clone().unwrap_or_default();
            if let Some(existing) = self.loads.live_for_issue(&project, &issue) {
                out.push(BatchOutcome::Skipped {
                    existing: existing.to_string(),
                    issue,
                });
                continue;
            }
            out.push(match self.spawn(args).await {
                Ok(s) => BatchOutcome::Spawned(Box::new(s)),
                Err(e) => BatchOutcome::Failed {
                    issue,
                    error: e.to_string(),
                },
            });
        }
        Ok(out)
    }

    fn send_input(
        &mut self,
        id: &str,
        text: String,
        raw: bool,
        once_key: Option<String>,
    ) -> Result<oneshot::Receiver<Delivery>, ControllerError> {
        limits::check("the message", text.len(), limits::MAX_INPUT_BYTES)?;
        let s = self.session(id)?.clone();
        if s.status.is_ended() {
            return Err(ControllerError::WrongState {
                id: id.into(),
                status: s.status,
                action: "send",
                wanted: "live",
            });
        }
        let worker = self.linked_worker(&s)?;
        let request_id = self.pending.next_id();
        let msg = pb::controller_message::Msg::Input(pb::Input {
            request_id,
            session_id: id.to_string(),
            epoch: s.epoch,
            text,
            raw,
            once_key: once_key.unwrap_or_default(),
        });
        if !self.to_worker(Some(&worker), msg) {
            return Err(ControllerError::WorkerUnavailable {
                id: id.into(),
                worker,
            });
        }
        Ok(self.pending.input(request_id, worker))
    }

    async fn kill(&mut self, id: &str) -> Result<SessionRecord, ControllerError> {
        let mut s = self.session(id)?.clone();
        if s.status == SessionStatus::Killed {
            return Err(ControllerError::WrongState {
                id: id.into(),
                status: s.status,
                action: "kill",
                wanted: "not yet killed",
            });
        }
        s.status = SessionStatus::Killed;
        s.summary = Some("killed by request".into());
        // Without a worker link the stop is sent again when it reconnects.
        if !self.to_worker(s.worker.as_deref(), convert::stop(&s.id, s.epoch)) {
            s.activity = Some(Activity::Exited);
        }
        self.unplaced.remove(id);
        self.resent.remove(id);
        let revoked = orchestrator::revoke_credential(&mut s);
        let event = NewEvent::session("session.killed", Priority::Info, &s);
        self.write(&[&s], revoked.into_iter().collect(), vec![event])
            .await?;
        self.place_waiting().await;
        Ok(s)
    }

    async fn restore(&mut self, id: &str) -> Result<SessionRecord, ControllerError> {
        let mut s = self.session(id)?.clone();
        let dead = s.status.is_ended() || s.activity == Some(Activity::Exited);
        if !dead {
            return Err(ControllerError::WrongState {
                id: id.into(),
                status: s.status,
                action: "restore",
                wanted: "dead (killed, done, errored or exited)",
            });
        }
        self.check_project(&s.project_id)?;
        let worker = self.linked_worker(&s)?;
        s.worker = Some(worker);
        s.epoch += 1;
        s.status = SessionStatus::Spawning;
        s.activity = None;
        s.exit_code = None;
        s.summary = Some("restoring".into());
        let plan = ao_proto::report::restore_plan(&s.agent, s.agent_session_id.as_deref());
        let credential = match s.role {
            SessionRole::Orchestrator => vec![orchestrator::issue_credential(&mut s)],
            SessionRole::Worker => vec![],
        };
        let event = NewEvent::session("session.restored", Priority::Info, &s)
            .message(format!("{} restored: {plan}", s.id));
        self.write(&[&s], credential, vec![event]).await?;
        self.assign(&s);
        Ok(s)
    }

    fn open_stream(
        &mut self,
        mut req: pb::OpenStream,
    ) -> Result<oneshot::Receiver<Tunnel>, ControllerError> {
        let s = self.session(&req.session_id)?.clone();
        let worker = self.linked_worker(&s)?;
        req.stream_id = self.pending.next_id();
        let rx = self.pending.stream(req.stream_id, worker.clone());
        let id = req.session_id.clone();
        if !self.to_worker(Some(&worker), pb::controller_message::Msg::OpenStream(req)) {
            return Err(ControllerError::WorkerUnavailable { id, worker });
        }
        Ok(rx)
    }

    async fn write_or_log(&mut self, sessions: &[&SessionRecord], events: Vec<NewEvent>) {
        if let Err(e) = self.write(sessions, vec![], events).await {
            tracing::error!(
                sessions = ?sessions.iter().map(|s| &s.id).collect::<Vec<_>>(),
                "store write failed: {e}"
            );
        }
    }

    async fn store_probe(&mut self, result: Result<(), String>) {
        match (result, self.store_error.is_some()) {
            (Ok(()), true) => {
                tracing::info!("store available again; asking workers for a fresh report");
                self.store_error = None;
                // Writes that timed out may have applied: read the truth first.
                self.reload().await;
                // Reports that could not be written meanwhile are sent again.
                let links: Vec<String> = self.workers.keys().cloned().collect();
                for w in links {
                    self.to_worker(Some(&w), pb::controller_message::Msg::Resync(pb::Resync {}));
                }
                self.publish();
            }
            (Err(e), false) => {
                tracing::error!("{e}");
                self.store_error = Some(e);
                self.publish();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
