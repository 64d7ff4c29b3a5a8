//! Notifications through the real stack: which notifiers hear of what.

use std::time::Duration;

use ao_tests::{eventually, Cli, Stack};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// `pager` hears of urgent events, `chat` would hear of info ones but is
/// routed none.
const NOTIFIERS: &str = "
notifiers:
  pager: {plugin: command, command: 'cat >> pager.jsonl'}
  chat: {plugin: command, command: 'cat >> chat.jsonl'}
notificationRouting:
  urgent: [pager]
  info: []
defaults:
  notifiers: [chat]
";

#[test]
fn an_urgent_reaction_reaches_only_the_urgent_list_and_info_none() {
    let stack = Stack::new();
    let text = std::fs::read_to_string(&stack.config).unwrap();
    std::fs::write(&stack.config, format!("{text}{NOTIFIERS}")).unwrap();
    stack.up();
    let id = stack.spawn(&["app", "N-1", "--agent", "quitter"]);
    stack.wait_field(&id, "status", "done");
    let notification = |e: &serde_json::Value| {
        e["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("notification."))
    };
    // The agent exited (urgent): the pager's entry is tried and recorded.
    let told = eventually("the pager's notification", Duration::from_secs(20), || {
        stack.events().into_iter().find(notification)
    });
    assert_eq!(told["data"]["notifier"], "pager", "{told}");
    assert_eq!(told["data"]["eventType"], "reaction.triggered", "{told}");
    assert_eq!(told["sessionId"], id.as_str(), "{told}");
    // Every session ended: an info reaction, routed to none (not to the
    // defaults' chat).
    eventually("the all-complete reaction", Duration::from_secs(20), || {
        stack
            .events()
            .into_iter()
            .find(|e| e["type"] == "reaction.triggered" && e["reaction"] == "all-complete")
    });
    // Its entry would have been written with it; the pager's took as long.
    let marker = stack.spawn(&["app", "N-2", "--agent", "quitter"]);
    stack.wait_field(&marker, "status", "done");
    eventually(
        "the second pager notification",
        Duration::from_secs(20),
        || {
            let told: Vec<_> = stack.events().into_iter().filter(notification).collect();
            (told.len() >= 2).then_some(())
        },
    );
    let told: Vec<serde_json::Value> = stack.events().into_iter().filter(notification).collect();
    assert!(
        told.iter().all(|e| e["data"]["notifier"] == "pager"),
        "{told:#?}"
    );
}

/// A stack whose notifier `pager` runs `command` (in the stack's
/// directory) for urgent events, trying again after `retry`, `4 × retry`, ….
fn stack_with_pager(command: &str) -> Stack {
    let stack = Stack::new();
    let text = std::fs::read_to_string(&stack.config).unwrap();
    let dir = stack.dir.path().display();
    let pager = format!(
        "\nnotifiers:\n  pager: {{plugin: command, command: 'cd {dir} && {command}'}}\n\
         notificationRouting:\n  urgent: [pager]\n  info: []\n"
    );
    std::fs::write(&stack.config, format!("{text}{pager}")).unwrap();
    stack
}

fn notifications(stack: &Stack) -> Vec<serde_json::Value> {
    stack
        .events()
        .into_iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("notification."))
        })
        .collect()
}

/// The event ids the receiver got, one per line it appended.
fn received(stack: &Stack) -> Vec<u64> {
    std::fs::read_to_string(stack.dir.path().join("got.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_failing_receiver_is_retried_then_delivered_or_given_up_on() {
    // Fails (exit 1) at its first try, takes the event at the second.
    let stack =
        stack_with_pager("if [ -e tried ]; then cat >> got.jsonl; else touch tried; exit 1; fi");
    stack.up_with(&[("AO_NOTIFY_RETRY", "50ms".into())]);
    let id = stack.spawn(&["app", "R-1", "--agent", "quitter"]);
    let sent = eventually("the retried notification", Duration::from_secs(20), || {
        notifications(&stack).into_iter().next()
    });
    assert_eq!(sent["type"], "notification.sent", "{sent}");
    assert_eq!(sent["sessionId"], id.as_str(), "{sent}");
    assert_eq!(sent["data"]["tries"], 2, "{sent}");
    assert_eq!(
        received(&stack),
        [sent["data"]["eventId"].as_u64().unwrap()]
    );

    // Now it always fails: after the last try, notification.failed.
    std::fs::write(stack.dir.path().join("tried"), "").unwrap();
    let failing = stack.dir.path().join("fail");
    std::fs::write(&failing, "").unwrap();
    let text = std::fs::read_to_string(&stack.config).unwrap();
    let always = text.replace("if [ -e tried ]", "if [ ! -e fail ]");
    std::fs::write(&stack.config, always).unwrap();
    stack
        .ao(&["apply", "-f", stack.config.to_str().unwrap()])
        .ok();
    let other = stack.spawn(&["app", "R-2", "--agent", "quitter"]);
    let failed = eventually("the given-up notification", Duration::from_secs(30), || {
        notifications(&stack)
            .into_iter()
            .find(|e| e["sessionId"] == other.as_str())
    });
    assert_eq!(failed["type"], "notification.failed", "{failed}");
    assert_eq!(failed["priority"], "warning", "{failed}");
    assert_eq!(failed["data"]["tries"], 6, "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("pager") && message.contains("exit 1"),
        "{message}"
    );
}

#[test]
fn notifications_queued_at_a_kill_9_are_delivered_after_the_restart_once() {
    // Fails while `down` exists, noting each try.
    let stack = stack_with_pager("touch tried; if [ -e down ]; then exit 1; fi; cat >> got.jsonl");
    std::fs::write(stack.dir.path().join("down"), "").unwrap();
    // The first retry would come after an hour: the entries stay queued.
    let pid = stack.up_with(&[("AO_NOTIFY_RETRY", "1h".into())]);
    let ids: Vec<String> = (1..=3)
        .map(|i| stack.spawn(&["app", &format!("Q-{i}"), "--agent", "quitter"]))
        .collect();
    // Every session's exit was notified and is queued (one try each).
    let triggered = eventually("the three reactions", Duration::from_secs(20), || {
        let events: Vec<u64> = stack
            .events()
            .into_iter()
            .filter(|e| e["type"] == "reaction.triggered" && e["reaction"] == "agent-exited")
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        (events.len() == 3).then_some(events)
    });
    eventually("a first try", Duration::from_secs(20), || {
        stack.dir.path().join("tried").exists().then_some(())
    });
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    eventually("the stack process is gone", Duration::from_secs(20), || {
        kill(Pid::from_raw(pid as i32), None).is_err().then_some(())
    });
    assert!(received(&stack).is_empty());
    std::fs::remove_file(stack.dir.path().join("down")).unwrap();

    stack.up_with(&[("AO_NOTIFY_RETRY", "50ms".into())]);
    let sent = eventually("the queued notifications", Duration::from_secs(20), || {
        let sent: Vec<_> = notifications(&stack)
            .into_iter()
            .filter(|e| e["type"] == "notification.sent")
            .collect();
        (sent.len() == 3).then_some(sent)
    });
    let mut got = received(&stack);
    got.sort_unstable();
    assert_eq!(got, triggered, "each once");
    let sessions: Vec<&str> = sent
        .iter()
        .map(|e| e["sessionId"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(sessions.contains(&id.as_str()), "{sessions:?}");
    }
}

#[test]
fn notify_test_prints_the_receivers_answer_or_fails_with_its_error() {
    // Answers on stdout while `down` is absent; exits 1 saying why otherwise.
    let stack = stack_with_pager(
        "if [ -e down ]; then echo receiver down >&2; exit 1; fi; cat >> got.jsonl; echo taken",
    );
    stack.up();
    let run = stack.ao(&["notify", "test", "pager"]).ok();
    assert_eq!(run.stdout.trim(), "taken");
    let got = std::fs::read_to_string(stack.dir.path().join("got.jsonl")).unwrap();
    let event: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    assert_eq!(event["type"], "notification.test", "{event}");
    // Sent at once and not queued: nothing is recorded.
    assert!(notifications(&stack).is_empty());

    std::fs::write(stack.dir.path().join("down"), "").unwrap();
    let run = stack.ao(&["notify", "test", "pager"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("receiver down"), "{}", run.stderr);
    let run = stack.ao(&["notify", "test", "nobody"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("no notifier `nobody`"),
        "{}",
        run.stderr
    );
}
