//! The sessions service: one actor owns projects, sessions, workers and the
//! event log, and is the store's single writer. Everyone else holds a
//! [`ControllerHandle`]: commands go through a channel, reads come from a
//! published [`Snapshot`] (a read-only cache split from its writer).
//!
//! Worker links feed the same actor: a hello with the worker's inventory is
//! reconciled against the store (adopt what runs, re-send what was never
//! started, stop what was killed meanwhile), reports become coalesced status
//! changes and events.

use std::collections::{BTreeMap, HashMap, HashSet};
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
use crate::liveness::{LinkMeta, Worker, WorkerConn};
use crate::loads::Loads;
use crate::model::{
    rfc3339, Activity, EventRecord, NewEvent, Priority, SessionRecord, SessionStatus, WorkerRecord,
    WorkerState, SCHEMA_VERSION,
};
use crate::reconcile::{self, Report};
use crate::scheduler::{self, Candidate};
use crate::spawning;
use crate::store::{decode, encode, Precondition, Store, StoreError, Txn};
use crate::stored::{Loaded, StoredConfig};

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
    config: Option<Config>,
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
    inputs: HashMap<u64, (String, oneshot::Sender<Result<(), String>>)>,
    streams: HashMap<u64, (String, oneshot::Sender<Tunnel>)>,
    next_request: u64,
    publish: watch::Sender<Arc<Snapshot>>,
    /// The published workers' views, and the workers whose view is to be
    /// rebuilt at the next publish (changed, or their load did).
    worker_views: WorkerMap,
    stale_views: HashSet<String>,
    store_error: Option<String>,
    /// With several controllers: every write holds only while we lead.
    fence: Option<Fence>,
    settings: ControllerSettings,
    /// Its background tasks (periodic commands to itself, the trim of old
    /// events); they stop when it is dropped.
    tickers: tokio::task::JoinSet<()>,
}

/// How often the store's health is probed.
const STORE_PROBE: Duration = Duration::from_secs(2);
/// Sessions marked per store transaction when a worker is lost (each
/// takes a put, an event and the deletion of an old event; etcd allows 128
/// operations by default).
const MARK_BATCH: usize = 40;
/// How often workers' silence is judged.
const LIVENESS_TICK: Duration = Duration::from_secs(1);
/// Reconnects of a worker that still lacks a session's assignment before
/// the session is given up as `errored`.
const MAX_RESENDS: u32 = 5;

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
        inputs: HashMap::new(),
        streams: HashMap::new(),
        next_request: 1,
        publish,
        worker_views: WorkerMap::new_sync(),
        stale_views: HashSet::new(),
        store_error: None,
        fence,
        settings,
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
    if let Some(floor) = actor.event_seq.checked_sub(actor.settings.events_kept) {
        // In the background: a store that grew without the bound may take a
        // while, and serving does not wait for it.
        let (store, fence) = (store.clone(), actor.fence.clone());
        actor.tickers.spawn(async move {
            if let Err(e) = trim_events(store.as_ref(), fence.as_ref(), floor).await {
                tracing::warn!("trimming old events from the store stopped: {e}");
            }
        });
    }
    // A restarted controller judges no session before its worker reports.
    actor.publish();
    let probed = store.clone();
    actor
        .tickers
        .spawn(every(STORE_PROBE, tx.downgrade(), move || {
            let store = probed.clone();
            async move { Command::StoreProbe(probe_store(store.as_ref()).await) }
        }));
    // Workers' silence is judged on every tick.
    actor
        .tickers
        .spawn(every(LIVENESS_TICK, tx.downgrade(), || async {
            Command::Tick
        }));
    let task = tokio::spawn(actor.run(rx));
    Ok((ControllerHandle::new(tx, snapshot, store), task))
}

impl Actor {
    /// Takes what the store holds as the truth, keeping live worker links,
    /// and catches `events.jsonl` up with it.
    async fn adopt(&mut self, loaded: Loaded) -> Result<(), ControllerError> {
        self.config = loaded.config;
        self.sessions = loaded.sessions;
        self.loads = Loads::of(self.sessions.values().map(AsRef::as_ref));
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
            Command::Apply(config, reply) => {
                let _ = reply.send(self.apply(*config).await);
            }
            Command::Spawn(args, reply) => {
                let _ = reply.send(self.spawn(args).await);
            }
            Command::BatchSpawn(project, issues, agent, reply) => {
                let _ = reply.send(self.batch_spawn(project, issues, agent).await);
            }
            Command::Send(id, text, raw, reply) => {
                let _ = reply.send(self.send_input(&id, text, raw));
            }
            Command::Kill(id, reply) => {
                let _ = reply.send(self.kill(&id).await);
            }
            Command::Restore(id, reply) => {
                let _ = reply.send(self.restore(&id).await);
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
                match self.streams.remove(&stream_id) {
                    Some((owner, waiter)) if caller.as_ref().is_none_or(|c| *c == owner) => {
                        let _ = waiter.send(tunnel);
                    }
                    Some(pending) => {
                        tracing::warn!(stream_id, caller = ?caller, owner = %pending.0, "refused a tunnel opened by another worker");
                        self.streams.insert(stream_id, pending);
                    }
                    None => {}
                }
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
            Command::Tick => self.judge_workers().await,
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
        let projects = self
            .config
            .as_ref()
            .map(|c| c.projects.keys().cloned().collect())
            .unwrap_or_default();
        self.publish.send_replace(Arc::new(Snapshot {
            store_error: self.store_error.clone(),
            sessions: self.sessions.clone(),
            workers: self.worker_views.clone(),
            projects,
        }));
    }

    fn worker_view(&self, w: &Worker) -> WorkerView {
        WorkerView {
            id: w.record.id.clone(),
            hostname: w.record.hostname.clone(),
            state: w.state(),
            labels: w.record.labels.clone(),
            max_sessions: w.record.max_sessions,
            sessions: self.loads.on_worker(&w.record.id),
            connected_at: w.link.as_ref().map(|l| rfc3339(&l.connected_at)),
            heard: w.heard_from.then(|| w.heard.clone()),
            tmux_socket: w.record.tmux_socket.clone(),
            reason: w.reason(self.settings.worker_grace),
            mem_available_bytes: w.mem_available,
            memory_reserve_bytes: w.record.memory_reserve_bytes,
            draining: w.record.draining,
            version: w.record.version.clone(),
            local: w.link.as_ref().is_some_and(|l| l.local),
        }
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
        let rev = match self.store.commit(std::mem::take(&mut commit.txn)).await {
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
        for s in sessions {
            if s.status.is_ended() {
                self.resent.remove(&s.id);
            }
            let before = self.sessions.get(&s.id);
            // Its load changes on the worker it leaves and the one it is on.
            let on = [before.and_then(|b| b.worker.clone()), s.worker.clone()];
            self.stale_views.extend(on.into_iter().flatten());
            self.loads.update(before.map(AsRef::as_ref), s);
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
        self.config = Some(stored.config);
        self.place_waiting().await;
        self.publish();
        Ok(projects)
    }

    fn config(&self) -> Result<&Config, ControllerError> {
        self.config.as_ref().ok_or(ControllerError::NoConfig)
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
        let (n, mut s) = spawning::new_session(self.config()?, &args, last, taken, Utc::now())?;
        let id = s.id.clone();
        let counter_key = keys::counter(&args.project_id);
        // What the worker will be sent must fit its link: an assignment it
        // cannot read would break the link of every session on it.
        // Built once: measured here, sent after the write.
        let assignment = self.assignment(&s);
        if let Some(msg) = &assignment {
            limits::check(
                format!("the assignment of {id} (prompt, agent settings and env)"),
                link_size(msg),
                limits::MAX_LINK_MESSAGE_BYTES,
            )?;
        }
        match self.place(&s) {
            Ok(worker) => s.worker = Some(worker),
            Err(reason) => {
                s.summary = Some(format!("waiting for a worker: {reason}"));
                self.unplaced.insert(id.clone(), reason);
            }
        }
        let event = NewEvent::session("session.spawned", Priority::Info, &s);
        match self
            .write(&[&s], vec![(counter_key, Some(encode(&n)))], vec![event])
            .await
        {
            Err(ControllerError::Store(StoreError::Conflict { key }))
                if key == keys::session(&id) =>
            {
                return Err(ControllerError::SessionExists { id });
            }
            written => written?,
        }
        self.counters.insert(args.project_id, n);
        if let Some(msg) = assignment {
            self.to_worker(s.worker.as_deref(), msg);
        }
        Ok(s)
    }

    async fn batch_spawn(
        &mut self,
        project: String,
        issues: Vec<String>,
        agent: Option<String>,
    ) -> Result<Vec<BatchOutcome>, ControllerError> {
        self.check_project(&project)?;
        let mut out = Vec::new();
        for issue in issues {
            if let Some(existing) = self.loads.live_for_issue(&project, &issue) {
                out.push(BatchOutcome::Skipped {
                    existing: existing.to_string(),
                    issue,
                });
                continue;
            }
            let args = SpawnArgs {
                project_id: project.clone(),
                issue_id: Some(issue.clone()),
                agent: agent.clone(),
                ..SpawnArgs::default()
            };
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

    fn place(&self, s: &SessionRecord) -> Result<String, String> {
        let project = self
            .config
            .as_ref()
            .and_then(|c| c.projects.get(&s.project_id));
        if let Some(cap) = project.and_then(|p| p.capacity) {
            // Not counting the session itself, should it hold a place already.
            let itself = self.sessions.get(&s.id).is_some_and(|o| Loads::counts(o));
            let live = self.loads.of_project(&s.project_id) - u32::from(itself);
            if live >= cap {
                return Err(format!(
                    "project {} is at its capacity of {cap} live sessions",
                    s.project_id
                ));
            }
        }
        let candidates: Vec<Candidate<'_>> = self
            .workers
            .values()
            .map(|w| Candidate {
                id: &w.record.id,
                state: w.state(),
                labels: &w.record.labels,
                max_sessions: w.record.max_sessions,
                sessions: self.loads.on_worker(&w.record.id),
                mem_available: w.mem_available,
                memory_reserve: w.record.memory_reserve_bytes,
            })
            .collect();
        scheduler::place(&candidates, &s.labels).map(str::to_string)
    }

    /// The assignment of `s` as its worker is sent it; `None` once its
    /// project is no longer configured.
    fn assignment(&self, s: &SessionRecord) -> Option<pb::controller_message::Msg> {
        let config = self.config.as_ref()?;
        let project = config.projects.get(&s.project_id)?;
        let assign = convert::assign(s, project, config.agents.get(&s.agent));
        Some(pb::controller_message::Msg::Assign(assign))
    }

    /// Sends the session's current assignment to its worker, if connected.
    fn assign(&mut self, s: &SessionRecord) {
        let Some(msg) = self.assignment(s) else {
            tracing::warn!(session = %s.id, "project no longer configured; not assigning");
            return;
        };
        self.to_worker(s.worker.as_deref(), msg);
    }

    fn to_worker(&self, worker: Option<&str>, msg: pb::controller_message::Msg) -> bool {
        let Some(link) = worker
            .and_then(|w| self.workers.get(w))
            .and_then(|w| w.link.as_ref())
        else {
            return false;
        };
        // Requests are checked against smaller content limits before they
        // get here; this is the last guard for the link itself.
        let size = link_size(&msg);
        if size > limits::MAX_LINK_MESSAGE_BYTES {
            tracing::error!(
                worker = ?worker,
                size,
                limit = limits::MAX_LINK_MESSAGE_BYTES,
                "not sending a message over the link limit"
            );
            return false;
        }
        link.tx
            .try_send(pb::ControllerMessage { msg: Some(msg) })
            .is_ok()
    }

    fn send_input(
        &mut self,
        id: &str,
        text: String,
        raw: bool,
    ) -> Result<oneshot::Receiver<Result<(), String>>, ControllerError> {
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
        let request_id = self.next_request;
        self.next_request += 1;
        let msg = pb::controller_message::Msg::Input(pb::Input {
            request_id,
            session_id: id.to_string(),
            epoch: s.epoch,
            text,
            raw,
        });
        let (tx, rx) = oneshot::channel();
        if !self.to_worker(Some(&worker), msg) {
            return Err(ControllerError::WorkerUnavailable {
                id: id.into(),
                worker,
            });
        }
        self.inputs.insert(request_id, (worker, tx));
        Ok(rx)
    }

    fn linked_worker(&self, s: &SessionRecord) -> Result<String, ControllerError> {
        let Some(worker) = s.worker.clone() else {
            return Err(ControllerError::NotPlaced {
                id: s.id.clone(),
                reason: self.unplaced.get(&s.id).cloned().unwrap_or_default(),
            });
        };
        match self.workers.get(&worker) {
            Some(w) if w.link.is_some() => Ok(worker),
            _ => Err(ControllerError::WorkerUnavailable {
                id: s.id.clone(),
                worker,
            }),
        }
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
        let stop = pb::controller_message::Msg::Stop(pb::Stop {
            session_id: s.id.clone(),
            epoch: s.epoch,
        });
        // Without a worker link the stop is sent again when it reconnects.
        if !self.to_worker(s.worker.as_deref(), stop) {
            s.activity = Some(Activity::Exited);
        }
        self.unplaced.remove(id);
        self.resent.remove(id);
        let event = NewEvent::session("session.killed", Priority::Info, &s);
        self.write(&[&s], vec![], vec![event]).await?;
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
        let event = NewEvent::session("session.restored", Priority::Info, &s);
        self.write(&[&s], vec![], vec![event]).await?;
        self.assign(&s);
        Ok(s)
    }

    fn open_stream(
        &mut self,
        mut req: pb::OpenStream,
    ) -> Result<oneshot::Receiver<Tunnel>, ControllerError> {
        let s = self.session(&req.session_id)?.clone();
        let worker = self.linked_worker(&s)?;
        req.stream_id = self.next_request;
        self.next_request += 1;
        let (tx, rx) = oneshot::channel();
        self.streams.insert(req.stream_id, (worker.clone(), tx));
        let id = req.session_id.clone();
        if !self.to_worker(Some(&worker), pb::controller_message::Msg::OpenStream(req)) {
            return Err(ControllerError::WorkerUnavailable { id, worker });
        }
        Ok(rx)
    }

    async fn worker_hello(
        &mut self,
        conn: u64,
        hello: pb::Hello,
        tx: mpsc::Sender<pb::ControllerMessage>,
        meta: LinkMeta,
    ) {
        if meta.admitted.as_ref().is_some_and(|still| !still()) {
            // Dropping `tx` ends the stream; its next dial is refused.
            tracing::warn!(worker = %hello.worker_id, "refused the hello of a revoked worker");
            return;
        }
        let now = Utc::now();
        let id = hello.worker_id.clone();
        let previous = self.workers.get(&id).map(|w| &w.record);
        let record = WorkerRecord {
            schema_version: SCHEMA_VERSION,
            id: id.clone(),
            hostname: hello.hostname.clone(),
            labels: hello.labels.clone().into_iter().collect(),
            max_sessions: hello.max_sessions,
            tmux_socket: hello.tmux_socket.clone(),
            first_seen_at: previous.map_or(now, |r| r.first_seen_at),
            memory_reserve_bytes: hello.memory_reserve_bytes,
            // Draining is the admin's word and outlives reconnects.
            draining: previous.is_some_and(|r| r.draining),
            lost: false,
            version: hello.version.clone(),
        };
        let known = previous.is_some();
        // Requests in flight on a replaced link will never be answered.
        self.inputs.retain(|_, (w, _)| *w != id);
        self.streams.retain(|_, (w, _)| *w != id);
        let changed = self.workers.get(&id).map(|w| &w.record) != Some(&record);
        let _ = tx.try_send(pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::Welcome(pb::Welcome {
                controller_version: ao_proto::VERSION.into(),
                heartbeat_interval_ms: 5_000,
            })),
        });
        let mut worker = Worker::new(record.clone());
        worker.heard = meta.heard;
        worker.heard_from = true;
        worker.link = Some(WorkerConn {
            local: meta.admitted.is_none(),
            conn,
            tx,
            connected_at: now,
        });
        worker.mem_available = hello.mem_available_bytes;
        self.workers.insert(id.clone(), worker);
        self.stale_views.insert(id.clone());
        let kind = if known {
            "worker.reconnected"
        } else {
            "worker.joined"
        };
        let extra = if changed {
            vec![(keys::worker(&id), Some(encode(&record)))]
        } else {
            vec![]
        };
        let event = NewEvent::worker(kind, Priority::Info, &id)
            .message(format!("worker {id} on {} connected", record.hostname));
        if let Err(e) = self.write(&[], extra, vec![event]).await {
            tracing::error!(worker = %id, "recording the worker failed: {e}");
        }
        self.reconcile_inventory(&id, hello.inventory).await;
        self.place_waiting().await;
    }

    /// The worker's inventory is the truth about what runs; the store is the
    /// truth about what should.
    async fn reconcile_inventory(&mut self, worker: &str, inventory: Vec<pb::SessionReport>) {
        let mut seen = std::collections::HashSet::new();
        for report in inventory {
            seen.insert(report.session_id.clone());
            let report = match Report::try_from(report) {
                Ok(report) => report,
                Err(e) => {
                    tracing::warn!(worker, "ignoring a report: {e}");
                    continue;
                }
            };
            let Some(s) = self.session_copy(&report.session_id) else {
                tracing::warn!(worker, session = %report.session_id, "worker holds a session the store does not know; leaving it alone");
                continue;
            };
            if s.worker.as_deref() != Some(worker) {
                tracing::warn!(worker, session = %s.id, "session belongs to another worker; stopping this copy");
                self.to_worker(Some(worker), stop_msg(&report.session_id, report.epoch));
                continue;
            }
            if s.status == SessionStatus::Killed && report.is_alive() {
                self.to_worker(Some(worker), stop_msg(&s.id, s.epoch));
            } else if report.epoch < s.epoch && !s.status.is_ended() {
                // The newer assignment never arrived.
                self.resend(worker, &s).await;
            } else {
                self.apply_report(worker, report).await;
            }
        }
        let missing: Vec<SessionRecord> = self
            .sessions
            .values()
            .filter(|s| s.worker.as_deref() == Some(worker) && !seen.contains(&s.id))
            .map(|s| SessionRecord::clone(s))
            .collect();
        for mut s in missing {
            match s.status {
                SessionStatus::Spawning => self.resend(worker, &s).await,
                SessionStatus::Killed if s.activity != Some(Activity::Exited) => {
                    s.activity = Some(Activity::Exited);
                    self.write_or_log(&[&s], vec![]).await;
                }
                status if !status.is_ended() => {
                    s.status = SessionStatus::Errored;
                    s.activity = Some(Activity::Exited);
                    let reason = "its runtime ended while the worker was away";
                    s.summary = Some(reason.into());
                    let event = NewEvent::session("session.errored", Priority::Warning, &s)
                        .message(format!("{}: {reason}", s.id));
                    self.write_or_log(&[&s], vec![event]).await;
                }
                _ => {}
            }
        }
    }

    /// Sends again an assignment that a reconnecting worker lacks. One that
    /// a worker never takes, however often it reconnects, is given up as
    /// `errored`: re-sending it forever would only keep the link breaking.
    async fn resend(&mut self, worker: &str, s: &SessionRecord) {
        let tries = match self.resent.get(&s.id) {
            Some((epoch, n)) if *epoch == s.epoch => n + 1,
            _ => 1,
        };
        if tries <= MAX_RESENDS {
            self.resent.insert(s.id.clone(), (s.epoch, tries));
            self.assign(s);
            return;
        }
        self.resent.remove(&s.id);
        let mut s = s.clone();
        let reason = format!(
            "worker {worker} was sent this session's assignment {} times and never took it; \
             see the worker's log, then `ao session restore {}`",
            MAX_RESENDS + 1,
            s.id
        );
        s.status = SessionStatus::Errored;
        s.activity = Some(Activity::Exited);
        s.summary = Some(reason.clone());
        let event = NewEvent::session("session.errored", Priority::Warning, &s)
            .message(format!("{}: {reason}", s.id));
        self.write_or_log(&[&s], vec![event]).await;
    }

    async fn write_or_log(&mut self, sessions: &[&SessionRecord], events: Vec<NewEvent>) {
        if let Err(e) = self.write(sessions, vec![], events).await {
            tracing::error!(
                sessions = ?sessions.iter().map(|s| &s.id).collect::<Vec<_>>(),
                "store write failed: {e}"
            );
        }
    }

    /// Places sessions that waited for a worker.
    async fn place_waiting(&mut self) {
        let waiting: Vec<String> = self.unplaced.keys().cloned().collect();
        for id in waiting {
            let Some(mut s) = self.session_copy(&id) else {
                self.unplaced.remove(&id);
                continue;
            };
            if s.status != SessionStatus::Spawning || s.worker.is_some() {
                self.unplaced.remove(&id);
                continue;
            }
            match self.place(&s) {
                Ok(worker) => {
                    s.worker = Some(worker);
                    s.summary = None;
                    self.unplaced.remove(&id);
                    if self.write(&[&s], vec![], vec![]).await.is_ok() {
                        self.assign(&s);
                    }
                }
                Err(reason) => {
                    // `ao status` tells why it still waits.
                    let summary = Some(format!("waiting for a worker: {reason}"));
                    if s.summary != summary {
                        s.summary = summary;
                        self.write_or_log(&[&s], vec![]).await;
                    }
                    self.unplaced.insert(id, reason);
                }
            }
        }
    }

    async fn worker_message(&mut self, conn: u64, worker: &str, msg: pb::worker_message::Msg) {
        let Some(w) = self.worker_mut(worker) else {
            return;
        };
        if w.link.as_ref().map(|l| l.conn) != Some(conn) {
            // A message from a replaced connection: ignore it.
            return;
        }
        if w.silent {
            w.silent = false;
            let event = NewEvent::worker("worker.reconnected", Priority::Info, worker)
                .message(format!("worker {worker} is heard from again"));
            self.write_or_log(&[], vec![event]).await;
            self.publish();
            self.place_waiting().await;
        }
        match msg {
            pb::worker_message::Msg::Heartbeat(beat) => {
                let Some(w) = self.worker_mut(worker) else {
                    return;
                };
                let reserve = w.record.memory_reserve_bytes;
                let before = scheduler::memory_allows(w.mem_available, reserve);
                w.mem_available = beat.mem_available_bytes;
                if !before && scheduler::memory_allows(w.mem_available, reserve) {
                    // Memory freed up: room may have appeared.
                    self.place_waiting().await;
                }
            }
            pb::worker_message::Msg::Hello(_) => {}
            pb::worker_message::Msg::Report(report) => {
                let report = match Report::try_from(report) {
                    Ok(report) => report,
                    Err(e) => return tracing::warn!(worker, "ignoring a report: {e}"),
                };
                let current = self.sessions.get(&report.session_id).map(|s| s.epoch);
                match current {
                    Some(epoch) if epoch == report.epoch => {
                        self.apply_report(worker, report).await;
                    }
                    Some(epoch) => tracing::warn!(
                        worker, session = %report.session_id, report_epoch = report.epoch, epoch,
                        "refusing a stale report"
                    ),
                    None => {
                        tracing::warn!(worker, session = %report.session_id, "report for an unknown session")
                    }
                }
            }
            pb::worker_message::Msg::InputResult(r) => {
                if self
                    .inputs
                    .get(&r.request_id)
                    .is_some_and(|(w, _)| w != worker)
                {
                    tracing::warn!(
                        worker,
                        request = r.request_id,
                        "refused an input result for another worker's request"
                    );
                    return;
                }
                if let Some((_, waiter)) = self.inputs.remove(&r.request_id) {
                    let _ = waiter.send(if r.delivered { Ok(()) } else { Err(r.error) });
                }
            }
        }
    }

    /// Turns a worker's report into the session's coalesced status.
    async fn apply_report(&mut self, worker: &str, r: Report) {
        let Some(s) = self.session_copy(&r.session_id) else {
            return;
        };
        if s.worker.as_deref() != Some(worker) {
            return;
        }
        if r.epoch == s.epoch {
            // The worker holds the assignment it was sent.
            self.resent.remove(&s.id);
        }
        let (next, events) = reconcile::next_status(&s, &r, Utc::now());
        if next != s {
            self.write_or_log(&[&next], events).await;
            if next.status.is_ended() && !s.status.is_ended() {
                // Room may have appeared for a session waiting on capacity.
                self.place_waiting().await;
            }
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

    async fn worker_gone(&mut self, conn: u64, worker: &str) {
        let Some(w) = self.worker_mut(worker) else {
            return;
        };
        if w.link.as_ref().map(|l| l.conn) != Some(conn) {
            return;
        }
        w.link = None;
        // Already reported when it fell silent.
        let announced = std::mem::take(&mut w.silent) || w.record.lost;
        self.inputs.retain(|_, (w, _)| w != worker);
        self.streams.retain(|_, (w, _)| w != worker);
        if !announced {
            let event = NewEvent::worker("worker.disconnected", Priority::Warning, worker)
                .message(format!("worker {worker} disconnected: its link closed"));
            self.write_or_log(&[], vec![event]).await;
        }
        self.publish();
        // Waiting sessions say why they wait, and that has changed.
        self.place_waiting().await;
    }

    /// Judges every worker's silence: `disconnected` after
    /// `silent_after` (shown only), `lost` after the grace (its sessions
    /// are marked stuck and its link, if any, is closed so that it comes
    /// back with a fresh inventory).
    async fn judge_workers(&mut self) {
        let (silent_after, grace) = (self.settings.silent_after, self.settings.worker_grace);
        let store_ok = self.store_error.is_none();
        let mut fell_silent = Vec::new();
        let mut lost = Vec::new();
        for w in self.workers.values_mut() {
            let verdict = w.judge(silent_after, grace, store_ok);
            if verdict.fell_silent {
                self.stale_views.insert(w.record.id.clone());
                fell_silent.push((w.record.id.clone(), verdict.quiet));
            }
            if verdict.lost {
                lost.push((w.record.id.clone(), verdict.quiet));
            }
        }
        for (id, quiet) in &fell_silent {
            let event =
                NewEvent::worker("worker.disconnected", Priority::Warning, id).message(format!(
                    "worker {id} disconnected: no heartbeat for {}s",
                    quiet.as_secs()
                ));
            self.write_or_log(&[], vec![event]).await;
        }
        if !fell_silent.is_empty() {
            self.place_waiting().await;
        }
        for (id, quiet) in lost {
            let reason = format!(
                "worker {id} lost: no word from it for {}s (grace {}s)",
                quiet.as_secs(),
                grace.as_secs()
            );
            // Failures are logged; the next tick tries again.
            let _ = self.mark_lost(&id, "worker.lost", &reason, false).await;
        }
        let stale: Vec<WorkerRecord> = self
            .workers
            .values()
            .filter(|w| w.record_stale)
            .map(|w| w.record.clone())
            .collect();
        for record in stale {
            let key = keys::worker(&record.id);
            if self
                .write(&[], vec![(key, Some(encode(&record)))], vec![])
                .await
                .is_ok()
            {
                if let Some(w) = self.workers.get_mut(&record.id) {
                    w.record_stale = false;
                }
            }
        }
        // The countdown in `ao worker ls` moves.
        let disconnected: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.state() == WorkerState::Disconnected)
            .map(|w| w.record.id.clone())
            .collect();
        if !fell_silent.is_empty() || !disconnected.is_empty() {
            self.stale_views.extend(disconnected);
            self.publish();
        }
    }

    /// Marks a worker lost (or removed): one event for it, and every live
    /// session it held becomes `stuck` with the reason. Nothing is
    /// restarted elsewhere: a worker that comes back re-adopts its sessions.
    ///
    /// With `remove`, the worker's record is deleted in the same
    /// transaction (`ao worker rm`).
    async fn mark_lost(
        &mut self,
        id: &str,
        kind: &'static str,
        reason: &str,
        remove: bool,
    ) -> Result<(), ControllerError> {
        let Some(w) = self.worker_mut(id) else {
            return Err(ControllerError::UnknownWorker { id: id.into() });
        };
        w.silent = false;
        // Dropping the sender ends the response stream: a half-open
        // connection comes back through a new hello.
        w.link = None;
        let mut record = w.record.clone();
        record.lost = true;
        let mut sessions = Vec::new();
        for s in self.sessions.values() {
            // Already stuck (a retry after a failed write): nothing to add.
            let done = s.status == SessionStatus::Stuck;
            if s.worker.as_deref() != Some(id) || s.status.is_ended() || done {
                continue;
            }
            let mut s = SessionRecord::clone(s);
            s.summary = Some(reason.to_string());
            // A session not yet started stays `spawning`: its assignment
            // is sent again when the worker is back or, if the worker was
            // removed, it is placed elsewhere under a new epoch.
            if s.status == SessionStatus::Spawning && remove {
                s.worker = None;
                s.epoch += 1;
                s.summary = Some(format!("waiting for a worker: {reason}"));
            } else if s.status != SessionStatus::Spawning {
                s.status = SessionStatus::Stuck;
                s.activity = None;
            }
            sessions.push(s);
        }
        // In batches (etcd caps the operations of one transaction), the
        // worker's own record last: if a batch fails, the next tick (or
        // `ao worker rm` again) carries on from where it stopped.
        let mut result = Ok(());
        for batch in sessions.chunks(MARK_BATCH) {
            let events = batch
                .iter()
                .filter(|s| s.status == SessionStatus::Stuck)
                .map(|s| {
                    NewEvent::session("session.stuck", Priority::Urgent, s)
                        .message(format!("{}: {reason}", s.id))
                })
                .collect();
            let refs: Vec<&SessionRecord> = batch.iter().collect();
            result = self.write(&refs, vec![], events).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            let change = (!remove).then(|| encode(&record));
            let event = NewEvent::worker(kind, Priority::Urgent, id).message(reason);
            result = self
                .write(&[], vec![(keys::worker(id), change)], vec![event])
                .await;
        }
        self.inputs.retain(|_, (w, _)| w != id);
        self.streams.retain(|_, (w, _)| w != id);
        match &result {
            Ok(()) if remove => {
                self.workers.remove(id);
                self.stale_views.insert(id.to_string());
                for s in sessions.iter().filter(|s| s.worker.is_none()) {
                    self.unplaced
                        .insert(s.id.clone(), "its worker was removed".into());
                }
            }
            Ok(()) => {
                if let Some(w) = self.worker_mut(id) {
                    w.record = record;
                }
            }
            Err(e) => tracing::error!(worker = id, "recording the loss failed: {e}"),
        }
        self.publish();
        // Sessions it held elsewhere, and every waiting session's reason.
        self.place_waiting().await;
        result
    }

    async fn drain(&mut self, id: &str, undo: bool) -> Result<WorkerView, ControllerError> {
        let w = self
            .workers
            .get(id)
            .ok_or_else(|| ControllerError::UnknownWorker { id: id.into() })?;
        let mut record = w.record.clone();
        record.draining = !undo;
        let (kind, what) = if undo {
            ("worker.resumed", "accepts new sessions again")
        } else {
            ("worker.drained", "takes no new sessions")
        };
        let event =
            NewEvent::worker(kind, Priority::Info, id).message(format!("worker {id} {what}"));
        self.write(
            &[],
            vec![(keys::worker(id), Some(encode(&record)))],
            vec![event],
        )
        .await?;
        if let Some(w) = self.worker_mut(id) {
            w.record = record;
        }
        self.publish();
        if undo {
            self.place_waiting().await;
        }
        Ok(self.worker_view(&self.workers[id]))
    }

    async fn remove_worker(&mut self, id: &str) -> Result<(), ControllerError> {
        if !self.workers.contains_key(id) {
            return Err(ControllerError::UnknownWorker { id: id.into() });
        }
        let reason = format!("worker {id} was removed (ao worker rm)");
        self.mark_lost(id, "worker.removed", &reason, true).await
    }
}

/// Reads one key and says how it went.
async fn probe_store(store: &dyn Store) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(5), store.get(keys::CONFIG)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "store unavailable: {} did not answer within 5 s",
            store.describe()
        )),
    }
}

/// Sends the actor the command `next` makes, every `period`, until the
/// actor is gone.
async fn every<F, Fut>(period: Duration, actor: mpsc::WeakSender<Command>, mut next: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Command>,
{
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let command = next().await;
        let Some(actor) = actor.upgrade() else {
            return;
        };
        if actor.send(command).await.is_err() {
            return;
        }
    }
}

/// Deletes from the store the events up to id `floor` that a version
/// without the bound (or with a larger one) left there; new writes trim as
/// they go. A batch per transaction, each fenced like every write.
async fn trim_events(
    store: &dyn Store,
    fence: Option<&Fence>,
    floor: u64,
) -> Result<(), StoreError> {
    let last_old = keys::event(floor);
    let old: Vec<String> = store
        .list(keys::EVENTS)
        .await?
        .items
        .into_iter()
        .map(|v| v.key)
        .filter(|key| *key <= last_old)
        .collect();
    if !old.is_empty() {
        tracing::info!(events = old.len(), "trimming old events from the store");
    }
    for batch in old.chunks(100) {
        let mut txn = Txn::default();
        if let Some(f) = fence {
            txn = txn.check(f.key.clone(), Precondition::Revision(f.revision));
        }
        for key in batch {
            txn = txn.delete(key.clone());
        }
        store.commit(txn).await?;
    }
    Ok(())
}

/// The encoded size of a message to a worker: its content plus an upper
/// bound for the envelope's tag and length.
fn link_size(msg: &pb::controller_message::Msg) -> usize {
    msg.encoded_len() + 16
}

fn stop_msg(session: &str, epoch: u64) -> pb::controller_message::Msg {
    pb::controller_message::Msg::Stop(pb::Stop {
        session_id: session.to_string(),
        epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_event_log_that_cannot_be_opened_is_not_a_store_outage() {
        let home = tempfile::tempdir().unwrap();
        let store =
            crate::store::embedded::EmbeddedStore::open(&home.path().join("store.redb")).unwrap();
        // A directory where the file should be: opening it for appending fails.
        std::fs::create_dir(home.path().join("events.jsonl")).unwrap();
        let started = start(Arc::new(store), home.path(), None, Default::default()).await;
        assert!(
            matches!(&started, Err(ControllerError::EventLog { path, .. }) if path.ends_with("events.jsonl")),
            "{:?}",
            started.err()
        );
    }

    fn hello(id: &str) -> pb::Hello {
        pb::Hello {
            worker_id: id.into(),
            hostname: format!("{id}.host"),
            ..Default::default()
        }
    }

    /// The published views follow every change of a worker and of its
    /// load, though a write rebuilds only the views it touched.
    #[tokio::test]
    async fn published_worker_views_follow_their_workers() {
        let home = tempfile::tempdir().unwrap();
        let store =
            crate::store::embedded::EmbeddedStore::open(&home.path().join("store.redb")).unwrap();
        let (handle, _task) = start(Arc::new(store), home.path(), None, Default::default())
            .await
            .unwrap();
        let config = crate::config::parse_str(
            "projects:\n  app:\n    path: /src/app\n",
            Path::new("/ao.yaml"),
            &|_| None,
        )
        .unwrap();
        handle.apply(config).await.unwrap();
        let mut links = Vec::new();
        let mut conns = HashMap::new();
        for id in ["w1", "w2"] {
            let (tx, rx) = mpsc::channel(16);
            links.push(rx);
            let meta = LinkMeta {
                heard: crate::liveness::LastHeard::new(),
                admitted: None,
            };
            conns.insert(id, handle.worker_hello(hello(id), tx, meta).await);
        }
        let view = |id: &str| {
            handle
                .snapshot()
                .workers
                .get(id)
                .map(|w| WorkerView::clone(w))
        };

        // Commands are taken in order: the spawn's answer follows both hellos.
        let s = handle
            .spawn(
                SpawnArgs {
                    project_id: "app".into(),
                    ..SpawnArgs::default()
                },
                false,
            )
            .await
            .unwrap();
        let on = s.worker.clone().unwrap();
        let other = if on == "w1" { "w2" } else { "w1" };
        assert_eq!(view(&on).unwrap().sessions, 1);
        assert_eq!(view(other).unwrap().sessions, 0);
        assert_eq!(view(other).unwrap().state, WorkerState::Ready);
        assert!(view(other).unwrap().last_seen_at().is_some());

        let drained = handle.drain(other.to_string(), false).await.unwrap();
        assert_eq!(drained.state, WorkerState::Draining);
        assert_eq!(view(other).unwrap().state, WorkerState::Draining);

        handle.worker_gone(conns[on.as_str()], on.clone()).await;
        handle.kill(s.id.clone()).await.unwrap();
        let gone = view(&on).unwrap();
        assert_eq!((gone.state, gone.sessions), (WorkerState::Disconnected, 0));
        assert!(gone.connected_at.is_none());

        handle.remove_worker(on.clone()).await.unwrap();
        assert!(view(&on).is_none());
        assert_eq!(handle.snapshot().workers.size(), 1);
    }
}
