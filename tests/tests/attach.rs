//! `ao attach` driven inside a real pseudo-terminal.

use std::process::Command;
use std::time::Duration;

use ao_tests::{ao_bin, eventually, Stack};
use expectrl::session::OsSession;
use expectrl::{Expect, Regex, Session};
use serde_json::Value;

/// `ao attach` in a pseudo-terminal of `cols`x`rows`; after it ends the
/// shell prints its exit code and the terminal's settings.
fn attach(stack: &Stack, args: &[&str], cols: u16, rows: u16) -> OsSession {
    let script = format!(
        "stty cols {cols} rows {rows}; {} attach {}; echo \"EXIT=$?\"; stty -a",
        ao_bin().display(),
        args.join(" ")
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .env("AO_HOME", &stack.home)
        .env("TERM", "xterm-256color");
    if let Some(etcd) = &stack.etcd {
        cmd.env("AO_STORE", etcd.store_url());
    }
    let mut session = Session::spawn(cmd).expect("spawn in a pty");
    session.set_expect_timeout(Some(Duration::from_secs(20)));
    session
}

fn shell_session(stack: &Stack) -> String {
    let id = stack.spawn(&["app", "T-1", "--agent", "shell", "--prompt", "echo started"]);
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
    term.send("tput cols\r").unwrap();
    term.expect(Regex("\r\n100\r\n")).unwrap();
    term.get_process_mut().set_window_size(120, 40).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    term.send("tput cols; echo typed-$((6*7))\r").unwrap();
    term.expect(Regex("\r\n120\r\n")).unwrap();
    term.expect("typed-42").unwrap();
    // Detach with Ctrl-\.
    term.send("\x1c").unwrap();
    term.expect("detached").unwrap();
    term.expect("EXIT=0").unwrap();
    // The local terminal is out of raw mode again.
    term.expect(Regex("[^-]icanon")).unwrap();

    let s = stack.session(&id);
    assert_eq!(s["activity"], "ready", "the session keeps running: {s}");
    let log = stack.wait_log(&id, "typed-42");
    assert!(log.contains("typed-42"));
    let attached = event(&stack, |e| e["type"] == "session.attached");
    assert_eq!(attached["data"]["mode"], "read-write");
    let detached = event(&stack, |e| e["type"] == "session.detached");
    assert!(detached["data"]["how"].is_string(), "{detached}");
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
    let id = stack.spawn(&["app", "T-2", "--agent", "quitter"]);
    stack.wait_field(&id, "status", "done");
    let run = stack.ao(&["attach", &id]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("restore"), "{}", run.stderr);
}
