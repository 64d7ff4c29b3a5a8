//! The `ao` worker: the source of truth for what runs on one machine.
//!
//! It dials the controller (workers behind NAT only ever dial out), starts
//! agents in their own git worktrees and tmux sessions, watches their
//! screens, and re-adopts them after a restart.
//!
//! Modules:
//! - [`runtime`]: the `Runtime` trait and tmux.
//! - [`docker`]: the Docker runtime, a container per session.
//! - `select`: which runtime holds each session.
//! - `screen`: a session's screen rebuilt from its output, and agents' dialogs on it.
//! - [`workspace`]: git worktrees, symlinks, `postCreate`.
//! - [`agent`]: adapters for built-in and configured agents.
//! - [`assignment`]: what the controller asks this worker to run.
//! - [`link_types`]: what crosses the link, in the worker's terms.
//! - [`convert`]: the link's wire types to the worker's domain types and back.
//! - `delivery`: typing prompts and messages into an agent.
//! - `activity`: the one rule that folds every signal into an activity.
//! - `native`: one session's signals (records, screen, process), read
//!   without starting a process.
//! - `agent_report`: what `ao report` from inside a session is worth;
//!   `report_socket`: the Unix socket it arrives on.
//! - [`hooklog`]: what the agent's hooks say, appended by `ao hook`.
//! - `meta`: what a worker keeps per session across restarts.
//! - `local`: one session's state in the actor and its report.
//! - [`output`]: per-session ring buffer and viewers.
//! - `procs`: whether a session's agent still runs, from `/proc`.
//! - [`sessions`]: the actor that owns local sessions.
//! - `viewers`: output streams and terminals carried on tunnels.
//! - `setup`: a session's worktree, files and agent start.
//! - [`terminal`]: `ao attach` through a tmux client in a pseudo-terminal.
//! - [`link`]: the stream to the controller.
//! - `signals`: what agents say about their activity in their transcripts
//!   and hooks.

mod activity;
pub mod agent;
mod agent_report;
pub mod assignment;
pub mod convert;
mod delivery;
pub mod docker;
pub mod hooklog;
pub mod link;
pub mod link_types;
mod local;
mod meta;
mod native;
pub mod output;
mod pidwatch;
mod procs;
mod report_socket;
pub mod runtime;
mod screen;
mod select;
pub mod sessions;
mod setup;
mod signals;
pub mod terminal;
mod viewers;
pub mod workspace;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use link::{LinkConfig, LinkError};
pub use sessions::WorkerSettings;

/// Runs a worker, dialing the first controller that answers, until `stop`
/// is cancelled. What it starts in the background belongs to `tasks`.
/// Agent sessions keep running after it returns and are re-adopted by the
/// next run.
///
/// # Errors
/// The controller refused this worker, or its certificate is unusable.
pub async fn run(
    settings: WorkerSettings,
    link: LinkConfig,
    tasks: TaskTracker,
    stop: CancellationToken,
) -> Result<(), LinkError> {
    let mut settings = settings.reaching(&link);
    let socket = settings.home.tmux_socket();
    let mut tmux = runtime::TmuxRuntime::new(socket.clone());
    // This binary writes the terminal logs, rotating them; tmux runs it
    // for each pane, so it keeps writing while no worker runs. It also
    // relays the terminals of containers.
    let exe = std::env::current_exe();
    match &exe {
        Ok(exe) => tmux = tmux.with_log_writer(exe.clone()),
        Err(e) => tracing::warn!("terminal logs will not rotate: cannot find this binary: {e}"),
    }
    let tmux = Arc::new(tmux);
    let docker = match (docker::connect().await, exe) {
        (Ok(engine), Ok(exe)) => {
            // Placement sends docker sessions only to workers that say so.
            settings
                .labels
                .insert(ao_proto::RUNTIME_LABEL.into(), "docker".into());
            Some(docker::DockerRuntime::new(
                engine,
                settings.id.clone(),
                settings.home.clone(),
                tmux.clone(),
                exe,
            ))
        }
        (Err(e), _) => {
            tracing::info!("no docker runtime: {e}");
            None
        }
        (_, Err(e)) => {
            tracing::warn!("no docker runtime: cannot find this binary to relay terminals: {e}");
            None
        }
    };
    let settings = Arc::new(settings);
    let runtime = Arc::new(select::RuntimeSelector::new(tmux, docker));
    let (reports_tx, reports_rx) = mpsc::channel(4096);
    let (handle, task) =
        sessions::start(settings.clone(), runtime, reports_tx, tasks.clone()).await;
    tasks.spawn(report_socket::serve(
        settings.home.report_socket(),
        handle.clone(),
        tasks.clone(),
        stop.clone(),
    ));
    let result = link::run(
        link,
        settings,
        socket.display().to_string(),
        handle,
        reports_rx,
        stop.cancelled_owned(),
    )
    .await;
    task.abort();
    result
}
