//! Linear issues as prompts, against the fake Linear: `ao spawn app INT-1234` in a project with
//! `tracker: linear` reads the issue before anything is created and builds the agent's prompt
//! and branch from it, an unknown identifier is refused with nothing created, a config whose
//! key Linear rejects is refused at `ao up`, and the key never reaches the log. The client's
//! search (the `query` of schedules) is driven against the same fake.

use std::ffi::OsString;
use std::sync::Arc;

use ao_controller::scm::github::Token;
use ao_controller::scm::linear::{Linear, LinearTracker};
use ao_controller::scm::{ScmError, Tracker};
use ao_tests::linear::{FakeLinear, Issue};
use ao_tests::{Cli, Stack};
use chrono::{Duration, TimeZone, Utc};

const KEY: &str = "lin_api_tracker_test_key_0123456789";

fn issue(identifier: &str, title: &str, day: u32, labels: &[&str], state: &str) -> Issue {
    Issue {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        state: state.to_string(),
        created_at: Utc.with_ymd_and_hms(2026, 1, day, 9, 0, 0).unwrap(),
        ..Issue::new(identifier, title)
    }
}

/// A fake Linear with INT-1234 (described, labelled, six comments) and a few more.
fn linear() -> FakeLinear {
    let linear = FakeLinear::start(KEY);
    linear.add_issue(Issue {
        description: Some("The login button does nothing.\n\n**Steps:** click it.".into()),
        comments: vec![
            (Some("zed".into()), "First look.".into()),
            (Some("ann".into()), "Seen on Firefox.".into()),
            (None, "Linked a Sentry event.".into()),
            (Some("bob".into()), "Also on the settings page.".into()),
            (Some("ann".into()), "Still there in 1.4.".into()),
            (
                Some("cy".into()),
                "Fixing it needs the new session cookie.".into(),
            ),
        ],
        ..issue(
            "INT-1234",
            "Fix the login page!",
            2,
            &["bug", "ui"],
            "started",
        )
    });
    linear.add_issue(issue("INT-7", "Add dark mode", 1, &["ready"], "unstarted"));
    linear
}

fn config(stack: &Stack, linear: &FakeLinear) -> String {
    stack.config_with(
        "app",
        &format!(
            "tracker:\n  plugin: linear\n  apiUrl: \"{}\"\n  team: INT\n",
            linear.url()
        ),
    )
}

#[test]
fn spawn_for_a_linear_issue_builds_prompt_and_branch_and_refuses_an_unknown_one() {
    let stack = Stack::new();
    let linear = linear();
    std::fs::write(&stack.config, config(&stack, &linear)).unwrap();
    stack.up_with(&[("LINEAR_API_KEY", KEY.into())]);
    assert_eq!(
        linear.operations().first().map(String::as_str),
        Some("Viewer"),
        "the key is checked when the config is applied"
    );

    let id = stack.spawn(&["app", "INT-1234"]);
    let session = stack.session(&id);
    assert_eq!(
        session["branch"], "feat/INT-1234-fix-the-login-page",
        "{session}"
    );
    let prompt = stack.prompt_of(&id);
    for part in [
        "## Issue INT-1234: Fix the login page!",
        "/acme/issue/INT-1234",
        "Labels: bug, ui",
        "The login button does nothing.\n\n**Steps:** click it.",
        "ann wrote:\nSeen on Firefox.",
        "an integration wrote:\nLinked a Sentry event.",
        "cy wrote:\nFixing it needs the new session cookie.",
    ] {
        assert!(
            prompt.contains(part),
            "{part:?} not in the prompt:\n{prompt}"
        );
    }
    assert!(
        !prompt.contains("First look."),
        "only the last five comments:\n{prompt}"
    );
    let seen = prompt.find("Seen on Firefox.").unwrap();
    let cookie = prompt.find("new session cookie").unwrap();
    assert!(seen < cookie, "oldest first:\n{prompt}");

    let missing = stack.ao(&["spawn", "app", "INT-999"]);
    assert_eq!(missing.code, 1, "{} / {}", missing.stdout, missing.stderr);
    assert!(
        missing.stderr.contains("project `app`")
            && missing
                .stderr
                .contains("issue INT-999 does not exist in Linear"),
        "{}",
        missing.stderr
    );
    assert_eq!(stack.sessions().len(), 1, "nothing was created for INT-999");

    let doctor = stack
        .command(&["doctor"])
        .env("LINEAR_API_KEY", KEY)
        .output()
        .expect("ao runs");
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    let line = doctor
        .lines()
        .find(|l| l.contains(&format!("linear {}", linear.url())))
        .unwrap_or_else(|| panic!("no linear line in:\n{doctor}"));
    assert!(
        line.starts_with("[ok  ]") && line.contains("key from LINEAR_API_KEY, user Ann Lee"),
        "{line}"
    );
    assert!(!doctor.contains(KEY), "the key is never shown");
    let log = std::fs::read_to_string(stack.home.join("ao.log")).unwrap();
    assert!(log.contains("Linear API key accepted"), "{log}");
    assert!(!log.contains(KEY), "the key is not in ao.log");
}

#[test]
fn a_linear_config_without_a_good_key_is_refused_at_up() {
    let stack = Stack::new();
    let linear = linear();
    let linear_config = stack.dir.path().join("linear.yaml");
    std::fs::write(&linear_config, config(&stack, &linear)).unwrap();
    let up = |key: Option<&str>| {
        let mut up = stack.command(&["up", "-d"]);
        up.env("AO_CONFIG_PATH", &linear_config);
        if let Some(key) = key {
            up.env("LINEAR_API_KEY", key);
        }
        let out = up.output().expect("ao runs");
        assert!(!out.status.success(), "ao up with key {key:?} started");
        String::from_utf8_lossy(&out.stderr).to_string()
    };

    let unset = up(None);
    for part in ["project `app`", "no Linear API key", "set LINEAR_API_KEY"] {
        assert!(unset.contains(part), "{part:?} not in {unset}");
    }
    let wrong_key: OsString = "lin_api_wrong_key_42".into();
    let wrong = up(wrong_key.to_str());
    for part in [
        "project `app`",
        "Linear rejected the API key in LINEAR_API_KEY (401 Unauthorized)",
    ] {
        assert!(wrong.contains(part), "{part:?} not in {wrong}");
    }
    assert!(!wrong.contains("lin_api_wrong_key_42"), "{wrong}");
    let log = std::fs::read_to_string(stack.home.join("ao.log")).unwrap_or_default();
    assert!(!log.contains("lin_api_wrong_key_42"), "{log}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn tracker(linear: &FakeLinear, key: &str, team: Option<&str>) -> LinearTracker {
    let client = Linear::new(linear.url(), &Token::new(key).unwrap()).unwrap();
    LinearTracker {
        client: Arc::new(client),
        team: team.map(str::to_string),
    }
}

/// A search over more than a page: label, state, team and words filter; the `max` oldest
/// come first although Linear gives the newest first.
#[test]
fn a_search_filters_pages_and_keeps_the_oldest_first() {
    let linear = FakeLinear::start(KEY);
    // 130 ready issues of INT (more than a page of 100), days spread over a year.
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for n in (1..=130).rev() {
        linear.add_issue(Issue {
            labels: vec!["ready".into(), if n % 2 == 0 { "ui" } else { "api" }.into()],
            created_at: start + Duration::days(n),
            ..Issue::new(&format!("INT-{n}"), &format!("Task {n} of the login page"))
        });
    }
    for (identifier, title, labels, state) in [
        ("INT-200", "Closed login task", &["ready"][..], "completed"),
        ("INT-201", "Dropped login task", &["ready"][..], "canceled"),
        ("OPS-1", "Ops login task", &["ready"][..], "unstarted"),
        ("INT-202", "Unlabelled login task", &[][..], "backlog"),
    ] {
        linear.add_issue(Issue {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            state: state.to_string(),
            created_at: start,
            ..Issue::new(identifier, title)
        });
    }
    let int = tracker(&linear, KEY, Some("INT"));
    let ids = |issues: Vec<ao_controller::scm::Issue>| -> Vec<String> {
        issues.into_iter().map(|i| i.id).collect()
    };
    let rt = runtime();

    let ready = rt
        .block_on(int.search("label:ready state:open", 3))
        .unwrap();
    assert_eq!(
        ids(ready),
        ["INT-1", "INT-2", "INT-3"],
        "oldest first, at most max"
    );
    let pages = linear
        .operations()
        .iter()
        .filter(|o| *o == "Issues")
        .count();
    assert_eq!(pages, 2, "130 matches are two pages");

    let all = rt.block_on(int.search("label:ready", 500)).unwrap();
    assert_eq!(all.len(), 130, "open INT issues with the label");
    assert!(all.iter().all(|i| i.comments.is_empty()));

    let ui = rt.block_on(int.search("label:ready label:UI", 2)).unwrap();
    assert_eq!(ids(ui), ["INT-2", "INT-4"], "every label, without case");

    let words = rt.block_on(int.search("Task 12", 4)).unwrap();
    assert_eq!(
        ids(words),
        ["INT-12", "INT-112", "INT-120", "INT-121"],
        "every word in the title"
    );

    let closed = rt.block_on(int.search("state:closed", 10)).unwrap();
    assert_eq!(ids(closed), ["INT-200", "INT-201"]);

    let ops = rt.block_on(int.search("team:OPS label:ready", 10)).unwrap();
    assert_eq!(ids(ops), ["OPS-1"], "the query's team over the project's");

    let anywhere = tracker(&linear, KEY, None);
    let login = rt
        .block_on(anywhere.search("state:all unlabelled", 10))
        .unwrap();
    assert_eq!(ids(login), ["INT-202"]);
    assert!(rt
        .block_on(int.search("label:ready", 0))
        .unwrap()
        .is_empty());

    let refused = rt.block_on(int.search("assignee:me", 5)).unwrap_err();
    assert!(
        refused.to_string().contains("`assignee:me` in the query"),
        "{refused}"
    );
}

/// Linear's refusals as the tracker's errors: a rejected key, no such issue, the rate limit
/// (held until the reset Linear gave, nothing sent meanwhile).
#[test]
fn linear_refusals_are_auth_not_found_and_throttled() {
    let linear = linear();
    let rt = runtime();
    let wrong = tracker(&linear, "lin_api_nope", None);
    let err = rt.block_on(wrong.issue("INT-1234")).unwrap_err();
    assert!(matches!(err, ScmError::Auth(_)), "{err:?}");
    assert!(!err.to_string().contains("lin_api_nope"), "{err}");

    let good = tracker(&linear, KEY, Some("INT"));
    let issue = rt.block_on(good.issue("int-7")).unwrap();
    assert_eq!(
        (issue.id.as_str(), issue.title.as_str()),
        ("INT-7", "Add dark mode")
    );
    assert_eq!(issue.body, "", "no description is an empty body");
    let err = rt.block_on(good.issue("INT-404")).unwrap_err();
    assert!(matches!(err, ScmError::NotFound(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("issue INT-404 does not exist in Linear"),
        "{err}"
    );

    linear.refuse_for_rate_limit(1);
    let err = rt.block_on(good.search("label:ready", 5)).unwrap_err();
    let ScmError::Throttled { until } = err else {
        panic!("{err:?}")
    };
    assert!(until > std::time::SystemTime::now() + std::time::Duration::from_secs(1800));
    let asked = linear.operations().len();
    let err = rt.block_on(good.issue("INT-7")).unwrap_err();
    assert!(matches!(err, ScmError::Throttled { .. }), "{err:?}");
    assert_eq!(
        linear.operations().len(),
        asked,
        "nothing sent while held back"
    );

    // The fake answers only what it understands, as Linear's validation would.
    let client = reqwest::Client::new();
    let ask = |query: &str| {
        let request = client
            .post(linear.url())
            .header("authorization", KEY)
            .json(&serde_json::json!({"query": query, "variables": {}}));
        rt.block_on(async {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<serde_json::Value>().await.unwrap(),
            )
        })
    };
    for query in [
        "query { issue(id: \"INT-7\") { identifier priority } }",
        "query { projects { nodes { id } } }",
        "mutation { issueCreate(input: {title: \"x\"}) { success } }",
    ] {
        let (status, body) = ask(query);
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
            "{body}"
        );
    }
    let (status, body) = ask("query { issue(id: \"INT-7\") { identifier state { type } } }");
    assert_eq!(
        (status, &body["data"]["issue"]["state"]["type"]),
        (200, &serde_json::json!("unstarted"))
    );
}
