//! One session as the worker's actor tracks it, and what its state is
//! reported as.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::agent::{Launch, ScreenState};
use crate::link_types::{Activity, Report, ReportState};
use crate::meta::SessionMeta;
use crate::output::Output;
use crate::runtime::Runtime;
use crate::setup::Started;

/// Output within this long counts as the agent being active.
pub(crate) const ACTIVE_WINDOW: Duration = Duration::from_secs(2);
/// Quiet this long after start means an agent without a ready pattern can
/// take its prompt.
pub(crate) const QUIET_BEFORE_PROMPT: Duration = Duration::from_millis(1500);

/// The last report sent for a session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reported {
    pub(crate) state: ReportState,
    pub(crate) activity: Option<Activity>,
    pub(crate) exit_code: Option<i32>,
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
    pub(crate) screen: ScreenState,
    pub(crate) needs_capture: bool,
    pub(crate) prompt_pending: bool,
    pub(crate) exited: Option<(Option<i32>, String)>,
    /// Polls that saw the pane dead but no exit status yet.
    pub(crate) dead_polls: u32,
    pub(crate) reported: Option<Reported>,
}

impl LocalSession {
    /// A session whose agent [`crate::setup::setup`] just started.
    pub(crate) fn started(Started { meta, launch }: Started) -> Self {
        LocalSession {
            writer: None,
            keyboard: Arc::default(),
            output: Output::resume(&meta.log_path),
            prompt_pending: !launch.prompt_on_command_line,
            meta,
            launch,
            last_output: Instant::now(),
            started: Instant::now(),
            screen: ScreenState::Other,
            needs_capture: true,
            exited: None,
            dead_polls: 0,
            reported: None,
        }
    }

    /// Reads new terminal output; new output means the screen must be judged again.
    pub(crate) fn read_output(&mut self) {
        if self.output.poll(&self.meta.log_path) > 0 {
            self.last_output = Instant::now();
            self.needs_capture = true;
        }
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

/// The activity is set only while the agent runs.
pub(crate) fn state_of(l: &LocalSession) -> (ReportState, Option<Activity>) {
    if l.exited.is_some() {
        return (ReportState::Exited, None);
    }
    let activity = match l.screen {
        ScreenState::WaitingInput => Activity::WaitingInput,
        ScreenState::Ready => Activity::Ready,
        ScreenState::Other if l.last_output.elapsed() < ACTIVE_WINDOW => Activity::Active,
        ScreenState::Other => Activity::Idle,
    };
    (ReportState::Running, Some(activity))
}

pub(crate) fn report(
    l: &LocalSession,
    state: ReportState,
    activity: Option<Activity>,
    runtime: &dyn Runtime,
) -> Report {
    Report {
        session_id: l.meta.session_id.clone(),
        epoch: l.meta.epoch,
        state,
        activity,
        exit_code: l.exited.as_ref().and_then(|e| e.0),
        reason: l
            .exited
            .as_ref()
            .map(|e| e.1.clone())
            .filter(|r| !r.is_empty()),
        worktree: Some(l.meta.worktree.clone()),
        branch: Some(l.meta.branch.clone()),
        attach_command: Some(runtime.attach_command(&l.meta.session_id)),
    }
}
