//! Runtimes hold an agent's terminal. The trait is narrow; agent-specific
//! knowledge (command lines, readiness) lives in [`crate::agent`].
//!
//! [`TmuxRuntime`] runs every session as a tmux session named after the
//! session id on a dedicated socket under `AO_HOME`, so a person on the
//! machine can `tmux -S <socket> attach -t app-1`. Panes stay after their
//! process exits (`remain-on-exit`) so the exit status can be read, and
//! `pipe-pane` appends everything the terminal shows to the session's log
//! file — it keeps doing so while no worker runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("`{program}` is not installed or not on PATH (install it: apt-get install {program})")]
    BinaryNotFound { program: String },
    #[error("runtime session `{id}` does not exist")]
    SessionGone { id: String },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    // The cause is in the message: these errors end up as the reason of a
    // report, a string, where a source chain would be lost.
    #[error("io error running {program}: {cause}")]
    Io {
        program: String,
        cause: std::io::Error,
    },
    #[error("{path}: {cause}")]
    File { path: String, cause: std::io::Error },
    /// What the Docker engine refused or why it cannot be reached, as a
    /// sentence for the session's reason.
    #[error("{0}")]
    Docker(String),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub id: String,
    pub cwd: PathBuf,
    /// A shell command line, run with `/bin/sh -c`.
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub log_path: PathBuf,
    /// Set for a session that runs in a container ([`crate::docker`]).
    pub container: Option<crate::docker::ContainerSpec>,
}

/// What the runtime knows of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaneState {
    pub id: String,
    pub dead: bool,
    pub exit_status: Option<i32>,
    pub pid: Option<u32>,
    /// Why the runtime ended the agent, when it did (a container killed
    /// for using more memory than its limit): the session then failed
    /// rather than exited.
    pub failure: Option<String>,
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Starts the command in a new terminal whose output goes to `log_path`.
    async fn start(&self, spec: &StartSpec) -> Result<(), RuntimeError>;
    /// Types `text` (as a paste when it has several lines, so an agent that
    /// asked for bracketed paste does not take a line break for Enter), then
    /// presses Enter if `enter`.
    async fn write_input(&self, id: &str, text: &str, enter: bool) -> Result<(), RuntimeError>;
    /// Types `keys` byte for byte as keystrokes: control bytes act as the
    /// keys that send them (`\x03` interrupts), nothing is added.
    async fn write_keys(&self, id: &str, keys: &str) -> Result<(), RuntimeError>;
    /// The visible screen plus `history` lines of scrollback.
    async fn capture(&self, id: &str, history: u32) -> Result<String, RuntimeError>;
    /// The screen line the cursor is on: what is being typed at a prompt.
    async fn cursor_line(&self, id: &str) -> Result<String, RuntimeError>;
    /// Ends the session and every process in it.
    async fn stop(&self, id: &str) -> Result<(), RuntimeError>;
    /// Every session the runtime holds, alive or dead.
    async fn list(&self) -> Result<Vec<PaneState>, RuntimeError>;
    /// How a person on this machine attaches to the session.
    fn attach_command(&self, id: &str) -> String;
}

pub struct TmuxRuntime {
    socket: PathBuf,
    /// Exit codes written by each session's wrapper; tmux's own
    /// `pane_dead_status` is sometimes never set (seen with tmux 3.3a).
    exit_dir: PathBuf,
    /// The `ao` binary whose `worker log-writer` tmux pipes each pane's
    /// output into; `cat >>` without one.
    log_writer: Option<PathBuf>,
    /// Numbers the paste buffers, one per delivery, so two deliveries never
    /// share one.
    pastes: AtomicU64,
}

impl TmuxRuntime {
    pub fn new(socket: PathBuf) -> Self {
        let exit_dir = socket.with_extension("exit");
        Self {
            socket,
            exit_dir,
            log_writer: None,
            pastes: AtomicU64::new(0),
        }
    }

    /// Pipes each pane into `<ao> worker log-writer`, which rotates the
    /// log, instead of `cat >>`.
    #[must_use]
    pub fn with_log_writer(mut self, ao: PathBuf) -> Self {
        self.log_writer = Some(ao);
        self
    }

    /// What tmux pipes a pane's output into, the log's path last. The
    /// binary may have been replaced or removed since the worker started
    /// (an upgrade): then `cat >>` keeps the log, without rotation.
    fn pipe_command(&self, log: &std::path::Path) -> String {
        let log = shell_quote(&log.display().to_string());
        match &self.log_writer {
            Some(ao) if ao.is_file() => format!(
                "{} {} {log}",
                shell_quote(&ao.display().to_string()),
                crate::output::LOG_WRITER_ARGS
            ),
            Some(ao) => {
                tracing::warn!(binary = %ao.display(), "the log writer is gone; this session's log will not rotate");
                format!("cat >> {log}")
            }
            None => format!("cat >> {log}"),
        }
    }

    fn exit_file(&self, id: &str) -> PathBuf {
        self.exit_dir.join(id)
    }

    /// The session's environment, in a file only its owner can read: on
    /// tmux's command line it would show in `ps` to every user.
    fn env_file(&self, id: &str) -> PathBuf {
        self.exit_dir.join(format!("{id}.env"))
    }

    /// The command line tmux runs: the environment read from its file (then
    /// deleted: it holds `env:` secrets, and the agent has them now), the
    /// agent in a subshell, then its exit status written where
    /// [`Runtime::list`] finds it.
    fn wrapped(&self, id: &str, command: &str) -> String {
        let env = shell_quote(&self.env_file(id).display().to_string());
        let file = shell_quote(&self.exit_file(id).display().to_string());
        format!(
            "set -a; . {env}; set +a; rm -f {env}\n(\n{command}\n)\nprintf '%s\\n' \"$?\" > {file}"
        )
    }

    async fn tmux(&self, args: &[&str]) -> Result<String, RuntimeError> {
        self.tmux_with_input(args, None).await
    }

    async fn tmux_with_input(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> Result<String, RuntimeError> {
        let out = self.run_tmux(args, input).await?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = failure(&out);
            // No server (none started yet, or it exited with its last
            // session) means no session either.
            let gone = [
                "can't find session",
                "can't find pane",
                "no server running",
                "error connecting to",
                // A server whose last session just ended, as it exits.
                "no current target",
                "server exited unexpectedly",
            ];
            if gone.iter().any(|g| stderr.contains(g)) {
                let id = args
                    .iter()
                    .position(|a| *a == "-t")
                    .and_then(|i| args.get(i + 1))
                    .unwrap_or(&"")
                    .trim_start_matches('=')
                    .trim_end_matches(':')
                    .to_string();
                return Err(RuntimeError::SessionGone { id });
            }
            Err(RuntimeError::Command {
                command: format!("tmux {}", args.first().unwrap_or(&"")),
                stderr,
            })
        }
    }

    /// Runs tmux on this runtime's socket with `input` on its stdin.
    async fn run_tmux(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> Result<std::process::Output, RuntimeError> {
        let io = |cause| RuntimeError::Io {
            program: "tmux".into(),
            cause,
        };
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket).args(args);
        cmd.stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
        cmd.stdout(std::process::Stdio::piped());
        cmd.stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RuntimeError::BinaryNotFound {
                program: "tmux".into(),
            },
            _ => io(e),
        })?;
        let stdin = child.stdin.take();
        // Written while the output is read, so neither side waits on a full
        // pipe; dropping stdin at the end is tmux's end of input.
        let write = async move {
            use tokio::io::AsyncWriteExt;
            match (input, stdin) {
                (Some(data), Some(mut stdin)) => stdin.write_all(data).await,
                _ => Ok(()),
            }
        };
        let (written, out) = tokio::join!(write, child.wait_with_output());
        let out = out.map_err(io)?;
        // A tmux that failed closes its input early: its own message is the
        // cause, not the broken pipe.
        if out.status.success() {
            written.map_err(io)?;
        }
        Ok(out)
    }

    /// Pastes `text` from a buffer of its own: no size limit of an argument
    /// and no tmux parsing of it (`send-keys` reads a trailing `;` as a
    /// command separator). `flags` say how tmux pastes it.
    async fn paste(&self, id: &str, text: &str, flags: &[&str]) -> Result<(), RuntimeError> {
        let buffer = format!("ao-{id}-{}", self.pastes.fetch_add(1, Ordering::Relaxed));
        self.tmux_with_input(&["load-buffer", "-b", &buffer, "-"], Some(text.as_bytes()))
            .await?;
        let t = pane(id);
        let mut args = vec!["paste-buffer", "-d"];
        args.extend_from_slice(flags);
        args.extend(["-b", &buffer, "-t", &t]);
        let pasted = self.tmux(&args).await;
        if pasted.is_err() {
            // Only a paste deletes its buffer (`-d`).
            let _ = self.tmux(&["delete-buffer", "-b", &buffer]).await;
        }
        pasted.map(|_| ())
    }

    /// Ends a pane's processes and then its session: agents spawn children
    /// that a closed terminal alone may not end.
    async fn end(&self, session: &str, pid: Option<u32>) -> Result<(), RuntimeError> {
        if let Some(pid) = pid {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status()
                .await;
        }
        match self.tmux(&["kill-session", "-t", session]).await {
            Ok(_) | Err(RuntimeError::SessionGone { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the session's env and exit files; a missing one is fine.
    fn remove_files(&self, id: &str) -> Result<(), RuntimeError> {
        for path in [self.env_file(id), self.exit_file(id)] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(file_error(&path)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn file_error(path: &std::path::Path) -> impl Fn(std::io::Error) -> RuntimeError + '_ {
    move |cause| RuntimeError::File {
        path: path.display().to_string(),
        cause,
    }
}

/// What a failed tmux said, or how it ended when it said nothing.
fn failure(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.is_empty() {
        format!("tmux ended with {}", out.status)
    } else {
        stderr
    }
}

/// Quotes a string for `/bin/sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// An exact-match tmux target for a session (no prefix matching).
fn target(id: &str) -> String {
    format!("={id}")
}

/// The active pane of a session, matched exactly.
fn pane(id: &str) -> String {
    format!("={id}:")
}

#[async_trait]
impl Runtime for TmuxRuntime {
    fn name(&self) -> &'static str {
        "tmux"
    }

    async fn start(&self, spec: &StartSpec) -> Result<(), RuntimeError> {
        ao_proto::home::create_private_dir(&self.exit_dir).map_err(file_error(&self.exit_dir))?;
        self.remove_files(&spec.id)?;
        {
            use std::io::Write;
            let path = self.env_file(&spec.id);
            let mut file = ao_proto::home::private_file()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .map_err(file_error(&path))?;
            for (k, v) in &spec.env {
                writeln!(file, "{k}={}", shell_quote(v)).map_err(file_error(&path))?;
            }
        }
        let command = self.wrapped(&spec.id, &spec.command);
        let cwd = spec.cwd.display().to_string();
        let pipe = self.pipe_command(&spec.log_path);
        let t = pane(&spec.id);
        // The size the worker's screen model starts with.
        let (cols, rows) = (
            crate::output::PANE_COLS.to_string(),
            crate::output::PANE_ROWS.to_string(),
        );
        // One invocation: the server runs the whole list before it reads any
        // output of the new pane, so pipe-pane sees the very first byte and
        // remain-on-exit holds even for a command that exits at once.
        let mut args: Vec<&str> = vec![
            "start-server",
            ";",
            "set-option",
            "-g",
            "default-shell",
            "/bin/sh",
            ";",
            "set-option",
            "-g",
            "history-limit",
            "10000",
            ";",
            "set-option",
            "-wg",
            "remain-on-exit",
            "on",
            ";",
            "new-session",
            "-d",
            // Names what it made, to end it if a later step fails: tmux may
            // have named the session otherwise than asked.
            "-P",
            "-F",
            "#{session_id} #{pane_pid}",
            "-s",
            &spec.id,
            "-x",
            &cols,
            "-y",
            &rows,
            "-c",
            &cwd,
        ];
        args.extend([command.as_str(), ";", "pipe-pane", "-t", &t, "-o", &pipe]);
        let mut out = self.run_tmux(&args, None).await?;
        // A server whose last session just ended exits: a client that reached
        // it as it went (a restore right after the agent's exit) is told so.
        // Nothing was made; the next try starts a new server.
        for wait_ms in [10, 50, 200, 500] {
            if out.status.success() || !failure(&out).contains("server exited unexpectedly") {
                break;
            }
            tracing::debug!(session = %spec.id, "tmux server exiting; trying again");
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
            out = self.run_tmux(&args, None).await?;
        }
        if out.status.success() {
            return Ok(());
        }
        // The agent must not run on untracked: end what was made, then say
        // why it failed.
        let made = String::from_utf8_lossy(&out.stdout);
        let mut made = made.split_whitespace();
        if let Some(session) = made.next().filter(|s| s.starts_with('$')) {
            let pid = made.next().and_then(|p| p.parse().ok());
            if let Err(e) = self.end(session, pid).await {
                tracing::warn!(session = %spec.id, "cannot end a session that failed to start: {e}");
            }
        }
        let _ = self.remove_files(&spec.id);
        Err(RuntimeError::Command {
            command: "tmux new-session".into(),
            stderr: failure(&out),
        })
    }

    async fn write_input(&self, id: &str, text: &str, enter: bool) -> Result<(), RuntimeError> {
        // One line is pasted without bracketed-paste markers, so it arrives
        // as if typed: some agents fold a bracketed paste into a placeholder
        // on their screen, where the echo check could not see it.
        if text.contains('\n') {
            self.paste(id, text, &["-p"]).await?;
        } else if !text.is_empty() {
            self.paste(id, text, &[]).await?;
        }
        if enter {
            self.tmux(&["send-keys", "-t", &pane(id), "Enter"]).await?;
        }
        Ok(())
    }

    async fn write_keys(&self, id: &str, keys: &str) -> Result<(), RuntimeError> {
        // Not a bracketed paste, and `-r` keeps line feeds as they are.
        self.paste(id, keys, &["-r"]).await
    }

    async fn capture(&self, id: &str, history: u32) -> Result<String, RuntimeError> {
        let start = format!("-{history}");
        self.tmux(&[
            "capture-pane",
            "-p",
            "-J",
            "-N",
            "-S",
            &start,
            "-t",
            &pane(id),
        ])
        .await
    }

    async fn cursor_line(&self, id: &str) -> Result<String, RuntimeError> {
        let t = pane(id);
        let y = self
            .tmux(&["display-message", "-p", "-t", &t, "#{cursor_y}"])
            .await?;
        let y: u32 = y.trim().parse().unwrap_or(0);
        // From a few rows up, joined: a long line wraps over several rows.
        let (from, to) = (y.saturating_sub(10).to_string(), y.to_string());
        let rows = self
            .tmux(&["capture-pane", "-p", "-J", "-S", &from, "-E", &to, "-t", &t])
            .await?;
        Ok(rows.lines().last().unwrap_or("").to_string())
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let pid = self.list().await.ok().and_then(|panes| {
            panes
                .into_iter()
                .find(|p| p.id == id && !p.dead)
                .and_then(|p| p.pid)
        });
        self.end(&target(id), pid).await?;
        // The env file holds `env:` secrets; neither file means anything
        // once the session is gone.
        self.remove_files(id)
    }

    async fn list(&self) -> Result<Vec<PaneState>, RuntimeError> {
        let out = match self
            .tmux(&[
                "list-panes",
                "-a",
                "-F",
                "#{session_name}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_pid}\t#{pane_dead_signal}",
            ])
            .await
        {
            Ok(out) => out,
            Err(RuntimeError::SessionGone { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut f = line.split('\t');
                let id = f.next()?.to_string();
                let dead = f.next()? == "1";
                let status: Option<i32> = f.next().and_then(|s| s.parse().ok());
                let pid = f.next().and_then(|s| s.parse().ok());
                // Killed by a signal: the shell convention, 128 + signal.
                let signal: Option<i32> = f.next().and_then(|s| s.parse().ok());
                let written = std::fs::read_to_string(self.exit_file(&id))
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                let exit_status = written.or(status).or(signal.map(|s| 128 + s));
                Some(PaneState {
                    id,
                    dead,
                    exit_status: if dead { exit_status } else { None },
                    pid,
                    failure: None,
                })
            })
            .collect())
    }

    fn attach_command(&self, id: &str) -> String {
        format!(
            "tmux -S {} attach -t {}",
            shell_quote(&self.socket.display().to_string()),
            id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[tokio::test]
    async fn start_capture_input_exit_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let rt = TmuxRuntime::new(dir.path().join("tmux.sock"));
        let log = dir.path().join("t.log");
        let spec = StartSpec {
            id: "t-1".into(),
            cwd: dir.path().to_path_buf(),
            command: "echo hello $GREETING; read line; echo got:$line; exit 4".into(),
            env: BTreeMap::from([("GREETING".into(), "world".into())]),
            log_path: log.clone(),
            container: None,
        };
        rt.start(&spec).await.unwrap();
        wait_for(|| {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("hello world")
        })
        .await;
        rt.write_input("t-1", "ping", true).await.unwrap();
        wait_for(|| {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("got:ping")
        })
        .await;
        let mut panes = rt.list().await.unwrap();
        for _ in 0..50 {
            if panes.iter().any(|p| p.dead) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            panes = rt.list().await.unwrap();
        }
        assert_eq!(panes[0].exit_status, Some(4));
        assert!(rt.capture("t-1", 0).await.unwrap().contains("got:ping"));
        rt.stop("t-1").await.unwrap();
        assert!(rt.list().await.unwrap().is_empty());
        assert!(matches!(
            rt.write_input("t-1", "x", true).await,
            Err(RuntimeError::SessionGone { .. })
        ));
    }

    #[tokio::test]
    async fn a_start_that_fails_after_tmux_made_the_session_leaves_nothing_running() {
        let dir = tempfile::tempdir().unwrap();
        let rt = TmuxRuntime::new(dir.path().join("tmux.sock"));
        // tmux names this session `lib_core`, so the pipe-pane that follows
        // in the same invocation finds no `lib.core`.
        let spec = StartSpec {
            id: "lib.core".into(),
            cwd: dir.path().to_path_buf(),
            command: "sleep 60".into(),
            env: BTreeMap::from([("TOKEN".into(), "secret".into())]),
            log_path: dir.path().join("t.log"),
            container: None,
        };
        let err = rt.start(&spec).await.unwrap_err().to_string();
        assert!(
            err.contains("tmux new-session") && err.contains("can't find session"),
            "{err}"
        );
        assert_eq!(rt.list().await.unwrap(), []);
        assert!(!rt.env_file("lib.core").exists());
    }

    #[tokio::test]
    async fn the_env_file_lives_until_the_agent_read_it_and_stop_clears_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let rt = TmuxRuntime::new(dir.path().join("tmux.sock"));
        let spec = StartSpec {
            id: "e-1".into(),
            cwd: dir.path().to_path_buf(),
            command: "echo token=$TOKEN; exit 3".into(),
            env: BTreeMap::from([("TOKEN".into(), "secret".into())]),
            log_path: dir.path().join("t.log"),
            container: None,
        };
        rt.start(&spec).await.unwrap();
        wait_for(|| {
            std::fs::read_to_string(&spec.log_path)
                .unwrap_or_default()
                .contains("token=secret")
        })
        .await;
        assert!(!rt.env_file("e-1").exists());
        wait_for(|| rt.exit_file("e-1").exists()).await;
        // One the wrapper never read (a failed start, an older worker).
        std::fs::write(rt.env_file("e-1"), "TOKEN='secret'\n").unwrap();
        rt.stop("e-1").await.unwrap();
        assert!(!rt.env_file("e-1").exists());
        assert!(!rt.exit_file("e-1").exists());
    }

    async fn wait_for(mut f: impl FnMut() -> bool) {
        for _ in 0..100 {
            if f() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("condition not met within 5 s");
    }
}
