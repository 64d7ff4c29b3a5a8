//! The dashboard in a real headless Chromium (`ao_tests::browser`) against
//! a real stack: the printed login link, the board's zones, a card that
//! moves by itself, the live terminal, typing into the agent after taking
//! the keyboard, and a kill from the page. Screenshots of the board and a
//! session page, light and dark, go to `$AO_SCREENSHOTS` (`scripts/screenshots`
//! sets it to `docs/`), else beside the test's stack.

use std::path::PathBuf;
use std::time::Duration;

use ao_tests::browser::{Browser, Page};
use ao_tests::{agents_dir, eventually, Cli, Stack};

/// Whether the board's zone `zone` holds the card of session `id` (JS).
fn in_zone(zone: &str, id: &str) -> String {
    format!("!!document.querySelector('#{zone} [data-session=\"{id}\"]')")
}

/// The page's text of the live terminal (JS).
const TERMINAL_TEXT: &str = "document.getElementById('term').innerText";

/// Screenshots of `page` in the light and the dark theme, as `<name>-light.png` / `-dark.png`.
fn screenshots(page: &Page, dir: &std::path::Path, name: &str) {
    for dark in [false, true] {
        page.dark(dark);
        let theme = if dark { "dark" } else { "light" };
        let path = dir.join(format!("{name}-{theme}.png"));
        page.screenshot(&path);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 1000,
            "{} is a real image: {size} bytes",
            path.display()
        );
    }
    page.dark(false);
}

#[test]
fn the_dashboard_works_in_a_browser() {
    let stack = Stack::new();
    // An agent that asks a question once it is typed a line.
    let mut config = std::fs::read_to_string(&stack.config).unwrap();
    config.push_str(&format!(
        "  later:\n    command: \"{}/ask-later.sh\"\n    inputPattern: \"\\\\(y/n\\\\)\"\n    readyPattern: \"^> $\"\n",
        agents_dir().display()
    ));
    std::fs::write(&stack.config, config).unwrap();
    stack.up();
    let working = stack.spawn(&["app", "B-1"]);
    let asker = stack.spawn(&["app", "B-2", "--agent", "asker"]);
    let later = stack.spawn(&["app", "B-3", "--agent", "later"]);
    stack.wait_field(&asker, "activity", "waiting_input");
    stack.wait_log(&later, "got: You are working on issue B-3");
    stack.wait_log(&working, "agent ready in");

    let browser = Browser::start();
    let page = browser.page();
    let link = stack.ao(&["dashboard"]).ok().stdout.trim().to_string();
    page.goto(&link);
    let base = stack.http_url();
    assert_eq!(page.eval("location.href"), format!("{base}/"));
    page.wait_for("the asker needs me", &in_zone("needs-you", &asker));
    let others = format!(
        "{} && {}",
        in_zone("working", &working),
        in_zone("working", &later)
    );
    if ao_tests::poll(Duration::from_secs(20), || {
        page.eval(&others).as_bool().filter(|b| *b)
    })
    .is_none()
    {
        panic!(
            "the others do not work: {}",
            page.eval("document.getElementById('board').innerText")
        );
    }
    assert_eq!(page.eval(&in_zone("needs-you", &working)), false);
    let title = page.eval("document.title");
    assert!(
        title.as_str().unwrap().starts_with("ao (1 need you"),
        "{title}"
    );

    // The card moves by itself when the agent asks: the page notes when
    // (in its own clock), and that it did not reload.
    page.eval(&format!(
        "window.stayed = true; new MutationObserver((_, o) => {{ if ({}) {{ window.movedAt = Date.now(); o.disconnect(); }} }})\
         .observe(document.getElementById('board'), {{ childList: true, subtree: true }}); true",
        in_zone("needs-you", &later)
    ));
    stack.ao(&["send", &later, "ask"]).ok();
    let moved_at = page.wait_for("the card moved to needs-you", "window.movedAt");
    assert_eq!(page.eval("window.stayed"), true, "no reload");
    let worktree = PathBuf::from(
        stack.session(&later)["worktree"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let asked_at: i64 = std::fs::read_to_string(worktree.join(".asked-at"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A figure, not an assertion (the machine is shared): issue 14 asks for under 2 s.
    eprintln!(
        "the card moved {} ms after the agent asked",
        moved_at.as_i64().unwrap() - asked_at
    );

    let shots = std::env::var_os("AO_SCREENSHOTS")
        .map_or_else(|| stack.dir.path().join("screenshots"), PathBuf::from);
    std::fs::create_dir_all(&shots).unwrap();
    screenshots(&page, &shots, "dashboard-board");

    // The session page: its terminal live, read-only.
    page.goto(&format!("{base}/sessions/{working}"));
    page.wait_for(
        "the terminal is live",
        "document.getElementById('term').dataset.live",
    );
    page.wait_for(
        "the agent's output on the page",
        &format!("{TERMINAL_TEXT}.includes('agent ready in')"),
    );
    // Keys on a read-only terminal are refused by the controller.
    let refused = page.eval(
        "new Promise(done => { const ws = new WebSocket(location.href.replace('http', 'ws') + '/terminal');\
         ws.onmessage = e => { const m = JSON.parse(e.data);\
         if (m.size) ws.send(new TextEncoder().encode('sneaky\\r'));\
         if (m.notice) { done(m.notice); ws.close(); } }; })",
    );
    assert!(
        refused.as_str().unwrap().starts_with("read-only"),
        "{refused}"
    );

    // Taking the keyboard: a typed line reaches the agent, which answers.
    page.eval("document.getElementById('take').click(); true");
    page.wait_for(
        "the keyboard is ours",
        "document.getElementById('term').dataset.keyboard",
    );
    page.eval("document.getElementById('term').focus(); true");
    page.type_text("hello from chromium\r");
    stack.wait_log(&working, "got: hello from chromium");
    page.wait_for(
        "the answer on the page",
        &format!("{TERMINAL_TEXT}.includes('got: hello from chromium')"),
    );
    assert!(
        !stack.ao(&["logs", &working]).ok().stdout.contains("sneaky"),
        "a read-only terminal's keys never reached the agent"
    );
    screenshots(&page, &shots, "dashboard-session");

    // Kill from the page ends the session.
    page.eval("document.querySelector('form[action$=\"/kill\"] button').click(); true");
    stack.wait_field(&working, "status", "killed");
    eventually("the page is back", Duration::from_secs(20), || {
        let href = page.eval("document.readyState === 'complete' && location.href");
        (href == format!("{base}/sessions/{working}")).then_some(())
    });
}
