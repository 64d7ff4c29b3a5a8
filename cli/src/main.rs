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
//! - [`install`]: `ao worker install`/`uninstall`, a worker as a systemd unit.
//! - [`lifecycle`]: `ao start`/`stop`, a project's stack and orchestrator agent.

mod attach;
mod commands;
mod doctor;
mod install;
mod lifecycle;
mod render;
mod stack;
mod telemetry;

use ao_proto::units::{parse_duration, parse_size};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// How many past events `ao events` shows unless told otherwise.
const EVENTS_SHOWN: u32 = 1000;
#[derive(Parser)]
#[command(
    name = "ao",
    version,
    about = "Run and supervise many AI coding agents, each in its own git worktree and terminal.",
    after_help = "Start here:  ao up -d   then   ao spawn <project> <issue>   and   ao status\n\
                  State lives in $AO_HOME (default ~/.agent-orchestrator)."
)]
struct Cli {
    /// Where the controller is: https://host:port (several, comma-separated, for HA) or unix:///path/ao.sock; default: the local stack under AO_HOME.
    #[arg(long, global = true, env = "AO_CONTROLLER")]
    controller: Option<String>,
    /// A credential file of `ao token create --role R` (its token and controller), or a directory with ca.crt, tls.crt, tls.key for https controllers (default: $AO_HOME/pki/admin, or $AO_HOME/pki/worker for `ao worker run`).
    #[arg(long, global = true, env = "AO_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// A credential's token (`ao token create --role R`), sent with every call: the call is made with that role. Default: $AO_TOKEN.
    // Not clap's `env`: clap would also hand $AO_TOKEN to the join commands'
    // own `--token`, over their `--token-file`, as a join token.
    #[arg(long, global = true)]
    token: Option<String>,
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
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Stop the local stack; agent sessions keep running and are re-adopted by the next `ao up`.
    Down,
    /// Bring up the local stack if none runs (as `ao up -d`), apply the config, and start (or
    /// find) the project's orchestrator agent session.
    Start {
        /// The project (default: the only one configured).
        project: Option<String>,
        /// Only the stack and the config: no orchestrator session.
        #[arg(long)]
        no_orchestrator: bool,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Kill the project's sessions (restorable with `ao session restore`); with no project,
    /// every project's, then stop the local stack.
    Stop {
        /// The project (default: all, and the stack too).
        project: Option<String>,
    },
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
        /// Type the message as keys, control bytes included (`$'\x03'` is Ctrl-C), without
        /// Enter or a check that it arrived. Without it, control bytes other than newline and
        /// tab are refused.
        #[arg(long)]
        raw: bool,
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
        /// Only the last N events of the history (default 1000, see --all).
        #[arg(short = 'n', long = "lines", conflicts_with = "all")]
        lines: Option<u32>,
        /// Every event the store keeps (the newest 10,000; $AO_HOME/events.jsonl
        /// on the controller's machine holds them all).
        #[arg(long)]
        all: bool,
        /// One JSON object per line, as in events.jsonl.
        #[arg(long)]
        json: bool,
    },
    /// Workers: list, join, run, drain, remove.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Join tokens for new build machines.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The notifiers of the applied config.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// The schedules of the applied config (`schedules.<name>`): spawns at cron ticks.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Personal admin credentials for the CLI over TCP: issue, list, revoke.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run one part of the stack alone.
    #[command(subcommand)]
    Controller(ControllerCommand),
    /// From inside a session: say what the agent is doing (working,
    /// needs_input, blocked, pr_created, completed). The worker checks the
    /// session's own secret ($AO_SESSION_TOKEN) and records it as evidence
    /// and as a `session.report` event.
    Report {
        #[arg(value_parser = ao_proto::report::AgentState::parse)]
        state: ao_proto::report::AgentState,
        /// One line on what it is doing or needs.
        #[arg(long)]
        note: Option<String>,
        /// The pull request it opened.
        #[arg(long)]
        pr_url: Option<String>,
    },
    /// Check tmux, git, agent binaries, the config (with its GitHub token and Linear key) and the controller.
    Doctor,
    /// Print a one-time login link to the web dashboard (valid for five minutes, once; the login
    /// it gives lasts twelve hours), or end every dashboard login with --revoke-all.
    Dashboard {
        /// The role of the login: viewer watches; operator also acts on sessions.
        #[arg(long, default_value = "operator", value_parser = ["admin", "operator", "viewer"])]
        role: String,
        /// Open the link in this machine's browser (xdg-open).
        #[arg(long)]
        open: bool,
        /// The dashboard's base URL (default: the local stack's HTTP listener, from $AO_HOME/http.url).
        #[arg(long)]
        url: Option<String>,
        /// End every dashboard login and unused link now.
        #[arg(long, conflicts_with_all = ["role", "open", "url"])]
        revoke_all: bool,
    },
    /// Print shell completions, e.g. `ao completion bash > ~/.local/share/bash-completion/completions/ao`.
    Completion { shell: clap_complete::Shell },
}

#[derive(Args)]
struct SpawnArgs {
    project: String,
    /// The issue: a number with `tracker: github` (42), an identifier with `tracker: linear`
    /// (INT-1234).
    issue: Option<String>,
    /// The task prompt (default: one derived from the issue; with a tracker the issue's details
    /// follow it).
    #[arg(long)]
    prompt: Option<String>,
    /// Agent to run instead of the project's (claude-code, codex, aider, opencode, gemini, or from `agents:`).
    #[arg(long)]
    agent: Option<String>,
    /// Branch name (default: <branchPrefix><n>-<title slug> for a tracked issue, else
    /// feat/<issue> or session/<id>).
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
    /// End finished sessions (PR merged or closed, agent exited, killed or errored) and remove
    /// their worktrees. A branch is deleted only when its PR was merged; a worktree with
    /// uncommitted changes is kept unless its PR was merged or closed. Orchestrator sessions
    /// are left alone.
    Cleanup {
        /// Only this project.
        #[arg(short = 'p', long)]
        project: Option<String>,
        /// Change nothing: print what would be done.
        #[arg(long)]
        dry_run: bool,
        /// A JSON array of {session, action, worktree, branchDeleted, reason, detail}.
        #[arg(long)]
        json: bool,
    },
    /// One session: how its activity is known (source, since, detail) and
    /// its recent activity history.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Workers, their labels, capacity and state.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Run a worker that dials the controller (--controller, AO_CONTROLLER, or the one it joined).
    Run(WorkerRunArgs),
    /// Join a cluster: pin its CA, make a key here, trade the token for a worker certificate.
    Join {
        /// The controller, https://host:port (as `ao token create` printed it).
        controller_url: String,
        /// The single-use token from `ao token create`, or `-` to read it from stdin. On a shared machine prefer `--token-file` or `-`: arguments are visible to every user in `ps`.
        #[arg(long, required_unless_present = "token_file")]
        token: Option<String>,
        /// Read the token from this file (its first line) instead of the command line.
        #[arg(long, conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// sha256:<hex> of the cluster CA certificate, from `ao token create`.
        #[arg(long)]
        ca_hash: String,
        /// Worker id (default: the host name).
        #[arg(long)]
        id: Option<String>,
    },
    /// Make this build machine (or, with --ssh, another) a worker: join the controller given
    /// with --controller, install this binary under <prefix>/bin and the systemd unit
    /// ao-worker.service, start it, and wait until the controller has the worker connected.
    /// Each step is printed. Running it again upgrades the binary and restarts the unit; the
    /// agents' sessions survive. Prints WORKER=<id>.
    #[command(
        after_help = "Example, from the operator's machine (needs root there):\n  \
                      ao worker install --ssh root@build-3 --controller https://ao.example.com:7070 \\\n    \
                      --token <from ao token create> --ca-hash sha256:… --label gpu=a100 --max-sessions 8\n\
                      Upgrade later with the same command without --token. AO_SSH_COMMAND sets the ssh\n\
                      command (e.g. `ssh -i key -p 2222`). Where systemd does not run (a container), the\n\
                      unit is written and its ExecStart started in the background."
    )]
    Install(InstallArgs),
    /// Reverse `ao worker install`: stop and remove the unit, the binary and the worker
    /// certificate (worktrees and logs stay). With --ssh, also `ao worker rm` on the controller.
    Uninstall {
        /// Where install put the binary (<prefix>/bin/ao).
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Uninstall on another machine, reached over SSH as user@host (root there).
        #[arg(long, value_name = "USER@HOST")]
        ssh: Option<String>,
    },
    /// Stop placing new sessions on a worker; its running sessions stay.
    Drain {
        id: String,
        /// Accept new sessions again.
        #[arg(long)]
        undo: bool,
    },
    /// Forget a worker and revoke its certificates; its sessions are marked stuck.
    Rm { id: String },
    /// Append standard input to a terminal log, rotating it past 64 MiB
    /// (tmux runs this for every session's pane).
    #[command(hide = true)]
    LogWriter { log: PathBuf },
    /// Relay this terminal to a container's TTY until the container ends,
    /// and exit with its exit code (the tmux pane of a `runtime: docker`
    /// session runs this).
    #[command(hide = true)]
    DockerAttach {
        /// The container (`ao-<session>`).
        container: String,
        /// Start the container once attached (a new session's).
        #[arg(long)]
        start: bool,
    },
    /// Append what an agent's hook got on standard input to the session's
    /// hook log (the agent runs this for the hooks `ao` installed).
    #[command(hide = true)]
    Hook {
        /// The session's hook log.
        #[arg(long)]
        log: PathBuf,
        /// The agent's event name.
        event: String,
    },
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Send notifier <ID> a test notification now and print what its receiver answered.
    Test { id: String },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Each schedule with its next run (RFC 3339, UTC) and what its last run spawned, skipped
    /// and failed.
    Ls {
        /// A JSON array of schedules, for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Without --role: a single-use worker join token and the `ao worker join` command. With
    /// --role: a credential for a person or automation; prints TOKEN=<secret> (for
    /// `Authorization: Bearer` on the HTTP listener) and writes a credential file for the CLI
    /// (AO_CREDENTIALS=<file>).
    #[command(
        after_help = "Roles: admin (everything), operator (spawn, send, kill, restore, attach, status, events, logs),\n\
                      spawner (spawn, status), viewer (status, logs, events, attach --read-only).\n\
                      Example, a GitLab CI job that spawns: ao token create --role spawner --name gitlab-ci"
    )]
    Create {
        /// How long it stays valid (30m, 1h, 1d); join tokens: 1h by default, credentials: no expiry.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Make a credential of this role instead of a join token.
        #[arg(long, value_parser = ["admin", "operator", "spawner", "viewer"])]
        role: Option<String>,
        /// The credential's name (default <role>-<id>); `ao token rm <name>` revokes it.
        #[arg(long, requires = "role")]
        name: Option<String>,
        /// Where to write the credential file (default $AO_HOME/credentials/<name>.json).
        #[arg(long, requires = "role")]
        out: Option<PathBuf>,
    },
    /// Join tokens not yet used and credentials (ids, roles, expiry; secrets are not kept).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Withdraw an unused join token (its id is the part before the dot) or revoke a credential
    /// (by id or name): calls with it are refused at once.
    Rm { id: String },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// A personal admin credential (a key made here, signed by the cluster CA), so that revoking one person's does not lock out the others.
    Issue {
        /// Whose it is (letters, digits, `-`, `_`, `.`): `ao admin revoke <name>` withdraws it.
        name: String,
        /// How long it stays valid (at most 365d).
        #[arg(long, default_value = "90d", value_parser = parse_duration)]
        ttl: std::time::Duration,
        /// Where to write ca.crt, tls.crt and tls.key (default: $AO_HOME/pki/admins/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Admin certificates issued and not expired, revoked ones included.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Revoke every certificate of a name, or one certificate by its serial: its next call is refused.
    Revoke { name_or_serial: String },
}

#[derive(Args)]
struct InstallArgs {
    /// The single-use join token from `ao token create`, or `-` to read it from stdin; needed
    /// only on the first install (the machine keeps its certificate).
    #[arg(long)]
    token: Option<String>,
    /// Read the token from this file (its first line) instead of the command line.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// sha256:<hex> of the cluster CA certificate, from `ao token create`.
    #[arg(long)]
    ca_hash: Option<String>,
    /// Worker id (default: the host name).
    #[arg(long)]
    id: Option<String>,
    /// A label, k=v (repeatable), given to `ao worker run` in the unit.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Most sessions to run there (0: no limit). With neither --label nor --max-sessions, a
    /// reinstall keeps those of the installed unit.
    #[arg(long)]
    max_sessions: Option<u32>,
    /// Install the binary as <prefix>/bin/ao.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Install on another machine, reached over SSH as user@host (root there): copies this
    /// binary there and runs the steps there; the token goes on SSH's standard input.
    #[arg(long, value_name = "USER@HOST")]
    ssh: Option<String>,
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
    /// Memory to keep free (512M, 2G): no session is placed here while less is available.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    memory_reserve: u64,
}

#[derive(Subcommand)]
// Parsed once per run: the size of a flag set does not matter.
#[allow(clippy::large_enum_variant)]
enum ControllerCommand {
    /// Run the controller alone, serving AO_HOME/ao.sock (and, with --listen, workers and CLIs over mTLS).
    Run {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Create the cluster CA and an admin credential for the CLI (once per cluster).
    Init {
        /// Where to keep them (default: $AO_HOME/pki).
        #[arg(long)]
        pki_dir: Option<PathBuf>,
    },
}

/// Serving workers on other machines.
#[derive(Args, Clone, Default)]
pub struct ClusterArgs {
    /// Serve workers and remote CLIs on this TCP address (mTLS only), e.g. 0.0.0.0:7070. Needs `ao controller init` first.
    #[arg(long, env = "AO_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// The URL workers use to reach this controller (default: https://<listen address, or host name>:<port>).
    #[arg(long, requires = "listen")]
    pub advertise: Option<String>,
    /// Where the cluster CA is (default: $AO_HOME/pki).
    #[arg(long)]
    pub pki_dir: Option<PathBuf>,
    /// A worker silent this long is `lost` and its sessions are marked stuck.
    #[arg(long, default_value = "2m", value_parser = parse_duration, env = "AO_WORKER_GRACE")]
    pub worker_grace: std::time::Duration,
    /// Lifetime of worker certificates; workers renew them at two thirds of it.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub worker_cert_ttl: std::time::Duration,
    /// Serve HTTP (the dashboard, /metrics, /healthz, webhooks) on this address, or `off`.
    /// `ao up` serves 127.0.0.1:4000 by default (skipped with a warning if taken); `ao controller
    /// run` only when given. Off loopback it is HTTPS only, with --http-cert/--http-key or a
    /// certificate from the cluster CA. The base URL is written to $AO_HOME/http.url.
    #[arg(long, env = "AO_HTTP", value_parser = parse_http)]
    pub http: Option<HttpFlag>,
    /// The HTTP listener's certificate chain (PEM): HTTPS with it, even on loopback.
    #[arg(long, requires = "http_key")]
    pub http_cert: Option<PathBuf>,
    /// The private key (PEM) of --http-cert.
    #[arg(long, requires = "http_cert")]
    pub http_key: Option<PathBuf>,
}

/// `--http`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFlag {
    Off,
    At(std::net::SocketAddr),
}

fn parse_http(s: &str) -> Result<HttpFlag, String> {
    match s {
        "off" | "none" => Ok(HttpFlag::Off),
        _ => s
            .parse()
            .map(HttpFlag::At)
            .map_err(|_| format!("expected host:port (e.g. 127.0.0.1:4000) or `off`, got `{s}`")),
    }
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
    let ago = parse_duration(s)
        .map_err(|e| format!("{e}; or give an RFC 3339 time"))?
        .as_secs();
    Ok((chrono::Utc::now().timestamp().max(0) as u64).saturating_sub(ago))
}

/// The join token from `--token VALUE`, `--token -` (stdin) or
/// `--token-file F`: the first line, without surrounding blanks.
fn read_token(flag: Option<String>, file: Option<PathBuf>) -> anyhow::Result<String> {
    let (text, from) = match (flag.as_deref(), file) {
        (Some("-"), _) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| anyhow::anyhow!("cannot read the token from stdin: {e}"))?;
            (line, "stdin".to_string())
        }
        (Some(token), _) => (token.to_string(), "--token".to_string()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", f.display()))?;
            (text, f.display().to_string())
        }
        (None, None) => {
            anyhow::bail!("give the join token with --token, --token - or --token-file")
        }
    };
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        anyhow::bail!(
            "no join token in {from}: expected the <id>.<secret> that `ao token create` printed"
        );
    }
    Ok(token)
}

fn labels(pairs: Vec<(String, String)>) -> BTreeMap<String, String> {
    pairs.into_iter().collect()
}

/// Writes `shell`'s completion script for `ao` to stdout; a closed pipe
/// (`ao completion bash | head`) is not an error.
fn print_completion(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ao", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the completion script: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    use clap::FromArgMatches;
    let matches = Cli::command().get_matches();
    let name = command_name(&matches);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Needs nothing but the clap definitions: no runtime, no home.
    if let Command::Completion { shell } = cli.command {
        return print_completion(shell);
    }
    // Runs for the life of a pane, under tmux: no runtime, no home needed.
    if let Command::Worker(WorkerCommand::LogWriter { log }) = &cli.command {
        let input = std::io::stdin().lock();
        return match ao_worker::output::write_rotating(
            log,
            ao_worker::output::LOG_ROTATE_BYTES,
            input,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: writing {}: {e}", log.display());
                ExitCode::FAILURE
            }
        };
    }
    // Runs for the life of a container's pane, under tmux: its own small
    // runtime, no home needed.
    if let Command::Worker(WorkerCommand::DockerAttach { container, start }) = &cli.command {
        let relayed = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(ao_worker::docker::relay(container, *start))
                    .map_err(|e| e.to_string())
            });
        // Exits at once: the relay's read of the terminal does not end by itself.
        std::process::exit(match relayed {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                125
            }
        });
    }
    // Runs inside the agent, which waits for it: no runtime, and never a
    // failure the agent would show; the worker reads the state elsewhere too.
    if let Command::Worker(WorkerCommand::Hook { log, event }) = &cli.command {
        if let Err(e) = ao_worker::hooklog::append(log, event, std::io::stdin().lock()) {
            eprintln!(
                "warning: hook {event} not recorded in {}: {e}",
                log.display()
            );
        }
        return ExitCode::SUCCESS;
    }
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
    match runtime.block_on(traced(cli, name)) {
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

/// `ao session kill`: the span name of a CLI command.
fn command_name(matches: &clap::ArgMatches) -> String {
    let mut name = String::from("ao");
    let mut at = matches;
    while let Some((sub, next)) = at.subcommand() {
        name.push(' ');
        name.push_str(sub);
        at = next;
    }
    name
}

/// Runs `cli` with this process's telemetry: a CLI command is one span (the
/// root of its trace), which the controller and workers continue.
async fn traced(cli: Cli, name: String) -> anyhow::Result<ExitCode> {
    use tracing::Instrument;
    let role = match &cli.command {
        Command::Up { detach: false, .. } | Command::Controller(ControllerCommand::Run { .. }) => {
            telemetry::Role::Controller
        }
        Command::Worker(WorkerCommand::Run(_)) => telemetry::Role::Worker,
        _ => telemetry::Role::Cli,
    };
    let telemetry = telemetry::init(role);
    let result = if role == telemetry::Role::Cli {
        let span = tracing::info_span!("ao.command", otel.name = %name, otel.kind = "client");
        run(cli).instrument(span).await
    } else {
        run(cli).await
    };
    telemetry.shutdown().await;
    result
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = stack::ao_home()?;
    // `ao worker run` after `ao worker join` needs no flags.
    let worker_run = matches!(cli.command, Command::Worker(WorkerCommand::Run(_)));
    let (controller, credentials) = if worker_run {
        stack::joined_target(&home, cli.controller, cli.credentials)
    } else {
        (cli.controller, cli.credentials)
    };
    // Their `--token` is a join token, which clap also hands to the global flag.
    let joining = matches!(
        cli.command,
        Command::Worker(WorkerCommand::Install(_) | WorkerCommand::Join { .. })
    );
    let token = if joining {
        None
    } else {
        cli.token.or_else(|| {
            std::env::var(ao_proto::env::AO_TOKEN)
                .ok()
                .filter(|t| !t.is_empty())
        })
    };
    let target = commands::Target::new(controller.as_deref(), &home, credentials, token)?;
    let ok = Ok(ExitCode::SUCCESS);
    if matches!(
        cli.command,
        Command::Up { .. } | Command::Controller(ControllerCommand::Run { .. })
    ) {
        commands::warn_unimplemented_startup_config(&home);
    }
    match cli.command {
        Command::Up {
            detach: false,
            store,
            cluster,
        } => stack::up_foreground(&home, &store, &cluster).await.and(ok),
        Command::Up {
            detach: true,
            store,
            cluster,
        } => stack::up_detached(&home, &target, &store, &cluster)
            .await
            .and(ok),
        Command::Down => stack::down(&target).await.map(|()| ExitCode::SUCCESS),
        Command::Start {
            project,
            no_orchestrator,
            store,
            cluster,
        } => {
            lifecycle::start(
                &home,
                &target,
                project,
                !no_orchestrator,
                (&store, &cluster),
            )
            .await
        }
        Command::Stop { project } => lifecycle::stop(&target, project).await.and(ok),
        Command::Controller(ControllerCommand::Run { store, cluster }) => {
            stack::controller_only(&home, &store, &cluster)
                .await
                .and(ok)
        }
        Command::Controller(ControllerCommand::Init { pki_dir }) => {
            stack::init_pki(&home, pki_dir).and(ok)
        }
        Command::Worker(WorkerCommand::Run(a)) => {
            let capacity = stack::Capacity {
                max_sessions: a.max_sessions,
                memory_reserve: a.memory_reserve,
            };
            stack::worker_only(&home, &target, a.id, labels(a.labels), capacity)
                .await
                .and(ok)
        }
        Command::Worker(WorkerCommand::Join {
            controller_url,
            token,
            token_file,
            ca_hash,
            id,
        }) => {
            let token = read_token(token, token_file)?;
            stack::join(&home, &controller_url, &token, &ca_hash, id)
                .await
                .and(ok)
        }
        Command::Worker(WorkerCommand::Install(a)) => {
            let token = match (&a.token, &a.token_file) {
                (None, None) => None,
                _ => Some(read_token(a.token, a.token_file)?),
            };
            let spec = install::InstallSpec {
                controller: controller.clone(),
                token,
                ca_hash: a.ca_hash,
                id: a.id,
                labels: a.labels,
                max_sessions: a.max_sessions,
                prefix: a.prefix,
            };
            match a.ssh {
                Some(dest) => install::install_over_ssh(&target, &dest, &spec).await,
                None => install::install(&home, &spec).await,
            }
            .and(ok)
        }
        Command::Worker(WorkerCommand::Uninstall { prefix, ssh }) => match ssh {
            Some(dest) => install::uninstall_over_ssh(&target, &dest, &prefix).await,
            None => install::uninstall(&home, &prefix).await,
        }
        .and(ok),
        Command::Worker(WorkerCommand::Drain { id, undo }) => {
            commands::drain(&target, id, undo).await.and(ok)
        }
        Command::Worker(
            WorkerCommand::LogWriter { .. }
            | WorkerCommand::Hook { .. }
            | WorkerCommand::DockerAttach { .. },
        )
        | Command::Completion { .. } => {
            unreachable!(
                "`ao worker log-writer|hook|docker-attach` and `ao completion` run before the async runtime starts"
            )
        }
        Command::Worker(WorkerCommand::Rm { id }) => {
            commands::remove_worker(&target, id).await.and(ok)
        }
        Command::Token(TokenCommand::Create {
            ttl,
            role: Some(role),
            name,
            out,
        }) => {
            let new = commands::NewCredential {
                role,
                name,
                ttl,
                out,
            };
            commands::create_credential(&target, &home, new)
                .await
                .and(ok)
        }
        Command::Token(TokenCommand::Create {
            ttl, role: None, ..
        }) => commands::create_token(&target, ttl).await.and(ok),
        Command::Token(TokenCommand::Ls { json }) => {
            commands::list_tokens(&target, json).await.and(ok)
        }
        Command::Notify(NotifyCommand::Test { id }) => {
            commands::test_notifier(&target, id).await.and(ok)
        }
        Command::Schedule(ScheduleCommand::Ls { json }) => {
            commands::schedules(&target, json).await.and(ok)
        }
        Command::Token(TokenCommand::Rm { id }) => {
            commands::delete_token(&target, id).await.and(ok)
        }
        Command::Admin(AdminCommand::Issue { name, ttl, out }) => {
            let out = out.unwrap_or_else(|| home.issued_admins().join(&name));
            commands::issue_admin(&target, name, ttl, &out)
                .await
                .and(ok)
        }
        Command::Admin(AdminCommand::Ls { json }) => {
            commands::list_admins(&target, json).await.and(ok)
        }
        Command::Admin(AdminCommand::Revoke { name_or_serial }) => {
            commands::revoke_admin(&target, name_or_serial)
                .await
                .and(ok)
        }
        Command::Doctor => doctor::run(&home, &target).await,
        Command::Dashboard {
            role,
            open,
            url,
            revoke_all,
        } => {
            if revoke_all {
                commands::revoke_dashboard(&target).await.and(ok)
            } else {
                commands::dashboard_link(&target, &home, role, url, open)
                    .await
                    .and(ok)
            }
        }
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
        Command::Session(SessionCommand::Cleanup {
            project,
            dry_run,
            json,
        }) => commands::cleanup(&target, project, dry_run, json)
            .await
            .and(ok),
        Command::Report {
            state,
            note,
            pr_url,
        } => commands::agent_report(&home, state, note, pr_url)
            .await
            .and(ok),
        Command::Session(SessionCommand::Show { id, json }) => {
            commands::show_session(&target, id, json).await.and(ok)
        }
        Command::Send {
            id,
            message,
            file,
            raw,
        } => {
            let text = match file {
                // A file written on Windows: its CRs are line ends, not keys.
                Some(f) => std::fs::read_to_string(&f)
                    .map(|t| if raw { t } else { t.replace("\r\n", "\n") })
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?,
                None => message.join(" "),
            };
            commands::send(&target, id, text, raw).await.and(ok)
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
            all,
            json,
        } => {
            let req = ao_proto::pb::EventsRequest {
                follow,
                r#type: kind.unwrap_or_default(),
                session_id: session.unwrap_or_default(),
                project_id: project.unwrap_or_default(),
                after_id: 0,
                tail: if all {
                    0
                } else {
                    lines.unwrap_or(EVENTS_SHOWN)
                },
            };
            commands::events(&target, req, json).await.and(ok)
        }
        Command::Worker(WorkerCommand::Ls { json }) => {
            commands::workers(&target, json).await.and(ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible command and each of its long flags, as `ao worker join` and `--ca-hash`.
    fn commands_and_flags(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let path = format!("{path} {}", sub.get_name());
            out.push(path.clone());
            out.extend(
                sub.get_arguments()
                    .filter(|a| !a.is_hide_set())
                    .filter_map(|a| a.get_long())
                    .filter(|long| !matches!(*long, "help" | "version"))
                    .map(|long| format!("--{long}")),
            );
            commands_and_flags(sub, &path, out);
        }
    }

    #[test]
    fn the_reference_names_every_command_and_flag() {
        let reference = include_str!("../../docs/reference.md");
        let mut names = Vec::new();
        commands_and_flags(&Cli::command(), "ao", &mut names);
        let missing: Vec<_> = names
            .iter()
            .filter(|name| !reference.contains(name.as_str()))
            .collect();
        assert!(missing.is_empty(), "docs/reference.md lacks {missing:?}");
    }
}
