//! The CLI as a safe tool: what it prints cannot drive the terminal, secrets
//! stay out of argv, errors say what is wrong, and `AO_HOME` stays private.

use ao_tests::{Cli, Stack};

/// An issue id that would retitle the terminal if printed raw.
const HOSTILE_ISSUE: &str = "X\x1b]0;pwned\x07";

#[test]
fn control_characters_are_escaped_in_tables_and_exact_in_json() {
    let stack = Stack::new();
    stack.up();
    let id = stack.spawn(&["app", HOSTILE_ISSUE, "--branch", "hostile"]);

    let table = stack.ao(&["status"]).ok().stdout;
    assert!(table.contains("X\\x1b]0;pwned\\x07"), "{table:?}");
    assert!(
        !table.contains('\x1b') && !table.contains('\x07'),
        "{table:?}"
    );
    assert_eq!(stack.session(&id)["issueId"], HOSTILE_ISSUE);

    let events = stack.ao(&["events"]).ok().stdout;
    assert!(events.contains("X\\x1b]0;pwned\\x07"), "{events:?}");
    assert!(
        !events.contains('\x1b') && !events.contains('\x07'),
        "{events:?}"
    );
    let spawned = stack
        .cli_events()
        .into_iter()
        .find(|e| e["type"] == "session.spawned" && e["sessionId"] == id.as_str())
        .expect("a session.spawned event");
    assert_eq!(spawned["issueId"], HOSTILE_ISSUE);
}
