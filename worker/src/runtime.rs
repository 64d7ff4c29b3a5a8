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
    #[error("io error running {program}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
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
}

/// What the runtime knows of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaneState {
    pub id: String,
    pub dead: bool,
    pub exit_status: Option<i32>,
    pub pid: Option<u32>,
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Starts the command in a new terminal whose output goes to `log_path`.
    async fn start(&self, spec: &StartSpec) -> Result<(), RuntimeError>;
    /// Types `text` (pasted when it has several lines), then presses Enter
    /// if `enter`.
    async fn write_input(&self, id: &str, text: &str, enter: bool) -> Result<(), RuntimeError>;
    /// The visible screen plus `history` lines of scrollback.
    async fn capture(&self, id: &str, history: u32) -> Result<String, RuntimeError>;
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
}

impl TmuxRuntime {
    pub fn new(socket: PathBuf) -> Self {
        let exit_dir = socket.with_extension("exit");
        Self { socket, exit_dir }
    }

    fn exit_file(&self, id: &str) -> PathBuf {
        self.exit_dir.join(id)
    }

    /// The session's environment, in a file only its owner can read: on
    /// tmux's command line it would show in `ps` to every user.
    fn env_file(&self, id: &str) -> PathBuf {
        self.exit_dir.join(format!("{id}.env"))
    }

    /// The command line tmux runs: the environment read from its file, the
    /// agent in a subshell, then its exit status written where
    /// [`Runtime::list`] finds it.
    fn wrapped(&self, id: &str, command: &str) -> String {
        let env = shell_quote(&self.env_file(id).display().to_string());
        let file = shell_quote(&self.exit_file(id).display().to_string());
        format!("set -a; . {env}; set +a\n(\n{command}\n)\nprintf '%s\\n' \"$?\" > {file}")
    }

    async fn tmux(&self, args: &[&str]) -> Result<String, RuntimeError> {
        self.tmux_with_input(args, None).await
    }

    async fn tmux_with_input(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> Result<String, RuntimeError> {
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
            _ => RuntimeError::Io {
                program: "tmux".into(),
                source: e,
            },
        })?;
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(data).await.map_err(|e| RuntimeError::Io {
                program: "tmux".into(),
                source: e,
            })?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| RuntimeError::Io {
                program: "tmux".into(),
                source: e,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // No server (none started yet, or it exited with its last
            // session) means no session either.
            let gone = [
                "can't find session",
                "can't find pane",
                "no server running",
                "error connecting to",
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
        let io = |source| RuntimeError::Io {
            program: "tmux".into(),
            source,
        };
        ao_proto::home::create_private_dir(&self.exit_dir).map_err(io)?;
        match std::fs::remove_file(self.exit_file(&spec.id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(self.env_file(&spec.id))
                .map_err(io)?;
            for (k, v) in &spec.env {
                writeln!(file, "{k}={}", shell_quote(v)).map_err(io)?;
            }
        }
        let command = self.wrapped(&spec.id, &spec.command);
        let cwd = spec.cwd.display().to_string();
        let pipe = format!(
            "cat >> {}",
            shell_quote(&spec.log_path.display().to_string())
        );
        let t = pane(&spec.id);
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
            "-s",
            &spec.id,
            "-x",
            "200",
            "-y",
            "50",
            "-c",
            &cwd,
        ];
        args.extend([command.as_str(), ";", "pipe-pane", "-t", &t, "-o", &pipe]);
        self.tmux(&args).await.map(|_| ())
    }

    async fn write_input(&self, id: &str, text: &str, enter: bool) -> Result<(), RuntimeError> {
        let t = pane(id);
        if text.contains('\n') {
            let buffer = format!("ao-{id}");
            self.tmux_with_input(&["load-buffer", "-b", &buffer, "-"], Some(text.as_bytes()))
                .await?;
            self.tmux(&["paste-buffer", "-d", "-p", "-b", &buffer, "-t", &t])
                .await?;
        } else if !text.is_empty() {
            self.tmux(&["send-keys", "-t", &t, "-l", "--", text])
                .await?;
        }
        if enter {
            self.tmux(&["send-keys", "-t", &t, "Enter"]).await?;
        }
        Ok(())
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

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        // Kill the whole process group of the pane first: agents spawn children.
        if let Ok(panes) = self.list().await {
            if let Some(pid) = panes
                .iter()
                .find(|p| p.id == id && !p.dead)
                .and_then(|p| p.pid)
            {
                let _ = Command::new("kill")
                    .args(["-TERM", "--", &format!("-{pid}")])
                    .status()
                    .await;
            }
        }
        match self.tmux(&["kill-session", "-t", &target(id)]).await {
            Ok(_) | Err(RuntimeError::SessionGone { .. }) => Ok(()),
            Err(e) => Err(e),
        }
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
