//! One session as the worker's actor tracks it, and what its state is
//! reported as.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ao_proto::home::Home;

use tokio::sync::oneshot;

use crate::activity::Evidence;
use crate::activity::TurnState;
use crate::agent::Native;
use crate::agent::{Launch, ScreenState};
use crate::delivery::{check_prompt, PromptCheck, PromptStep};
use crate::link_types::{Activity, Report, ReportState, Source};
use crate::meta::SessionMeta;
use crate::native::{AgentHomes, SignalSpec, Signals, ACTIVE_WINDOW};
use crate::output::Output;
use crate::pidwatch::ExitWatch;
use crate::runtime::Runtime;
use crate::setup::Started;

/// Quiet this long after start means an agent without a ready pattern can
/// take its prompt.
pub(crate) const QUIET_BEFORE_PROMPT: Duration = Duration::from_millis(1500);

/// A new detail of the same activity (the next tool of an open turn) is
/// sent at most this often: each report is a write at the controller.
pub(crate) const DETAIL_EVERY: Duration = Duration::from_secs(3);

/// A session with no news is looked at least this often (its process
/// checked in `/proc`, its records re-read when notifications exist).
pub(crate) const SAFETY_LOOK: Duration = Duration::from_secs(30);

/// A session quiet this long gives its screen model's memory back (about
/// 320 KiB for a 200×50 pane) until its next output; until then it is
/// looked at on every tick (its screen, and whether it has gone quiet).
pub(crate) const PARK_SCREEN_AFTER: Duration = Duration::from_secs(10);

/// The last report sent for a session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reported {
    pub(crate) state: ReportState,
    pub(crate) activity: Option<Activity>,
    pub(crate) source: Option<Source>,
    pub(crate) since: Option<SystemTime>,
    pub(crate) stuck: bool,
    pub(crate) agent_session_id: Option<String>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) detail: Option<String>,
}

impl Reported {
    /// Whether `now` is worth a report after `self` was sent at `sent`.
    pub(crate) fn differs(&self, now: &Reported, sent: Instant) -> bool {
        let same_but_detail = Reported {
            detail: self.detail.clone(),
            ..now.clone()
        };
        if *self == same_but_detail {
            self.detail != now.detail && sent.elapsed() >= DETAIL_EVERY
        } else {
            true
        }
    }
}

/// Who holds a session's keyboard through `ao attach`.
pub(crate) struct Writer {
    pub(crate) attach: u64,
    pub(crate) who: String,
    /// The `ao attach` it is (the same across its reconnects).
    pub(crate) seat: Option<String>,
    /// Tells the holder who took the seat.
    pub(crate) takeover: oneshot::Sender<String>,
}

/// One session this worker runs, as the actor tracks it.
pub(crate) struct LocalSession {
    /// The one viewer whose keys reach the agent, if any.
    pub(crate) writer: Option<Writer>,
    /// Held while a message is typed in, so that messages do not interleave.
    pub(crate) keyboard: Arc<tokio::sync::Mutex<()>>,
    pub(crate) meta: SessionMeta,
    pub(crate) launch: Launch,
    pub(crate) output: Output,
    pub(crate) last_output: Instant,
    pub(crate) started: Instant,
    /// The screen judged by the agent's patterns (when to type the prompt).
    pub(crate) screen: ScreenState,
    pub(crate) prompt_pending: bool,
    pub(crate) exited: Option<(Option<i32>, String)>,
    /// Polls that saw the pane dead but no exit status yet.
    pub(crate) dead_polls: u32,
    /// The last report sent, and when.
    pub(crate) reported: Option<(Reported, Instant)>,
    /// The agent's records, screen and process, folded into its activity.
    pub(crate) signals: Signals,
    /// The launch prompt is watched for (see [`Self::check_prompt`]).
    pub(crate) watch_prompt: bool,
    pub(crate) prompt_typed: u32,
    /// Why the prompt could not be delivered.
    pub(crate) prompt_failed: Option<String>,
    /// The runtime ended the agent (a container out of memory): its end
    /// is an error, not an exit.
    pub(crate) failed: bool,
    /// The set-up's W3C `traceparent`, if traced: the prompt's delivery
    /// joins the trace of the spawn.
    pub(crate) trace: Option<String>,
    /// When the tick is to look at it with no news of it.
    pub(crate) next_look: Instant,
    /// Tells when the agent's or its pane's process ends, while they run.
    pub(crate) exit_watch: Option<ExitWatch>,
}

impl LocalSession {
    /// A session whose agent [`crate::setup::setup`] just started.
    pub(crate) fn started(
        Started {
            meta,
            launch,
            resumed,
            traceparent,
        }: Started,
        home: &Home,
    ) -> Self {
        // A prompt on the command line can be swallowed (a dialog, a slow
        // start): an agent whose records tell is watched for it.
        let watch = launch.prompt_on_command_line && launch.native == Native::Claude && !resumed;
        let mut l = Self::new(meta, launch, home, None, Instant::now());
        l.watch_prompt = watch;
        l.trace = traceparent;
        l
    }

    /// Types the launch prompt again when the agent's records show no
    /// sign of it (backing off), and errors the session after the last
    /// attempt.
    pub(crate) fn check_prompt(&mut self, now: SystemTime) {
        if !self.watch_prompt || self.exited.is_some() || self.prompt_pending {
            return;
        }
        let seen = self.signals.tracker.turn() != TurnState::None;
        let dialog = self
            .signals
            .evidence(now)
            .is_some_and(|e| e.activity == Activity::WaitingInput);
        let since_start = self.started.elapsed();
        match check_prompt(
            since_start,
            self.last_output.elapsed(),
            self.prompt_typed,
            seen,
            dialog,
        ) {
            PromptCheck::Wait => self.watch_prompt = !seen,
            PromptCheck::Retype => {
                tracing::warn!(session = %self.meta.session_id, attempt = self.prompt_typed + 1,
                    "no sign of the prompt after {since_start:?}: typing it in");
                self.prompt_typed += 1;
                self.prompt_pending = true;
                self.meta.prompt = PromptStep::Pending;
            }
            PromptCheck::GiveUp => {
                self.watch_prompt = false;
                self.prompt_failed = Some(format!(
                    "the prompt never reached the agent (given at launch, then typed {} times)",
                    self.prompt_typed
                ));
            }
        }
    }

    /// A session found running (or ended) when the worker started.
    pub(crate) fn adopted(
        meta: SessionMeta,
        launch: Launch,
        home: &Home,
        exited: Option<(Option<i32>, String)>,
    ) -> Self {
        let earlier = Instant::now() - QUIET_BEFORE_PROMPT.max(ACTIVE_WINDOW);
        let mut l = Self::new(meta, launch, home, exited, earlier);
        l.prompt_pending =
            l.meta.prompt != PromptStep::Submitted && !l.launch.prompt_on_command_line;
        l
    }

    fn new(
        meta: SessionMeta,
        launch: Launch,
        home: &Home,
        exited: Option<(Option<i32>, String)>,
        at: Instant,
    ) -> Self {
        let signals = Signals::new(SignalSpec {
            launch: &launch,
            agent: &meta.agent.name,
            worktree: &meta.worktree,
            homes: AgentHomes::new(&meta.env),
            hook_log: home.hook_log(&meta.session_id),
            agent_session_id: meta.agent_session_id.clone(),
            started: SystemTime::UNIX_EPOCH + Duration::from_millis(meta.started_at_ms),
            stuck_after: meta.stuck_after_secs.map(Duration::from_secs),
        });
        LocalSession {
            writer: None,
            keyboard: Arc::default(),
            output: Output::resume(&meta.log_path),
            prompt_pending: !launch.prompt_on_command_line,
            meta,
            launch,
            last_output: at,
            started: at,
            screen: ScreenState::Other,
            exited,
            dead_polls: 0,
            reported: None,
            signals,
            watch_prompt: false,
            prompt_typed: 0,
            prompt_failed: None,
            failed: false,
            trace: None,
            next_look: Instant::now(),
            exit_watch: None,
        }
    }

    /// Has the next tick look at it.
    pub(crate) fn look_soon(&mut self) {
        self.next_look = Instant::now();
    }

    /// When the tick is next to look at it with no news (output, records
    /// and process ends are `notified`, or not): on every tick while
    /// something changes by the tick alone (recent output, records to read,
    /// a prompt to type, a process not watched, a report held back), else
    /// when the clock changes its activity, or after [`SAFETY_LOOK`] (when
    /// its records are that old too).
    pub(crate) fn next_look(&self, now: SystemTime, notified: bool) -> Instant {
        let tick = Instant::now();
        if self.exited.is_some() {
            return tick + SAFETY_LOOK;
        }
        let (state, evidence) = state_of(self, now);
        let held_back = self
            .reported
            .as_ref()
            .is_none_or(|(last, _)| *last != reported(self, state, evidence.as_ref(), now));
        if !notified
            || held_back
            || self.exit_watch.is_none()
            || self.signals.records_due(tick, SAFETY_LOOK)
            || self.prompt_pending
            || self.watch_prompt
            || self.meta.prompt == PromptStep::Typing
            || self.last_output.elapsed() < PARK_SCREEN_AFTER
        {
            return tick;
        }
        let safety = tick + SAFETY_LOOK;
        self.signals.next_change(now).map_or(safety, |at| {
            safety.min(tick + at.duration_since(now).unwrap_or_default())
        })
    }

    /// Reads new terminal output (which feeds the screen model).
    pub(crate) fn read_output(&mut self) {
        if self.output.poll(&self.meta.log_path) > 0 {
            self.last_output = Instant::now();
        }
    }

    /// The agent ended: its pane's process did, or the agent's own process
    /// in a pane that lives on.
    pub(crate) fn set_exited(&mut self, code: Option<i32>, reason: String, now: SystemTime) {
        let detail = match code {
            Some(c) => format!("the agent's terminal ended (exit code {c})"),
            None if reason.is_empty() => "the agent's terminal ended".to_string(),
            None => reason.clone(),
        };
        self.signals.tracker.process_gone(now, detail);
        self.exited = Some((code, reason));
    }
}

pub(crate) fn prompt_time(l: &LocalSession) -> bool {
    match l.screen {
        ScreenState::Ready => true,
        ScreenState::WaitingInput => false,
        ScreenState::Other => {
            l.launch.ready.is_none()
                && l.started.elapsed() >= QUIET_BEFORE_PROMPT
                && l.last_output.elapsed() >= QUIET_BEFORE_PROMPT
        }
    }
}

/// Where the session is and, while its agent runs or has just gone, what
/// it does and how that is known.
pub(crate) fn state_of(l: &LocalSession, now: SystemTime) -> (ReportState, Option<Evidence>) {
    let evidence = l.signals.evidence(now);
    let state = if l.exited.is_some() && l.failed {
        ReportState::Errored
    } else if l.exited.is_some() {
        ReportState::Exited
    } else if l.prompt_failed.is_some() {
        ReportState::Errored
    } else {
        ReportState::Running
    };
    (state, evidence)
}

/// What a report says that is worth sending again when it changes (the
/// detail of an ongoing activity is not).
pub(crate) fn reported(
    l: &LocalSession,
    state: ReportState,
    e: Option<&Evidence>,
    now: SystemTime,
) -> Reported {
    Reported {
        state,
        activity: e.map(|e| e.activity),
        source: e.map(|e| e.source),
        since: e.map(|e| e.since),
        stuck: l.signals.stuck(now),
        agent_session_id: l.signals.tracker.agent_session_id.clone(),
        exit_code: l.exited.as_ref().and_then(|e| e.0),
        detail: e.map(|e| e.detail.clone()),
    }
}

pub(crate) fn report(
    l: &LocalSession,
    state: ReportState,
    evidence: Option<Evidence>,
    now: SystemTime,
    runtime: &dyn Runtime,
) -> Report {
    Report {
        session_id: l.meta.session_id.clone(),
        epoch: l.meta.epoch,
        state,
        activity: evidence.as_ref().map(|e| e.activity),
        evidence,
        stuck: l.signals.stuck(now),
        agent_session_id: l.signals.tracker.agent_session_id.clone(),
        exit_code: l.exited.as_ref().and_then(|e| e.0),
        reason: l
            .exited
            .as_ref()
            .map(|e| e.1.clone())
            .filter(|r| !r.is_empty())
            .or_else(|| l.prompt_failed.clone()),
        worktree: Some(l.meta.worktree.clone()),
        branch: Some(l.meta.branch.clone()),
        attach_command: Some(runtime.attach_command(&l.meta.session_id)),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn session(home: &Home) -> LocalSession {
        let meta = SessionMeta::sample(home);
        LocalSession::adopted(meta, Launch::unresolved(None), home, None)
    }

    /// Marks what `l` says now as sent.
    fn sent(l: &mut LocalSession, now: SystemTime) {
        let (state, evidence) = state_of(l, now);
        l.reported = Some((reported(l, state, evidence.as_ref(), now), Instant::now()));
    }

    #[tokio::test]
    async fn a_quiet_session_is_looked_at_only_when_the_clock_changes_it_or_for_safety() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = session(&Home::new(dir.path()));
        let now = SystemTime::now();
        // Just adopted: output is recent, nothing read or sent yet.
        assert!(l.next_look(now, true) <= Instant::now());
        l.last_output = Instant::now()
            .checked_sub(PARK_SCREEN_AFTER)
            .expect("the machine has been up longer than that");
        l.signals.read_records(Instant::now());
        sent(&mut l, now);
        // Quiet, but its process is not watched, or nothing is notified.
        assert!(l.next_look(now, true) <= Instant::now());
        l.exit_watch = Some(ExitWatch::start(vec![std::process::id()], async {}).unwrap());
        assert!(l.next_look(now, false) <= Instant::now());
        assert!(l.next_look(now, true) >= Instant::now() + SAFETY_LOOK - Duration::from_secs(1));
        // Ready for 290 s: idle in 10 s, before the safety look.
        l.signals
            .tracker
            .process_started(now - Duration::from_secs(290), "bot running");
        assert!(l.next_look(now, true) <= Instant::now(), "not reported yet");
        sent(&mut l, now);
        let look = l.next_look(now, true);
        assert!(look <= Instant::now() + Duration::from_secs(10));
        assert!(look >= Instant::now() + Duration::from_secs(9));
    }
}
