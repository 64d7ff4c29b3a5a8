//! Label triggers against the local GitHub: an issue that gets the project's
//! `spawnLabel` (`agent-task`) gets one session, by webhook or by the
//! tracker poll, and never a second one for that label.

use std::time::Duration;

use ao_tests::github_stack::{Loop, Setup, REPO, SECRET};
use ao_tests::{eventually, Cli};
use serde_json::Value;

/// The sessions of issue `number`.
fn sessions_of(run: &Loop, number: u64) -> Vec<Value> {
    let issue = number.to_string();
    run.stack
        .sessions()
        .into_iter()
        .filter(|s| s["issueId"] == issue.as_str())
        .collect()
}

/// Waits for the first session of issue `number`; its id.
fn spawned_for(run: &Loop, number: u64) -> String {
    let session = eventually(
        &format!("a session for issue #{number}"),
        Duration::from_secs(30),
        || sessions_of(run, number).into_iter().next(),
    );
    session["id"].as_str().unwrap().to_string()
}

fn add_issue(run: &Loop, number: u64) {
    let title = format!("Task {number}");
    run.github
        .add_issue(REPO, number, &title, "Do it.", &["enhancement"], &[]);
}

#[test]
fn a_labelled_issue_gets_one_session_by_webhook() {
    // Polling all but off: only the delivery can tell.
    let run = Loop::start(Setup {
        poll: "10m",
        webhooks: true,
        ..Setup::default()
    });
    run.github
        .webhooks(&format!("{}/webhooks/github", run.stack.http_url()), SECRET);
    add_issue(&run, 5);
    add_issue(&run, 6);
    run.github.label_issue(REPO, 6, "not-for-agents");
    run.github.label_issue(REPO, 5, "agent-task");
    let id = spawned_for(&run, 5);

    // Its session ended, the label taken off and added again: the delivery
    // comes, no second session.
    run.stack.ao(&["session", "kill", &id]).ok();
    run.github.unlabel_issue(REPO, 5, "agent-task");
    run.github.label_issue(REPO, 5, "agent-task");
    let deliveries = || {
        run.github
            .deliveries()
            .into_iter()
            .filter(|d| d.event == "issues")
            .collect::<Vec<_>>()
    };
    eventually(
        "the four issues deliveries",
        Duration::from_secs(10),
        || {
            let all = deliveries();
            (all.len() == 4 && all.iter().all(|d| d.answer.is_ok())).then_some(())
        },
    );
    // A marker: issue 7's delivery is handled after issue 5's second one.
    add_issue(&run, 7);
    run.github.label_issue(REPO, 7, "agent-task");
    spawned_for(&run, 7);
    let of_5 = sessions_of(&run, 5);
    assert_eq!(of_5.len(), 1, "{of_5:?}");
    assert_eq!(of_5[0]["id"], id.as_str());
    assert!(
        sessions_of(&run, 6).is_empty(),
        "another label spawns nothing"
    );
}

#[test]
fn without_webhooks_the_poll_finds_the_label_once() {
    let run = Loop::start(Setup {
        poll: "200ms",
        ..Setup::default()
    });
    add_issue(&run, 8);
    add_issue(&run, 9);
    run.github.label_issue(REPO, 9, "ready");
    run.github.label_issue(REPO, 8, "agent-task");
    let id = spawned_for(&run, 8);

    // Its session killed, the label still on: the poll sees it each round and
    // spawns nothing more; removing the label does not kill a session either.
    run.stack.ao(&["session", "kill", &id]).ok();
    add_issue(&run, 10);
    run.github.label_issue(REPO, 10, "agent-task");
    let marker = spawned_for(&run, 10);
    run.github.unlabel_issue(REPO, 10, "agent-task");
    add_issue(&run, 11);
    run.github.label_issue(REPO, 11, "agent-task");
    spawned_for(&run, 11);
    assert_eq!(
        sessions_of(&run, 8).len(),
        1,
        "once, though the label stayed"
    );
    assert!(sessions_of(&run, 9).is_empty());
    let kept = run.stack.session(&marker);
    assert_ne!(kept["status"], "killed", "{kept}");
}
