//! `ao up` in the foreground and signals: one SIGTERM stops it cleanly, a
//! second one while it is stopping exits at once; agents keep running in
//! tmux either way.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use ao_tests::{eventually, Cli, Stack};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A child `ao` whose output goes to files that the test reads.
struct Running {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    fn start(stack: &Stack, name: &str, args: &[&str]) -> Self {
        let stdout = stack.dir.path().join(format!("{name}.out"));
        let stderr = stack.dir.path().join(format!("{name}.err"));
        let child = stack
            .command(args)
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .expect("ao starts");
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Its exit code, once it has exited.
    fn exited(&mut self, what: &str) -> i32 {
        eventually(what, Duration::from_secs(30), || {
            self.child
                .try_wait()
                .unwrap()
                .map(|s| s.code().unwrap_or(-1))
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ao up` in the foreground with one agent session running.
fn up_with_a_session(stack: &Stack) -> (Running, String) {
    let up = Running::start(stack, "up", &["up"]);
    eventually("ao up serves", Duration::from_secs(30), || {
        stack.ao(&["status"]).code.eq(&0).then_some(())
    });
    let id = stack.spawn(&["app", "INT-1"]);
    stack.wait_field(&id, "activity", "ready");
    (up, id)
}

#[test]
fn one_sigterm_stops_ao_up_cleanly_and_agents_keep_running() {
    let stack = Stack::new();
    let (mut up, id) = up_with_a_session(&stack);

    up.signal(Signal::SIGTERM);
    let code = up.exited("ao up stops on SIGTERM");
    assert_eq!(code, 0, "stderr:\n{}", up.stderr());
    assert!(up.stderr().contains("ao is down"), "{}", up.stderr());
    assert!(stack.tmux_sessions().contains(&id));
}

#[test]
fn a_second_sigterm_while_stopping_exits_at_once() {
    let stack = Stack::new();
    let (mut up, id) = up_with_a_session(&stack);
    // An open follower keeps the stop waiting for its grace period.
    let follower = Running::start(&stack, "events", &["events", "-f"]);
    eventually("the follower streams", Duration::from_secs(20), || {
        follower.stdout().contains("session.spawned").then_some(())
    });

    up.signal(Signal::SIGTERM);
    eventually("ao up begins to stop", Duration::from_secs(20), || {
        up.stderr().contains("stopping;").then_some(())
    });
    up.signal(Signal::SIGTERM);
    let code = up.exited("ao up exits on a second SIGTERM");
    assert_eq!(code, 128 + 15, "stderr:\n{}", up.stderr());
    assert!(
        up.stderr()
            .contains("stopping now; agent sessions keep running"),
        "{}",
        up.stderr()
    );
    assert!(stack.tmux_sessions().contains(&id));
}
