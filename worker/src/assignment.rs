//! What the controller asks this worker to run, in the worker's terms (the
//! wire's `Assign`, checked and with its `""`s decided by [`crate::convert`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::agent::AgentSpec;

/// Run a session at an epoch (a newer epoch replaces what runs).
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub spec: SessionSpec,
    pub epoch: u64,
    /// The W3C `traceparent` of the action that sent it, if traced.
    pub traceparent: Option<String>,
}

/// One session to set up: where its worktree comes from, the agent and the
/// task prompt. Its ids are checked: they name files and tmux targets.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    pub session_id: String,
    pub project_id: String,
    pub issue_id: Option<String>,
    pub repo_path: PathBuf,
    pub default_branch: String,
    pub branch: String,
    pub agent: AgentSpec,
    pub prompt: String,
    /// `postCreate` commands, run in the new worktree.
    pub post_create: Vec<String>,
    pub symlinks: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Active this long with no sign of life is stuck.
    pub stuck_after: Option<std::time::Duration>,
    /// The agent's session a new epoch continues, where the agent can.
    pub agent_session_id: Option<String>,
    /// Run in `repo_path` itself, not in a worktree of its own (the
    /// orchestrator agent): no worktree, no symlinks, no `postCreate`.
    pub in_repository: bool,
    /// Where the agent runs.
    pub runtime: RuntimeChoice,
}

/// The runtime a session's agent runs in.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RuntimeChoice {
    /// A tmux session on this machine.
    #[default]
    Tmux,
    /// A container of its own, its terminal kept in tmux.
    Docker(DockerSettings),
}

/// How a `runtime: docker` session's container is made (`docker.*`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DockerSettings {
    pub image: String,
    /// The memory limit in bytes, and as configured (`2G`).
    pub memory: Option<(u64, String)>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    /// `None`: Docker's default, `bridge`.
    pub network: Option<String>,
    /// `host-path:container-path[:ro]`, checked by the controller.
    pub mounts: Vec<String>,
    pub env: BTreeMap<String, String>,
}
