//! `ao attach` driven inside a real pseudo-terminal.

use std::process::Command;
use std::time::Duration;

use ao_tests::{attach, eventually, Cli, Stack};
use expectrl::session::OsSession;
use expectrl::{Expect, Regex};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// The width of the agent's terminal (its pane's tty), if known yet.
fn agent_cols(stack: &Stack, id: &str) -> Option<u16> {
    let out = stack.tmux(&["display-message", "-p", "-t", id, "#{pane_tty}"]);
    let tty = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let size = Command::new("stty")
        .args(["-F", &tty, "size"])
        .output()
        .ok()?;
    // `stty size` prints "<rows> <cols>".
    String::from_utf8_lossy(&size.stdout)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn shell_session(stack: &Stack) -> String {
    shell_session_for(stack, "T-1")
}

fn shell_session_for(stack: &Stack, issue: &str) -> String {
    let id = stack.spawn(&["app", issue, "--agent", "shell", "--prompt", "echo started"]);
    stack.wait_log(&id, "started");
    stack.wait_field(&id, "activity", "ready");
    id
}

#[test]
fn typing_output_resize_detach_and_the_terminal_is_restored() {
    let stack = Stack::new();
    stack.up();
    let id = shell_session(&stack);
    let mut term = attach(&stack, &[&id], 100, 30);
    // First paint: the current screen at once.
    term.expect("started").unwrap();
    term.send("echo cols=$(tput cols)\r").unwrap();
    term.expect("cols=100").unwrap();
    term.get_process_mut().set_window_size(120, 40).unwrap();
    // The shell reads its width from its terminal: type once it has it
    // (tmux sets it a moment after it has resized the pane).
    eventually(
        "the agent's terminal is 120 wide",
        Duration::from_secs(10),
        || (agent_cols(&stack, &id)? == 120).then_some(()),
    );
    term.send("echo cols=$(tput cols) typed-$((6*7))\r")
        .unwrap();
    term.expect("cols=120").unwrap();
    term.expect("typed-42").unwrap();
    // Detach with Ctrl-\.
    term.send("\x1c").unwrap();
    term.expect("detached").unwrap();
    term.expect("EXIT=0").unwrap();
    // The local terminal is out of raw mode again.
    term.expect(Regex("[^-]icanon")).unwrap();

    // The session keeps running after the viewer left.
    stack.wait_field(&id, "activity", "ready");
    stack.wait_log(&id, "typed-42");
    let attached = event(&stack, |e| e["type"] == "session.attached");
    assert_eq!(attached["data"]["mode"], "read-write");
    let detached = event(&stack, |e| e["type"] == "session.detached");
    assert_eq!(detached["data"]["how"], "detached", "{detached}");
}

/// Waits for an event of the log that `pick` accepts.
fn event(stack: &Stack, pick: impl Fn(&Value) -> bool) -> Value {
    eventually("the event is logged", Duration::from_secs(10), || {
        stack.events().into_iter().find(|e| pick(e))
    })
}

#[test]
fn one_writer_many_viewers() {
    let stack = Stack::new();
    stack.up();
    let id = shell_session(&stack);
    let mut writer = attach(&stack, &[&id], 100, 30);
    writer.expect("started").unwrap();
    let mut viewer = attach(&stack, &["--read-only", &id], 100, 30);
    viewer.expect("started").unwrap();

    // Both see what the writer makes the agent print.
    writer.send("echo from-$((1+1))-writer\r").unwrap();
    writer.expect("from-2-writer").unwrap();
    viewer.expect("from-2-writer").unwrap();

    // The read-only viewer's keys do not reach the agent.
    viewer.send("echo from-$((2+2))-viewer\r").unwrap();
    writer.send("echo marker-$((3+3))\r").unwrap();
    writer.expect("marker-6").unwrap();
    let log = stack.wait_log(&id, "marker-6");
    assert!(
        !log.contains("from-4-viewer"),
        "a read-only viewer typed into the agent"
    );

    // A second writer is told who holds the keyboard.
    let run = stack.ao(&["attach", &id]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("holds the keyboard"), "{}", run.stderr);

    // --force takes it over; the holder is told.
    let mut second = attach(&stack, &["--force", &id], 100, 30);
    second.expect("marker-6").unwrap();
    writer.expect("taken over by").unwrap();
    writer.expect("EXIT=1").unwrap();
    second.send("echo second-$((4+4))\r").unwrap();
    second.expect("second-8").unwrap();
    viewer.expect("second-8").unwrap();
    second.send("\x1c").unwrap();
    second.expect("EXIT=0").unwrap();
    viewer.send("\x1c").unwrap();
    viewer.expect("EXIT=0").unwrap();
    let takeover = event(&stack, |e| {
        e["type"] == "session.attached" && e["data"]["force"] == true
    });
    assert_eq!(takeover["data"]["mode"], "read-write");
}

#[test]
fn attaching_to_an_unknown_or_ended_session_says_why() {
    let stack = Stack::new();
    stack.up();
    let run = stack.ao(&["attach", "app-42"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("unknown session `app-42`"),
        "{}",
        run.stderr
    );
    let id = stack
        .ao(&["spawn", "app", "T-2", "--agent", "quitter"])
        .session_id();
    stack.wait_field(&id, "status", "done");
    let run = stack.ao(&["attach", &id]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("restore"), "{}", run.stderr);
}

#[test]
fn an_attachment_comes_back_after_the_controller_restarts() {
    let stack = Stack::new();
    let pid = stack.up();
    let id = shell_session(&stack);
    let mut term = attach(&stack, &[&id], 100, 30);
    term.expect("started").unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    term.expect("reconnecting").unwrap();
    stack.up();
    // The same terminal, repainted, and typing works again.
    term.expect("started").unwrap();
    term.send("echo back-$((5+5))\r").unwrap();
    term.expect("back-10").unwrap();
    term.send("\x1c").unwrap();
    term.expect("EXIT=0").unwrap();
}

/// The `ao attach` process of `term`: the child of its shell (other tests
/// run their own `ao attach app-1`, so it is not found by name).
fn attach_pid(term: &OsSession) -> Pid {
    let shell = term.get_process().pid().to_string();
    eventually("the attach process", Duration::from_secs(5), || {
        let out = Command::new("pgrep").args(["-P", &shell]).output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
            .map(Pid::from_raw)
    })
}

/// A process stopped with SIGSTOP, continued when dropped, however the
/// test ends.
struct Stopped(Pid);

impl Stopped {
    fn new(pid: Pid) -> Self {
        kill(pid, Signal::SIGSTOP).unwrap();
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[test]
fn a_slow_viewer_does_not_slow_the_agent() {
    let stack = Stack::new();
    stack.up();
    let id = shell_session(&stack);
    let mut fast = attach(&stack, &["--read-only", &id], 100, 30);
    fast.expect("started").unwrap();
    // A viewer that reads nothing at all: stopped once it is attached.
    let mut slow = attach(&stack, &["--read-only", &id], 100, 30);
    slow.expect("started").unwrap();
    let stopped = Stopped::new(attach_pid(&slow));

    // 1.3 MB of output, far more than a terminal or any channel holds: if
    // the stopped viewer held the agent back, the burst would never end.
    // The marker is printed by the shell once `seq` has written it all.
    // It is looked for in the log only: tmux may draw a line of the burst
    // in two goes (the end of it after a cursor move), so a viewer's bytes
    // need not hold it in one piece.
    stack
        .ao(&["send", &id, "seq 1 200000; echo burst-$((6*7))-done"])
        .ok();
    let log = stack.wait_log(&id, "burst-42-done");
    assert!(
        log.contains("199999\r\n200000\r\n"),
        "the log misses the end of the burst"
    );
    // The agent still answers, to the log and to the viewer that reads.
    stack.ao(&["send", &id, "echo still-$((7*7))"]).ok();
    fast.expect("still-49").unwrap();

    // Once it reads again it is brought up to date with the current screen.
    drop(stopped);
    stack.ao(&["send", &id, "echo caught-$((7*6))-up"]).ok();
    slow.expect("caught-42-up").unwrap();
    slow.send("\x1c").unwrap();
    slow.expect("EXIT=0").unwrap();
}

#[test]
fn a_viewer_stays_in_its_session_and_leaves_when_the_agent_ends() {
    let stack = Stack::new();
    stack.up();
    let mine = shell_session_for(&stack, "V-1");
    let other = shell_session_for(&stack, "V-2");
    let mut term = attach(&stack, &[&mine], 100, 30);
    term.expect("started").unwrap();
    // tmux's keys for the next session and the command prompt do nothing.
    term.send("\x02)\x02:").unwrap();
    // Whatever reached the shell's line is erased (Ctrl-U).
    term.send("\x15").unwrap();
    term.send("echo where-$((3*3))\r").unwrap();
    term.expect("where-9").unwrap();
    stack.wait_log(&mine, "where-9");
    assert!(!stack.ao(&["logs", &other]).ok().stdout.contains("where-9"));
    // The agent exits: the viewer is told and leaves.
    term.send("exit\r").unwrap();
    term.expect(Regex("session ended[^\n]*\n[^\n]*EXIT=0"))
        .unwrap();
    let detached = event(&stack, |e| e["type"] == "session.detached");
    assert_eq!(detached["data"]["how"], "session ended", "{detached}");
}

#[test]
fn an_interrupted_viewer_restores_the_terminal() {
    let stack = Stack::new();
    stack.up();
    let id = shell_session(&stack);
    let mut term = attach(&stack, &[&id], 100, 30);
    term.expect("started").unwrap();
    kill(attach_pid(&term), Signal::SIGINT).unwrap();
    term.expect(Regex("interrupted[^\n]*\n[^\n]*EXIT=1"))
        .unwrap();
    term.expect(Regex("[^-]icanon")).unwrap();
}
