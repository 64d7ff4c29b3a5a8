//! Notifications through the real stack: which notifiers hear of what.

use std::time::Duration;

use ao_tests::{eventually, Cli, Stack};

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
