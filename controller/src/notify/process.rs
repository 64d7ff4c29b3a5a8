//! Notifiers that run a program: `command` (any shell command, the event
//! JSON on its stdin: the escape hatch) and `desktop` (`notify-send`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::message::headline;
use super::{Notification, Notifier, NotifyError};
use crate::model::Priority;

/// How long a command may run before it counts as failed (and is killed).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The desktop notification program of freedesktop.org machines.
const NOTIFY_SEND: &str = "notify-send";

/// Runs `sh -c <command>` with the event JSON on stdin; exit 0 is delivered.
pub(super) struct CommandNotifier {
    command: String,
}

impl CommandNotifier {
    pub(super) fn new(command: String) -> Self {
        Self { command }
    }
}

#[async_trait]
impl Notifier for CommandNotifier {
    async fn send(&self, n: &Notification) -> Result<String, NotifyError> {
        let mut json = serde_json::to_vec(n).expect("an event record is JSON");
        json.push(b'\n');
        let mut command = Command::new("sh");
        command.arg("-c").arg(&self.command);
        run(command, Some(json)).await
    }
}

/// Shows the event with `notify-send`, found on `path` when it is sent.
pub(super) struct DesktopNotifier {
    path: Option<OsString>,
}

impl DesktopNotifier {
    /// Looks in the controller's own `PATH`.
    pub(super) fn from_env() -> Self {
        Self {
            path: std::env::var_os("PATH"),
        }
    }
}

#[async_trait]
impl Notifier for DesktopNotifier {
    async fn send(&self, n: &Notification) -> Result<String, NotifyError> {
        let program = self
            .path
            .as_deref()
            .and_then(|path| find_program(NOTIFY_SEND, path))
            .ok_or_else(|| {
                NotifyError::Fatal(
                    "no desktop notification service on this machine (`notify-send` is not on PATH)"
                        .into(),
                )
            })?;
        let urgency = match n.priority {
            Priority::Urgent => "critical",
            Priority::Action | Priority::Warning => "normal",
            Priority::Info => "low",
        };
        let mut body = n.message.clone().unwrap_or_default();
        if !body.is_empty() {
            body.push('\n');
        }
        body.push_str(&format!("{} · {}", n.kind, n.priority.as_str()));
        let mut command = Command::new(program);
        command
            .arg("--app-name=Agent Orchestrator")
            .arg(format!("--urgency={urgency}"))
            .arg("--")
            .arg(headline(n))
            .arg(body);
        run(command, None).await
    }
}

/// The first executable `name` in the directories of `path`.
fn find_program(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `command` (feeding it `stdin`), killed after [`COMMAND_TIMEOUT`]:
/// exit 0 is delivered, with the first line it printed; anything else may
/// pass on a retry.
async fn run(mut command: Command, stdin: Option<Vec<u8>>) -> Result<String, NotifyError> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let retry = |reason: String| NotifyError::Retry {
        reason,
        after: None,
    };
    let mut child = command
        .spawn()
        .map_err(|e| retry(format!("cannot start: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that does not read its stdin is fine: ignore a closed pipe.
        let _ = pipe.write_all(&input).await;
    }
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| retry(format!("still running after {COMMAND_TIMEOUT:?}: killed")))?
        .map_err(|e| retry(format!("cannot wait for it: {e}")))?;
    let first_line = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().chars().take(200).collect::<String>())
    };
    if output.status.success() {
        Ok(first_line(&output.stdout).unwrap_or_else(|| "exit 0".into()))
    } else {
        let mut reason = match output.status.code() {
            Some(code) => format!("exit {code}"),
            None => "killed by a signal".to_owned(),
        };
        if let Some(line) = first_line(&output.stderr) {
            reason.push_str(": ");
            reason.push_str(&line);
        }
        Err(retry(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::tests::stuck;

    #[tokio::test]
    async fn a_command_reads_the_event_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("event.json");
        let notifier = CommandNotifier::new(format!(
            "cat > '{}' && echo delivered && echo more",
            out.display()
        ));
        assert_eq!(notifier.send(&stuck()).await.unwrap(), "delivered");
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(written, serde_json::to_value(stuck()).unwrap());
    }

    #[tokio::test]
    async fn a_failing_command_is_retried_with_its_exit_and_stderr() {
        let notifier = CommandNotifier::new("echo 'no route' >&2; exit 3".into());
        assert_eq!(
            notifier.send(&stuck()).await,
            Err(NotifyError::Retry {
                reason: "exit 3: no route".into(),
                after: None
            })
        );
        let quiet = CommandNotifier::new("true".into());
        assert_eq!(quiet.send(&stuck()).await.unwrap(), "exit 0");
    }

    #[tokio::test]
    async fn desktop_runs_notify_send_or_says_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let none = DesktopNotifier {
            path: Some(dir.path().into()),
        };
        let Err(NotifyError::Fatal(reason)) = none.send(&stuck()).await else {
            panic!("expected a fatal error");
        };
        assert!(reason.starts_with("no desktop notification service on this machine"));

        let args = dir.path().join("args");
        let script = dir.path().join(NOTIFY_SEND);
        std::fs::write(
            &script,
            format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n", args.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let desktop = DesktopNotifier {
            path: Some(dir.path().into()),
        };
        desktop.send(&stuck()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&args).unwrap(),
            "--app-name=Agent Orchestrator\n--urgency=critical\n--\n\
             Agent fe-1 stuck on issue #123\n\
             Agent has been inactive for 10 minutes\nsession.stuck · urgent\n"
        );
    }
}
