//! What crosses the link to the controller, in the worker's terms: the
//! requests the actor takes, the reports it gives, and the tunnels its
//! viewers talk through. [`crate::convert`] turns the wire's messages into
//! these and back; [`crate::link`] does it as they arrive and leave, and
//! dials the tunnels.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;

use crate::assignment::Assignment;

/// What the controller asks of the actor.
pub enum Request {
    Assign(Box<Assignment>),
    Stop(Stop),
    Input(Input),
    /// A viewer's stream, with the way to open its tunnel.
    OpenStream(OpenStream, Arc<dyn Tunnels>),
    /// Report every session again, changed or not.
    Resync,
    /// End a finished session and remove its worktree.
    RemoveWorkspace(RemoveWorkspace),
}

/// Forget a finished session (stopping what is left of its runtime) and
/// remove its worktree, `worktrees/<project>/<session>` under this worker's
/// home; answered by a [`WorkspaceRemoved`]. Its ids are checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoveWorkspace {
    pub request_id: u64,
    pub session_id: String,
    /// Refused when the session runs here at a newer epoch.
    pub epoch: u64,
    pub project_id: String,
    pub repo_path: PathBuf,
    pub branch: String,
    /// Delete the branch too (its work is merged).
    pub delete_branch: bool,
    /// Remove the worktree even with uncommitted changes.
    pub force: bool,
    /// Files ao linked into the worktree.
    pub symlinks: Vec<String>,
    /// Only look and say what would be done.
    pub dry_run: bool,
}

/// What became of a [`RemoveWorkspace`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRemoved {
    pub request_id: u64,
    pub session_id: String,
    pub epoch: u64,
    pub worktree: PathBuf,
    pub result: Result<crate::workspace::Removal, String>,
}

/// Stop a session (unless it runs at a newer epoch). Its id is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub session_id: String,
    pub epoch: u64,
}

/// Type `text` into a session's agent; answered by an [`InputOutcome`].
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub request_id: u64,
    pub session_id: String,
    pub epoch: u64,
    pub text: String,
    /// Keys as they are: no Enter, no waiting for the echo.
    pub raw: bool,
    /// Typed once per session under this key (see [`crate::delivery::once`]).
    pub once_key: Option<String>,
}

/// Whether an [`Input`] reached the agent, or why not.
#[derive(Debug, Clone, PartialEq)]
pub struct InputOutcome {
    pub request_id: u64,
    pub result: Result<(), String>,
}

/// What the actor tells the controller.
#[derive(Debug, Clone, PartialEq)]
pub enum ToController {
    Report(Report),
    InputOutcome(InputOutcome),
    AgentReport(AgentReport),
    WorkspaceRemoved(WorkspaceRemoved),
}

/// What an agent said of itself (`ao report`), checked by this worker.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReport {
    pub session_id: String,
    pub epoch: u64,
    pub state: ao_proto::report::AgentState,
    pub note: Option<String>,
    pub pr_url: Option<String>,
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportState {
    /// Being set up (worktree, `postCreate`, agent start).
    Starting,
    Running,
    /// The agent exited by itself.
    Exited,
    /// The session could not be set up or started.
    Errored,
    /// Stopped because the controller said so.
    Stopped,
}

/// What an agent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Active,
    Ready,
    Idle,
    WaitingInput,
    /// The last turn ended on an error and no prompt came since.
    Blocked,
    /// The agent's process is gone.
    Exited,
}

/// How the worker knows an activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Process,
    Hook,
    Transcript,
    Report,
    Screen,
    Clock,
}

/// One session's state, as reported to the controller.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub session_id: String,
    pub epoch: u64,
    pub state: ReportState,
    /// Set only while running, or for an agent gone from a live terminal.
    pub activity: Option<Activity>,
    /// How the activity is known.
    pub evidence: Option<Evidence>,
    /// Active with no sign of life for the session's stuck threshold.
    pub stuck: bool,
    /// The agent's own session id (Claude's session, Codex's thread).
    pub agent_session_id: Option<String>,
    /// Exited: the agent's exit code, if the runtime knew it.
    pub exit_code: Option<i32>,
    /// Exited, errored, stopped: what went wrong.
    pub reason: Option<String>,
    pub worktree: Option<PathBuf>,
    pub branch: Option<String>,
    pub attach_command: Option<String>,
}

impl Report {
    /// A report of nothing but `state` (and `reason`).
    pub fn bare(
        session_id: String,
        epoch: u64,
        state: ReportState,
        reason: Option<String>,
    ) -> Self {
        Report {
            session_id,
            epoch,
            state,
            activity: None,
            evidence: None,
            stuck: false,
            agent_session_id: None,
            exit_code: None,
            reason,
            worktree: None,
            branch: None,
            attach_command: None,
        }
    }
}

/// A viewer's stream of one session.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenStream {
    /// Which request the tunnel answers.
    pub stream_id: u64,
    pub kind: StreamKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamKind {
    /// The session's output (`ao logs`, `ao watch`). Its id is checked: an
    /// ended session's log is read by it.
    Output {
        session_id: String,
        from: OutputFrom,
        /// Live output follows the history.
        follow: bool,
    },
    /// An interactive terminal (`ao attach`).
    Terminal(AttachStart),
}

/// Which past output a viewer gets first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFrom {
    All,
    /// What arrived at or after this time (unix seconds).
    Since(u64),
    /// The last lines.
    Tail(usize),
}

/// A viewer's terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachStart {
    pub session_id: String,
    pub read_only: bool,
    /// Take the keyboard from whoever holds it.
    pub force: bool,
    pub cols: u16,
    pub rows: u16,
    /// Who attaches (user@host), a display hint.
    pub who: String,
    /// The viewer's `$TERM`.
    pub term: String,
    /// One `ao attach` keeps its seat across its reconnects.
    pub seat: Option<String>,
}

/// What goes up a tunnel to the viewer.
#[derive(Debug, Clone, PartialEq)]
pub enum TunnelUp {
    Data(Vec<u8>),
    /// The worker cannot serve the stream.
    Error(String),
    /// The terminal ended, and why.
    End(TerminalEnd),
}

/// Why a terminal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalEnd {
    /// The viewer detached and the session runs on.
    Detached,
    /// The agent's session is gone.
    SessionEnded,
    /// Another viewer took the keyboard.
    TakenOver { by: String },
}

/// What comes down a tunnel from the viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelDown {
    Keys(Vec<u8>),
    Resize { cols: u16, rows: u16 },
}

/// What comes down an open tunnel; it ends when the controller ends the
/// tunnel, and dropping it ends the tunnel.
pub type Downstream = Pin<Box<dyn Stream<Item = TunnelDown> + Send>>;

/// Opens tunnels to the controller (the link dials them).
#[async_trait::async_trait]
pub trait Tunnels: Send + Sync {
    /// Opens the tunnel answering stream `stream_id`: what `up` carries goes
    /// to the controller, the returned stream comes down.
    ///
    /// # Errors
    /// The controller cannot be reached or refused the tunnel.
    async fn open(
        &self,
        stream_id: u64,
        up: mpsc::Receiver<TunnelUp>,
    ) -> Result<Downstream, String>;
}

/// Why a session's activity is what it is: how it is known, since when,
/// and the line behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub activity: Activity,
    pub source: Source,
    /// Since when this activity holds.
    pub since: std::time::SystemTime,
    /// One short line: the record, hook or screen line behind it.
    pub detail: String,
}
