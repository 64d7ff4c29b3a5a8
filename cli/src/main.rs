//! `ao`: run and supervise many AI coding agents, each in its own git
//! worktree and terminal.
//!
//! Args (clap types only) → a command → an exit code. Data goes to stdout,
//! everything else to stderr. Modules:
//! - [`stack`]: `ao up`/`down` and the single-machine stack in one process.
//! - [`attach`]: `ao attach`, the interactive terminal.
//! - [`commands`]: every command that talks to a running controller.
//! - [`render`]: tables and JSON for people and scripts.
//! - [`doctor`]: `ao doctor`.

mod attach;
mod commands;
mod doctor;
mod render;
mod stack;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ao",
    version,
    about = "Run and supervise many AI coding agents, each in its own git worktree and terminal.",
    after_help = "Start here:  ao up -d   then   ao spawn <project> <issue>   and   ao status\n\
                  State lives in $AO_HOME (default ~/.agent-orchestrator)."
)]
struct Cli {
    /// Where the controller is (unix:///path/ao.sock); default: the local stack under AO_HOME.
    #[arg(long, global = true, env = "AO_CONTROLLER")]
    controller: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the single-machine stack (controller on the embedded store + a local worker).
    Up {
        /// Detach: return once the stack accepts commands.
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Stop the local stack; agent sessions keep running and are re-adopted by the next `ao up`.
    Down,
    /// Validate a config file and send it to the controller.
    Apply {
        /// The config file (agent-orchestrator.yaml).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Create a session: an agent in its own worktree and terminal. Prints SESSION=<id>.
    Spawn(SpawnArgs),
    /// One session per issue, skipping issues that already have a live session.
    BatchSpawn {
        project: String,
        #[arg(required = true)]
        issues: Vec<String>,
        /// Agent to run instead of the project's.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Sessions at a glance.
    Status(ListArgs),
    /// Manage sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Type a message into a session's agent, press Enter, and confirm it arrived.
    Send {
        id: String,
        /// The message (words are joined with spaces).
        #[arg(required_unless_present = "file")]
        message: Vec<String>,
        /// Read the message from a file.
        #[arg(short = 'f', long = "file", conflicts_with = "message")]
        file: Option<PathBuf>,
    },
    /// Step into a session's terminal (detach with Ctrl-b d or Ctrl-\).
    Attach {
        id: String,
        /// Watch without typing.
        #[arg(long)]
        read_only: bool,
        /// Take the keyboard from whoever holds it (they are told).
        #[arg(long, conflicts_with = "read_only")]
        force: bool,
    },
    /// A session's terminal output.
    Logs {
        id: String,
        /// Keep streaming new output.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines (0: everything kept).
        #[arg(short = 'n', long = "lines", default_value_t = 0)]
        lines: u32,
        /// Only output since a time: a duration ago (30s, 10m, 2h, 1d) or an RFC 3339 time.
        #[arg(long, value_parser = parse_since, conflicts_with = "lines")]
        since: Option<u64>,
    },
    /// The event log.
    Events {
        /// Keep streaming new events.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only this type (e.g. session.killed) or family (session).
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only this session's events.
        #[arg(long)]
        session: Option<String>,
        /// Only this project's events.
        #[arg(short = 'p', long)]
        project: Option<String>,
        /// Only the last N events of the history.
        #[arg(short = 'n', long = "lines")]
        lines: Option<u32>,
        /// One JSON object per line, as in events.jsonl.
        #[arg(long)]
        json: bool,
    },
    /// Workers.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Run one part of the stack alone.
    #[command(subcommand)]
    Controller(ControllerCommand),
    /// Check tmux, git, agent binaries, the config and the controller.
    Doctor,
}

#[derive(Args)]
struct SpawnArgs {
    project: String,
    issue: Option<String>,
    /// The task prompt (default: one derived from the issue).
    #[arg(long)]
    prompt: Option<String>,
    /// Agent to run instead of the project's (claude-code, codex, aider, opencode, gemini, or from `agents:`).
    #[arg(long)]
    agent: Option<String>,
    /// Branch name (default: feat/<issue> or session/<id>).
    #[arg(long)]
    branch: Option<String>,
    /// Placement constraint, k=v (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Return as soon as the session is recorded, without waiting for the agent to start.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Args, Clone)]
struct ListArgs {
    /// Only this project.
    #[arg(short = 'p', long)]
    project: Option<String>,
    /// A JSON array of session objects.
    #[arg(long)]
    json: bool,
    /// Keep watching (redraws every 2 s).
    #[arg(short = 'w', long)]
    watch: bool,
    /// Include ended sessions.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum SessionCommand {
    /// List sessions.
    Ls(ListArgs),
    /// Stop a session's agent and its terminal; the worktree and branch stay.
    Kill { id: String },
    /// Bring a dead session back in its worktree.
    Restore { id: String },
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Workers, their labels, capacity and state.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Run a worker that dials the controller (--controller or AO_CONTROLLER).
    Run(WorkerRunArgs),
}

#[derive(Args)]
struct WorkerRunArgs {
    /// Worker id (default: the host name).
    #[arg(long)]
    id: Option<String>,
    /// A label, k=v (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Most sessions to run here (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_sessions: u32,
}

#[derive(Subcommand)]
enum ControllerCommand {
    /// Run the controller alone, serving AO_HOME/ao.sock.
    Run {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the controller keeps its state.
#[derive(Args, Clone, Default)]
pub struct StoreArgs {
    /// `embedded` (default: $AO_HOME/store.redb), `embedded:/path`, or etcd://host:2379[,host:2379…]
    #[arg(long, env = "AO_STORE")]
    pub store: Option<String>,
    /// CA certificate (PEM) that signed etcd's server certificates; turns on TLS to etcd.
    #[arg(long, requires = "store")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth.
    #[arg(long, requires_all = ["etcd_ca", "etcd_key"])]
    pub etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of --etcd-cert.
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected k=v, got `{s}`")),
    }
}

/// `--since`: `30s`, `10m`, `2h`, `1d` ago, or an RFC 3339 time; as unix seconds.
fn parse_since(s: &str) -> Result<u64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return u64::try_from(t.timestamp()).map_err(|_| format!("`{s}` is before 1970"));
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected 30s, 10m, 2h, 1d or an RFC 3339 time, got `{s}`"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use s, m, h or d")),
    };
    Ok((chrono::Utc::now().timestamp().max(0) as u64).saturating_sub(secs))
}

fn labels(pairs: Vec<(String, String)>) -> BTreeMap<String, String> {
    pairs.into_iter().collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = stack::ao_home()?;
    let target = commands::Target::new(cli.controller.as_deref(), &home)?;
    let ok = Ok(ExitCode::SUCCESS);
    match cli.command {
        Command::Up {
            detach: false,
            store,
        } => stack::up_foreground(&home, &store).await.and(ok),
        Command::Up {
            detach: true,
            store,
        } => stack::up_detached(&home, &target, &store).await.and(ok),
        Command::Down => stack::down(&target).await.map(|()| ExitCode::SUCCESS),
        Command::Controller(ControllerCommand::Run { store }) => {
            stack::controller_only(&home, &store).await.and(ok)
        }
        Command::Worker(WorkerCommand::Run(a)) => {
            stack::worker_only(&home, &target, a.id, labels(a.labels), a.max_sessions)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Doctor => doctor::run(&home, &target).await,
        Command::Apply { file } => commands::apply(&target, &file).await.and(ok),
        Command::Spawn(a) => {
            let req = ao_proto::pb::SpawnRequest {
                project_id: a.project,
                issue_id: a.issue.unwrap_or_default(),
                prompt: a.prompt.unwrap_or_default(),
                agent: a.agent.unwrap_or_default(),
                branch: a.branch.unwrap_or_default(),
                labels: labels(a.labels).into_iter().collect(),
                wait: !a.no_wait,
            };
            commands::spawn(&target, req).await
        }
        Command::BatchSpawn {
            project,
            issues,
            agent,
        } => commands::batch_spawn(&target, project, issues, agent).await,
        Command::Status(a) | Command::Session(SessionCommand::Ls(a)) => {
            commands::list(&target, a.project, a.json, a.watch, a.all)
                .await
                .and(ok)
        }
        Command::Session(SessionCommand::Kill { id }) => commands::kill(&target, id).await.and(ok),
        Command::Session(SessionCommand::Restore { id }) => commands::restore(&target, id).await,
        Command::Send { id, message, file } => {
            let text = match file {
                Some(f) => std::fs::read_to_string(&f)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
                None => message.join(" "),
            };
            commands::send(&target, id, text).await.and(ok)
        }
        Command::Attach {
            id,
            read_only,
            force,
        } => attach::run(&target, id, read_only, force).await,
        Command::Logs {
            id,
            follow,
            lines,
            since,
        } => commands::logs(
            &target,
            ao_proto::pb::LogsRequest {
                session_id: id,
                follow,
                tail_lines: lines,
                since_unix: since.unwrap_or(0),
            },
        )
        .await
        .and(ok),
        Command::Events {
            follow,
            kind,
            session,
            project,
            lines,
            json,
        } => {
            let req = ao_proto::pb::EventsRequest {
                follow,
                r#type: kind.unwrap_or_default(),
                session_id: session.unwrap_or_default(),
                project_id: project.unwrap_or_default(),
                after_id: 0,
                tail: lines.unwrap_or(0),
            };
            commands::events(&target, req, json).await.and(ok)
        }
        Command::Worker(WorkerCommand::Ls { json }) => {
            commands::workers(&target, json).await.and(ok)
        }
    }
}
