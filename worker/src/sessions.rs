//! The worker's sessions: one actor owns every local session, reacts to the
//! controller's assignments, stops and input, and looks at the sessions
//! with news (output, records, a process's end, all notified) or a
//! deadline to report coalesced status. A quiet session costs nothing
//! until then; `tmux list-panes` is asked only about panes whose process
//! ended or is not known yet.
//!
//! Each session's metadata is kept in `$AO_HOME/worker/sessions/<id>.json`,
//! so a restarted worker re-adopts its live tmux sessions and reports them in
//! its inventory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ao_proto::home::Home;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use ao_proto::report::{ReportReply, ReportRequest};

use crate::agent::{self, Launch};
use crate::agent_report;
use crate::assignment::Assignment;
use crate::delivery::{
    crash_point, deliver, echo_needle, resume_prompt, type_and_confirm, PromptEvidence, PromptStep,
    Undelivered, HISTORY,
};
use crate::link_types::{
    Activity, AgentReport, AttachStart, Input, InputOutcome, OpenStream, OutputFrom,
    RemoveWorkspace, Report, ReportState, Request, Stop, StreamKind, ToController, Tunnels,
    WorkspaceRemoved,
};
use crate::local::{
    prompt_time, report, reported, state_of, LocalSession, Writer, PARK_SCREEN_AFTER, SAFETY_LOOK,
};
use crate::meta::SessionMeta;
use crate::native::{Pane, RECHECK};
use crate::output::{self, Output};
use crate::pidwatch::ExitWatch;
use crate::runtime::{PaneState, Runtime};
use crate::setup::setup;
use crate::signals::watch::DirWatcher;
use crate::terminal::TerminalSpec;
use crate::viewers::{relay_terminal, stream_output, History, Tunnel};
use crate::workspace;
use tracing::Instrument;

mod requests;

/// Polls to wait for the exit status of a pane tmux already calls dead.
const DEAD_POLLS_FOR_STATUS: u32 = 10;

pub struct WorkerSettings {
    pub id: String,
    pub hostname: String,
    pub home: Home,
    pub labels: BTreeMap<String, String>,
    pub max_sessions: u32,
    /// Bytes of memory to keep free: no session is placed here below it.
    pub memory_reserve: u64,
    pub poll_interval: Duration,
    /// How the `ao` of a session with a credential reaches the controller
    /// from here: the address(es) this worker dials over TLS and the
    /// directory with the cluster CA (`None` on the local socket, which
    /// `AO_HOME` names). Set by [`WorkerSettings::reaching`].
    pub controller: Option<(String, std::path::PathBuf)>,
}

impl WorkerSettings {
    /// These settings for a worker linked by `link`.
    pub fn reaching(mut self, link: &crate::LinkConfig) -> Self {
        let tls = link
            .addrs
            .iter()
            .any(ao_proto::dial::ControllerAddr::is_tls);
        self.controller = match (&link.credentials, tls) {
            (Some(dir), true) => {
                let addrs: Vec<String> = link.addrs.iter().map(ToString::to_string).collect();
                Some((addrs.join(","), dir.clone()))
            }
            _ => None,
        };
        self
    }
}

enum Command {
    FromController(Request),
    Inventory(oneshot::Sender<Vec<Report>>),
    SetupDone(u64, Box<Result<LocalSession, (String, String)>>),
    /// Enter was pressed after the task prompt.
    PromptSubmitted(String),
    /// The prompt could not be typed: it is tried again.
    PromptNotTyped(String),
    /// A terminal of `ao attach` closed.
    TerminalClosed(String, u64),
    /// The agent's or its pane's process ended.
    ProcessEnded(String),
    AgentReport(ReportRequest, oneshot::Sender<ReportReply>),
}

#[derive(Clone)]
pub struct WorkerHandle {
    tx: mpsc::Sender<Command>,
}

impl WorkerHandle {
    pub async fn from_controller(&self, request: Request) {
        let _ = self.tx.send(Command::FromController(request)).await;
    }

    /// `ao report` from one of this worker's sessions.
    pub(crate) async fn agent_report(&self, request: ReportRequest) -> ReportReply {
        let (tx, rx) = oneshot::channel();
        let gone = || ReportReply {
            error: Some("the worker is stopping".into()),
        };
        if self
            .tx
            .send(Command::AgentReport(request, tx))
            .await
            .is_err()
        {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }

    /// Every session this worker holds, for the hello.
    pub async fn inventory(&self) -> Vec<Report> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Inventory(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

struct Actor {
    settings: Arc<WorkerSettings>,
    runtime: Arc<dyn Runtime>,
    sessions: HashMap<String, LocalSession>,
    /// Assignments being set up, by session id, with their epoch.
    setting_up: HashMap<String, u64>,
    reports: mpsc::Sender<ToController>,
    tx: mpsc::Sender<Command>,
    repo_locks: workspace::RepoLocks,
    /// The last runtime failure, logged once until it changes.
    runtime_error: Option<String>,
    /// Owns what it starts in the background: setups, stops, input
    /// delivery, output streams and terminals.
    tasks: TaskTracker,
    /// Notifies changes in the directories of the agents' records and of
    /// their terminal logs; `None` when the system has no watch left (then
    /// every session is looked at on every tick).
    watcher: Option<DirWatcher>,
    watched: HashSet<PathBuf>,
    /// The system gives pidfds (else processes are read in `/proc` on
    /// every tick).
    pidfds: bool,
}

/// Starts the actor, re-adopting the sessions the runtime still holds.
pub async fn start(
    settings: Arc<WorkerSettings>,
    runtime: Arc<dyn Runtime>,
    reports: mpsc::Sender<ToController>,
    tasks: TaskTracker,
) -> (WorkerHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let (watcher, changes) = match DirWatcher::new() {
        Ok((w, changes)) => (Some(w), changes),
        Err(e) => {
            tracing::warn!("no file notification ({e}): sessions are looked at on every tick, records re-read every {RECHECK:?}");
            (None, mpsc::unbounded_channel().1)
        }
    };
    let mut actor = Actor {
        settings,
        runtime,
        sessions: HashMap::new(),
        setting_up: HashMap::new(),
        reports,
        tx: tx.clone(),
        repo_locks: workspace::RepoLocks::default(),
        runtime_error: None,
        tasks,
        watcher,
        watched: HashSet::new(),
        pidfds: true,
    };
    actor.adopt().await;
    let task = tokio::spawn(actor.run(rx, changes));
    (WorkerHandle { tx }, task)
}

impl Actor {
    async fn adopt(&mut self) {
        let dir = self.settings.home.session_metas();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let panes = self.runtime.list().await.unwrap_or_else(|e| {
            tracing::error!("cannot list runtime sessions: {e}");
            Vec::new()
        });
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = match SessionMeta::read(&path) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(file = %path.display(), "skipping unreadable session metadata: {e}");
                    continue;
                }
            };
            let pane = panes.iter().find(|p| p.id == meta.session_id);
            if !meta.launched && pane.is_none() {
                // The worker died between recording the session and starting
                // its agent: nothing runs, and the controller assigns it
                // again when this worker's inventory lacks it.
                tracing::info!(session = %meta.session_id, "forgetting a session that never started");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            // A missing binary is that session's trouble later, not the
            // adoption's: it is judged by its screen meanwhile.
            let launch = agent::resolve(&meta.agent, &std::env::var("PATH").unwrap_or_default())
                .unwrap_or_else(|_| Launch::unresolved(meta.agent.command.as_deref()));
            let exited = match pane {
                None => Some((
                    None,
                    "its tmux session ended while the worker was away".to_string(),
                )),
                Some(p) if p.dead => Some((p.exit_status, p.failure.clone().unwrap_or_default())),
                Some(_) => None,
            };
            tracing::info!(session = %meta.session_id, alive = exited.is_none(), "re-adopting session");
            let mut local = LocalSession::adopted(meta, launch, &self.settings.home, None);
            local.signals.set_pane_pid(pane.and_then(|p| p.pid));
            if let Some((code, reason)) = exited {
                local.failed = pane.is_some_and(|p| p.failure.is_some());
                local.set_exited(code, reason, SystemTime::now());
            }
            self.sessions.insert(local.meta.session_id.clone(), local);
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut changes: mpsc::UnboundedReceiver<PathBuf>,
    ) {
        let mut tick = tokio::time::interval(self.settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                _ = tick.tick() => self.poll().await,
                Some(path) = changes.recv() => self.changed(path).await,
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::FromController(request) => self.on_controller(request),
            Command::Inventory(reply) => {
                let mut reports: Vec<Report> = self
                    .sessions
                    .values()
                    .map(|l| {
                        let now = SystemTime::now();
                        let (state, evidence) = state_of(l, now);
                        report(l, state, evidence, now, self.runtime.as_ref())
                    })
                    .collect();
                // Being set up is held too: the controller must not take a
                // long `postCreate` for an assignment that never arrived.
                reports.extend(self.setting_up.iter().map(|(id, epoch)| {
                    Report::bare(id.clone(), *epoch, ReportState::Starting, None)
                }));
                let _ = reply.send(reports);
            }
            Command::SetupDone(epoch, result) => self.setup_done(epoch, *result).await,
            Command::ProcessEnded(id) => {
                if let Some(l) = self.sessions.get_mut(&id) {
                    l.exit_watch = None;
                    l.look_soon();
                }
            }
            Command::TerminalClosed(id, attach) => {
                if let Some(l) = self.sessions.get_mut(&id) {
                    if l.writer.as_ref().is_some_and(|w| w.attach == attach) {
                        l.writer = None;
                    }
                }
            }
            Command::AgentReport(request, reply) => {
                let answer = self.agent_report(request).await;
                let _ = reply.send(answer);
            }
            Command::PromptSubmitted(id) => {
                if let Some(l) = self.sessions.get_mut(&id) {
                    l.meta.prompt = PromptStep::Submitted;
                    l.meta.save(&self.settings.home);
                    l.look_soon();
                }
            }
            Command::PromptNotTyped(id) => {
                if let Some(l) = self.sessions.get_mut(&id) {
                    l.meta.prompt = PromptStep::Pending;
                    l.meta.save(&self.settings.home);
                    l.prompt_pending = true;
                    l.look_soon();
                }
            }
        }
    }

    fn on_controller(&mut self, request: Request) {
        match request {
            Request::Assign(a) => self.assign(*a),
            Request::Stop(s) => self.stop(s),
            Request::Input(i) => self.input(i),
            Request::OpenStream(o, tunnels) => self.open_stream(o, tunnels),
            Request::Resync => {
                for l in self.sessions.values_mut() {
                    l.reported = None;
                    l.look_soon();
                }
            }
            Request::RemoveWorkspace(r) => self.remove_workspace(r),
        }
    }

    fn send(&self, msg: ToController) {
        if self.reports.try_send(msg).is_err() {
            tracing::warn!("report queue full or closed; the next hello resyncs");
        }
    }

    fn assign(&mut self, a: Assignment) {
        let spec = a.spec;
        let id = spec.session_id.clone();
        if let Some(l) = self.sessions.get_mut(&id) {
            if l.meta.epoch == a.epoch {
                // Already ours at this epoch: say where it is again.
                l.reported = None;
                l.look_soon();
                return;
            }
            if l.meta.epoch > a.epoch {
                tracing::warn!(session = %id, have = l.meta.epoch, got = a.epoch, "refusing a stale assignment");
                return;
            }
        }
        if self.setting_up.get(&id).is_some_and(|e| *e >= a.epoch) {
            return;
        }
        self.setting_up.insert(id.clone(), a.epoch);
        let settings = self.settings.clone();
        let runtime = self.runtime.clone();
        let tx = self.tx.clone();
        let epoch = a.epoch;
        self.sessions.remove(&id);
        let locks = self.repo_locks.clone();
        let span = tracing::info_span!(
            "ao.session.setup",
            ao.session.id = %id,
            ao.project.id = %spec.project_id,
            ao.worker.id = %settings.id,
            ao.epoch = epoch,
        );
        ao_proto::trace::follow(&span, a.traceparent.as_deref().unwrap_or_default());
        let setting_up = async move {
            let home = &settings.home;
            let result = setup(&settings, runtime.as_ref(), &locks, &spec, epoch)
                .await
                .map(|started| LocalSession::started(started, home))
                .map_err(|e| (id, e));
            let _ = tx.send(Command::SetupDone(epoch, Box::new(result))).await;
        };
        self.tasks.spawn(setting_up.instrument(span));
    }

    async fn setup_done(&mut self, epoch: u64, result: Result<LocalSession, (String, String)>) {
        match result {
            Ok(local) => {
                let id = local.meta.session_id.clone();
                if self.setting_up.get(&id) != Some(&epoch) {
                    // Stopped (or overtaken) while it was being set up: what
                    // it started must not run on untracked. A newer set-up
                    // stops it itself before starting.
                    if !self.setting_up.contains_key(&id) {
                        let _ = std::fs::remove_file(self.settings.home.session_meta(&id));
                        let runtime = self.runtime.clone();
                        self.tasks.spawn(async move {
                            if let Err(e) = runtime.stop(&id).await {
                                tracing::warn!(session = %id, "cannot stop a cancelled session: {e}");
                            }
                        });
                    }
                    return;
                }
                self.setting_up.remove(&id);
                local.meta.save(&self.settings.home);
                self.sessions.insert(id, local);
                self.poll().await;
            }
            Err((id, reason)) => {
                if self.setting_up.get(&id) != Some(&epoch) {
                    return;
                }
                self.setting_up.remove(&id);
                let _ = std::fs::remove_file(self.settings.home.session_meta(&id));
                tracing::warn!(session = %id, "setup failed: {reason}");
                self.send(errored(id, epoch, reason));
            }
        }
    }

    /// An agent's word on itself, if it is this session's: evidence for
    /// its activity, and an event at the controller.
    async fn agent_report(&mut self, r: ReportRequest) -> ReportReply {
        let refused = |why: &str| ReportReply {
            error: Some(why.to_string()),
        };
        let Some(l) = self.sessions.get_mut(&r.session_id) else {
            return refused("no such session on this worker");
        };
        let token = l.meta.session_token.as_deref().unwrap_or_default();
        if !agent_report::token_matches(token, &r.token) {
            tracing::warn!(session = %r.session_id, "refusing `ao report` with another session's token");
            return refused("the token is not this session's");
        }
        l.signals
            .tracker
            .observe(agent_report::observation(&r, SystemTime::now()));
        let epoch = l.meta.epoch;
        self.send(ToController::AgentReport(AgentReport {
            session_id: r.session_id.clone(),
            epoch,
            state: r.state,
            note: r.note,
            pr_url: r.pr_url,
        }));
        self.poll_one(&r.session_id, None).await;
        ReportReply { error: None }
    }

    fn stop(&mut self, s: Stop) {
        let known = self.sessions.get(&s.session_id).map(|l| l.meta.epoch);
        if known.is_some_and(|e| e > s.epoch) {
            tracing::warn!(session = %s.session_id, "refusing a stale stop");
            return;
        }
        self.setting_up.remove(&s.session_id);
        if let Some(mut l) = self.sessions.remove(&s.session_id) {
            l.output.close_viewers();
        }
        let _ = std::fs::remove_file(self.settings.home.session_meta(&s.session_id));
        let runtime = self.runtime.clone();
        let reports = self.reports.clone();
        self.tasks.spawn(async move {
            let reason = runtime
                .stop(&s.session_id)
                .await
                .err()
                .map(|e| e.to_string());
            let stopped = Report::bare(s.session_id, s.epoch, ReportState::Stopped, reason);
            let _ = reports.send(ToController::Report(stopped)).await;
        });
    }

    fn open_stream(&mut self, o: OpenStream, tunnels: Arc<dyn Tunnels>) {
        let tunnel = Tunnel::new(tunnels, o.stream_id);
        let (session_id, from, follow) = match o.kind {
            StreamKind::Terminal(start) => return self.open_terminal(o.stream_id, start, tunnel),
            StreamKind::Output {
                session_id,
                from,
                follow,
            } => (session_id, from, follow),
        };
        let history_of = |log: &std::path::Path, output: Option<&Output>, upto: u64| match from {
            OutputFrom::Tail(lines) => History::Memory(match output {
                Some(o) => o.tail(lines),
                None => Output::resume(log).tail(lines),
            }),
            OutputFrom::Since(t) => History::Files(output::history(log, Some(t), upto)),
            OutputFrom::All => History::Files(output::history(log, None, upto)),
        };
        let (history, live) = match self.sessions.get_mut(&session_id) {
            Some(l) => {
                l.read_output();
                // The history and the subscription are taken together: no gap.
                let history = history_of(&l.meta.log_path, Some(&l.output), l.output.offset());
                (
                    history,
                    (follow && l.exited.is_none()).then(|| l.output.subscribe()),
                )
            }
            None => {
                // An ended session: its log file is still here.
                let log = self.settings.home.terminal_log(&session_id);
                let Ok(meta) = std::fs::metadata(&log) else {
                    let why = format!("session {session_id} has no output on this worker");
                    self.tasks.spawn(tunnel.refuse(why));
                    return;
                };
                (history_of(&log, None, meta.len()), None)
            }
        };
        let tasks = self.tasks.clone();
        self.tasks.spawn(async move {
            let up = tunnel.up.clone();
            let tunnel = tasks.spawn(tunnel.run());
            stream_output(&up, history, live).await;
            drop(up);
            let _ = tunnel.await;
        });
    }

    /// Checks that the viewer may attach and, for a writer, gives it the
    /// keyboard (taking it from the holder with `force`). The receiver tells
    /// the new writer when someone else takes the seat in turn.
    fn claim_seat(
        &mut self,
        attach: u64,
        start: &AttachStart,
    ) -> Result<oneshot::Receiver<String>, String> {
        let Some(l) = self.sessions.get_mut(&start.session_id) else {
            return Err(format!(
                "session {} is not on this worker",
                start.session_id
            ));
        };
        if l.exited.is_some() {
            return Err(format!(
                "session {} has ended; `ao session restore` brings it back",
                start.session_id
            ));
        }
        let (takeover_tx, takeover_rx) = oneshot::channel();
        if !start.read_only {
            match l.writer.take() {
                // A viewer coming back finds its own seat, not yet freed.
                Some(holder)
                    if !start.force && (start.seat.is_none() || holder.seat != start.seat) =>
                {
                    let why = format!(
                        "{} holds the keyboard of {}; attach with --read-only to watch, or --force to take over",
                        holder.who, start.session_id
                    );
                    l.writer = Some(holder);
                    return Err(why);
                }
                Some(holder) => {
                    let _ = holder.takeover.send(start.who.clone());
                }
                None => {}
            }
            l.writer = Some(Writer {
                attach,
                who: start.who.clone(),
                seat: start.seat.clone(),
                takeover: takeover_tx,
            });
        }
        Ok(takeover_rx)
    }

    /// Gives the viewer its own tmux client; one viewer at a time may type.
    fn open_terminal(&mut self, attach: u64, start: AttachStart, tunnel: Tunnel) {
        let takeover_rx = match self.claim_seat(attach, &start) {
            Ok(rx) => rx,
            Err(why) => {
                self.tasks.spawn(tunnel.refuse(why));
                return;
            }
        };
        let spec = TerminalSpec {
            socket: self.settings.home.tmux_socket(),
            session_id: start.session_id.clone(),
            read_only: start.read_only,
            cols: start.cols,
            rows: start.rows,
            term: start.term.clone(),
        };
        let runtime = self.runtime.clone();
        let keyboard = self.sessions[&start.session_id].keyboard.clone();
        let actor = self.tx.clone();
        self.tasks.spawn(async move {
            relay_terminal(spec, runtime, keyboard, tunnel, takeover_rx).await;
            let _ = actor
                .send(Command::TerminalClosed(start.session_id, attach))
                .await;
        });
    }

    /// Looks at the sessions due (see [`LocalSession::next_look`]). Only a
    /// pane whose pid is not known yet or whose process ended needs tmux
    /// (one `list-panes` for all): watching running sessions starts no
    /// process.
    async fn poll(&mut self) {
        let tick = Instant::now();
        let due: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, l)| l.next_look <= tick)
            .map(|(id, _)| id.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let mut ask = false;
        for id in &due {
            if let Some(l) = self.sessions.get_mut(id).filter(|l| l.exited.is_none()) {
                ask |= l.signals.process(now) != Pane::Running;
            }
        }
        let panes = if ask {
            match self.runtime.list().await {
                Ok(p) => {
                    self.runtime_error = None;
                    Some(p)
                }
                Err(e) => {
                    let e = e.to_string();
                    if self.runtime_error.as_ref() != Some(&e) {
                        tracing::error!("cannot list the runtime's sessions: {e}");
                        self.runtime_error = Some(e);
                    }
                    return;
                }
            }
        } else {
            None
        };
        self.sync_watches();
        for id in due {
            let pane = panes.as_ref().map(|p| p.iter().find(|p| p.id == id));
            self.poll_one(&id, pane).await;
        }
    }

    /// Watches the directories of every session's records (those that
    /// appear later, like Claude's project directory, included) and
    /// terminal log.
    fn sync_watches(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted: HashSet<PathBuf> = self
            .sessions
            .values()
            .flat_map(|l| {
                let log_dir = l.meta.log_path.parent().map(PathBuf::from);
                l.signals.dirs().iter().cloned().chain(log_dir)
            })
            .collect();
        let mut new = HashSet::new();
        for dir in wanted.difference(&self.watched) {
            match watcher.watch(dir) {
                Ok(()) => {
                    new.insert(dir);
                }
                Err(e) => tracing::debug!("cannot watch {}: {e}", dir.display()),
            }
        }
        // What was written before the watch sent nothing: read it now.
        for l in self.sessions.values_mut() {
            if l.signals.dirs().iter().any(|d| new.contains(d)) {
                l.signals.touched();
                l.look_soon();
            }
        }
        for dir in self.watched.difference(&wanted) {
            watcher.unwatch(dir);
        }
        if let Ok(appeared) = watcher.refresh() {
            if !appeared.is_empty() {
                for l in self.sessions.values_mut() {
                    l.signals.touched();
                    l.look_soon();
                }
            }
        }
        self.watched = wanted;
    }

    /// A file changed in a watched directory: the sessions that read there
    /// look now; new output is looked at on the next tick (a burst of it
    /// makes one look). A directory made on the way to a wanted one moves
    /// the watches.
    async fn changed(&mut self, path: PathBuf) {
        let mut ids = Vec::new();
        for (id, l) in &mut self.sessions {
            if path == l.meta.log_path {
                l.look_soon();
            } else if l.exited.is_none() && l.signals.wants(&path) {
                l.signals.touched();
                ids.push(id.clone());
            }
        }
        if self.watched.iter().any(|dir| dir.starts_with(&path)) {
            self.sync_watches();
        }
        for id in ids {
            self.poll_one(&id, None).await;
        }
    }

    /// [`Self::look`], then when to look again and which processes to
    /// watch for their end.
    async fn poll_one(&mut self, id: &str, pane: Option<Option<&PaneState>>) {
        self.look(id, pane).await;
        let Some(l) = self.sessions.get_mut(id) else {
            return;
        };
        let pids = l
            .exited
            .is_none()
            .then(|| l.signals.running_pids())
            .flatten()
            .filter(|_| self.pidfds);
        match pids {
            None => l.exit_watch = None,
            Some(pids) if l.exit_watch.as_ref().is_some_and(|w| w.pids() == pids) => {}
            Some(pids) => {
                let tx = self.tx.clone();
                let ended = Command::ProcessEnded(id.to_string());
                l.exit_watch = match ExitWatch::start(pids, async move {
                    let _ = tx.send(ended).await;
                }) {
                    Ok(watch) => Some(watch),
                    Err(e) => {
                        if e.raw_os_error() == Some(nix::libc::ENOSYS) {
                            tracing::warn!(
                                "no pidfd ({e}): agents' processes are read in /proc on every tick"
                            );
                            self.pidfds = false;
                        }
                        None
                    }
                };
            }
        }
        l.next_look = l.next_look(SystemTime::now(), self.watcher.is_some());
    }

    /// One session: its output, records, screen and process, what is due
    /// (the prompt), and a report if what it says changed. `pane` is what
    /// tmux said of it, when it was asked this time.
    async fn look(&mut self, id: &str, pane: Option<Option<&PaneState>>) {
        let recheck = if self.watcher.is_some() {
            SAFETY_LOOK
        } else {
            RECHECK
        };
        let Some(l) = self.sessions.get_mut(id) else {
            return;
        };
        let now = SystemTime::now();
        l.read_output();
        if l.exited.is_none() {
            if let Some(pane) = pane {
                l.signals.set_pane_pid(pane.and_then(|p| p.pid));
                match pane {
                    None => l.set_exited(None, "its tmux session ended outside ao".into(), now),
                    Some(p) if p.dead && p.failure.is_some() => {
                        l.failed = true;
                        l.set_exited(p.exit_status, p.failure.clone().unwrap_or_default(), now);
                    }
                    Some(p) if p.dead && p.exit_status.is_some() => {
                        l.set_exited(p.exit_status, String::new(), now);
                    }
                    // tmux marks a pane dead when its terminal closes, which
                    // can be a moment before it has reaped the process: wait
                    // for the status rather than report an exit without one.
                    Some(p) if p.dead => {
                        l.dead_polls += 1;
                        if l.dead_polls > DEAD_POLLS_FOR_STATUS {
                            l.set_exited(
                                None,
                                "the agent exited; its exit status is unknown".into(),
                                now,
                            );
                        }
                    }
                    Some(_) => {}
                }
                if l.exited.is_some() {
                    l.output.close_viewers();
                }
            }
        }
        if l.exited.is_none() {
            let tick = Instant::now();
            if l.signals.records_due(tick, recheck) {
                l.signals.read_records(tick);
            }
            let quiet = l.last_output.elapsed();
            if let Some(judged) = l.signals.look(l.output.screen(), &l.launch, quiet, now) {
                l.screen = judged;
            }
            if quiet >= PARK_SCREEN_AFTER {
                l.output.park_screen();
            }
            l.check_prompt(now);
            if let Some(e) = l
                .signals
                .evidence(now)
                .filter(|e| e.activity == Activity::Exited)
            {
                // The agent is gone from a terminal that lives on.
                l.exited = Some((None, e.detail));
            }
        }
        // A prompt a previous worker was typing is finished at once: the
        // agent was ready then, and what it shows now is the typed prompt.
        let resumed = l.meta.prompt == PromptStep::Typing;
        if l.prompt_pending && l.exited.is_none() && (resumed || prompt_time(l)) {
            let prompt =
                std::fs::read_to_string(self.settings.home.prompt_file(id)).unwrap_or_default();
            let text = prompt.trim_end().to_string();
            if !resumed {
                let Ok(screen) = self.runtime.capture(id, HISTORY).await else {
                    // Tried again on the next poll.
                    return;
                };
                l.meta.prompt_evidence = PromptEvidence {
                    log: l.output.position(),
                    echoes: screen.matches(echo_needle(&text).as_str()).count(),
                };
                l.meta.prompt = PromptStep::Typing;
                l.meta.save(&self.settings.home);
            }
            l.prompt_pending = false;
            let evidence = l.meta.prompt_evidence;
            let log = l.meta.log_path.clone();
            let runtime = self.runtime.clone();
            let keyboard = l.keyboard.clone();
            let tx = self.tx.clone();
            let id = id.to_string();
            let span = tracing::info_span!("ao.prompt.deliver", ao.session.id = %id);
            ao_proto::trace::follow(&span, l.trace.as_deref().unwrap_or_default());
            let delivering = async move {
                let runtime = runtime.as_ref();
                let outcome = if resumed {
                    resume_prompt(runtime, &keyboard, &id, &text, &log, evidence).await
                } else {
                    let _turn = keyboard.lock().await;
                    type_and_confirm(runtime, &id, &text, evidence.echoes).await
                };
                let next = match outcome {
                    Ok(()) => Command::PromptSubmitted(id),
                    Err(e) => {
                        tracing::warn!(session = %id, "prompt not confirmed: {}", e.reason);
                        if e.submitted {
                            Command::PromptSubmitted(id)
                        } else {
                            Command::PromptNotTyped(id)
                        }
                    }
                };
                if matches!(next, Command::PromptSubmitted(_)) {
                    crash_point("prompt-submitted");
                }
                let _ = tx.send(next).await;
            };
            self.tasks.spawn(delivering.instrument(span));
        }
        let (state, evidence) = state_of(l, now);
        let key = reported(l, state, evidence.as_ref(), now);
        if l.reported
            .as_ref()
            .is_none_or(|(last, sent)| last.differs(&key, *sent))
        {
            let msg = report(l, state, evidence, now, self.runtime.as_ref());
            l.reported = Some((key, Instant::now()));
            self.send(ToController::Report(msg));
        }
    }
}

/// The report of an assignment that could not be set up.
pub(crate) fn errored(session_id: String, epoch: u64, reason: String) -> ToController {
    ToController::Report(Report::bare(
        session_id,
        epoch,
        ReportState::Errored,
        Some(reason),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ao_proto::dial::ControllerAddr;

    fn settings() -> WorkerSettings {
        WorkerSettings {
            id: "w".into(),
            hostname: "h".into(),
            home: Home::new("/h"),
            labels: BTreeMap::new(),
            max_sessions: 0,
            memory_reserve: 0,
            poll_interval: Duration::from_secs(1),
            controller: None,
        }
    }

    /// Sessions with a credential are told how to reach the controller only
    /// when this worker reaches it over TLS (on the local socket, AO_HOME says it).
    #[test]
    fn a_worker_over_tls_tells_its_sessions_where_the_controller_is() {
        let dir = std::path::PathBuf::from("/h/pki/worker");
        let tls = crate::LinkConfig {
            addrs: vec![
                ControllerAddr::parse("https://10.0.0.1:7070").unwrap(),
                ControllerAddr::parse("https://10.0.0.2:7070").unwrap(),
            ],
            credentials: Some(dir.clone()),
        };
        assert_eq!(
            settings().reaching(&tls).controller,
            Some(("https://10.0.0.1:7070,https://10.0.0.2:7070".into(), dir))
        );
        let local = crate::LinkConfig {
            addrs: vec![ControllerAddr::parse("unix:///h/ao.sock").unwrap()],
            credentials: None,
        };
        assert_eq!(settings().reaching(&local).controller, None);
    }
}
