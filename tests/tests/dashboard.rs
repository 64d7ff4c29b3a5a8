//! The dashboard's door and board through the real stack, with curl as the
//! browser: a one-time link for a cookie, the board's zones, logins ended
//! by `ao dashboard --revoke-all`, and no page without a login.

use std::path::Path;
use std::process::Command;

use ao_tests::github::{CheckState, ReviewState};
use ao_tests::github_stack::{Loop, Setup, REPO};
use ao_tests::{Cli, Stack};

/// `curl` of `url` with the cookie jar `jar`: the status, the headers and the body.
fn curl(jar: &Path, url: &str, extra: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-b"])
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, head.to_string(), body.to_string())
}

/// The lines of a Server-Sent Events stream (`/board/events`, `/events/live`),
/// read by `curl -N` as they come.
struct SseLines {
    curl: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl SseLines {
    fn open(jar: &Path, url: &str) -> Self {
        let mut curl = Command::new("curl")
            .args(["-s", "-N", "-b"])
            .arg(jar)
            .arg(url)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl runs");
        let out = curl.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { curl, lines }
    }

    /// Waits for a `data:` line that `matches`.
    fn wait_data(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        ao_tests::eventually(what, std::time::Duration::from_secs(20), || {
            self.lines
                .try_iter()
                .find(|line| line.strip_prefix("data:").is_some_and(&matches))
        })
    }

    /// Waits for a board whose zone `zone` lists session `id`.
    fn wait_for(&self, zone: &str, id: &str) -> String {
        let row = format!("data-session=\"{id}\"");
        self.wait_data(&format!("{id} in {zone}"), |board| {
            board
                .split(&format!("<section id=\"{zone}\">"))
                .nth(1)
                .and_then(|rest| rest.split("</section>").next())
                .is_some_and(|section| section.contains(&row))
        })
    }
}

impl Drop for SseLines {
    fn drop(&mut self) {
        let _ = self.curl.kill();
        let _ = self.curl.wait();
    }
}

/// A form POSTed to `base` + `path` from the dashboard's own page (its
/// `Origin`), with the fields `data`: the status, headers and body.
fn post_form(jar: &Path, base: &str, path: &str, data: &str) -> (u16, String, String) {
    curl(
        jar,
        &format!("{base}{path}"),
        &[
            "-X",
            "POST",
            "-H",
            &format!("Origin: {base}"),
            "--data",
            data,
        ],
    )
}

/// The CSRF token the login in `jar` was given (its `ao_csrf` cookie).
fn csrf_of(jar: &Path) -> String {
    let text = std::fs::read_to_string(jar).unwrap();
    text.lines()
        .find_map(|l| {
            l.split('\t')
                .collect::<Vec<_>>()
                .windows(2)
                .find(|w| w[0] == "ao_csrf")
                .map(|w| w[1].to_string())
        })
        .expect("the csrf cookie")
}

fn link(stack: &Stack, role: &str) -> String {
    let run = stack.ao(&["dashboard", "--role", role]).ok();
    let link = run.stdout.trim().to_string();
    assert!(link.contains("/login?token=ao_"), "{link}");
    link
}

#[test]
fn a_one_time_link_gives_a_login_and_revoke_all_ends_it() {
    let stack = Stack::new();
    let up = stack.ao(&["up", "-d"]).ok();
    assert!(
        up.stderr.contains("dashboard: http://127.0.0.1:"),
        "{}",
        up.stderr
    );
    let waiting = stack.spawn(&["app", "D-1", "--agent", "asker"]);
    let working = stack.spawn(&["app", "D-2"]);
    stack.wait_field(&waiting, "activity", "waiting_input");
    let base = stack.http_url();
    let jar = stack.dir.path().join("cookies");

    // No login: no board.
    let (status, _, body) = curl(&jar, &format!("{base}/"), &[]);
    assert_eq!(status, 401);
    assert!(body.contains("ao dashboard"), "{body}");

    let viewer_link = link(&stack, "viewer");
    let (status, head, _) = curl(&jar, &viewer_link, &[]);
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    for part in ["ao_login=ao_", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    // Plain HTTP on loopback: a `Secure` cookie would never come back.
    assert!(!cookie.contains("Secure"), "{cookie}");
    // Once only.
    let (status, _, body) = curl(&stack.dir.path().join("other-jar"), &viewer_link, &[]);
    assert_eq!(status, 401, "{body}");

    let (status, _, board) = curl(&jar, &format!("{base}/"), &[]);
    assert_eq!(status, 200);
    let needs_you = board.split("<section id=\"needs-you\">").nth(1).unwrap();
    let needs_you = needs_you.split("</section>").next().unwrap();
    assert!(
        needs_you.contains(&format!("data-session=\"{waiting}\"")),
        "{board}"
    );
    assert!(
        !needs_you.contains(&format!("data-session=\"{working}\"")),
        "{board}"
    );
    assert!(board.contains("role viewer"), "{board}");
    assert!(board.contains("<title>ao (1 need you,"), "{board}");
    assert!(
        board.contains("new EventSource('/board/events'+location.search)"),
        "{board}"
    );
    // Each card says what the agent does and how that is known, its branch and age.
    let card = needs_you
        .split(&format!("<tr data-session=\"{waiting}\">"))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap();
    let shown = stack.session(&waiting);
    for part in [
        "act-waiting_input".to_string(),
        format!("({} since ", shown["activitySource"].as_str().unwrap()),
        format!("<td>{}</td>", shown["branch"].as_str().unwrap()),
    ] {
        assert!(card.contains(&part), "{part} in {card}");
    }

    // Filters by project and worker; the live view keeps the filter.
    let worker_id = shown["worker"].as_str().unwrap().to_string();
    let (_, _, mine) = curl(
        &jar,
        &format!("{base}/?project=app&worker={worker_id}"),
        &[],
    );
    assert!(
        mine.contains(&format!("data-session=\"{waiting}\"")),
        "{mine}"
    );
    assert!(mine.contains("<option selected>app</option>"), "{mine}");
    for other in ["project=elsewhere", "worker=elsewhere"] {
        let (_, _, none) = curl(&jar, &format!("{base}/?{other}"), &[]);
        assert!(!none.contains("data-session="), "{other}: {none}");
        assert!(none.contains("<title>ao (0 need you, 0 working,"), "{none}");
    }

    // The workers and the events, for reading.
    let (status, _, workers) = curl(&jar, &format!("{base}/workers"), &[]);
    assert_eq!(status, 200);
    let worker = &stack.session(&waiting)["worker"];
    assert!(
        workers.contains(&format!(
            "<td>{}</td><td>ready</td>",
            worker.as_str().unwrap()
        )),
        "{workers}"
    );
    let (status, _, events) = curl(&jar, &format!("{base}/events?session={waiting}"), &[]);
    assert_eq!(status, 200);
    assert!(
        events.contains("session.spawned") && events.contains("session.needs_input"),
        "{events}"
    );
    assert!(
        !events.contains(&format!("<td>{working}</td>")),
        "filtered by session: {events}"
    );

    // Live: a new session's card comes, and moves when its agent asks; a
    // board filtered to another project never shows it.
    let events = SseLines::open(&jar, &format!("{base}/board/events"));
    let elsewhere = SseLines::open(&jar, &format!("{base}/board/events?project=elsewhere"));
    let newest = stack
        .cli_events()
        .last()
        .map_or(0, |e| e["id"].as_u64().unwrap());
    let tail = SseLines::open(
        &jar,
        &format!("{base}/events/live?type=session.spawned&after={newest}"),
    );
    let asker = stack.spawn(&["app", "D-3", "--agent", "asker"]);
    events.wait_for("needs-you", &asker);
    drop(events);
    let board = elsewhere.wait_data("a board", |_| true);
    assert!(!board.contains("data-session="), "{board}");
    // The events page's live tail: the new spawn's row.
    let row = tail.wait_data("the spawn's row", |row| row.contains("session.spawned"));
    assert!(row.contains(&format!(">{asker}</a>")), "{row}");
    drop(tail);

    // A viewer sees a session but no forms, and cannot act.
    let page = |jar: &Path| curl(jar, &format!("{base}/sessions/{working}"), &[]).2;
    assert!(page(&jar).contains("<td>Status</td>"), "{}", page(&jar));
    // Its events, live.
    assert!(
        page(&jar).contains("<td>session.spawned</td>")
            && page(&jar).contains("new EventSource('/events/live?'+q)"),
        "{}",
        page(&jar)
    );
    assert!(!page(&jar).contains("action=\"/sessions/"));
    // Without JavaScript, the screen as the terminal log left it.
    let shown = page(&jar);
    let screen = shown
        .split("<div class=\"term\"")
        .nth(1)
        .and_then(|t| t.split("</div></div>").next())
        .unwrap_or_else(|| panic!("no terminal in {shown}"));
    assert!(screen.contains("agent ready in"), "{shown}");
    assert!(!shown.contains("id=\"take\""), "no keyboard for a viewer");
    let origin = format!("Origin: {base}");
    let kill = |jar: &Path, csrf: &str| {
        post_form(
            jar,
            &base,
            &format!("/sessions/{working}/kill"),
            &format!("csrf={csrf}"),
        )
        .0
    };
    assert_eq!(kill(&jar, &csrf_of(&jar)), 403, "a viewer cannot kill");
    let (status, _, body) = post_form(
        &jar,
        &base,
        &format!("/sessions/{working}/keyboard"),
        &format!("csrf={}", csrf_of(&jar)),
    );
    assert_eq!(status, 403, "a viewer cannot take the keyboard: {body}");
    // The live terminal opens from the dashboard's own pages only: a page
    // elsewhere could otherwise open it with the login cookie.
    let upgrade = |jar: &Path, origin: &str| {
        curl(
            jar,
            &format!("{base}/sessions/{working}/terminal"),
            &[
                "-H",
                "Connection: Upgrade",
                "-H",
                "Upgrade: websocket",
                "-H",
                "Sec-WebSocket-Version: 13",
                "-H",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "-H",
                origin,
            ],
        )
    };
    let (status, _, body) = upgrade(&jar, "Origin: http://evil.example");
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = upgrade(&stack.dir.path().join("no-jar"), &origin);
    assert_eq!(status, 401);

    // An operator types into the agent and kills it from the page, with the form's token only.
    let ops = stack.dir.path().join("ops-cookies");
    assert_eq!(curl(&ops, &link(&stack, "operator"), &[]).0, 303);
    assert!(page(&ops).contains(&format!("action=\"/sessions/{working}/send\"")));
    let csrf = csrf_of(&ops);
    let (status, _, _) = post_form(
        &ops,
        &base,
        &format!("/sessions/{working}/send"),
        &format!("csrf={csrf}&message=hello+from+the+page"),
    );
    assert_eq!(status, 303);
    stack.wait_log(&working, "hello from the page");
    assert_eq!(kill(&ops, "not-the-token"), 403, "a forged form");
    assert_eq!(kill(&ops, &csrf), 303);
    stack.wait_field(&working, "status", "killed");

    // A POST from elsewhere is refused; the login stays.
    let (status, _, _) = curl(
        &jar,
        &format!("{base}/logout"),
        &["-X", "POST", "-H", "Origin: http://evil.example"],
    );
    assert_eq!(status, 403);
    assert_eq!(curl(&jar, &format!("{base}/"), &[]).0, 200);

    // Every login ends at once.
    stack.ao(&["dashboard", "--revoke-all"]).ok();
    let (status, _, body) = curl(&jar, &format!("{base}/"), &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not valid any more"), "{body}");
    let left: Vec<serde_json::Value> =
        serde_json::from_str(&stack.ao(&["token", "ls", "--json"]).ok().stdout).unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// The merge button is the PR watcher's merge, offered when the guards of
/// `approved-and-green` pass (no auto-merge configured here); before, a
/// merge is refused with every reason.
#[test]
fn an_operator_merges_a_ready_pr_from_the_session_page_and_not_before() {
    let run = Loop::start(Setup::default());
    let id = run.spawn_with_pr();
    let pr = run.pr_of(&id);
    let base = run.stack.http_url();
    let jar = run.stack.dir.path().join("cookies");
    assert_eq!(curl(&jar, &link(&run.stack, "operator"), &[]).0, 303);
    let page = || curl(&jar, &format!("{base}/sessions/{id}"), &[]).2;
    let merge = || {
        post_form(
            &jar,
            &base,
            &format!("/sessions/{id}/merge"),
            &format!("csrf={}", csrf_of(&jar)),
        )
    };

    run.stack.wait_field(&id, "status", "review_pending");
    let shown = page();
    assert!(shown.contains("Not ready to merge: "), "{shown}");
    assert!(!shown.contains(&format!("/sessions/{id}/merge")), "{shown}");
    let (status, _, why) = merge();
    assert_eq!(status, 422, "{why}");
    assert!(why.contains(&format!("PR #{pr} is not approved")), "{why}");
    assert!(
        why.contains("the required checks are not all green"),
        "{why}"
    );
    assert_eq!(run.count(&id, "merge.completed"), 0);

    let head = run.github.pr(REPO, pr).head_sha;
    run.github
        .set_check(REPO, &head, "test", CheckState::Success, None, true);
    run.github
        .review(REPO, pr, "alice", ReviewState::Approved, &[]);
    run.stack.wait_field(&id, "status", "mergeable");
    assert!(page().contains(&format!("Merge PR #{pr}")), "{}", page());
    let (status, head_lines, body) = merge();
    assert_eq!(status, 303, "{head_lines}{body}");
    let merged = run.event(&id, "merge.completed");
    assert_eq!(merged["data"]["sha"], head.as_str(), "{merged}");
    assert!(run.github.pr(REPO, pr).merge_commit.is_some());
    run.stack.wait_field(&id, "status", "merged");
}
